//! The service's names and object paths, as fixed by the contract
//! (`docs/dbus-api.md`): the bus name, the interface names, and the path layout
//! `/org/qubes/Storage/pools/<P>/volumes/<V>` and `/org/qubes/Storage/jobs/<n>`.
//!
//! Path elements use sd-bus's `sd_bus_path_encode` escaping: every byte outside
//! `[A-Za-z0-9]` becomes `_` and two lowercase hex digits; the empty string becomes `_`.
//! Commands ask the service for paths (`GetPool`, `GetVolume`); encoding here serves
//! `monitor` (a volume can be watched before it exists) and decoding turns the paths
//! in signals and properties back into `pool:vid` for people.

pub const SERVICE: &str = "org.qubes.Storage";
pub const ROOT_PATH: &str = "/org/qubes/Storage";
pub const POOLS_PATH: &str = "/org/qubes/Storage/pools";
pub const JOBS_PATH: &str = "/org/qubes/Storage/jobs";

pub const MANAGER_IFACE: &str = "org.qubes.Storage.Manager";
pub const POOL_IFACE: &str = "org.qubes.Storage.Pool";
pub const VOLUME_IFACE: &str = "org.qubes.Storage.Volume";
pub const JOB_IFACE: &str = "org.qubes.Storage.Job";
pub const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";
pub const OBJECT_MANAGER_IFACE: &str = "org.freedesktop.DBus.ObjectManager";

/// Encodes one path element the way `sd_bus_path_encode` does.
pub fn encode_element(name: &str) -> String {
    if name.is_empty() {
        return "_".to_owned();
    }
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("_{byte:02x}"));
        }
    }
    encoded
}

/// Decodes one path element; `None` when it is not a valid encoding.
pub fn decode_element(element: &str) -> Option<String> {
    if element == "_" {
        return Some(String::new());
    }
    let bytes = element.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'_' {
            let hex = element.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

pub fn pool_path(pool: &str) -> String {
    format!("{POOLS_PATH}/{}", encode_element(pool))
}

pub fn volume_path(pool: &str, vid: &str) -> String {
    format!("{}/volumes/{}", pool_path(pool), encode_element(vid))
}

/// What an object path of the service names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Manager,
    Pool(String),
    Volume { pool: String, vid: String },
    Job(String),
    Other(String),
}

impl Subject {
    pub fn of_path(path: &str) -> Subject {
        classify(path).unwrap_or_else(|| Subject::Other(path.to_owned()))
    }
}

fn classify(path: &str) -> Option<Subject> {
    if path == ROOT_PATH {
        return Some(Subject::Manager);
    }
    if let Some(job) = path
        .strip_prefix(JOBS_PATH)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        return (!job.contains('/')).then(|| Subject::Job(job.to_owned()));
    }
    let below_pools = path.strip_prefix(POOLS_PATH)?.strip_prefix('/')?;
    let mut elements = below_pools.split('/');
    let pool = decode_element(elements.next()?)?;
    match (elements.next(), elements.next(), elements.next()) {
        (None, _, _) => Some(Subject::Pool(pool)),
        (Some("volumes"), Some(vid), None) => Some(Subject::Volume {
            pool,
            vid: decode_element(vid)?,
        }),
        _ => None,
    }
}

impl std::fmt::Display for Subject {
    /// `pool`, `pool:vid` (qvm-volume's notation), `job <n>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Manager => f.write_str("manager"),
            Subject::Pool(pool) => write!(f, "pool {pool}"),
            Subject::Volume { pool, vid } => write!(f, "{pool}:{vid}"),
            Subject::Job(job) => write!(f, "job {job}"),
            Subject::Other(path) => f.write_str(path),
        }
    }
}

/// The vid of a volume path, or the path itself when it is not one (`/` → `None`).
pub fn vid_of_path(path: &str) -> Option<String> {
    match Subject::of_path(path) {
        Subject::Volume { vid, .. } => Some(vid),
        _ if path == "/" => None,
        _ => Some(path.to_owned()),
    }
}

/// The pool name of a pool path, or the path itself when it is not one.
pub fn pool_of_path(path: &str) -> String {
    match Subject::of_path(path) {
        Subject::Pool(pool) => pool,
        _ => path.to_owned(),
    }
}

/// Whether `path` is `namespace` or below it (D-Bus `path_namespace` semantics, which
/// a plain string prefix gets wrong: `/a/bc` is not below `/a/b`).
pub fn is_in_namespace(path: &str, namespace: &str) -> bool {
    path == namespace
        || path
            .strip_prefix(namespace)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vid_is_encoded_like_the_contract_example() {
        assert_eq!(
            volume_path("varlibqubes", "appvms/work/private"),
            "/org/qubes/Storage/pools/varlibqubes/volumes/appvms_2fwork_2fprivate"
        );
    }

    #[test]
    fn every_byte_outside_alphanumerics_is_escaped_in_lowercase_hex() {
        assert_eq!(encode_element("a-b.c_d"), "a_2db_2ec_5fd");
        assert_eq!(encode_element("Z9"), "Z9");
        assert_eq!(encode_element("é"), "_c3_a9");
    }

    #[test]
    fn empty_name_is_a_lone_underscore() {
        assert_eq!(encode_element(""), "_");
        assert_eq!(decode_element("_"), Some(String::new()));
    }

    #[test]
    fn decoding_inverts_encoding() {
        for name in [
            "",
            "pool",
            "appvms/work/private",
            "vm-templates/fedora-40/root",
            "_",
            "__",
        ] {
            assert_eq!(decode_element(&encode_element(name)).as_deref(), Some(name));
        }
    }

    #[test]
    fn truncated_or_bad_escapes_do_not_decode() {
        assert_eq!(decode_element("a_2"), None);
        assert_eq!(decode_element("a_zz"), None);
        assert_eq!(decode_element("_ff"), None);
    }

    #[test]
    fn paths_classify_into_subjects() {
        let volume = volume_path("p-1", "appvms/vm/private");
        assert_eq!(
            Subject::of_path(&volume),
            Subject::Volume {
                pool: "p-1".into(),
                vid: "appvms/vm/private".into()
            }
        );
        assert_eq!(
            Subject::of_path(&pool_path("p-1")),
            Subject::Pool("p-1".into())
        );
        assert_eq!(
            Subject::of_path("/org/qubes/Storage/jobs/7"),
            Subject::Job("7".into())
        );
        assert_eq!(Subject::of_path(ROOT_PATH), Subject::Manager);
        assert_eq!(
            Subject::of_path("/elsewhere"),
            Subject::Other("/elsewhere".into())
        );
        assert_eq!(
            Subject::of_path("/org/qubes/Storage/pools/p/extra"),
            Subject::Other("/org/qubes/Storage/pools/p/extra".into())
        );
    }

    #[test]
    fn subjects_print_in_qvm_volume_notation() {
        let volume = Subject::of_path(&volume_path("varlibqubes", "appvms/work/private"));
        assert_eq!(volume.to_string(), "varlibqubes:appvms/work/private");
        assert_eq!(Subject::Job("3".into()).to_string(), "job 3");
    }

    #[test]
    fn source_path_slash_means_no_source() {
        assert_eq!(vid_of_path("/"), None);
        assert_eq!(
            vid_of_path(&volume_path("p", "appvms/a/b")).as_deref(),
            Some("appvms/a/b")
        );
    }

    #[test]
    fn namespace_needs_a_whole_element() {
        assert!(is_in_namespace("/a/b", "/a/b"));
        assert!(is_in_namespace("/a/b/c", "/a/b"));
        assert!(!is_in_namespace("/a/bc", "/a/b"));
    }
}
