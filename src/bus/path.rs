//! Object paths of the service and the bijective encoding of names into one path
//! element, exactly as sd-bus's `sd_bus_path_encode` does it: every byte outside
//! `[A-Za-z0-9]` becomes `_` plus two lowercase hex digits, and the empty string becomes
//! `_` alone. Decoding is the inverse; it refuses anything the encoder cannot produce, so
//! one path names one object and one object has one path.
//!
//! [`Node`] classifies a path syntactically — which kind of object it would name — so
//! the dispatcher can route a call before it asks the registry whether the object
//! exists.

use qubes_storage_engine::{PoolName, Vid, VolumeRef};
use zbus::{ObjectPath, OwnedObjectPath};

/// The root object: the Manager and the ObjectManager.
pub const MANAGER_PATH: &str = "/org/qubes/Storage";
const POOLS_PREFIX: &str = "/org/qubes/Storage/pools/";
const JOBS_PREFIX: &str = "/org/qubes/Storage/jobs/";
const VOLUMES_SEGMENT: &str = "/volumes/";

/// What a path would name, before anyone checks that it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `/`, `/org`, `/org/qubes`: nodes that only lead to the service; the one child.
    Ancestor(&'static str),
    /// `/org/qubes/Storage`: the Manager and the ObjectManager.
    Manager,
    /// `/org/qubes/Storage/pools`.
    Pools,
    Pool(PoolName),
    /// `/org/qubes/Storage/pools/<P>/volumes`.
    Volumes(PoolName),
    Volume(VolumeRef),
    /// `/org/qubes/Storage/jobs`.
    Jobs,
    Job(u64),
}

impl Node {
    /// The node a path names; `None` for a path the service can never serve.
    pub fn of(path: &str) -> Option<Node> {
        match path {
            "/" => return Some(Node::Ancestor("org")),
            "/org" => return Some(Node::Ancestor("qubes")),
            "/org/qubes" => return Some(Node::Ancestor("Storage")),
            MANAGER_PATH => return Some(Node::Manager),
            "/org/qubes/Storage/pools" => return Some(Node::Pools),
            "/org/qubes/Storage/jobs" => return Some(Node::Jobs),
            _ => {}
        }
        if let Some(number) = path.strip_prefix(JOBS_PREFIX) {
            return job_number(number).map(Node::Job);
        }
        let rest = path.strip_prefix(POOLS_PREFIX)?;
        let mut parts = rest.split('/');
        let pool = PoolName::parse(&decode_element(parts.next()?)?).ok()?;
        match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => Some(Node::Pool(pool)),
            (Some("volumes"), None, _) => Some(Node::Volumes(pool)),
            (Some("volumes"), Some(vid), None) => {
                let vid = Vid::parse(&decode_element(vid)?).ok()?;
                Some(Node::Volume(VolumeRef { pool, vid }))
            }
            _ => None,
        }
    }
}

/// A job number as its path writes it: decimal, no sign, no leading zero.
fn job_number(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// Encodes `name` as one object path element (`sd_bus_path_encode`).
pub fn encode_element(name: &str) -> String {
    if name.is_empty() {
        return "_".to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() {
            out.push(byte as char);
        } else {
            out.push_str(&format!("_{byte:02x}"));
        }
    }
    out
}

/// Decodes one path element produced by [`encode_element`]; `None` for anything the
/// encoder would not produce (uppercase hex, a stray `_`, a non-UTF-8 result).
pub fn decode_element(element: &str) -> Option<String> {
    match element {
        "" => return None,
        "_" => return Some(String::new()),
        _ => {}
    }
    let bytes = element.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                out.push(decode_escape(bytes.get(i + 1..i + 3)?)?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The byte of a two-digit lowercase hex escape, if it is one the encoder writes (an
/// escaped alphanumeric byte would make the encoding ambiguous).
fn decode_escape(hex: &[u8]) -> Option<u8> {
    let is_lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if !hex.iter().all(is_lower_hex) {
        return None;
    }
    let byte = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
    (!byte.is_ascii_alphanumeric()).then_some(byte)
}

fn owned(path: String) -> OwnedObjectPath {
    OwnedObjectPath::try_from(path).expect("an encoded path is a valid object path")
}

pub fn manager_path() -> OwnedObjectPath {
    owned(MANAGER_PATH.to_owned())
}

pub fn pool_path(pool: &PoolName) -> OwnedObjectPath {
    owned(format!("{POOLS_PREFIX}{}", encode_element(pool.as_str())))
}

pub fn volume_path(vol: &VolumeRef) -> OwnedObjectPath {
    owned(format!(
        "{POOLS_PREFIX}{}{VOLUMES_SEGMENT}{}",
        encode_element(vol.pool.as_str()),
        encode_element(&vol.vid.to_string())
    ))
}

pub fn job_path(number: u64) -> OwnedObjectPath {
    owned(format!("{JOBS_PREFIX}{number}"))
}

/// The `/` path, used for "no object" (e.g. a volume without source).
pub fn no_object() -> OwnedObjectPath {
    owned("/".to_owned())
}

/// The pool name and vid strings a volume path encodes, undecoded into engine types.
pub fn parse_volume_path(path: &ObjectPath<'_>) -> Option<(String, String)> {
    let rest = path.as_str().strip_prefix(POOLS_PREFIX)?;
    let (pool, vid) = rest.split_once(VOLUMES_SEGMENT)?;
    if vid.contains('/') {
        return None;
    }
    Some((decode_element(pool)?, decode_element(vid)?))
}

/// The volume a path names, if it is a well-formed volume path of valid names.
pub fn volume_ref_of_path(path: &ObjectPath<'_>) -> Option<VolumeRef> {
    let (pool, vid) = parse_volume_path(path)?;
    Some(VolumeRef {
        pool: PoolName::parse(&pool).ok()?,
        vid: Vid::parse(&vid).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_example_encodes_slashes() {
        let vol = VolumeRef {
            pool: PoolName::parse("varlibqubes").unwrap(),
            vid: Vid::parse("appvms/work/private").unwrap(),
        };
        assert_eq!(
            volume_path(&vol).as_str(),
            "/org/qubes/Storage/pools/varlibqubes/volumes/appvms_2fwork_2fprivate"
        );
    }

    #[test]
    fn empty_string_is_a_lone_underscore_both_ways() {
        assert_eq!(encode_element(""), "_");
        assert_eq!(decode_element("_").as_deref(), Some(""));
    }

    #[test]
    fn punctuation_and_non_ascii_bytes_are_escaped_lowercase() {
        assert_eq!(encode_element("a_b.c-d"), "a_5fb_2ec_2dd");
        assert_eq!(encode_element("ä"), "_c3_a4");
        assert_eq!(encode_element("A z"), "A_20z");
    }

    #[test]
    fn encoding_round_trips() {
        for name in [
            "",
            "x",
            "_",
            "__",
            "a/b/c",
            "vm-templates/fedora-42/root",
            "ä€😀",
            "a_20",
        ] {
            let encoded = encode_element(name);
            assert!(
                ObjectPath::try_from(format!("/{encoded}")).is_ok(),
                "{encoded}"
            );
            assert_eq!(decode_element(&encoded).as_deref(), Some(name), "{name:?}");
        }
    }

    #[test]
    fn decoding_refuses_what_the_encoder_never_writes() {
        for bad in ["_2F", "_2", "a_", "_61", "a_zz", "_c3", "a-b", ""] {
            assert_eq!(decode_element(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn nodes_are_classified_by_path() {
        let vol = VolumeRef {
            pool: PoolName::parse("p").unwrap(),
            vid: Vid::parse("appvms/a/private").unwrap(),
        };
        assert_eq!(Node::of("/"), Some(Node::Ancestor("org")));
        assert_eq!(Node::of(MANAGER_PATH), Some(Node::Manager));
        assert_eq!(
            Node::of(volume_path(&vol).as_str()),
            Some(Node::Volume(vol.clone()))
        );
        assert_eq!(
            Node::of("/org/qubes/Storage/pools/p/volumes"),
            Some(Node::Volumes(vol.pool.clone()))
        );
        assert_eq!(
            Node::of("/org/qubes/Storage/pools/p"),
            Some(Node::Pool(vol.pool))
        );
        assert_eq!(Node::of("/org/qubes/Storage/jobs/12"), Some(Node::Job(12)));
        for bad in [
            "/org/qubes/Storage/jobs/012",
            "/org/qubes/Storage/jobs/x",
            "/org/qubes/Storage/pools/p/other",
            "/org/qubes/Storage/pools/p/volumes/x/y",
            "/org/qubes/Storage/pools/p/volumes/bad",
            "/org/qubes/Storage/pools/1p",
            "/org/qubes/Other",
        ] {
            assert_eq!(Node::of(bad), None, "{bad}");
        }
    }

    #[test]
    fn volume_path_parses_back_to_its_ref() {
        let vol = VolumeRef {
            pool: PoolName::parse("pool_1.b").unwrap(),
            vid: Vid::parse("vm-templates/fedora-42/root").unwrap(),
        };
        let path = volume_path(&vol);
        assert_eq!(volume_ref_of_path(&path.as_ref()), Some(vol));
        assert_eq!(
            volume_ref_of_path(&pool_path(&PoolName::parse("p").unwrap()).as_ref()),
            None
        );
    }
}
