//! Validated names and numbers: caller input becomes one of these types at the edge,
//! and engine functions take only these. A [`Vid`] can never reach outside its pool:
//! it is exactly `appvms/<vm>/<name>` or `vm-templates/<vm>/<name>` with both parts
//! matching `^[A-Za-z][A-Za-z0-9_.-]{0,63}$`, so it holds no `..`, no `/` beyond the two
//! separators, no NUL and nothing absolute. An [`ImageSize`] is a whole number of
//! sectors that a file can have. Every refusal is `InvalidArgument` with one sentence
//! that quotes at most [`QUOTE_MAX`] characters of what the caller sent ([`quote`]), so
//! a megabyte-long name never comes back in an error.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// The most characters of caller-supplied text an error message quotes.
pub const QUOTE_MAX: usize = 100;

/// Caller-supplied text for a message: Debug-quoted and escaped, cut after
/// [`QUOTE_MAX`] characters of output with `…` and the full length in bytes.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for (taken, c) in s.chars().enumerate() {
        let escaped: String = c.escape_debug().collect();
        if taken >= QUOTE_MAX || out.len() + escaped.len() > QUOTE_MAX + 1 {
            return format!("{out}\"… ({} bytes)", s.len());
        }
        out.push_str(&escaped);
    }
    out.push('"');
    out
}

fn is_part(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The two VM directory prefixes a pool holds (udev hides loop devices under both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum VmClass {
    #[serde(rename = "appvms")]
    AppVm,
    #[serde(rename = "vm-templates")]
    Template,
}

impl VmClass {
    pub const ALL: [VmClass; 2] = [VmClass::AppVm, VmClass::Template];

    pub fn dir_name(self) -> &'static str {
        match self {
            VmClass::AppVm => "appvms",
            VmClass::Template => "vm-templates",
        }
    }
}

/// Suffixes a volume name must not end in: `<name>.img` of such a volume would be a
/// file of its sibling (`private-dirty` → `private-dirty.img`, the dirty image of
/// `private`).
const RESERVED_SUFFIXES: [&str; 4] = ["-dirty", "-precache", "-import", "-cow"];

/// A volume id inside a pool: `appvms/<vm>/<name>` or `vm-templates/<vm>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Vid {
    class: VmClass,
    vm: String,
    name: String,
}

impl Vid {
    pub fn parse(s: &str) -> Result<Vid> {
        let bad =
            |why: &str| EngineError::invalid(format!("invalid volume id {}: {why}", quote(s)));
        let mut parts = s.split('/');
        let (Some(prefix), Some(vm), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(
                "expected appvms/<vm>/<name> or vm-templates/<vm>/<name>",
            ));
        };
        let class = match prefix {
            "appvms" => VmClass::AppVm,
            "vm-templates" => VmClass::Template,
            _ => return Err(bad("the first part must be appvms or vm-templates")),
        };
        if !is_part(vm) || !is_part(name) {
            return Err(bad(
                "VM and volume names must match ^[A-Za-z][A-Za-z0-9_.-]{0,63}$",
            ));
        }
        if let Some(suffix) = RESERVED_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
            return Err(bad(&format!(
                "a volume name ending in {suffix} would collide with a sibling volume's files"
            )));
        }
        Ok(Vid {
            class,
            vm: vm.to_owned(),
            name: name.to_owned(),
        })
    }

    pub fn class(&self) -> VmClass {
        self.class
    }
    pub fn vm(&self) -> &str {
        &self.vm
    }
    /// The volume name (last component), e.g. `private`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `appvms/<vm>`: the VM directory relative to the pool directory.
    pub fn vm_dir(&self) -> String {
        format!("{}/{}", self.class.dir_name(), self.vm)
    }
}

impl fmt::Display for Vid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.class.dir_name(), self.vm, self.name)
    }
}

impl TryFrom<String> for Vid {
    type Error = EngineError;
    fn try_from(s: String) -> Result<Vid> {
        Vid::parse(&s)
    }
}

impl From<Vid> for String {
    fn from(v: Vid) -> String {
        v.to_string()
    }
}

/// A pool name: `^[A-Za-z][A-Za-z0-9_.-]{0,63}$`. Qubes allows `[A-Za-z0-9_.-]`; the
/// first character is restricted so that `.` and `..` cannot be names (the name is also
/// a file name in the state directory), and to a letter so that the contract's path
/// escaping and sd-bus's `sd_bus_path_encode` (which also escapes a leading digit) give
/// the same object path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PoolName(String);

impl PoolName {
    pub fn parse(s: &str) -> Result<PoolName> {
        let mut chars = s.chars();
        let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
            && s.len() <= 64
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if ok {
            Ok(PoolName(s.to_owned()))
        } else {
            Err(EngineError::invalid(format!(
                "invalid pool name {}: it must match ^[A-Za-z][A-Za-z0-9_.-]{{0,63}}$",
                quote(s)
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PoolName {
    type Error = EngineError;
    fn try_from(s: String) -> Result<PoolName> {
        PoolName::parse(&s)
    }
}

impl From<PoolName> for String {
    fn from(v: PoolName) -> String {
        v.0
    }
}

/// `revisions_to_keep`: a count ≥ 0, or −1 = "snapshots disabled".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct RevisionsToKeep(i32);

impl RevisionsToKeep {
    pub const DEFAULT: RevisionsToKeep = RevisionsToKeep(1);
    pub const DISABLED: RevisionsToKeep = RevisionsToKeep(-1);

    pub fn new(n: i64) -> Result<RevisionsToKeep> {
        if (-1..=i32::MAX as i64).contains(&n) {
            Ok(RevisionsToKeep(n as i32))
        } else {
            Err(EngineError::invalid(format!(
                "revisions_to_keep must be -1 or more, not {n}"
            )))
        }
    }
    pub fn get(self) -> i32 {
        self.0
    }
    pub fn is_disabled(self) -> bool {
        self.0 == -1
    }
    /// How many revisions commits keep: −1 keeps none (R§9.1 item 7, fixed: the
    /// reference added and then pruned one).
    pub fn keep(self) -> usize {
        self.0.max(0) as usize
    }
}

impl TryFrom<i64> for RevisionsToKeep {
    type Error = EngineError;
    fn try_from(n: i64) -> Result<Self> {
        RevisionsToKeep::new(n)
    }
}

impl From<RevisionsToKeep> for i64 {
    fn from(v: RevisionsToKeep) -> i64 {
        v.0 as i64
    }
}

/// The size of an image a caller asks for (CreateVolume, Resize, ImportData): a whole
/// number of 512-byte sectors (contract rev 2), below 2^63 (the largest size a file
/// can have; `off_t` is signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageSize(u64);

impl ImageSize {
    pub const SECTOR: u64 = 512;
    /// The first size a file cannot have.
    pub const LIMIT: u64 = 1 << 63;

    pub fn new(bytes: u64) -> Result<ImageSize> {
        if bytes >= Self::LIMIT {
            return Err(EngineError::invalid(format!(
                "size {bytes} is too large: an image holds less than 2^63 bytes"
            )));
        }
        if bytes % Self::SECTOR != 0 {
            return Err(EngineError::invalid(format!(
                "size {bytes} is not a multiple of {} bytes (a sector)",
                Self::SECTOR
            )));
        }
        Ok(ImageSize(bytes))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vid_accepts_the_two_prefixes() {
        let v = Vid::parse("appvms/work/private").unwrap();
        assert_eq!(
            (v.class(), v.vm(), v.name()),
            (VmClass::AppVm, "work", "private")
        );
        assert_eq!(v.to_string(), "appvms/work/private");
        assert!(Vid::parse("vm-templates/fedora-42/root").is_ok());
    }

    #[test]
    fn vid_refuses_everything_that_could_escape_the_pool() {
        for bad in [
            "",
            "appvms",
            "appvms/work",
            "appvms/work/private/x",
            "/appvms/work/private",
            "appvms/../private",
            "appvms/work/..",
            "appvms/./private",
            "appvms/work/pri\0vate",
            "appvms//private",
            "other/work/private",
            "appvms/work/.hidden",
            "appvms/1work/private",
            "appvms/work/private-dirty",
            "appvms/work/root-import",
        ] {
            assert!(Vid::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("appvms/{}/private", "a".repeat(65));
        assert!(Vid::parse(&long).is_err());
        let ok = format!("appvms/{}/private", "a".repeat(64));
        assert!(Vid::parse(&ok).is_ok());
    }

    #[test]
    fn pool_name_refuses_dots_and_slashes() {
        for bad in ["", ".", "..", "a/b", "-x", "a b", "ä", "1pool"] {
            assert!(PoolName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(PoolName::parse("varlibqubes").is_ok());
        assert!(PoolName::parse("pool_1.b-c").is_ok());
    }

    #[test]
    fn a_megabyte_name_is_quoted_in_at_most_a_hundred_characters() {
        let huge = "x".repeat(1 << 20);
        let err = Vid::parse(&huge).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert!(err.to_string().len() < 300, "{}", err.to_string().len());
        assert!(err.to_string().contains("(1048576 bytes)"), "{err}");
        let err = PoolName::parse(&huge).unwrap_err();
        assert!(err.to_string().len() < 300, "{}", err.to_string().len());
    }

    #[test]
    fn quote_escapes_and_cuts_on_character_boundaries() {
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        let long = "ä\n".repeat(200);
        let quoted = quote(&long);
        assert!(quoted.len() <= QUOTE_MAX + 40, "{quoted}");
        assert!(quoted.ends_with("… (600 bytes)"), "{quoted}");
    }

    #[test]
    fn image_sizes_are_whole_sectors_below_two_to_the_63() {
        assert_eq!(ImageSize::new(0).unwrap().get(), 0);
        assert_eq!(ImageSize::new(1 << 30).unwrap().get(), 1 << 30);
        assert!(ImageSize::new((1 << 63) - 512).is_ok());
        for bad in [1, 511, 1000, 1 << 63, u64::MAX, (1 << 63) + 512] {
            let err = ImageSize::new(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn revisions_to_keep_bounds() {
        assert!(RevisionsToKeep::new(-2).is_err());
        assert_eq!(RevisionsToKeep::new(-1).unwrap().keep(), 0);
        assert_eq!(RevisionsToKeep::new(3).unwrap().keep(), 3);
    }
}
