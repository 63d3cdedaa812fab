//! `org.qubes.Storage.Pool`: the methods of one pool at `/org/qubes/Storage/pools/<P>`.
//! CreateVolume registers the volume and creates its files as one engine step; the
//! outbox then serves its object (InterfacesAdded) before the reply goes out.
//! GetVolume and ListVolumes are reads of the served objects (ListVolumes, which may
//! list 100 000 volumes, admitted and built like GetManagedObjects).

use std::sync::Arc;

use qubes_storage_engine::{EngineError, RevisionsToKeep, Vid, VolumeRef, VolumeSpec};
use zbus::{OwnedObjectPath, Variant};

use crate::auth::Action;
use crate::bus::authz::{Permission, Prompt};
use crate::bus::call::{Answer, Call};
use crate::bus::error::{quote, BusError, BusResult, Standard};
use crate::bus::objects::{Object, PoolObject, VolumeObject};
use crate::bus::options::{Options, RawOptions};
use crate::bus::outbox::Item;
use crate::bus::path;
use crate::bus::reply;
use crate::bus::service::Service;
use crate::bus::values::VolumeValues;

const VOLUME_CONFIG_KEYS: [&str; 7] = [
    "size",
    "rw",
    "snap_on_start",
    "save_on_stop",
    "source",
    "revisions_to_keep",
    "ephemeral",
];

/// Answers a call of `member` on a pool.
pub async fn answer(
    svc: &Arc<Service>,
    call: &Call,
    object: &Arc<PoolObject>,
    member: &str,
) -> BusResult<Answer> {
    match member {
        "CreateVolume" => create_volume(svc, call, object).await,
        "GetVolume" => get_volume(call, object),
        "ListVolumes" => list_volumes(svc, call, object).await,
        "MeasureSpace" => crate::bus::space::measure_pool(svc, call, object).await,
        _ => Err(BusError::standard(
            Standard::UnknownMethod,
            format!("org.qubes.Storage.Pool has no method {}", quote(member)),
        )),
    }
}

/// Registers a volume and creates its files (R§3.3 + R§3.4). A volume with a `source`
/// reads the source's data, so the caller also needs the right to export the source
/// (contract rev 2).
async fn create_volume(
    svc: &Arc<Service>,
    call: &Call,
    pool: &Arc<PoolObject>,
) -> BusResult<Answer> {
    let (vid, config, raw): (String, RawOptions, RawOptions) = call.args()?;
    let vid = Vid::parse(&vid).map_err(|e| BusError::from(e.on(pool.describe())))?;
    let config = Options::parse_map(
        config,
        &VOLUME_CONFIG_KEYS,
        "configuration key",
        &pool.describe(),
    )?;
    let options = Options::parse(raw, &["adopt"], &pool.describe())?;
    let spec = VolumeSpec {
        adopt: options.bool("adopt")?.unwrap_or(false),
        ..volume_spec(&config, pool)?
    };
    let mut permissions = vec![Permission::on_volume(
        Action::ManageVolumes,
        pool.name.as_str(),
        &vid.to_string(),
    )];
    if let Some(source) = &spec.source {
        permissions.push(Permission::on_volume(
            Action::Export,
            pool.name.as_str(),
            &source.to_string(),
        ));
    }
    let prompt = Prompt::Allowed {
        no_user_interaction: options.no_user_interaction(),
    };
    svc.authorize(&call.header(), &permissions, prompt).await?;
    let vol = VolumeRef {
        pool: pool.name.clone(),
        vid,
    };
    tracing::info!(method = "CreateVolume", pool = %vol.pool, vid = %vol.vid, "call");
    let path = path::volume_path(&vol);
    svc.operate(call, vec![path.clone()], move |work| {
        let info = work.engine.create_volume(&vol, spec, work.ctx)?;
        let object = Arc::new(VolumeObject::new(vol, VolumeValues::of(&info)));
        work.refresh.outbox.send(Item::Export {
            object: Object::Volume(object),
            live: vec![("Usage", Variant::from(info.usage))],
        });
        Ok(())
    })
    .await?;
    call.reply(&(path,))
}

/// CreateVolume's `config` map as the engine's spec (`adopt` comes from the options).
fn volume_spec(config: &Options, pool: &PoolObject) -> BusResult<VolumeSpec> {
    let source = match config.string("source")? {
        Some(text) => Some(Vid::parse(&text).map_err(|e| {
            let reason = format!("the configuration key \"source\": {}", e.reason());
            BusError::from(EngineError::with_reason(e, reason).on(pool.describe()))
        })?),
        None => None,
    };
    let revisions_to_keep = match config.signed("revisions_to_keep")? {
        Some(n) => {
            Some(RevisionsToKeep::new(n).map_err(|e| BusError::from(e.on(pool.describe())))?)
        }
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

/// The path of a served volume, at its place in the sequence of announcements.
fn get_volume(call: &Call, pool: &Arc<PoolObject>) -> BusResult<Answer> {
    let (vid, raw): (String, RawOptions) = call.args()?;
    Options::parse(raw, &[], &pool.describe())?;
    let vid = Vid::parse(&vid).map_err(|e| BusError::from(e.on(pool.describe())))?;
    let vol = VolumeRef {
        pool: pool.name.clone(),
        vid,
    };
    Ok(call.read(move |registry, msg| match registry.volume(&vol) {
        Some(object) => reply::build(&msg.header(), &(object.path.clone(),), "GetVolume"),
        None => Err(BusError::not_found(format!("The {vol} does not exist"))),
    }))
}

/// The paths of the pool's volumes, ordered by vid: a listing that may be megabytes
/// (100 000 volumes), so a large read ([`Service::large_read`]).
async fn list_volumes(
    svc: &Arc<Service>,
    call: &Call,
    pool: &Arc<PoolObject>,
) -> BusResult<Answer> {
    let (raw,): (RawOptions,) = call.args()?;
    Options::parse(raw, &[], &pool.describe())?;
    let name = pool.name.clone();
    svc.large_read(
        call,
        move |registry| -> Vec<OwnedObjectPath> {
            registry
                .volumes_of(&name)
                .iter()
                .map(|v| v.path.clone())
                .collect()
        },
        |paths, _, header| reply::build(header, &(paths,), "ListVolumes"),
    )
    .await
}
