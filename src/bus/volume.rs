//! `org.qubes.Storage.Volume`: one object per volume at
//! `/org/qubes/Storage/pools/<P>/volumes/<V>`. Every mutating method is authorized
//! first, then runs on the blocking pool as an engine operation; afterwards the volume
//! (and the volumes that use it as their source) is read again, PropertiesChanged goes
//! out for what changed, then the domain signals of the engine's events — all before
//! the reply. Methods take `&self` (zbus holds a per-object lock for a whole call).

use std::sync::Arc;

use qubes_storage_engine::{
    Engine, EngineError, OpCtx, Result as EngineResult, RevisionsToKeep, VolumeRef,
};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, BoxDBusError, ObjectPath, OwnedObjectPath};

use crate::auth::Action;
use crate::bus::authz::Permission;
use crate::bus::error::{engine_to_bus, StorageError};
use crate::bus::options::{Options, RawOptions};
use crate::bus::path;
use crate::bus::registry::VolumeObject;
use crate::bus::service::{Call, Service};
use crate::bus::signals;

pub struct VolumeIface {
    svc: Arc<Service>,
    obj: Arc<VolumeObject>,
    vid: String,
}

impl VolumeIface {
    pub fn new(svc: Arc<Service>, obj: Arc<VolumeObject>) -> VolumeIface {
        let vid = obj.vol.vid.to_string();
        VolumeIface { svc, obj, vid }
    }

    fn permission(&self, action: Action) -> Permission<'_> {
        Permission {
            action,
            pool: Some(self.obj.vol.pool.as_str()),
            vid: Some(&self.vid),
        }
    }

    /// Authorize, run `f` as an engine operation, announce the changes, reply.
    async fn run<T, F>(
        &self,
        method: &'static str,
        header: &Header<'_>,
        options: &Options,
        action: Action,
        objects: Vec<OwnedObjectPath>,
        f: F,
    ) -> Result<T, BoxDBusError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine, &VolumeRef, &OpCtx) -> EngineResult<T> + Send + 'static,
    {
        self.run_then(
            method,
            header,
            options,
            action,
            objects,
            f,
            Afterwards::Refresh,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_then<T, F>(
        &self,
        method: &'static str,
        header: &Header<'_>,
        options: &Options,
        action: Action,
        objects: Vec<OwnedObjectPath>,
        f: F,
        afterwards: Afterwards,
    ) -> Result<T, BoxDBusError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine, &VolumeRef, &OpCtx) -> EngineResult<T> + Send + 'static,
    {
        self.svc
            .authorize(header, self.permission(action), options)
            .await?;
        let _gate = self.obj.enter().await;
        let guard = self.svc.begin()?;
        let vol = self.obj.vol.clone();
        tracing::info!(method, pool = %vol.pool, vid = %vol.vid, "call");
        let mut involved = vec![self.obj.path.clone()];
        involved.extend(objects);
        let call = Call::new(method, involved, header);
        let outcome = self
            .svc
            .operate(&guard, call, move |engine, ctx| f(engine, &vol, ctx))
            .await;
        match afterwards {
            Afterwards::Unexport if outcome.result.is_ok() => {
                self.svc.unexport_volume(&self.obj.vol).await?;
            }
            _ => self.svc.refresh_volume_and_dependents(&self.obj, &[]).await,
        }
        signals::emit_events(self.svc.conn(), &outcome.events).await;
        outcome.result.map_err(|err| {
            tracing::info!(method, error = %err, "call failed");
            engine_to_bus(err)
        })
    }

    /// A property write: authorize, refuse (`Busy`) while a call works on the volume
    /// (see `VolumeObject::try_enter`), set, announce.
    async fn set_property<F>(
        &self,
        name: &'static str,
        header: Option<Header<'_>>,
        f: F,
    ) -> Result<(), BoxDBusError>
    where
        F: FnOnce(&Engine, &VolumeRef) -> EngineResult<()> + Send + 'static,
    {
        let header =
            header.ok_or_else(|| StorageError::failed("A property write without a message."))?;
        self.svc
            .authorize_property_write(&header, self.permission(Action::ManageVolumes))
            .await?;
        let Some(_gate) = self.obj.try_enter() else {
            return Err(StorageError::Busy(format!(
                "The {}: another call on this volume is running; set {name} when it has finished.",
                self.obj.vol
            ))
            .into());
        };
        let _guard = self.svc.begin()?;
        let vol = self.obj.vol.clone();
        tracing::info!(method = "Set", property = name, pool = %vol.pool, vid = %vol.vid, "call");
        let result = self.svc.blocking(move |engine| f(engine, &vol)).await?;
        self.svc
            .refresh_volume_and_dependents(&self.obj, &[name])
            .await;
        result.map_err(engine_to_bus)
    }

    async fn live_usage(&self) -> Result<u64, BoxDBusError> {
        let vol = self.obj.vol.clone();
        let info = self
            .svc
            .blocking(move |engine| engine.volume_info(&vol))
            .await?;
        Ok(info.map_err(engine_to_bus)?.usage)
    }
}

/// What follows a successful operation: announce the volume's new values, or remove
/// its object (Remove).
enum Afterwards {
    Refresh,
    Unexport,
}

/// A revision argument: `""` is the highest id; otherwise a revision id exactly as
/// `Revisions` lists it (decimal digits, no sign, no leading zero). Anything else names
/// no revision: `NotFound`, like an unknown id (fix 7).
fn parse_revision(text: &str, vol: &VolumeRef) -> Result<Option<u64>, StorageError> {
    if text.is_empty() {
        return Ok(None);
    }
    let canonical = text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    match text.parse() {
        Ok(id) if canonical => Ok(Some(id)),
        _ => Err(EngineError::not_found(format!(
            "has no revision {text:?} (revision ids are decimal numbers)"
        ))
        .on(vol)
        .into()),
    }
}

#[interface(name = "org.qubes.Storage.Volume", introspection_docs = false)]
impl VolumeIface {
    /// Start the volume (R§3.7); returns the block device path.
    #[zbus(out_args("block_device_path"))]
    async fn start(
        &self,
        options: RawOptions,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, zbus::BoxDBusError> {
        let options = Options::parse(options, &[], &self.obj.vol)?;
        let path = self
            .run(
                "Start",
                &header,
                &options,
                Action::RunVolumes,
                vec![],
                |e, v, ctx| e.start(v, ctx),
            )
            .await?;
        Ok(path.display().to_string())
    }

    /// Stop the volume (R§3.8); idempotent.
    async fn stop(
        &self,
        options: RawOptions,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), zbus::BoxDBusError> {
        let options = Options::parse(options, &[], &self.obj.vol)?;
        self.run(
            "Stop",
            &header,
            &options,
            Action::RunVolumes,
            vec![],
            |e, v, ctx| e.stop(v, ctx),
        )
        .await
    }

    /// True when the image the next start needs exists (R§3.5); else NotFound.
    #[zbus(out_args("valid"))]
    async fn verify(&self, options: RawOptions) -> Result<bool, zbus::BoxDBusError> {
        Options::parse(options, &[], &self.obj.vol)?;
        let vol = self.obj.vol.clone();
        self.svc
            .blocking(move |e| e.verify(&vol))
            .await?
            .map_err(engine_to_bus)?;
        Ok(true)
    }

    /// Remove the volume and its files (R§3.6); the object disappears.
    async fn remove(
        &self,
        options: RawOptions,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), zbus::BoxDBusError> {
        let options = Options::parse(options, &[], &self.obj.vol)?;
        let remove = |e: &Engine, v: &VolumeRef, ctx: &OpCtx| e.remove_volume(v, ctx);
        self.run_then(
            "Remove",
            &header,
            &options,
            Action::ManageVolumes,
            vec![],
            remove,
            Afterwards::Unexport,
        )
        .await
    }

    /// Revert to a revision (R§3.13); `""` = the highest id.
    async fn revert(
        &self,
        revision: &str,
        options: RawOptions,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), zbus::BoxDBusError> {
        let options = Options::parse(options, &[], &self.obj.vol)?;
        let revision = parse_revision(revision, &self.obj.vol)?;
        self.run(
            "Revert",
            &header,
            &options,
            Action::ManageVolumes,
            vec![],
            move |e, v, ctx| e.revert(v, revision, ctx),
        )
        .await
    }

    /// Resize (R§3.15); shrinking needs option `allow_shrink`.
    async fn resize(
        &self,
        size: u64,
        options: RawOptions,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), zbus::BoxDBusError> {
        let options = Options::parse(options, &["allow_shrink"], &self.obj.vol)?;
        let allow_shrink = options.bool("allow_shrink")?.unwrap_or(false);
        self.run(
            "Resize",
            &header,
            &options,
            Action::ManageVolumes,
            vec![],
            move |e, v, ctx| e.resize(v, size, allow_shrink, ctx),
        )
        .await
    }

    /// A read-only fd of the committed image.
    #[zbus(out_args("fd"))]
    async fn export(
        &self,
        options: RawOptions,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<zbus::OwnedFd, zbus::BoxDBusError> {
        let options = Options::parse(options, &[], &self.obj.vol)?;
        let file = self
            .run(
                "Export",
                &header,
                &options,
                Action::Export,
                vec![],
                |e, v, ctx| e.export(v, ctx),
            )
            .await?;
        Ok(zbus::OwnedFd::from(std::os::fd::OwnedFd::from(file)))
    }

    /// A write-only fd of a fresh import file of `size` bytes (R§3.17).
    #[zbus(out_args("fd"))]
    async fn import_data(
        &self,
        size: u64,
        options: RawOptions,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<zbus::OwnedFd, zbus::BoxDBusError> {
        let options = Options::parse(options, &[], &self.obj.vol)?;
        let file = self
            .run(
                "ImportData",
                &header,
                &options,
                Action::Import,
                vec![],
                // allow_shrink: the bus option is not wired yet, so the old behaviour
                // (no shrink check) stays until it is.
                move |e, v, ctx| e.import_data(v, size, true, ctx),
            )
            .await?;
        Ok(zbus::OwnedFd::from(std::os::fd::OwnedFd::from(file)))
    }

    /// Commit (`true`) or discard (`false`) the import file (R§3.18).
    async fn import_data_end(
        &self,
        success: bool,
        options: RawOptions,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), zbus::BoxDBusError> {
        let options = Options::parse(options, &[], &self.obj.vol)?;
        self.run(
            "ImportDataEnd",
            &header,
            &options,
            Action::Import,
            vec![],
            move |e, v, ctx| e.import_data_end(v, success, ctx),
        )
        .await
    }

    /// Clone `source` (any pool) into this volume (R§3.19).
    async fn import_volume(
        &self,
        source: ObjectPath<'_>,
        options: RawOptions,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), zbus::BoxDBusError> {
        let options = Options::parse(options, &[], &self.obj.vol)?;
        let source_ref = path::volume_ref_of_path(&source)
            .and_then(|r| self.svc.registry.volume(&r))
            .ok_or_else(|| StorageError::not_found(format!("No volume at {source}.")))?;
        let source_vol = source_ref.vol.clone();
        self.run(
            "ImportVolume",
            &header,
            &options,
            Action::Import,
            vec![source_ref.path.clone()],
            move |e, v, ctx| e.import_volume(v, &source_vol, ctx),
        )
        .await
    }

    #[zbus(property)]
    async fn vid(&self) -> String {
        self.obj.props().vid.clone()
    }

    #[zbus(property)]
    async fn name(&self) -> String {
        self.obj.props().name.clone()
    }

    #[zbus(property)]
    async fn pool(&self) -> OwnedObjectPath {
        self.obj.props().pool.clone()
    }

    #[zbus(property)]
    async fn size(&self) -> u64 {
        self.obj.props().size
    }

    /// Allocated bytes of the current image, read live (never announced).
    #[zbus(property(emits_changed_signal = "false"))]
    async fn usage(&self) -> Result<u64, zbus::BoxDBusError> {
        self.live_usage().await
    }

    #[zbus(property)]
    async fn rw(&self) -> bool {
        self.obj.props().rw
    }

    #[zbus(property)]
    async fn set_rw(
        &self,
        value: bool,
        #[zbus(header)] header: Option<Header<'_>>,
    ) -> Result<(), zbus::BoxDBusError> {
        self.set_property("Rw", header, move |e, v| e.set_rw(v, value))
            .await
    }

    #[zbus(property)]
    async fn snap_on_start(&self) -> bool {
        self.obj.props().snap_on_start
    }

    #[zbus(property)]
    async fn save_on_stop(&self) -> bool {
        self.obj.props().save_on_stop
    }

    #[zbus(property)]
    async fn source(&self) -> OwnedObjectPath {
        self.obj.props().source.clone()
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
            .map_err(|e| engine_to_bus(e.on(&self.obj.vol)))?;
        self.set_property("RevisionsToKeep", header, move |e, v| {
            e.set_revisions_to_keep(v, value)
        })
        .await
    }

    #[zbus(property)]
    async fn ephemeral(&self) -> bool {
        self.obj.props().ephemeral
    }

    #[zbus(property)]
    async fn set_ephemeral(
        &self,
        value: bool,
        #[zbus(header)] header: Option<Header<'_>>,
    ) -> Result<(), zbus::BoxDBusError> {
        self.set_property("Ephemeral", header, move |e, v| e.set_ephemeral(v, value))
            .await
    }

    #[zbus(property)]
    async fn snapshots_disabled(&self) -> bool {
        self.obj.props().snapshots_disabled
    }

    #[zbus(property)]
    async fn is_dirty(&self) -> bool {
        self.obj.props().is_dirty
    }

    #[zbus(property)]
    async fn is_outdated(&self) -> bool {
        self.obj.props().is_outdated
    }

    #[zbus(property)]
    async fn started(&self) -> bool {
        self.obj.props().started
    }

    /// `(revision id, Unix seconds)`, ordered by numeric id.
    #[zbus(property)]
    async fn revisions(&self) -> Vec<(String, i64)> {
        self.obj.props().revisions.clone()
    }

    #[zbus(property)]
    async fn block_device_path(&self) -> String {
        self.obj.props().block_device_path.clone()
    }

    #[zbus(signal)]
    pub async fn volume_started(
        emitter: &SignalEmitter<'_>,
        block_device_path: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn volume_stopped(emitter: &SignalEmitter<'_>, committed: bool) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn revision_added(
        emitter: &SignalEmitter<'_>,
        id: &str,
        timestamp: i64,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn revision_pruned(
        emitter: &SignalEmitter<'_>,
        id: &str,
        timestamp: i64,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn volume_reverted(emitter: &SignalEmitter<'_>, id: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn volume_resized(
        emitter: &SignalEmitter<'_>,
        old_size: u64,
        new_size: u64,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn volume_imported(emitter: &SignalEmitter<'_>, success: bool) -> zbus::Result<()>;
}
