//! The on-disk names of one volume, exactly those of the Qubes `file-reflink` driver
//! (R§2.2), so an existing pool directory is usable as it is:
//!
//! | file      | name                                   |
//! |-----------|----------------------------------------|
//! | clean     | `<B>.img`                              |
//! | dirty     | `<B>-dirty.img`                        |
//! | precache  | `<B>-precache.img`                     |
//! | import    | `<B>-import.img`                       |
//! | revision  | `<B>.img.<N>@YYYY-MM-DDThh:mm:ssZ`     |
//! | temp      | `<final name>~<8 chars of [a-z0-9_]>`  |
//! | discarded | `<final name>~reap-<8 chars of [a-z0-9_]>` |
//!
//! with `B = <pool dir>/<vid>`. Temp files are recognised by exact name (this volume's
//! own final names plus the suffix), never by prefix, so a volume `priv` never touches
//! the files of a sibling `private` (deliberate fix 3).
//!
//! A *discarded* file is one an operation took out of the committed state by renaming
//! it (a pruned revision, an outdated precache, a stopped snapshot's image): the name
//! change is made durable with the operation, the slow unlink happens after its reply
//! ([`crate::background`]) or, after a crash, in the start-up sweep. The reference's
//! glob of incomplete files (`<B>*.img*~*`) matches these names too.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::names::Vid;

/// One revision, as its file name says: its numeric id and the Unix seconds of its
/// timestamp (the clean image's mtime when it was taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision {
    pub id: u64,
    pub timestamp: i64,
}

/// Length of the random part of a temp name.
pub const TEMP_RANDOM_LEN: usize = 8;
const REVISION_TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// All names and paths of one volume. The engine reaches files by [`Self::vm_dir_rel`]
/// beneath the pool directory's fd and then by file name (see [`crate::dir`]); the
/// absolute paths are for messages, the block device path and tests.
#[derive(Debug, Clone)]
pub struct VolumePaths {
    pool_dir: PathBuf,
    dir: PathBuf,
    vm_dir_rel: String,
    name: String,
}

impl VolumePaths {
    pub fn new(pool_dir: &Path, vid: &Vid) -> VolumePaths {
        VolumePaths {
            pool_dir: pool_dir.to_owned(),
            dir: pool_dir.join(vid.vm_dir()),
            vm_dir_rel: vid.vm_dir(),
            name: vid.name().to_owned(),
        }
    }

    /// The pool directory.
    pub fn pool_dir(&self) -> &Path {
        &self.pool_dir
    }
    /// The VM directory holding every file of the volume.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The VM directory relative to the pool directory: `appvms/<vm>`.
    pub fn vm_dir_rel(&self) -> &str {
        &self.vm_dir_rel
    }
    /// `appvms` or `vm-templates`.
    pub fn class_dir_name(&self) -> &str {
        self.vm_dir_rel
            .split_once('/')
            .map_or("", |(class, _)| class)
    }
    /// The VM's directory name inside its class directory.
    pub fn vm_name(&self) -> &str {
        self.vm_dir_rel.split_once('/').map_or("", |(_, vm)| vm)
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn clean_name(&self) -> String {
        format!("{}.img", self.name)
    }
    pub fn dirty_name(&self) -> String {
        format!("{}-dirty.img", self.name)
    }
    pub fn precache_name(&self) -> String {
        format!("{}-precache.img", self.name)
    }
    pub fn import_name(&self) -> String {
        format!("{}-import.img", self.name)
    }
    pub fn revision_name(&self, id: u64, timestamp: i64) -> String {
        revision_file_name(&self.name, id, timestamp)
    }
    pub fn clean(&self) -> PathBuf {
        self.dir.join(self.clean_name())
    }
    pub fn dirty(&self) -> PathBuf {
        self.dir.join(self.dirty_name())
    }
    pub fn precache(&self) -> PathBuf {
        self.dir.join(self.precache_name())
    }
    pub fn import(&self) -> PathBuf {
        self.dir.join(self.import_name())
    }
    pub fn revision(&self, id: u64, timestamp: i64) -> PathBuf {
        self.dir.join(self.revision_name(id, timestamp))
    }

    /// Is `file_name` (an entry of [`Self::dir`]) an incomplete temp file of *this*
    /// volume: one of its own final names followed by `~` and the random part?
    pub fn is_own_temp(&self, file_name: &str) -> bool {
        let Some((base, random)) = file_name.rsplit_once('~') else {
            return false;
        };
        is_random_part(random) && self.is_own_final_name(base)
    }

    /// Is `file_name` a discarded file of *this* volume: one of its own final names
    /// followed by `~reap-` and the random part?
    pub fn is_own_discard(&self, file_name: &str) -> bool {
        let Some((base, random)) = file_name.rsplit_once(REAP_MARK) else {
            return false;
        };
        is_random_part(random) && self.is_own_final_name(base)
    }

    /// One of this volume's final names: clean, dirty, precache, import or a revision.
    fn is_own_final_name(&self, base: &str) -> bool {
        base == self.clean_name()
            || base == self.dirty_name()
            || base == self.precache_name()
            || base == self.import_name()
            || parse_revision_name(&self.name, base).is_some()
    }
}

/// Is `file_name` an incomplete temp file of *some* volume — one of the final names
/// of any valid volume name, followed by `~` and the random part? This is how the
/// service (and the reference driver) names its temps, so such a file is garbage of an
/// interrupted write, whoever's volume it is; a file the user named otherwise is not.
pub fn is_volume_temp(file_name: &str) -> bool {
    let Some((base, _)) = file_name.rsplit_once('~') else {
        return false;
    };
    owner_of(base).is_some_and(|paths| paths.is_own_temp(file_name))
}

/// Is `file_name` a discarded file of *some* volume: one of the final names of any
/// valid volume name, followed by `~reap-` and the random part?
pub fn is_volume_discard(file_name: &str) -> bool {
    let Some((base, _)) = file_name.rsplit_once(REAP_MARK) else {
        return false;
    };
    owner_of(base).is_some_and(|paths| paths.is_own_discard(file_name))
}

/// The volume (in a VM directory of no importance) whose final name `base` could be.
fn owner_of(base: &str) -> Option<VolumePaths> {
    let name = match base.strip_suffix(".img") {
        Some(image) => ["-dirty", "-precache", "-import"]
            .iter()
            .find_map(|suffix| image.strip_suffix(suffix))
            .unwrap_or(image),
        None => base.rsplit_once(".img.").map_or("", |(name, _)| name),
    };
    let vid = Vid::parse(&format!("appvms/vm/{name}")).ok()?;
    Some(VolumePaths::new(Path::new(""), &vid))
}

/// What separates a discarded file's final name from its random part.
pub const REAP_MARK: &str = "~reap-";

/// The random part of temp and discarded names: 8 characters of `[a-z0-9_]`.
fn is_random_part(random: &str) -> bool {
    random.len() == TEMP_RANDOM_LEN
        && random
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `<name>.img.<id>@<timestamp>Z`.
pub fn revision_file_name(volume_name: &str, id: u64, timestamp: i64) -> String {
    let ts = DateTime::<Utc>::from_timestamp(timestamp, 0)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .format(REVISION_TS_FORMAT);
    format!("{volume_name}.img.{id}@{ts}Z")
}

/// Does `file_name` have the shape of a revision of `volume_name` (the reference's glob
/// `<name>.img.*?@????-??-??T??:??:??Z`)? Then `Some(parse result)`: `Ok((id, unix
/// seconds))` when it parses, `Err(())` for a stray name of that shape that does not
/// (deliberate fix 6: such a name is ignored with a warning, it breaks nothing).
pub fn match_revision_name(volume_name: &str, file_name: &str) -> Option<Result<(u64, i64), ()>> {
    let rest = file_name.strip_prefix(volume_name)?.strip_prefix(".img.")?;
    let rest = rest.strip_suffix('Z')?;
    let at = rest.len().checked_sub(20)?;
    if !rest.is_char_boundary(at) || at == 0 {
        return None;
    }
    let (id, ts) = rest.split_at(at);
    let ts = ts.strip_prefix('@')?;
    if !glob_timestamp_shape(ts) {
        return None;
    }
    // Only a name this code would write counts: `07@…` or a 60th second parse, but
    // the file could then never be found again by its (id, timestamp) — a stray.
    let parsed = parse_revision_parts(id, ts)
        .filter(|&(id, t)| revision_file_name(volume_name, id, t) == file_name);
    Some(parsed.ok_or(()))
}

fn parse_revision_name(volume_name: &str, file_name: &str) -> Option<(u64, i64)> {
    match_revision_name(volume_name, file_name)?.ok()
}

/// `????-??-??T??:??:??` with `?` any single character.
fn glob_timestamp_shape(ts: &str) -> bool {
    let chars: Vec<char> = ts.chars().collect();
    chars.len() == 19
        && chars[4] == '-'
        && chars[7] == '-'
        && chars[10] == 'T'
        && chars[13] == ':'
        && chars[16] == ':'
}

fn parse_revision_parts(id: &str, ts: &str) -> Option<(u64, i64)> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: u64 = id.parse().ok()?;
    let ts = NaiveDateTime::parse_from_str(ts, REVISION_TS_FORMAT).ok()?;
    Some((id, ts.and_utc().timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> VolumePaths {
        VolumePaths::new(
            Path::new("/pool"),
            &Vid::parse("appvms/work/private").unwrap(),
        )
    }

    #[test]
    fn file_names_match_the_reference_layout() {
        let p = paths();
        assert_eq!(p.vm_dir_rel(), "appvms/work");
        assert_eq!((p.class_dir_name(), p.vm_name()), ("appvms", "work"));
        assert_eq!(p.dirty_name(), "private-dirty.img");
        assert_eq!(p.clean(), Path::new("/pool/appvms/work/private.img"));
        assert_eq!(p.dirty(), Path::new("/pool/appvms/work/private-dirty.img"));
        assert_eq!(
            p.precache(),
            Path::new("/pool/appvms/work/private-precache.img")
        );
        assert_eq!(
            p.import(),
            Path::new("/pool/appvms/work/private-import.img")
        );
        // 2024-05-01T12:00:03Z
        assert_eq!(
            p.revision(7, 1_714_564_803),
            Path::new("/pool/appvms/work/private.img.7@2024-05-01T12:00:03Z")
        );
    }

    #[test]
    fn revision_names_parse_back() {
        assert_eq!(
            match_revision_name("private", "private.img.7@2024-05-01T12:00:03Z"),
            Some(Ok((7, 1_714_564_803)))
        );
        assert_eq!(
            match_revision_name("private", "private.img.123@1970-01-01T00:00:00Z"),
            Some(Ok((123, 0)))
        );
    }

    #[test]
    fn stray_revision_shaped_names_are_recognised_but_do_not_parse() {
        for not_canonical in [
            "private.img.07@2024-05-01T12:00:03Z",
            "private.img.7@2024-05-01T12:00:60Z",
        ] {
            assert_eq!(
                match_revision_name("private", not_canonical),
                Some(Err(())),
                "{not_canonical}"
            );
        }
        assert_eq!(
            match_revision_name("private", "private.img.x@2024-05-01T12:00:03Z"),
            Some(Err(()))
        );
        assert_eq!(
            match_revision_name("private", "private.img.1@2@24-05-01T12:00:03Z"),
            Some(Err(()))
        );
        assert_eq!(
            match_revision_name("private", "private.img.1@2024-13-01T12:00:03Z"),
            Some(Err(()))
        );
    }

    #[test]
    fn other_names_are_not_revisions() {
        for name in [
            "private.img",
            "private.img@2018-01-02T03:04:05Z", // the 2018 format without id
            "private.img.@2024-05-01T12:00:03Z",
            "private.img.7@2024-05-01T12:00:03Z~abcdefgh",
            "priv.img.7@2024-05-01T12:00:03Z",
            "private2.img.7@2024-05-01T12:00:03Z",
        ] {
            assert_eq!(match_revision_name("private", name), None, "{name}");
        }
    }

    #[test]
    fn temps_of_any_volume_are_recognised_and_nothing_else() {
        for temp in [
            "private.img~abc_1234",
            "root-dirty.img~k3j_9x0q",
            "my.vol-precache.img~aaaaaaaa",
            "x-import.img~00000000",
            "private.img.4@2024-05-01T12:00:03Z~a8b7c6d5",
        ] {
            assert!(is_volume_temp(temp), "{temp}");
        }
        for other in [
            "private.img",
            "private.img~short",
            "private.img~ABCDEFGH",
            "notes.txt~abcdefgh",
            "private.img.07@2024-05-01T12:00:03Z~abcdefgh",
            "1private.img~abcdefgh",
            ".reflink-probe~abcdefgh",
            "private-dirty.img~abcdefgh~abcdefgh",
        ] {
            assert!(!is_volume_temp(other), "{other}");
        }
    }

    #[test]
    fn discarded_files_are_recognised_and_are_not_temps() {
        let p = paths();
        for discard in [
            "private.img~reap-abc_1234",
            "private-precache.img~reap-aaaaaaaa",
            "private-dirty.img~reap-00000000",
            "private.img.4@2024-05-01T12:00:03Z~reap-a8b7c6d5",
        ] {
            assert!(p.is_own_discard(discard), "{discard}");
            assert!(is_volume_discard(discard), "{discard}");
            assert!(!p.is_own_temp(discard), "{discard}");
            assert!(!is_volume_temp(discard), "{discard}");
        }
        for other in [
            "private.img~abcdefgh",
            "private.img~reap-short",
            "private.img~reap-ABCDEFGH",
            "notes.txt~reap-abcdefgh",
            "root.img~reap-abcdefgh",
        ] {
            assert!(!p.is_own_discard(other), "{other}");
        }
        assert!(is_volume_discard("root.img~reap-abcdefgh"));
        assert!(!is_volume_discard("notes.txt~reap-abcdefgh"));
    }

    #[test]
    fn own_temp_files_match_exactly() {
        let p = paths();
        for own in [
            "private.img~abc_1234",
            "private-dirty.img~k3j_9x0q",
            "private-precache.img~aaaaaaaa",
            "private-import.img~00000000",
            "private.img.4@2024-05-01T12:00:03Z~a8b7c6d5",
        ] {
            assert!(p.is_own_temp(own), "{own}");
        }
        for other in [
            "private.img",
            "private.img~short",
            "private.img~ABCDEFGH",
            "private2.img~abcdefgh",
            "priv.img~abcdefgh",
            "private-dirty.img~abcdefgh~abcdefgh",
            "root.img~abcdefgh",
        ] {
            assert!(!p.is_own_temp(other), "{other}");
        }
        // The sibling `priv` must not claim `private`'s temp files.
        let priv_ = VolumePaths::new(Path::new("/pool"), &Vid::parse("appvms/work/priv").unwrap());
        assert!(!priv_.is_own_temp("private.img~abcdefgh"));
        assert!(!priv_.is_own_temp("private-dirty.img~abcdefgh"));
    }
}
