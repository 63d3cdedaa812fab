//! `org.qubes.Storage.Volume`: the methods of one volume at
//! `/org/qubes/Storage/pools/<P>/volumes/<V>`. Each checks its arguments, names the
//! permissions it needs and hands the engine call to the pipeline (`pipeline.rs`);
//! `Verify` is a read and needs none. The members of issue 13 live in `revisions.rs`
//! (SetRevisionDetails, ExportDelta, Stop's revision options) and `space.rs`
//! (MeasureSpace).

use std::sync::Arc;

use qubes_storage_engine::VolumeRef;
use zbus::OwnedObjectPath;

use crate::auth::Action;
use crate::bus::admission::Work;
use crate::bus::authz::Permission;
use crate::bus::call::{Answer, Call};
use crate::bus::error::{quote, BusError, BusResult, Standard};
use crate::bus::objects::VolumeObject;
use crate::bus::options::{Options, RawOptions};
use crate::bus::path;
use crate::bus::pipeline::{Afterwards, Change};
use crate::bus::revisions::{self, parse_revision};
use crate::bus::service::Service;
use crate::bus::space;

/// Answers a call of `member` on a volume.
pub async fn answer(
    svc: &Arc<Service>,
    call: &Call,
    object: &Arc<VolumeObject>,
    member: &str,
) -> BusResult<Answer> {
    let volume = VolumeCall { svc, call, object };
    match member {
        "Start" => volume.start().await,
        "Stop" => volume.stop().await,
        "Verify" => volume.verify().await,
        "Remove" => volume.remove().await,
        "Revert" => volume.revert().await,
        "Resize" => volume.resize().await,
        "Export" => volume.export().await,
        "ImportData" => volume.import_data().await,
        "ImportDataEnd" => volume.import_data_end().await,
        "ImportVolume" => volume.import_volume().await,
        "SetRevisionDetails" => revisions::set_details(svc, call, object).await,
        "MeasureSpace" => space::measure_volume(svc, call, object).await,
        "ExportDelta" => revisions::export_delta(svc, call, object).await,
        _ => Err(BusError::standard(
            Standard::UnknownMethod,
            format!("org.qubes.Storage.Volume has no method {}", quote(member)),
        )),
    }
}

struct VolumeCall<'a> {
    svc: &'a Arc<Service>,
    call: &'a Call,
    object: &'a Arc<VolumeObject>,
}

impl VolumeCall<'_> {
    fn vol(&self) -> VolumeRef {
        self.object.vol.clone()
    }

    fn options(&self, raw: RawOptions, known: &[&str]) -> BusResult<Options> {
        Options::parse(raw, known, &self.object.describe())
    }

    fn permission(&self, action: Action) -> Permission {
        let vol = &self.object.vol;
        Permission::on_volume(action, vol.pool.as_str(), &vol.vid.to_string())
    }

    fn change(&self, action: Action, options: &Options) -> Change {
        Change::method(self.permission(action), options.no_user_interaction())
    }

    async fn start(&self) -> BusResult<Answer> {
        let (raw,): (RawOptions,) = self.call.args()?;
        let options = self.options(raw, &[])?;
        let vol = self.vol();
        let change = self.change(Action::RunVolumes, &options);
        let path = self
            .svc
            .change_volume(self.call, self.object, change, move |e, ctx| {
                e.start(&vol, ctx)
            })
            .await?;
        self.call.reply(&(path.display().to_string(),))
    }

    /// Stop; with `revision_description` or `revision_pinned`, the revision the
    /// commit keeps gets those details.
    async fn stop(&self) -> BusResult<Answer> {
        let (raw,): (RawOptions,) = self.call.args()?;
        let options = self.options(raw, &revisions::STOP_KEYS)?;
        let note = revisions::stop_note(&options, &self.object.vol)?;
        let vol = self.vol();
        let mut change = self.change(Action::RunVolumes, &options);
        if note.is_some() {
            // Describing or pinning the revision it keeps is SetRevisionDetails' change
            // (a pin is never pruned): it needs what that needs too.
            change
                .permissions
                .push(self.permission(Action::ManageVolumes));
        }
        self.svc
            .change_volume(self.call, self.object, change, move |e, ctx| match &note {
                Some(note) => e.stop_keeping(&vol, note, ctx),
                None => e.stop(&vol, ctx),
            })
            .await?;
        self.call.done()
    }

    /// True when the image the next start needs exists (R§3.5); else NotFound.
    async fn verify(&self) -> BusResult<Answer> {
        let (raw,): (RawOptions,) = self.call.args()?;
        self.options(raw, &[])?;
        let vol = self.vol();
        self.svc
            .read(self.call, Work::LightRead, move |e| e.verify(&vol))
            .await??;
        self.call.reply(&(true,))
    }

    async fn remove(&self) -> BusResult<Answer> {
        let (raw,): (RawOptions,) = self.call.args()?;
        let options = self.options(raw, &[])?;
        let vol = self.vol();
        let mut change = self.change(Action::ManageVolumes, &options);
        change.afterwards = Afterwards::Unexport;
        self.svc
            .change_volume(self.call, self.object, change, move |e, ctx| {
                e.remove_volume(&vol, ctx)
            })
            .await?;
        self.call.done()
    }

    async fn revert(&self) -> BusResult<Answer> {
        let (revision, raw): (String, RawOptions) = self.call.args()?;
        let options = self.options(raw, &[])?;
        let revision = parse_revision(&revision, &self.object.vol)?;
        let vol = self.vol();
        let change = self.change(Action::ManageVolumes, &options);
        self.svc
            .change_volume(self.call, self.object, change, move |e, ctx| {
                e.revert(&vol, revision, ctx)
            })
            .await?;
        self.call.done()
    }

    async fn resize(&self) -> BusResult<Answer> {
        let (size, raw): (u64, RawOptions) = self.call.args()?;
        let options = self.options(raw, &["allow_shrink"])?;
        let allow_shrink = options.bool("allow_shrink")?.unwrap_or(false);
        let vol = self.vol();
        let change = self.change(Action::ManageVolumes, &options);
        self.svc
            .change_volume(self.call, self.object, change, move |e, ctx| {
                e.resize(&vol, size, allow_shrink, ctx)
            })
            .await?;
        self.call.done()
    }

    /// A read-only fd of the committed image.
    async fn export(&self) -> BusResult<Answer> {
        let (raw,): (RawOptions,) = self.call.args()?;
        let options = self.options(raw, &[])?;
        let vol = self.vol();
        let change = self.change(Action::Export, &options);
        let file = self
            .svc
            .change_volume(self.call, self.object, change, move |e, ctx| {
                e.export(&vol, ctx)
            })
            .await?;
        let fd = zbus::OwnedFd::from(std::os::fd::OwnedFd::from(file));
        self.call.reply(&(fd,))
    }

    /// A write-only fd of a fresh import file of `size` bytes (R§3.17). The import
    /// belongs to the caller: if the caller has already left the bus when it is
    /// recorded (the departure was seen before there was an import to discard), it is
    /// discarded at once.
    async fn import_data(&self) -> BusResult<Answer> {
        let (size, raw): (u64, RawOptions) = self.call.args()?;
        let options = self.options(raw, &["allow_shrink"])?;
        let allow_shrink = options.bool("allow_shrink")?.unwrap_or(false);
        let vol = self.vol();
        let change = self.change(Action::Import, &options);
        let file = self
            .svc
            .change_volume(self.call, self.object, change, move |e, ctx| {
                e.import_data(&vol, size, allow_shrink, ctx)
            })
            .await?;
        if let Some(caller) = self.call.sender() {
            crate::bus::departures::abandon_if_gone(self.svc, self.object, &caller).await;
        }
        let fd = zbus::OwnedFd::from(std::os::fd::OwnedFd::from(file));
        self.call.reply(&(fd,))
    }

    /// Commit (`true`) or discard (`false`) the import file (R§3.18); only the caller
    /// that opened the import, or root, may end it.
    async fn import_data_end(&self) -> BusResult<Answer> {
        let (success, raw): (bool, RawOptions) = self.call.args()?;
        let options = self.options(raw, &[])?;
        let vol = self.vol();
        let change = self.change(Action::Import, &options);
        self.svc
            .change_volume(self.call, self.object, change, move |e, ctx| {
                e.import_data_end(&vol, success, ctx)
            })
            .await?;
        self.call.done()
    }

    /// Clone `source` (any pool) into this volume (R§3.19). Reading the source's data
    /// through this volume needs the permission to export the source (contract rev 2).
    async fn import_volume(&self) -> BusResult<Answer> {
        let (source, raw): (OwnedObjectPath, RawOptions) = self.call.args()?;
        let options = self.options(raw, &[])?;
        let source_object = path::volume_ref_of_path(&source.as_ref())
            .and_then(|r| self.svc.registry.volume(&r))
            .ok_or_else(|| {
                BusError::not_found(format!(
                    "{}: there is no volume at {}",
                    self.object.describe(),
                    quote(source.as_str())
                ))
            })?;
        let source_vol = source_object.vol.clone();
        let mut change = self.change(Action::Import, &options);
        change.permissions.push(Permission::on_volume(
            Action::Export,
            source_vol.pool.as_str(),
            &source_vol.vid.to_string(),
        ));
        change.also.push(source_object.path.clone());
        let vol = self.vol();
        self.svc
            .change_volume(self.call, self.object, change, move |e, ctx| {
                e.import_volume(&vol, &source_vol, ctx)
            })
            .await?;
        self.call.done()
    }
}
