//! What the CLI shows about pools, volumes and revisions: plain structs built from the
//! service's property maps, serialised as-is for `--json` (sizes in bytes, snake_case
//! keys, volumes named by vid rather than object path) and rendered as tables by the
//! commands.

use serde::Serialize;

use crate::paths;
use crate::props::{PropertyMap, Props};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolInfo {
    pub name: String,
    pub driver: String,
    pub dir_path: String,
    pub setup_check: bool,
    pub revisions_to_keep: i64,
    pub ephemeral_volatile: bool,
    /// Bytes of the filesystem holding the pool; `None` when unknown.
    pub data_size: Option<u64>,
    pub data_usage: Option<u64>,
    pub included_in: Option<String>,
}

impl PoolInfo {
    pub fn from_properties(path: &str, map: &PropertyMap) -> PoolInfo {
        let props = Props(map);
        let usage = props.dict("UsageDetails");
        let usage = Props(&usage);
        PoolInfo {
            name: props
                .string("Name")
                .unwrap_or_else(|| paths::pool_of_path(path)),
            driver: props.string("Driver").unwrap_or_default(),
            dir_path: props.string("DirPath").unwrap_or_default(),
            setup_check: props.boolean("SetupCheck").unwrap_or(true),
            revisions_to_keep: props.int("RevisionsToKeep").unwrap_or(1),
            ephemeral_volatile: props.boolean("EphemeralVolatile").unwrap_or(false),
            data_size: usage.uint("data_size"),
            data_usage: usage.uint("data_usage"),
            included_in: props.string("IncludedIn").filter(|pool| !pool.is_empty()),
        }
    }

    /// Percentage of the filesystem in use, when both numbers are known.
    pub fn used_percent(&self) -> Option<f64> {
        match (self.data_usage, self.data_size) {
            (Some(used), Some(size)) if size > 0 => Some(used as f64 * 100.0 / size as f64),
            _ => None,
        }
    }
}

/// In JSON as `volume revisions --json` prints it (also inside `volume info --json`):
/// `nanoseconds`, and `time` in ISO 8601 beside `timestamp`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(into = "RevisionJson")]
pub struct Revision {
    pub id: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// The sub-second part of the timestamp.
    pub nanos: u32,
    /// `""` for none.
    pub description: String,
    pub pinned: bool,
    /// Bytes only this revision holds, as last measured; `None` when not measured.
    pub exclusive: Option<u64>,
}

/// A revision's JSON document.
#[derive(Serialize)]
struct RevisionJson {
    id: String,
    timestamp: i64,
    nanoseconds: u32,
    time: String,
    description: String,
    pinned: bool,
    /// Bytes only this revision holds, as last measured (`volume space`).
    exclusive: Option<u64>,
}

impl From<Revision> for RevisionJson {
    fn from(revision: Revision) -> RevisionJson {
        RevisionJson {
            time: crate::output::iso_utc(revision.timestamp),
            id: revision.id,
            timestamp: revision.timestamp,
            nanoseconds: revision.nanos,
            description: revision.description,
            pinned: revision.pinned,
            exclusive: revision.exclusive,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VolumeInfo {
    pub pool: String,
    pub vid: String,
    pub name: String,
    pub size: u64,
    pub usage: u64,
    pub rw: bool,
    pub snap_on_start: bool,
    pub save_on_stop: bool,
    /// vid of the source volume, in the same pool.
    pub source: Option<String>,
    pub revisions_to_keep: i64,
    pub ephemeral: bool,
    pub snapshots_disabled: bool,
    pub is_dirty: bool,
    pub is_outdated: bool,
    pub started: bool,
    pub revisions: Vec<Revision>,
    pub block_device_path: String,
}

impl VolumeInfo {
    /// The newest revision this volume has that `before` did not: the one an operation
    /// between the two kept (ids are never reused; the newest id alone may be an older
    /// revision that pruning left newest).
    pub fn revision_new_since(&self, before: &VolumeInfo) -> Option<&Revision> {
        self.revisions
            .iter()
            .rev()
            .find(|r| !before.revisions.iter().any(|old| old.id == r.id))
    }

    pub fn from_properties(path: &str, map: &PropertyMap) -> VolumeInfo {
        let props = Props(map);
        let (path_pool, path_vid) = match paths::Subject::of_path(path) {
            paths::Subject::Volume { pool, vid } => (pool, vid),
            _ => (String::new(), path.to_owned()),
        };
        let flag = |name: &str| props.boolean(name).unwrap_or(false);
        VolumeInfo {
            pool: props
                .string("Pool")
                .map_or(path_pool, |pool| paths::pool_of_path(&pool)),
            vid: props.string("Vid").unwrap_or(path_vid),
            name: props.string("Name").unwrap_or_default(),
            size: props.uint("Size").unwrap_or(0),
            usage: props.uint("Usage").unwrap_or(0),
            rw: flag("Rw"),
            snap_on_start: flag("SnapOnStart"),
            save_on_stop: flag("SaveOnStop"),
            source: props
                .string("Source")
                .and_then(|source| paths::vid_of_path(&source)),
            revisions_to_keep: props.int("RevisionsToKeep").unwrap_or(0),
            ephemeral: flag("Ephemeral"),
            snapshots_disabled: flag("SnapshotsDisabled"),
            is_dirty: flag("IsDirty"),
            is_outdated: flag("IsOutdated"),
            started: flag("Started"),
            revisions: revisions_of(&props),
            block_device_path: props.string("BlockDevicePath").unwrap_or_default(),
        }
    }

    /// `rw`/`ro` plus the volume's kind, e.g. `rw,save` or `ro,snap,eph`.
    pub fn mode(&self) -> String {
        let mut words = vec![if self.rw { "rw" } else { "ro" }];
        if self.snap_on_start {
            words.push("snap");
        }
        if self.save_on_stop {
            words.push("save");
        }
        if self.ephemeral {
            words.push("eph");
        }
        words.join(",")
    }

    /// `started`/`stopped`, plus `dirty` and `outdated` when they hold.
    pub fn state(&self) -> String {
        let mut words = vec![if self.started { "started" } else { "stopped" }];
        if self.is_dirty && !self.started {
            words.push("dirty");
        }
        if self.is_outdated {
            words.push("outdated");
        }
        words.join(",")
    }
}

/// The revisions, with their details when the service has `RevisionDetails`.
fn revisions_of(props: &Props<'_>) -> Vec<Revision> {
    let details = props.revision_details("RevisionDetails");
    props
        .revisions("Revisions")
        .into_iter()
        .map(|(id, timestamp)| {
            let detail = details
                .iter()
                .find(|d| d.id == id && d.timestamp == timestamp);
            Revision {
                nanos: detail.map_or(0, |d| d.nanos),
                description: detail.map(|d| d.description.clone()).unwrap_or_default(),
                pinned: detail.is_some_and(|d| d.pinned),
                exclusive: detail.and_then(|d| u64::try_from(d.exclusive).ok()),
                id,
                timestamp,
            }
        })
        .collect()
}

impl Revision {
    /// The revision as a sentence names it: `revision 3 (2024-01-01T12:00:00Z, "before
    /// the upgrade")`.
    pub fn label(&self) -> String {
        let time = crate::output::iso_utc(self.timestamp);
        match self.description.as_str() {
            "" => format!("revision {} ({time})", self.id),
            text => format!("revision {} ({time}, {text:?})", self.id),
        }
    }
}

/// A copy job as the service publishes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobInfo {
    pub operation: String,
    pub objects: Vec<String>,
    pub progress: f64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub rate: u64,
    pub cancelable: bool,
    /// The uid of the caller whose call made the job.
    pub started_by: Option<u32>,
}

impl JobInfo {
    /// A job as first announced; one that does not say whether it can be cancelled
    /// counts as cancelable (a Cancel it does not heed changes nothing).
    pub fn from_properties(map: &PropertyMap) -> JobInfo {
        let mut job = JobInfo {
            cancelable: true,
            ..JobInfo::default()
        };
        job.update(map);
        job
    }

    /// Applies a `PropertiesChanged` map (or the first full one).
    pub fn update(&mut self, map: &PropertyMap) {
        let props = Props(map);
        if let Some(operation) = props.string("Operation") {
            self.operation = operation;
        }
        if map.contains_key("Objects") {
            self.objects = props.strings("Objects");
        }
        self.progress = props.float("Progress").unwrap_or(self.progress);
        self.bytes_total = props.uint("BytesTotal").unwrap_or(self.bytes_total);
        self.bytes_done = props.uint("BytesDone").unwrap_or(self.bytes_done);
        self.rate = props.uint("Rate").unwrap_or(self.rate);
        self.cancelable = props.boolean("Cancelable").unwrap_or(self.cancelable);
        if let Some(uid) = props.uint("StartedByUID") {
            self.started_by = u32::try_from(uid).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::props::tests::map;
    use zbus::{ObjectPath, Variant};

    fn volume_props() -> PropertyMap {
        let pool = ObjectPath::try_from(paths::pool_path("p")).unwrap();
        let source = ObjectPath::try_from(paths::volume_path("p", "vm-templates/t/root")).unwrap();
        map(vec![
            ("Vid", Variant::from("appvms/work/root")),
            ("Pool", Variant::from(pool)),
            ("Size", Variant::from(2u64 << 30)),
            ("Rw", Variant::from(true)),
            ("SnapOnStart", Variant::from(true)),
            ("Source", Variant::from(source)),
            ("Started", Variant::from(true)),
            ("Revisions", Variant::from(vec![("3".to_owned(), 17i64)])),
        ])
    }

    #[test]
    fn volume_names_its_pool_and_source_by_name() {
        let path = paths::volume_path("p", "appvms/work/root");
        let volume = VolumeInfo::from_properties(&path, &volume_props());
        assert_eq!(volume.pool, "p");
        assert_eq!(volume.vid, "appvms/work/root");
        assert_eq!(volume.source.as_deref(), Some("vm-templates/t/root"));
        assert_eq!(
            volume.revisions,
            [Revision {
                id: "3".into(),
                timestamp: 17,
                ..Revision::default()
            }]
        );
        assert_eq!(volume.mode(), "rw,snap");
        assert_eq!(volume.state(), "started");
    }

    #[test]
    fn revisions_carry_their_details_when_the_service_has_them() {
        let mut props = volume_props();
        let details = vec![("3".to_owned(), 17i64, 5u32, "known good", true, 4096i64)];
        props.insert(
            "RevisionDetails".into(),
            crate::props::tests::owned(Variant::from(details)),
        );
        let volume = VolumeInfo::from_properties(&paths::volume_path("p", "appvms/a/b"), &props);
        let revision = &volume.revisions[0];
        assert_eq!(
            (
                revision.nanos,
                revision.description.as_str(),
                revision.pinned,
                revision.exclusive
            ),
            (5, "known good", true, Some(4096))
        );
        assert_eq!(
            revision.label(),
            "revision 3 (1970-01-01T00:00:17Z, \"known good\")"
        );
    }

    #[test]
    fn volume_without_source_has_none() {
        let root = ObjectPath::try_from("/").unwrap();
        let props = map(vec![("Source", Variant::from(root))]);
        let volume = VolumeInfo::from_properties(&paths::volume_path("p", "appvms/a/b"), &props);
        assert_eq!(volume.source, None);
        assert_eq!(volume.vid, "appvms/a/b");
        assert_eq!(volume.pool, "p");
    }

    #[test]
    fn pool_usage_is_optional() {
        let props = map(vec![
            ("Name", Variant::from("p")),
            ("IncludedIn", Variant::from("")),
        ]);
        let pool = PoolInfo::from_properties(&paths::pool_path("p"), &props);
        assert_eq!(pool.data_size, None);
        assert_eq!(pool.used_percent(), None);
        assert_eq!(pool.included_in, None);
    }

    #[test]
    fn job_updates_keep_unchanged_fields() {
        let mut job = JobInfo::from_properties(&map(vec![
            ("Operation", Variant::from("clone")),
            ("BytesTotal", Variant::from(100u64)),
        ]));
        job.update(&map(vec![("BytesDone", Variant::from(40u64))]));
        assert_eq!(
            (job.operation.as_str(), job.bytes_total, job.bytes_done),
            ("clone", 100, 40)
        );
    }
}
