//! Pool operations of the facade: listing, live views, creation (setup with the
//! reflink probe, one directory per pool), removal and the pool's writable options.

use std::sync::Arc;

use tracing::info;

use super::{same_dir, Engine, PoolSpec};
use crate::error::{EngineError, ErrorKind, Result};
use crate::model::{PoolConfig, PoolInfo};
use crate::names::{PoolName, RevisionsToKeep};
use crate::pool;
use crate::registry::{check_pool, Pool, PoolState};

impl Engine {
    pub fn pool_names(&self) -> Vec<PoolName> {
        self.pool_map().keys().cloned().collect()
    }

    pub fn pool_config(&self, pool: &PoolName) -> Result<PoolConfig> {
        Ok(self.pool(pool)?.read().config().clone())
    }

    pub fn pool_info(&self, pool: &PoolName) -> Result<PoolInfo> {
        let config = self.pool_config(pool)?;
        let others: Vec<PoolConfig> = self
            .pool_map()
            .values()
            .map(|p| p.read().config().clone())
            .collect();
        Ok(PoolInfo {
            usage: pool::usage(&config.dir_path),
            included_in: pool::included_in(&config, others.iter()),
            config,
        })
    }

    /// `InvalidArgument` when the directory is inside another pool's `appvms/` or
    /// `vm-templates/` (or holds another pool there): the two pools' files would mix.
    /// `AlreadyExists` when the name is taken or another pool uses the same directory,
    /// however it is named.
    fn refuse_taken(&self, spec: &PoolSpec) -> Result<()> {
        let pools = self.pool_map();
        if pools.contains_key(&spec.name) {
            return Err(EngineError::already_exists("a pool of that name exists"));
        }
        let others: Vec<PoolConfig> = pools.values().map(|p| p.read().config().clone()).collect();
        if let Some(other) = others
            .iter()
            .find(|c| same_dir(&c.dir_path, &spec.dir_path))
        {
            return Err(EngineError::already_exists(format!(
                "pool {} already uses {}",
                other.name,
                spec.dir_path.display()
            )));
        }
        for other in &others {
            if let Some(class) = pool::inside_vm_dirs(&spec.dir_path, &other.dir_path) {
                return Err(EngineError::invalid(format!(
                    "{} is inside the {class}/ directory of pool {}, among its VMs' directories: \
                     a pool there would mix its files with that pool's volumes",
                    spec.dir_path.display(),
                    other.name
                )));
            }
            if let Some(class) = pool::inside_vm_dirs(&other.dir_path, &spec.dir_path) {
                return Err(EngineError::invalid(format!(
                    "pool {} uses {}, which would be inside this pool's {class}/ directory, \
                     among its VMs' directories",
                    other.name,
                    other.dir_path.display()
                )));
            }
        }
        Ok(())
    }

    /// Pool setup (R§3.1) then registration. One CreatePool at a time: two on one
    /// directory (or one inside another's pending setup) never both succeed. A refused
    /// or failed pool leaves nothing behind that its setup created.
    pub fn create_pool(&self, spec: PoolSpec) -> Result<PoolConfig> {
        let object = format!("pool {}", spec.name);
        let config = PoolConfig {
            name: spec.name.clone(),
            dir_path: spec.dir_path.clone(),
            setup_check: spec.setup_check,
            revisions_to_keep: spec.revisions_to_keep,
            ephemeral_volatile: spec.ephemeral_volatile,
        };
        check_pool(&config).map_err(|e| e.on(&object))?;
        let _admin = self.pool_admin.lock().unwrap_or_else(|e| e.into_inner());
        self.refuse_taken(&spec).map_err(|e| e.on(&object))?;
        let setup = pool::setup(&spec).map_err(|e| e.on(&object))?;
        // The pool keeps the path as it resolved (`pool::Setup::dir`).
        let config = PoolConfig {
            dir_path: setup.dir.clone(),
            ..config
        };
        // Again now that the directory exists: a path that names a taken directory
        // differently (a symlink, `..`, a bind mount) may only resolve to it now.
        if let Err(err) = self
            .refuse_taken(&spec)
            .and_then(|()| self.register(&config))
        {
            setup.undo();
            return Err(err.on(object));
        }
        info!(pool = %spec.name, dir = %config.dir_path.display(), "pool created");
        Ok(config)
    }

    /// Record a new pool durably (its journal, then its snapshot), then serve it.
    fn register(&self, config: &PoolConfig) -> Result<()> {
        let files = self.store.create(config)?;
        let live = Pool::new(PoolState::new(config.clone()), files);
        self.pools
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(config.name.clone(), Arc::new(live));
        Ok(())
    }

    /// `Busy` while the pool holds volumes. Never deletes files (but finishes the
    /// removals of its volumes that a crash interrupted).
    pub fn remove_pool(&self, name: &PoolName) -> Result<()> {
        let object = format!("pool {name}");
        let _admin = self.pool_admin.lock().unwrap_or_else(|e| e.into_inner());
        let pool = self.pool(name)?;
        let dir_path = pool.read().config().dir_path.clone();
        match pool::open_root(&dir_path) {
            // Its directory is gone: the files of the volumes removed meanwhile cannot
            // be deleted, and the pool's directory, were it back, is left as it is —
            // forgotten only when the pool then goes (it holds no volume), so a refused
            // RemovePool leaves them to be deleted once the directory is back.
            Err(err) if err.kind() == ErrorKind::NotFound => {
                if pool.read().is_empty() {
                    self.forget_removals_of(&pool).map_err(|e| e.on(&object))?;
                }
            }
            _ => {
                self.finish_removals_of(&pool).map_err(|e| e.on(&object))?;
            }
        }
        pool.delete_if_empty().map_err(|e| e.on(&object))?;
        self.pools
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        info!(pool = %name, "pool removed (its directory is left as it is)");
        Ok(())
    }

    pub fn set_pool_revisions_to_keep(
        &self,
        pool: &PoolName,
        value: RevisionsToKeep,
    ) -> Result<()> {
        self.change_pool(pool, |c| c.revisions_to_keep = value)
    }

    pub fn set_pool_ephemeral_volatile(&self, pool: &PoolName, value: bool) -> Result<()> {
        self.change_pool(pool, |c| c.ephemeral_volatile = value)
    }

    fn change_pool(&self, name: &PoolName, f: impl FnOnce(&mut PoolConfig)) -> Result<()> {
        self.pool(name)?
            .change_config(f)
            .map_err(|e| e.on(format!("pool {name}")))
    }

    /// Fold a pool's state journal into its snapshot now (it also happens by itself
    /// when the journal has grown as large as the pool).
    pub fn compact_state(&self, name: &PoolName) -> Result<()> {
        self.pool(name)?
            .compact()
            .map_err(|e| e.on(format!("pool {name}")))
    }
}
