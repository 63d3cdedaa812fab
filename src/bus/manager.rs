//! `org.qubes.Storage.Manager` at `/org/qubes/Storage`: pools come and go here.
//! CreatePool runs the pool setup (R§3.1) on the blocking pool, exports the pool object
//! (InterfacesAdded) and announces the other pools' `IncludedIn` if it changed, all
//! before replying. RemovePool never deletes files.

use std::path::PathBuf;
use std::sync::Arc;

use qubes_storage_engine::{PoolName, PoolSpec, RevisionsToKeep, DRIVER};
use zbus::message::Header;
use zbus::{interface, BoxDBusError, OwnedObjectPath};

use crate::auth::Action;
use crate::bus::authz::Permission;
use crate::bus::error::{engine_to_bus, StorageError};
use crate::bus::options::{Options, RawOptions};
use crate::bus::service::Service;

const CREATE_POOL_KEYS: [&str; 4] = [
    "dir_path",
    "setup_check",
    "revisions_to_keep",
    "ephemeral_volatile",
];

/// The capability words clients can probe.
pub const FEATURES: [&str; 3] = ["jobs", "fd-import", "fd-export"];

pub struct ManagerIface {
    svc: Arc<Service>,
}

impl ManagerIface {
    pub fn new(svc: Arc<Service>) -> ManagerIface {
        ManagerIface { svc }
    }

    async fn create_pool_now(
        &self,
        name: &str,
        driver: &str,
        options: RawOptions,
        header: &Header<'_>,
    ) -> Result<OwnedObjectPath, BoxDBusError> {
        let name = PoolName::parse(name).map_err(engine_to_bus)?;
        if driver != DRIVER {
            return Err(StorageError::NotSupported(format!(
                "Pool {name}: driver {driver:?} is not supported; the drivers are: {DRIVER}."
            ))
            .into());
        }
        let options = Options::parse(options, &CREATE_POOL_KEYS, &format!("pool {name}"))?;
        let spec = pool_spec(name, &options)?;
        let permission = Permission {
            action: Action::ManagePools,
            pool: Some(spec.name.as_str()),
            vid: None,
        };
        self.svc.authorize(header, permission, &options).await?;
        let _guard = self.svc.begin()?;
        tracing::info!(method = "CreatePool", pool = %spec.name, dir = %spec.dir_path.display(), "call");
        let config = self
            .svc
            .blocking(move |e| e.create_pool(spec))
            .await?
            .map_err(engine_to_bus)?;
        let name = config.name.clone();
        let info = self
            .svc
            .blocking(move |e| e.pool_info(&name))
            .await?
            .map_err(engine_to_bus)?;
        let path = self.svc.export_pool(&info).await?;
        self.svc.refresh_pools().await;
        Ok(path)
    }

    async fn remove_pool_now(
        &self,
        name: &str,
        options: RawOptions,
        header: &Header<'_>,
    ) -> Result<(), BoxDBusError> {
        let name = PoolName::parse(name).map_err(engine_to_bus)?;
        let options = Options::parse(options, &[], &format!("pool {name}"))?;
        let permission = Permission {
            action: Action::ManagePools,
            pool: Some(name.as_str()),
            vid: None,
        };
        self.svc.authorize(header, permission, &options).await?;
        let _guard = self.svc.begin()?;
        tracing::info!(method = "RemovePool", pool = %name, "call");
        let pool = name.clone();
        self.svc
            .blocking(move |e| e.remove_pool(&pool))
            .await?
            .map_err(engine_to_bus)?;
        self.svc.unexport_pool(&name).await?;
        self.svc.refresh_pools().await;
        Ok(())
    }
}

/// CreatePool's options as the engine's spec.
fn pool_spec(name: PoolName, options: &Options) -> Result<PoolSpec, BoxDBusError> {
    let dir_path = options.string("dir_path")?.ok_or_else(|| {
        StorageError::invalid(format!("Pool {name}: the option dir_path is required."))
    })?;
    let dir_path = PathBuf::from(dir_path);
    if !dir_path.is_absolute() {
        return Err(StorageError::invalid(format!(
            "Pool {name}: dir_path {} is not an absolute path.",
            dir_path.display()
        ))
        .into());
    }
    let revisions_to_keep = match options.signed("revisions_to_keep")? {
        Some(n) => {
            RevisionsToKeep::new(n).map_err(|e| engine_to_bus(e.on(format!("pool {}", name))))?
        }
        None => RevisionsToKeep::DEFAULT,
    };
    Ok(PoolSpec {
        name,
        dir_path,
        setup_check: options.bool("setup_check")?.unwrap_or(true),
        revisions_to_keep,
        ephemeral_volatile: options.bool("ephemeral_volatile")?.unwrap_or(false),
    })
}

#[interface(name = "org.qubes.Storage.Manager", introspection_docs = false)]
impl ManagerIface {
    #[zbus(out_args("pool"))]
    async fn create_pool(
        &self,
        name: &str,
        driver: &str,
        options: RawOptions,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<OwnedObjectPath, zbus::BoxDBusError> {
        self.create_pool_now(name, driver, options, &header).await
    }

    async fn remove_pool(
        &self,
        name: &str,
        options: RawOptions,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), zbus::BoxDBusError> {
        self.remove_pool_now(name, options, &header).await
    }

    #[zbus(out_args("pool"))]
    async fn get_pool(
        &self,
        name: &str,
        options: RawOptions,
    ) -> Result<OwnedObjectPath, zbus::BoxDBusError> {
        Options::parse(options, &[], &"the storage manager")?;
        let name = PoolName::parse(name).map_err(engine_to_bus)?;
        Ok(self.svc.registry.require_pool(&name)?.path.clone())
    }

    #[zbus(out_args("pools"))]
    async fn list_pools(
        &self,
        options: RawOptions,
    ) -> Result<Vec<OwnedObjectPath>, zbus::BoxDBusError> {
        Options::parse(options, &[], &"the storage manager")?;
        Ok(self
            .svc
            .registry
            .pools()
            .iter()
            .map(|p| p.path.clone())
            .collect())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn drivers(&self) -> Vec<String> {
        vec![DRIVER.to_owned()]
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn features(&self) -> Vec<String> {
        FEATURES.iter().map(|f| (*f).to_owned()).collect()
    }
}
