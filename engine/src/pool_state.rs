//! A pool's state in memory — its configuration, its volumes, which volumes snapshot
//! which (an index, so no operation scans the pool), and the volumes whose removal has
//! begun but whose files are not all deleted yet — and the changes that make it, each
//! applied only once the store has made it durable (`registry::Pool`).
//!
//! The rules of a valid pool and volume configuration live here too, and both new
//! volumes and loaded state files go through them: the loader accepts nothing that
//! CreatePool or CreateVolume would refuse.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::{EngineError, Result};
use crate::model::{PoolConfig, VolumeConfig};
use crate::names::{ImageSize, Vid};
use crate::pool;

/// One durable change of a pool's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A volume registered, or its configuration changed.
    Put(VolumeConfig),
    /// A removal began: the volume is gone, its files are to be deleted.
    Unregister(Vid),
    /// The files of an unregistered volume are deleted.
    Forget(Vid),
    /// The pool's options changed.
    Pool(PoolConfig),
}

/// A pool's directory is a path CreatePool accepts as written
/// ([`pool::check_dir_path`]: absolute, a path the kernel can take, not `/`, `/var` or
/// a system tree).
pub fn check_pool(config: &PoolConfig) -> Result<()> {
    pool::check_dir_path(&config.dir_path).map_err(|e| e.on(format!("pool {}", config.name)))
}

/// The rules of one volume's configuration by itself (R§1.3, rev 2 sizes): a source
/// exactly when snap_on_start, never itself; `ephemeral` only where R§1.3 allows it;
/// revision notes as [`crate::note::RevisionNotes::check`] accepts them; a
/// nominal size a file can have. (A nominal size need not be a whole number of sectors:
/// earlier versions, adopted images and a volatile image resized by hand can give it
/// any size a file has.)
pub fn check_volume(config: &VolumeConfig) -> Result<()> {
    if config.snap_on_start != config.source.is_some() {
        return Err(EngineError::invalid(
            "a source is required exactly when snap_on_start is true",
        ));
    }
    if config.source.as_ref() == Some(&config.vid) {
        return Err(EngineError::invalid("a volume cannot be its own source"));
    }
    if config.size >= ImageSize::LIMIT {
        return Err(EngineError::invalid(format!(
            "size {} is too large: an image holds less than 2^63 bytes",
            config.size
        )));
    }
    config.revision_notes.check()?;
    validate_ephemeral(config, config.ephemeral).map(|_| ())
}

/// R§1.3: `ephemeral = true` only for volatile-type volumes (not snap_on_start, not
/// save_on_stop, rw).
pub fn validate_ephemeral(config: &VolumeConfig, value: Option<bool>) -> Result<Option<bool>> {
    if value == Some(true) && (config.snap_on_start || config.save_on_stop || !config.rw) {
        return Err(EngineError::invalid(
            "ephemeral can only be true for a read-write volume that is neither snap_on_start nor save_on_stop",
        ));
    }
    Ok(value)
}

/// A pool's configuration and volumes.
#[derive(Debug)]
pub struct PoolState {
    config: PoolConfig,
    volumes: BTreeMap<Vid, VolumeConfig>,
    /// source → the volumes that snapshot it.
    consumers: HashMap<Vid, BTreeSet<Vid>>,
    /// Unregistered volumes whose files are still to be deleted.
    removing: BTreeSet<Vid>,
}

impl PoolState {
    pub fn new(config: PoolConfig) -> PoolState {
        PoolState {
            config,
            volumes: BTreeMap::new(),
            consumers: HashMap::new(),
            removing: BTreeSet::new(),
        }
    }

    /// A loaded snapshot, checked volume by volume (sources: [`Self::check_sources`]).
    pub fn from_snapshot(
        config: PoolConfig,
        volumes: BTreeMap<Vid, VolumeConfig>,
        removing: BTreeSet<Vid>,
    ) -> Result<PoolState> {
        check_pool(&config)?;
        let mut state = PoolState::new(config);
        for (vid, volume) in volumes {
            if vid != volume.vid {
                return Err(EngineError::invalid(format!(
                    "the entry {vid} holds volume {}",
                    volume.vid
                )));
            }
            state.apply_checked(Change::Put(volume))?;
        }
        for vid in removing {
            if state.volumes.contains_key(&vid) {
                return Err(EngineError::invalid(format!(
                    "volume {vid} is both registered and being removed"
                )));
            }
            state.removing.insert(vid);
        }
        Ok(state)
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }
    pub fn get(&self, vid: &Vid) -> Option<&VolumeConfig> {
        self.volumes.get(vid)
    }
    pub fn contains(&self, vid: &Vid) -> bool {
        self.volumes.contains_key(vid)
    }
    /// The volumes in vid order (those of one VM directory are adjacent).
    pub fn volumes(&self) -> impl Iterator<Item = &VolumeConfig> {
        self.volumes.values()
    }
    pub fn len(&self) -> usize {
        self.volumes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.volumes.is_empty()
    }
    pub fn removing(&self) -> impl Iterator<Item = &Vid> {
        self.removing.iter()
    }
    pub fn is_removing(&self, vid: &Vid) -> bool {
        self.removing.contains(vid)
    }
    /// The volumes whose source is `vid`.
    pub fn consumers(&self, vid: &Vid) -> impl Iterator<Item = &Vid> {
        self.consumers.get(vid).into_iter().flatten()
    }

    /// Apply a change that the store has made durable.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Put(config) => {
                self.removing.remove(&config.vid);
                if let Some(old) = self.volumes.remove(&config.vid) {
                    self.unlink_source(&old);
                }
                if let Some(source) = &config.source {
                    let users = self.consumers.entry(source.clone()).or_default();
                    users.insert(config.vid.clone());
                }
                self.volumes.insert(config.vid.clone(), config);
            }
            Change::Unregister(vid) => {
                if let Some(old) = self.volumes.remove(&vid) {
                    self.unlink_source(&old);
                }
                self.removing.insert(vid);
            }
            Change::Forget(vid) => {
                self.removing.remove(&vid);
            }
            Change::Pool(config) => self.config = config,
        }
    }

    fn unlink_source(&mut self, old: &VolumeConfig) {
        let Some(source) = &old.source else { return };
        if let Some(users) = self.consumers.get_mut(source) {
            users.remove(&old.vid);
            if users.is_empty() {
                self.consumers.remove(source);
            }
        }
    }

    /// [`Self::apply`] after checking that the change is one the engine could have
    /// made (loading a journal).
    pub fn apply_checked(&mut self, change: Change) -> Result<()> {
        match &change {
            Change::Put(config) => check_volume(config)?,
            Change::Unregister(vid) if !self.contains(vid) => {
                return Err(EngineError::invalid(format!(
                    "it unregisters volume {vid}, which is not registered"
                )))
            }
            Change::Forget(vid) if !self.is_removing(vid) => {
                return Err(EngineError::invalid(format!(
                    "it forgets volume {vid}, which is not being removed"
                )))
            }
            Change::Pool(config) if config.name != self.config.name => {
                return Err(EngineError::invalid(format!(
                    "it changes pool {}, not {}",
                    config.name, self.config.name
                )))
            }
            Change::Pool(config) => check_pool(config)?,
            _ => {}
        }
        self.apply(change);
        Ok(())
    }

    /// Every snapshot volume's source is a registered volume of the pool.
    pub fn check_sources(&self) -> Result<()> {
        for (source, users) in &self.consumers {
            if !self.volumes.contains_key(source) {
                let user = users.first().map(ToString::to_string).unwrap_or_default();
                return Err(EngineError::invalid(format!(
                    "volume {user} has source {source}, which is not a volume of the pool"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{PoolName, RevisionsToKeep};

    fn pool() -> PoolConfig {
        PoolConfig {
            name: PoolName::parse("p").unwrap(),
            dir_path: "/pool".into(),
            setup_check: true,
            revisions_to_keep: RevisionsToKeep::DEFAULT,
            ephemeral_volatile: false,
        }
    }

    fn volume(vid: &str, source: Option<&str>) -> VolumeConfig {
        VolumeConfig {
            vid: Vid::parse(vid).unwrap(),
            size: 1 << 20,
            rw: true,
            snap_on_start: source.is_some(),
            save_on_stop: source.is_none(),
            source: source.map(|s| Vid::parse(s).unwrap()),
            revisions_to_keep: RevisionsToKeep::DEFAULT,
            ephemeral: None,
            committed_image_shared: false,
            revision_notes: Default::default(),
        }
    }

    #[test]
    fn the_consumer_index_follows_puts_and_unregisters() {
        let mut state = PoolState::new(pool());
        let t = Vid::parse("vm-templates/t/root").unwrap();
        state.apply(Change::Put(volume("vm-templates/t/root", None)));
        state.apply(Change::Put(volume(
            "appvms/a/root",
            Some("vm-templates/t/root"),
        )));
        state.apply(Change::Put(volume(
            "appvms/b/root",
            Some("vm-templates/t/root"),
        )));
        assert_eq!(state.consumers(&t).count(), 2);
        state.apply(Change::Unregister(Vid::parse("appvms/a/root").unwrap()));
        let users: Vec<_> = state.consumers(&t).map(ToString::to_string).collect();
        assert_eq!(users, ["appvms/b/root"]);
        state.apply(Change::Put(volume("appvms/b/root", None)));
        assert_eq!(state.consumers(&t).count(), 0);
        assert!(state.is_removing(&Vid::parse("appvms/a/root").unwrap()));
    }

    #[test]
    fn a_missing_source_is_found_by_check_sources() {
        let mut state = PoolState::new(pool());
        state
            .apply_checked(Change::Put(volume(
                "appvms/a/root",
                Some("vm-templates/t/root"),
            )))
            .unwrap();
        let err = state.check_sources().unwrap_err();
        assert!(err.to_string().contains("vm-templates/t/root"), "{err}");
    }

    #[test]
    fn relative_huge_or_system_dir_paths_are_refused() {
        let huge = format!("/{}", "a".repeat(pool::DIR_PATH_MAX));
        for dir in ["pool", &huge, "/", "/var", "/usr/lib/qubes"] {
            let config = PoolConfig {
                dir_path: dir.into(),
                ..pool()
            };
            assert!(check_pool(&config).is_err());
        }
        assert!(check_pool(&pool()).is_ok());
    }
}
