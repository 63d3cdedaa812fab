//! The announced property values of pools, volumes and jobs — the one table of
//! properties. Each object keeps the values it last announced; after every call that
//! may change an object the bus layer reads the engine's live view again, and the
//! properties whose values differ go out in one `PropertiesChanged` carrying the new
//! values, before the reply of the call (a volume's are compared field by field, and
//! only the changed ones are turned into D-Bus values: [`VolumeValues::changes_since`]). Get, GetAll, GetManagedObjects and
//! InterfacesAdded are all served from [`VolumeValues::entries`] and its siblings, so
//! what a client reads and what the signals said never disagree.
//!
//! Not here: `Usage` and `UsageDetails`, which change with every write of a running VM,
//! are read live and never announced (see `live.rs`). The names and types here must
//! match `dbus/*.xml`; the tests at the bottom check them.

use qubes_storage_engine::{PoolInfo, RevisionDetails, VolumeInfo, VolumeRef, VolumeSettings};
use zbus::{ObjectPath, OwnedObjectPath, Variant};

use crate::bus::path;

/// One property's name and value.
pub type Entry<'a> = (&'static str, Variant<'a>);

/// The announced state of a volume (all but `Usage`), compact: object paths and the
/// name are derived from the volume's identity when they are serialised.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeValues {
    pub size: u64,
    pub rw: bool,
    pub snap_on_start: bool,
    pub save_on_stop: bool,
    pub source: Option<qubes_storage_engine::Vid>,
    pub revisions_to_keep: i32,
    pub ephemeral: bool,
    pub snapshots_disabled: bool,
    pub is_dirty: bool,
    pub is_outdated: bool,
    pub started: bool,
    pub revisions: Vec<(u64, i64)>,
    pub revision_details: Vec<RevisionEntry>,
    pub block_device_path: String,
}

/// One entry of `RevisionDetails`: id, seconds, nanoseconds, description, pinned,
/// exclusive bytes (-1: not measured).
pub type RevisionEntry = (u64, i64, u32, String, bool, i64);

fn revision_entry(d: &RevisionDetails) -> RevisionEntry {
    let exclusive = d
        .exclusive
        .map_or(-1, |bytes| i64::try_from(bytes).unwrap_or(i64::MAX));
    (
        d.revision.id,
        d.revision.timestamp,
        d.nanos,
        d.description.clone(),
        d.pinned,
        exclusive,
    )
}

impl VolumeValues {
    pub fn of(info: &VolumeInfo) -> VolumeValues {
        let config = &info.config;
        VolumeValues {
            size: info.size,
            rw: config.rw,
            snap_on_start: config.snap_on_start,
            save_on_stop: config.save_on_stop,
            source: config.source.clone(),
            revisions_to_keep: config.revisions_to_keep.get(),
            ephemeral: info.ephemeral,
            snapshots_disabled: info.snapshots_disabled,
            is_dirty: info.is_dirty,
            is_outdated: info.is_outdated,
            started: info.started,
            revisions: info.revisions.iter().map(|r| (r.id, r.timestamp)).collect(),
            revision_details: info.revision_details.iter().map(revision_entry).collect(),
            block_device_path: info.block_device_path.display().to_string(),
        }
    }

    /// These values with what `settings` say instead (of a volume whose files cannot be
    /// read): the configuration's properties change, the files' stay.
    pub fn with_settings(&self, settings: &VolumeSettings) -> VolumeValues {
        let config = &settings.config;
        VolumeValues {
            rw: config.rw,
            snap_on_start: config.snap_on_start,
            save_on_stop: config.save_on_stop,
            source: config.source.clone(),
            revisions_to_keep: config.revisions_to_keep.get(),
            ephemeral: settings.ephemeral,
            snapshots_disabled: settings.snapshots_disabled,
            ..self.clone()
        }
    }

    /// Every announced property of the volume `vol`, by its D-Bus name.
    pub fn entries<'a>(&'a self, vol: &'a VolumeRef) -> Vec<Entry<'a>> {
        VOLUME_PROPERTIES
            .iter()
            .map(|name| (*name, self.value(name, vol)))
            .collect()
    }

    /// The properties whose values differ from those of `old` (the same volume's
    /// values announced before), with their new values — built only for them: a call
    /// usually changes two or three of the seventeen.
    pub fn changes_since<'a>(&'a self, old: &VolumeValues, vol: &'a VolumeRef) -> Vec<Entry<'a>> {
        VOLUME_PROPERTIES
            .iter()
            .filter(|name| self.differs(old, name))
            .map(|name| (*name, self.value(name, vol)))
            .collect()
    }

    /// The value of property `name` of the volume `vol`.
    fn value<'a>(&'a self, name: &str, vol: &'a VolumeRef) -> Variant<'a> {
        match name {
            "Vid" => Variant::from(owned_str(vol.vid.to_string())),
            "Name" => Variant::from(vol.vid.name()),
            "Pool" => object(path::pool_path(&vol.pool)),
            "Size" => Variant::from(self.size),
            "Rw" => Variant::from(self.rw),
            "SnapOnStart" => Variant::from(self.snap_on_start),
            "SaveOnStop" => Variant::from(self.save_on_stop),
            "Source" => object(match &self.source {
                Some(vid) => path::volume_path(&VolumeRef {
                    pool: vol.pool.clone(),
                    vid: vid.clone(),
                }),
                None => path::no_object(),
            }),
            "RevisionsToKeep" => Variant::from(self.revisions_to_keep),
            "Ephemeral" => Variant::from(self.ephemeral),
            "SnapshotsDisabled" => Variant::from(self.snapshots_disabled),
            "IsDirty" => Variant::from(self.is_dirty),
            "IsOutdated" => Variant::from(self.is_outdated),
            "Started" => Variant::from(self.started),
            "Revisions" => Variant::from(
                self.revisions
                    .iter()
                    .map(|(id, ts)| (id.to_string(), *ts))
                    .collect::<Vec<(String, i64)>>(),
            ),
            "RevisionDetails" => Variant::from(
                self.revision_details
                    .iter()
                    .map(|(id, ts, ns, text, pinned, bytes)| {
                        (id.to_string(), *ts, *ns, text.as_str(), *pinned, *bytes)
                    })
                    .collect::<Vec<(String, i64, u32, &str, bool, i64)>>(),
            ),
            "BlockDevicePath" => Variant::from(self.block_device_path.as_str()),
            other => unreachable!("{other} is not in VOLUME_PROPERTIES"),
        }
    }

    /// Whether property `name` has another value in `other` (of the same volume: its
    /// identity — Vid, Name, Pool — never differs). Each value above is a one-to-one
    /// function of the fields compared here (a test checks it field by field).
    fn differs(&self, other: &VolumeValues, name: &str) -> bool {
        match name {
            "Vid" | "Name" | "Pool" => false,
            "Size" => self.size != other.size,
            "Rw" => self.rw != other.rw,
            "SnapOnStart" => self.snap_on_start != other.snap_on_start,
            "SaveOnStop" => self.save_on_stop != other.save_on_stop,
            "Source" => self.source != other.source,
            "RevisionsToKeep" => self.revisions_to_keep != other.revisions_to_keep,
            "Ephemeral" => self.ephemeral != other.ephemeral,
            "SnapshotsDisabled" => self.snapshots_disabled != other.snapshots_disabled,
            "IsDirty" => self.is_dirty != other.is_dirty,
            "IsOutdated" => self.is_outdated != other.is_outdated,
            "Started" => self.started != other.started,
            "Revisions" => self.revisions != other.revisions,
            "RevisionDetails" => self.revision_details != other.revision_details,
            "BlockDevicePath" => self.block_device_path != other.block_device_path,
            other => unreachable!("{other} is not in VOLUME_PROPERTIES"),
        }
    }
}

/// The announced properties of a volume, in the order GetAll lists them.
const VOLUME_PROPERTIES: [&str; 17] = [
    "Vid",
    "Name",
    "Pool",
    "Size",
    "Rw",
    "SnapOnStart",
    "SaveOnStop",
    "Source",
    "RevisionsToKeep",
    "Ephemeral",
    "SnapshotsDisabled",
    "IsDirty",
    "IsOutdated",
    "Started",
    "Revisions",
    "RevisionDetails",
    "BlockDevicePath",
];

/// The announced state of a pool (all but `UsageDetails`).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolValues {
    pub name: String,
    pub dir_path: String,
    pub setup_check: bool,
    pub revisions_to_keep: i32,
    pub ephemeral_volatile: bool,
    pub included_in: String,
}

impl PoolValues {
    pub fn of(info: &PoolInfo) -> PoolValues {
        let config = &info.config;
        PoolValues {
            name: config.name.to_string(),
            dir_path: config.dir_path.display().to_string(),
            setup_check: config.setup_check,
            revisions_to_keep: config.revisions_to_keep.get(),
            ephemeral_volatile: config.ephemeral_volatile,
            included_in: info
                .included_in
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
        }
    }

    pub fn entries(&self) -> Vec<Entry<'_>> {
        vec![
            ("Name", Variant::from(self.name.as_str())),
            ("Driver", Variant::from(qubes_storage_engine::DRIVER)),
            ("DirPath", Variant::from(self.dir_path.as_str())),
            ("SetupCheck", Variant::from(self.setup_check)),
            ("RevisionsToKeep", Variant::from(self.revisions_to_keep)),
            ("EphemeralVolatile", Variant::from(self.ephemeral_volatile)),
            ("IncludedIn", Variant::from(self.included_in.as_str())),
        ]
    }
}

/// What a Job announces as its copy advances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobProgress {
    pub done: u64,
    pub rate: u64,
    pub fraction: f64,
    /// False once the operation has passed its point of no return.
    pub cancelable: bool,
}

impl Default for JobProgress {
    fn default() -> JobProgress {
        JobProgress {
            done: 0,
            rate: 0,
            fraction: 0.0,
            cancelable: true,
        }
    }
}

impl JobProgress {
    pub fn entries(&self) -> Vec<Entry<'static>> {
        vec![
            ("Progress", Variant::from(self.fraction)),
            ("BytesDone", Variant::from(self.done)),
            ("Rate", Variant::from(self.rate)),
            ("Cancelable", Variant::from(self.cancelable)),
        ]
    }
}

/// The constant properties of a Job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobIdentity {
    pub operation: String,
    pub objects: Vec<OwnedObjectPath>,
    pub total: u64,
    pub start_time_us: u64,
    pub started_by: u32,
}

impl JobIdentity {
    pub fn entries(&self) -> Vec<Entry<'_>> {
        let objects: Vec<ObjectPath<'_>> = self.objects.iter().map(|p| p.as_ref()).collect();
        vec![
            ("Operation", Variant::from(self.operation.as_str())),
            ("Objects", Variant::from(objects)),
            ("BytesTotal", Variant::from(self.total)),
            ("StartTime", Variant::from(self.start_time_us)),
            ("StartedByUID", Variant::from(self.started_by)),
        ]
    }
}

/// The entries of `new` whose values differ from `old`'s (same names, same order).
pub fn changed<'a>(old: &[Entry<'_>], new: Vec<Entry<'a>>) -> Vec<Entry<'a>> {
    new.into_iter()
        .filter(|(name, value)| old.iter().find(|(n, _)| n == name).map(|(_, v)| v) != Some(value))
        .collect()
}

fn object(path: OwnedObjectPath) -> Variant<'static> {
    Variant::from(path.into_inner())
}

fn owned_str(text: String) -> zbus::Str<'static> {
    zbus::Str::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::interfaces::{interfaces, Emits, JOB, POOL, VOLUME};
    use qubes_storage_engine::{
        PoolConfig, PoolName, Revision, RevisionDetails, RevisionsToKeep, Vid, VolumeConfig,
    };
    use std::path::PathBuf;

    fn info() -> VolumeInfo {
        let vid = Vid::parse("appvms/work/root").unwrap();
        VolumeInfo {
            pool: PoolName::parse("p").unwrap(),
            config: VolumeConfig {
                vid: vid.clone(),
                size: 10,
                rw: true,
                snap_on_start: true,
                save_on_stop: false,
                source: Some(Vid::parse("vm-templates/fedora/root").unwrap()),
                revisions_to_keep: RevisionsToKeep::DEFAULT,
                ephemeral: None,
                committed_image_shared: false,
                revision_notes: Default::default(),
            },
            size: 10,
            usage: 0,
            ephemeral: false,
            snapshots_disabled: false,
            is_dirty: false,
            is_outdated: false,
            started: false,
            revisions: vec![Revision {
                id: 2,
                timestamp: 100,
            }],
            revision_details: vec![RevisionDetails {
                revision: Revision {
                    id: 2,
                    timestamp: 100,
                },
                nanos: 5,
                description: "before".into(),
                pinned: true,
                exclusive: None,
            }],
            block_device_path: PathBuf::from("/p/appvms/work/root-dirty.img"),
        }
    }

    fn vol() -> VolumeRef {
        VolumeRef {
            pool: PoolName::parse("p").unwrap(),
            vid: Vid::parse("appvms/work/root").unwrap(),
        }
    }

    fn pool_values() -> PoolValues {
        PoolValues::of(&PoolInfo {
            config: PoolConfig {
                name: PoolName::parse("p").unwrap(),
                dir_path: PathBuf::from("/p"),
                setup_check: true,
                revisions_to_keep: RevisionsToKeep::DEFAULT,
                ephemeral_volatile: false,
            },
            usage: None,
            included_in: None,
        })
    }

    fn job_entries() -> Vec<Entry<'static>> {
        let identity = JobIdentity {
            operation: "ImportVolume".into(),
            objects: vec![path::no_object()],
            total: 1,
            start_time_us: 2,
            started_by: 0,
        };
        let mut entries: Vec<Entry<'static>> = identity
            .entries()
            .into_iter()
            .map(|(n, v)| (n, v.try_to_owned().unwrap().into()))
            .collect();
        entries.extend(JobProgress::default().entries());
        entries
    }

    /// Every announced entry is a property of the interface with the same type, and
    /// every property of the interface is announced — except those read live.
    fn assert_matches_xml(iface: &str, entries: &[Entry<'_>]) {
        let spec = interfaces().expect(iface);
        for (name, value) in entries {
            let prop = spec
                .properties
                .get(*name)
                .unwrap_or_else(|| panic!("{iface}.{name} is not in the XML"));
            assert_eq!(
                value.value_signature().to_string(),
                prop.signature,
                "{name}"
            );
            assert_ne!(prop.emits, Emits::Never, "{name} is live, not announced");
        }
        for (name, prop) in &spec.properties {
            let announced = entries.iter().any(|(n, _)| n == name);
            assert_eq!(announced, prop.emits != Emits::Never, "{iface}.{name}");
        }
    }

    #[test]
    fn volume_table_matches_the_introspection() {
        let values = VolumeValues::of(&info());
        assert_matches_xml(VOLUME, &values.entries(&vol()));
    }

    #[test]
    fn pool_table_matches_the_introspection() {
        assert_matches_xml(POOL, &pool_values().entries());
    }

    #[test]
    fn job_table_matches_the_introspection() {
        assert_matches_xml(JOB, &job_entries());
    }

    #[test]
    fn volume_values_name_objects_by_path() {
        let values = VolumeValues::of(&info());
        let vol = vol();
        let entries = values.entries(&vol);
        let get = |name: &str| entries.iter().find(|(n, _)| *n == name).unwrap().1.clone();
        assert_eq!(
            get("Pool"),
            Variant::from(ObjectPath::try_from("/org/qubes/Storage/pools/p").unwrap())
        );
        assert_eq!(
            get("Source"),
            Variant::from(
                ObjectPath::try_from(
                    "/org/qubes/Storage/pools/p/volumes/vm_2dtemplates_2ffedora_2froot"
                )
                .unwrap()
            )
        );
        assert_eq!(get("Name"), Variant::from("root"));
        let details = vec![("2".to_owned(), 100i64, 5u32, "before", true, -1i64)];
        assert_eq!(get("RevisionDetails"), Variant::from(details));
    }

    #[test]
    fn diff_holds_only_the_changed_values() {
        let vol = vol();
        let before = VolumeValues::of(&info());
        let mut after_info = info();
        after_info.started = true;
        after_info.size = 20;
        let after = VolumeValues::of(&after_info);
        let diff = changed(&before.entries(&vol), after.entries(&vol));
        let names: Vec<_> = diff.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, vec!["Size", "Started"]);
        assert_eq!(diff[0].1, Variant::from(20u64));
        assert!(changed(&after.entries(&vol), after.entries(&vol)).is_empty());
    }

    /// `changes_since`, which compares fields, announces exactly what comparing the
    /// serialised values would — for a change of each field on its own.
    #[test]
    fn changes_since_agrees_with_the_serialised_values() {
        let vol = vol();
        let before = VolumeValues::of(&info());
        type Change = (&'static str, fn(&mut VolumeValues));
        let changes: Vec<Change> = vec![
            ("size", |v| v.size += 1),
            ("rw", |v| v.rw = !v.rw),
            ("snap_on_start", |v| v.snap_on_start = !v.snap_on_start),
            ("save_on_stop", |v| v.save_on_stop = !v.save_on_stop),
            ("source", |v| v.source = None),
            ("revisions_to_keep", |v| v.revisions_to_keep += 1),
            ("ephemeral", |v| v.ephemeral = !v.ephemeral),
            ("snapshots_disabled", |v| {
                v.snapshots_disabled = !v.snapshots_disabled
            }),
            ("is_dirty", |v| v.is_dirty = !v.is_dirty),
            ("is_outdated", |v| v.is_outdated = !v.is_outdated),
            ("started", |v| v.started = !v.started),
            ("revisions", |v| v.revisions.push((3, 200))),
            ("revision timestamp", |v| v.revisions[0].1 += 1),
            ("revision_details", |v| v.revision_details[0].4 = false),
            ("revision description", |v| {
                v.revision_details[0].3.push('!')
            }),
            ("block_device_path", |v| v.block_device_path.push('x')),
        ];
        for (field, change) in changes {
            let mut after = before.clone();
            change(&mut after);
            let by_value: Vec<_> = changed(&before.entries(&vol), after.entries(&vol))
                .into_iter()
                .collect();
            let by_field = after.changes_since(&before, &vol);
            assert_eq!(by_field, by_value, "a change of {field}");
            assert_eq!(by_field.len(), 1, "a change of {field}");
        }
        assert!(before.changes_since(&before.clone(), &vol).is_empty());
    }
}
