//! `org.qubes.Storage.Pool`: one object per pool at `/org/qubes/Storage/pools/<P>`.
//! CreateVolume registers the volume and creates its files as one engine step, then
//! exports its object (InterfacesAdded) before replying. The writable properties are
//! authorized as `manage-pools`.

use std::collections::HashMap;
use std::sync::Arc;

use qubes_storage_engine::{
    Engine, Result as EngineResult, RevisionsToKeep, Vid, VolumeRef, VolumeSpec,
};
use zbus::message::Header;
use zbus::{interface, BoxDBusError, OwnedObjectPath, OwnedVariant};

use crate::auth::Action;
use crate::bus::authz::Permission;
use crate::bus::error::{engine_to_bus, StorageError};
use crate::bus::options::{Options, RawOptions};
use crate::bus::path;
use crate::bus::registry::PoolObject;
use crate::bus::service::{Call, Service};
use crate::bus::signals;

const VOLUME_CONFIG_KEYS: [&str; 7] = [
    "size",
    "rw",
    "snap_on_start",
    "save_on_stop",
    "source",
    "revisions_to_keep",
    "ephemeral",
];

pub struct PoolIface {
    svc: Arc<Service>,
    obj: Arc<PoolObject>,
}

impl PoolIface {
    pub fn new(svc: Arc<Service>, obj: Arc<PoolObject>) -> PoolIface {
        PoolIface { svc, obj }
    }

    /// A pool property write: authorize, set, announce (also the volumes' values that
    /// follow the pool's, like the effective `Ephemeral`).
    async fn set_property<F>(
        &self,
        name: &'static str,
        header: Option<Header<'_>>,
        f: F,
    ) -> Result<(), BoxDBusError>
    where
        F: FnOnce(&Engine, &qubes_storage_engine::PoolName) -> EngineResult<()> + Send + 'static,
    {
        let header =
            header.ok_or_else(|| StorageError::failed("A property write without a message."))?;
        let permission = Permission {
            action: Action::ManagePools,
            pool: Some(self.obj.name.as_str()),
            vid: None,
        };
        self.svc
            .authorize_property_write(&header, permission)
            .await?;
        let _guard = self.svc.begin()?;
        let pool = self.obj.name.clone();
        tracing::info!(method = "Set", property = name, pool = %pool, "call");
        let result = self.svc.blocking(move |engine| f(engine, &pool)).await?;
        self.svc.refresh_pool(&self.obj, &[name]).await;
        for volume in self.svc.registry.volumes_of(&self.obj.name) {
            self.svc.refresh_volume(&volume, &[]).await;
        }
        result.map_err(engine_to_bus)
    }

    async fn create_volume_now(
        &self,
        vid: &str,
        config: RawOptions,
        options: RawOptions,
        header: &Header<'_>,
    ) -> Result<OwnedObjectPath, BoxDBusError> {
        let vid = Vid::parse(vid).map_err(engine_to_bus)?;
        let spec = volume_spec(Options::parse_config(
            config,
            &VOLUME_CONFIG_KEYS,
            &self.obj.describe(),
        )?)?;
        let options = Options::parse(options, &["adopt"], &self.obj.describe())?;
        let spec = VolumeSpec {
            adopt: options.bool("adopt")?.unwrap_or(false),
            ..spec
        };
        let vid_text = vid.to_string();
        let permission = Permission {
            action: Action::ManageVolumes,
            pool: Some(self.obj.name.as_str()),
            vid: Some(&vid_text),
        };
        self.svc.authorize(header, permission, &options).await?;
        let guard = self.svc.begin()?;
        let vol = VolumeRef {
            pool: self.obj.name.clone(),
            vid,
        };
        tracing::info!(method = "CreateVolume", pool = %vol.pool, vid = %vol.vid, "call");
        let call = Call::new("CreateVolume", vec![path::volume_path(&vol)], header);
        let outcome = self
            .svc
            .operate(&guard, call, move |engine, ctx| {
                engine.create_volume(&vol, spec, ctx)
            })
            .await;
        let info = outcome.result.map_err(engine_to_bus)?;
        let path = self.svc.export_volume(&info).await?;
        signals::emit_events(self.svc.conn(), &outcome.events).await;
        Ok(path)
    }
}

/// CreateVolume's `config` map as the engine's spec (`adopt` comes from the options).
fn volume_spec(config: Options) -> Result<VolumeSpec, BoxDBusError> {
    let source = match config.string("source")? {
        Some(text) => Some(Vid::parse(&text).map_err(engine_to_bus)?),
        None => None,
    };
    let revisions_to_keep = match config.signed("revisions_to_keep")? {
        Some(n) => Some(RevisionsToKeep::new(n).map_err(engine_to_bus)?),
        None => None,
    };
    Ok(VolumeSpec {
        size: config.unsigned("size")?.unwrap_or(0),
        rw: config.bool("rw")?.unwrap_or(false),
        snap_on_start: config.bool("snap_on_start")?.unwrap_or(false),
        save_on_stop: config.bool("save_on_stop")?.unwrap_or(false),
        source,
        revisions_to_keep,
        ephemeral: config.bool("ephemeral")?,
        adopt: false,
    })
}

#[interface(name = "org.qubes.Storage.Pool", introspection_docs = false)]
impl PoolIface {
    /// Register a volume and create its files (R§3.3 + R§3.4).
    #[zbus(out_args("volume"))]
    async fn create_volume(
        &self,
        vid: &str,
        config: RawOptions,
        options: RawOptions,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<OwnedObjectPath, zbus::BoxDBusError> {
        self.create_volume_now(vid, config, options, &header).await
    }

    #[zbus(out_args("volume"))]
    async fn get_volume(
        &self,
        vid: &str,
        options: RawOptions,
    ) -> Result<OwnedObjectPath, zbus::BoxDBusError> {
        Options::parse(options, &[], &self.obj.describe())?;
        let vid = Vid::parse(vid).map_err(engine_to_bus)?;
        let vol = VolumeRef {
            pool: self.obj.name.clone(),
            vid,
        };
        Ok(self.svc.registry.require_volume(&vol)?.path.clone())
    }

    #[zbus(out_args("volumes"))]
    async fn list_volumes(
        &self,
        options: RawOptions,
    ) -> Result<Vec<OwnedObjectPath>, zbus::BoxDBusError> {
        Options::parse(options, &[], &self.obj.describe())?;
        Ok(self
            .svc
            .registry
            .volumes_of(&self.obj.name)
            .iter()
            .map(|v| v.path.clone())
            .collect())
    }

    #[zbus(property)]
    async fn name(&self) -> String {
        self.obj.props().name.clone()
    }

    #[zbus(property)]
    async fn driver(&self) -> String {
        self.obj.props().driver.clone()
    }

    #[zbus(property)]
    async fn dir_path(&self) -> String {
        self.obj.props().dir_path.clone()
    }

    #[zbus(property)]
    async fn setup_check(&self) -> bool {
        self.obj.props().setup_check
    }

    #[zbus(property)]
    async fn revisions_to_keep(&self) -> i32 {
        self.obj.props().revisions_to_keep
    }

    #[zbus(property)]
    async fn set_revisions_to_keep(
        &self,
        value: i32,
        #[zbus(header)] header: Option<Header<'_>>,
    ) -> Result<(), zbus::BoxDBusError> {
        let value = RevisionsToKeep::new(i64::from(value))
            .map_err(|e| engine_to_bus(e.on(self.obj.describe())))?;
        self.set_property("RevisionsToKeep", header, move |e, p| {
            e.set_pool_revisions_to_keep(p, value)
        })
        .await
    }

    #[zbus(property)]
    async fn ephemeral_volatile(&self) -> bool {
        self.obj.props().ephemeral_volatile
    }

    #[zbus(property)]
    async fn set_ephemeral_volatile(
        &self,
        value: bool,
        #[zbus(header)] header: Option<Header<'_>>,
    ) -> Result<(), zbus::BoxDBusError> {
        self.set_property("EphemeralVolatile", header, move |e, p| {
            e.set_pool_ephemeral_volatile(p, value)
        })
        .await
    }

    /// `data_size` and `data_usage` of the filesystem, read live (never announced);
    /// absent when the directory is missing.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn usage_details(&self) -> Result<HashMap<String, OwnedVariant>, zbus::BoxDBusError> {
        let pool = self.obj.name.clone();
        let info = self
            .svc
            .blocking(move |e| e.pool_info(&pool))
            .await?
            .map_err(engine_to_bus)?;
        let mut details = HashMap::new();
        if let Some((size, usage)) = info.usage {
            details.insert("data_size".to_owned(), OwnedVariant::from(size));
            details.insert("data_usage".to_owned(), OwnedVariant::from(usage));
        }
        Ok(details)
    }

    #[zbus(property)]
    async fn included_in(&self) -> String {
        self.obj.props().included_in.clone()
    }
}
