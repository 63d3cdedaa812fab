//! Start-up and shutdown of the service.
//!
//! Start-up: open the engine's state (which refuses a second engine on the same state
//! directory), finish the volume removals a crash interrupted
//! (`Engine::finish_interrupted_removals`: unregistered volumes whose files were not
//! all deleted), sweep what interrupted operations left behind
//! (`Engine::sweep_leftovers` — only now, with the state directory locked, is nothing
//! else working on the pools), connect to the bus, start the outbox, serve every persisted pool and
//! volume — straight into the registry, without a signal each: nobody can be listening
//! before the name is owned — then take method calls and follow departures, and only
//! then request the name `org.qubes.Storage`, without queueing and without allowing
//! replacement (contract rev 2): a client that sees the name sees every object, and a
//! second instance exits with one sentence naming the first.
//!
//! Shutdown on SIGTERM or SIGINT: refuse new calls, cancel the running ones (their
//! copies stop, the engine removes partial files), wait for them to end and for their
//! replies to leave, release the name.

use std::path::PathBuf;
use std::sync::Arc;

use qubes_storage_engine::{Engine, PoolName, VolumeRef};
use tokio::signal::unix::{signal, SignalKind};
use zbus::connection::Builder;
use zbus::fdo::{DBusProxy, RequestNameFlags, RequestNameReply};
use zbus::names::{BusName, WellKnownName};
use zbus::Connection;

use crate::bus::objects::{Object, PoolObject, VolumeObject};
use crate::bus::outbox::Outbox;
use crate::bus::registry::Registry;
use crate::bus::service::Service;
use crate::bus::values::{PoolValues, VolumeValues};
use crate::bus::{departures, dispatch, BUS_NAME};

/// Where the daemon keeps its state and which bus it serves.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    /// `None`: the system bus (`DBUS_SYSTEM_BUS_ADDRESS` honoured).
    pub bus_address: Option<String>,
    /// The bus's largest message (dbus-daemon's `max_message_size`); larger replies
    /// are refused with `LimitsExceeded`.
    pub max_message_size: usize,
    /// How long a question to polkit may go unanswered when nobody is asked for a
    /// password (then it is cancelled and the call refused).
    pub polkit_timeout: std::time::Duration,
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    State(#[from] qubes_storage_engine::EngineError),
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("D-Bus: {0}")]
    BusDriver(#[from] zbus::fdo::Error),
    #[error("cannot install a signal handler: {0}")]
    Signal(#[from] std::io::Error),
    #[error("the connection to the bus was lost")]
    BusLost,
    #[error("{0}")]
    AlreadyRunning(String),
    #[error("an engine task failed; see the log above")]
    Task,
}

/// Runs the service until SIGTERM/SIGINT (Ok) or until the bus goes away (Err). On a
/// multi-threaded runtime that may start at least `ENGINE_PLACES +
/// OTHER_BLOCKING_THREADS` blocking threads and one per worker (`engine_places.rs`;
/// the daemon's `main` builds it so): with fewer, operations waiting in the engine can
/// take them all.
pub async fn run(config: DaemonConfig) -> Result<(), DaemonError> {
    crate::bus::reply::set_limit(config.max_message_size);
    crate::auth::set_polkit_timeout(config.polkit_timeout);
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let state_dir = config.state_dir.clone();
    let engine = tokio::task::spawn_blocking(move || {
        let engine = Engine::open_exclusive(&state_dir)?;
        finish_removals(&engine);
        engine.sweep_leftovers();
        Ok::<_, qubes_storage_engine::EngineError>(engine)
    })
    .await
    .map_err(|_| DaemonError::Task)??;
    let conn = connect(&config).await?;
    let registry = Arc::new(Registry::default());
    let (outbox, _sender) = Outbox::start(conn.clone(), Arc::clone(&registry));
    let svc = Service::new(Arc::new(engine), conn.clone(), registry, outbox).await;
    serve_persisted(&svc).await?;
    dispatch::serve(Arc::clone(&svc)).await?;
    departures::watch(Arc::clone(&svc)).await?;
    request_name(&conn).await?;
    tracing::info!(name = BUS_NAME, state_dir = %config.state_dir.display(), "serving");
    let lost = tokio::select! {
        _ = terminate.recv() => false,
        _ = interrupt.recv() => false,
        _ = conn.closed() => true,
    };
    svc.drain().await;
    if lost {
        return Err(DaemonError::BusLost);
    }
    if let Ok(bus) = DBusProxy::new(&conn).await {
        let _ = bus
            .release_name(WellKnownName::from_static_str_unchecked(BUS_NAME))
            .await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn connect(config: &DaemonConfig) -> zbus::Result<Connection> {
    let builder = match &config.bus_address {
        Some(address) => Builder::address(address.as_str()),
        None => Builder::system(),
    };
    builder.build().await
}

/// Requests the name without queueing and without allowing replacement.
async fn request_name(conn: &Connection) -> Result<(), DaemonError> {
    let bus = DBusProxy::new(conn).await?;
    let name = WellKnownName::from_static_str_unchecked(BUS_NAME);
    let reply = bus
        .request_name(name.clone(), RequestNameFlags::DO_NOT_QUEUE)
        .await?;
    match reply {
        RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner => Ok(()),
        RequestNameReply::Exists | RequestNameReply::InQueue => Err(DaemonError::AlreadyRunning(
            owner_sentence(&bus, name).await,
        )),
    }
}

/// "another qubes-storaged (pid N, connection :1.x) already serves …".
async fn owner_sentence(bus: &DBusProxy<'_>, name: WellKnownName<'static>) -> String {
    let owner = bus.get_name_owner(BusName::WellKnown(name)).await.ok();
    let pid = match &owner {
        Some(owner) => bus
            .get_connection_unix_process_id(BusName::Unique(owner.as_ref().to_owned()))
            .await
            .ok(),
        None => None,
    };
    let who = match (pid, &owner) {
        (Some(pid), Some(owner)) => format!(" (pid {pid}, connection {})", owner.as_str()),
        (None, Some(owner)) => format!(" (connection {})", owner.as_str()),
        _ => String::new(),
    };
    format!("another instance{who} already serves {BUS_NAME} on this bus; stop it first")
}

/// Deletes the files of volumes whose removal a crash interrupted. A failure keeps the
/// service from nothing: those removals stay pending (retried at the next start, a
/// CreateVolume of the vid or RemovePool), and the volumes are gone either way.
fn finish_removals(engine: &Engine) {
    match engine.finish_interrupted_removals() {
        Ok(0) => {}
        Ok(finished) => tracing::info!(finished, "interrupted volume removals finished"),
        Err(err) => {
            tracing::warn!(error = %err, "cannot finish every interrupted volume removal yet")
        }
    }
}

/// Serves every persisted pool and volume, before the name is owned.
async fn serve_persisted(svc: &Arc<Service>) -> Result<(), DaemonError> {
    let objects = svc
        .blocking(read_persisted)
        .await
        .map_err(|_| DaemonError::Task)??;
    let (mut pools, mut volumes) = (0usize, 0usize);
    for object in objects {
        match &object {
            Object::Pool(_) => pools += 1,
            _ => volumes += 1,
        }
        svc.registry.insert(object);
    }
    tracing::info!(pools, volumes, "objects served");
    Ok(())
}

/// Every persisted pool, each followed by its volumes. One volume that cannot be read
/// must not keep every other one off the bus: it is logged and left out.
fn read_persisted(engine: &Engine) -> Result<Vec<Object>, DaemonError> {
    let mut objects = Vec::new();
    for pool in engine.pool_names() {
        let info = engine.pool_info(&pool)?;
        objects.push(Object::Pool(Arc::new(PoolObject::new(
            pool.clone(),
            PoolValues::of(&info),
        ))));
        objects.extend(read_volumes(engine, &pool)?);
    }
    Ok(objects)
}

/// The volumes of `pool`, read in one pass (`Engine::volume_infos`: each VM directory
/// listed once).
fn read_volumes(engine: &Engine, pool: &PoolName) -> Result<Vec<Object>, DaemonError> {
    let mut objects = Vec::new();
    for view in engine.volume_infos(pool)? {
        match view {
            Ok(info) => {
                let vol = VolumeRef {
                    pool: pool.clone(),
                    vid: info.config.vid.clone(),
                };
                let values = VolumeValues::of(&info);
                objects.push(Object::Volume(Arc::new(VolumeObject::new(vol, values))));
            }
            Err(err) => {
                tracing::error!(%pool, object = err.object().unwrap_or_default(), error = %err, "volume not served")
            }
        }
    }
    Ok(objects)
}
