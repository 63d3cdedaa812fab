//! The published property values of pools and volumes, and their diffs. Each object
//! keeps the values it last announced; after every call that may change an object the
//! bus layer reads the engine's live view again, and the properties whose values
//! differ go out in one `PropertiesChanged` carrying the new values — before the reply
//! of the call. Getters serve the published values, so what a client reads and what
//! the signals said never disagree. `Usage` and `UsageDetails` are not here: they change
//! with every write of a running VM, are read live and never announced.

use qubes_storage_engine::{PoolInfo, VolumeInfo, VolumeRef};
use zbus::{OwnedObjectPath, OwnedVariant, Variant};

use crate::bus::path;

/// One property's name and value, as PropertiesChanged carries it.
pub type Entry = (&'static str, OwnedVariant);

/// The announced properties of a volume (all but `Usage`).
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeProps {
    pub vid: String,
    pub name: String,
    pub pool: OwnedObjectPath,
    pub size: u64,
    pub rw: bool,
    pub snap_on_start: bool,
    pub save_on_stop: bool,
    pub source: OwnedObjectPath,
    pub revisions_to_keep: i32,
    pub ephemeral: bool,
    pub snapshots_disabled: bool,
    pub is_dirty: bool,
    pub is_outdated: bool,
    pub started: bool,
    pub revisions: Vec<(String, i64)>,
    pub block_device_path: String,
}

impl VolumeProps {
    pub fn of(info: &VolumeInfo) -> VolumeProps {
        let config = &info.config;
        let source = match &config.source {
            Some(vid) => path::volume_path(&VolumeRef {
                pool: info.pool.clone(),
                vid: vid.clone(),
            }),
            None => path::no_object(),
        };
        VolumeProps {
            vid: config.vid.to_string(),
            name: config.vid.name().to_owned(),
            pool: path::pool_path(&info.pool),
            size: info.size,
            rw: config.rw,
            snap_on_start: config.snap_on_start,
            save_on_stop: config.save_on_stop,
            source,
            revisions_to_keep: config.revisions_to_keep.get(),
            ephemeral: info.ephemeral,
            snapshots_disabled: info.snapshots_disabled,
            is_dirty: info.is_dirty,
            is_outdated: info.is_outdated,
            started: info.started,
            revisions: info
                .revisions
                .iter()
                .map(|r| (r.id.to_string(), r.timestamp))
                .collect(),
            block_device_path: info.block_device_path.display().to_string(),
        }
    }

    /// Every announced property, by its D-Bus name.
    pub fn entries(&self) -> Vec<Entry> {
        vec![
            entry("Vid", self.vid.as_str()),
            entry("Name", self.name.as_str()),
            entry("Pool", self.pool.clone()),
            entry("Size", self.size),
            entry("Rw", self.rw),
            entry("SnapOnStart", self.snap_on_start),
            entry("SaveOnStop", self.save_on_stop),
            entry("Source", self.source.clone()),
            entry("RevisionsToKeep", self.revisions_to_keep),
            entry("Ephemeral", self.ephemeral),
            entry("SnapshotsDisabled", self.snapshots_disabled),
            entry("IsDirty", self.is_dirty),
            entry("IsOutdated", self.is_outdated),
            entry("Started", self.started),
            entry("Revisions", self.revisions.clone()),
            entry("BlockDevicePath", self.block_device_path.as_str()),
        ]
    }
}

/// The announced properties of a pool (all but `UsageDetails`).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolProps {
    pub name: String,
    pub driver: String,
    pub dir_path: String,
    pub setup_check: bool,
    pub revisions_to_keep: i32,
    pub ephemeral_volatile: bool,
    pub included_in: String,
}

impl PoolProps {
    pub fn of(info: &PoolInfo) -> PoolProps {
        let config = &info.config;
        PoolProps {
            name: config.name.to_string(),
            driver: qubes_storage_engine::DRIVER.to_owned(),
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

    pub fn entries(&self) -> Vec<Entry> {
        vec![
            entry("Name", self.name.as_str()),
            entry("Driver", self.driver.as_str()),
            entry("DirPath", self.dir_path.as_str()),
            entry("SetupCheck", self.setup_check),
            entry("RevisionsToKeep", self.revisions_to_keep),
            entry("EphemeralVolatile", self.ephemeral_volatile),
            entry("IncludedIn", self.included_in.as_str()),
        ]
    }
}

fn entry<'a>(name: &'static str, value: impl Into<Variant<'a>>) -> Entry {
    let owned = OwnedVariant::try_from(value.into()).expect("property values hold no fds");
    (name, owned)
}

/// The entries of `new` whose values differ from `old`'s (same names, same order).
pub fn changed(old: &[Entry], new: Vec<Entry>) -> Vec<Entry> {
    new.into_iter()
        .filter(|(name, value)| old.iter().find(|(n, _)| n == name).map(|(_, v)| v) != Some(value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use qubes_storage_engine::{PoolName, Revision, RevisionsToKeep, Vid, VolumeConfig};
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
            block_device_path: PathBuf::from("/p/appvms/work/root-dirty.img"),
        }
    }

    #[test]
    fn volume_props_name_objects_by_path() {
        let props = VolumeProps::of(&info());
        assert_eq!(props.pool.as_str(), "/org/qubes/Storage/pools/p");
        assert_eq!(
            props.source.as_str(),
            "/org/qubes/Storage/pools/p/volumes/vm_2dtemplates_2ffedora_2froot"
        );
        assert_eq!(props.name, "root");
        assert_eq!(props.revisions, vec![("2".to_owned(), 100)]);
    }

    #[test]
    fn diff_holds_only_the_changed_values() {
        let before = VolumeProps::of(&info());
        let mut after_info = info();
        after_info.started = true;
        after_info.size = 20;
        let after = VolumeProps::of(&after_info);
        let diff = changed(&before.entries(), after.entries());
        let names: Vec<_> = diff.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, vec!["Size", "Started"]);
        assert_eq!(diff[0].1, OwnedVariant::from(20u64));
        assert!(changed(&after.entries(), after.entries()).is_empty());
    }
}
