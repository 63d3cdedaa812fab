//! Pool operations of the facade: listing, live views, creation (setup with the
//! reflink probe, one directory per pool), removal and the pool's writable options.

use tracing::info;

use std::collections::BTreeMap;

use super::{pool_not_found, same_dir, Engine, PoolSpec};
use crate::error::{EngineError, Result};
use crate::model::{PoolConfig, PoolInfo};
use crate::names::{PoolName, RevisionsToKeep};
use crate::pool;
use crate::store::PoolRecord;

impl Engine {
    pub fn pool_names(&self) -> Vec<PoolName> {
        self.read().keys().cloned().collect()
    }

    pub fn pool_config(&self, pool: &PoolName) -> Result<PoolConfig> {
        self.read()
            .get(pool)
            .map(|r| r.pool.clone())
            .ok_or_else(|| pool_not_found(pool))
    }

    pub fn pool_info(&self, pool: &PoolName) -> Result<PoolInfo> {
        let pools = self.read();
        let config = pools
            .get(pool)
            .ok_or_else(|| pool_not_found(pool))?
            .pool
            .clone();
        let included_in = pool::included_in(&config, pools.values().map(|r| &r.pool));
        drop(pools);
        Ok(PoolInfo {
            usage: pool::usage(&config.dir_path),
            included_in,
            config,
        })
    }

    /// `AlreadyExists` when the name is taken or another pool uses the same directory,
    /// however it is named.
    fn refuse_taken(&self, spec: &PoolSpec) -> Result<()> {
        let pools = self.read();
        if pools.contains_key(&spec.name) {
            return Err(EngineError::already_exists("a pool of that name exists"));
        }
        match pools
            .values()
            .find(|r| same_dir(&r.pool.dir_path, &spec.dir_path))
        {
            Some(other) => Err(EngineError::already_exists(format!(
                "pool {} already uses {}",
                other.pool.name,
                spec.dir_path.display()
            ))),
            None => Ok(()),
        }
    }

    /// Pool setup (R§3.1) then registration. One CreatePool at a time: two on one
    /// directory (or one inside another's pending setup) never both succeed. A refused
    /// or failed pool leaves nothing behind that its setup created.
    pub fn create_pool(&self, spec: PoolSpec) -> Result<PoolConfig> {
        let object = format!("pool {}", spec.name);
        let _one_at_a_time = self.creating_pool.lock().unwrap_or_else(|e| e.into_inner());
        self.refuse_taken(&spec).map_err(|e| e.on(&object))?;
        let setup = pool::setup(&spec).map_err(|e| e.on(&object))?;
        // Again now that the directory exists: a path that names a taken directory
        // differently (a symlink, `..`, a bind mount) may only resolve to it now.
        if let Err(err) = self.refuse_taken(&spec) {
            setup.undo();
            return Err(err.on(object));
        }
        let record = PoolRecord {
            pool: PoolConfig {
                name: spec.name.clone(),
                dir_path: spec.dir_path,
                setup_check: spec.setup_check,
                revisions_to_keep: spec.revisions_to_keep,
                ephemeral_volatile: spec.ephemeral_volatile,
            },
            volumes: BTreeMap::new(),
        };
        let mut pools = self.write();
        if let Err(err) = self.store.save(&record) {
            drop(pools);
            setup.undo();
            return Err(err.on(object));
        }
        info!(pool = %spec.name, dir = %record.pool.dir_path.display(), "pool created");
        let config = record.pool.clone();
        pools.insert(spec.name, record);
        Ok(config)
    }

    /// `Busy` while the pool holds volumes. Never deletes files.
    pub fn remove_pool(&self, pool: &PoolName) -> Result<()> {
        let mut pools = self.write();
        let record = pools.get(pool).ok_or_else(|| pool_not_found(pool))?;
        if !record.volumes.is_empty() {
            return Err(EngineError::busy(format!(
                "the pool still holds {} volume(s)",
                record.volumes.len()
            ))
            .on(format!("pool {pool}")));
        }
        self.store
            .delete(pool)
            .map_err(|e| e.on(format!("pool {pool}")))?;
        pools.remove(pool);
        info!(pool = %pool, "pool removed (its directory is left as it is)");
        Ok(())
    }

    pub fn set_pool_revisions_to_keep(
        &self,
        pool: &PoolName,
        value: RevisionsToKeep,
    ) -> Result<()> {
        self.update_pool(pool, |r| {
            r.pool.revisions_to_keep = value;
            Ok(())
        })
    }

    pub fn set_pool_ephemeral_volatile(&self, pool: &PoolName, value: bool) -> Result<()> {
        self.update_pool(pool, |r| {
            r.pool.ephemeral_volatile = value;
            Ok(())
        })
    }
}
