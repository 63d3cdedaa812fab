//! Startup and shutdown of the service. Startup: open the engine's state, sweep what
//! interrupted operations left behind (`Engine::sweep_leftovers`), connect to the
//! bus, export every object (Manager, ObjectManager, each persisted pool and volume),
//! and only then request the name `org.qubes.Storage`, so a client that sees the name
//! sees every object. Shutdown on SIGTERM or SIGINT: refuse new calls, cancel
//! the running ones (their copies stop, the engine removes partial files), wait for
//! them to end, release the name.

use std::path::PathBuf;
use std::sync::Arc;

use qubes_storage_engine::Engine;
use tokio::signal::unix::{signal, SignalKind};
use zbus::connection::Builder;
use zbus::Connection;

use crate::bus::manager::ManagerIface;
use crate::bus::object_manager::ObjectManagerIface;
use crate::bus::path::MANAGER_PATH;
use crate::bus::service::Service;
use crate::bus::BUS_NAME;

/// Where the daemon keeps its state and which bus it serves.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    /// `None`: the system bus (`DBUS_SYSTEM_BUS_ADDRESS` honoured).
    pub bus_address: Option<String>,
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot open the state directory: {0}")]
    State(#[from] qubes_storage_engine::EngineError),
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("cannot install a signal handler: {0}")]
    Signal(#[from] std::io::Error),
    #[error("the connection to the bus was lost")]
    BusLost,
    #[error("an engine task failed; see the log above")]
    Task,
}

/// Runs the service until SIGTERM/SIGINT (Ok) or until the bus goes away (Err).
pub async fn run(config: DaemonConfig) -> Result<(), DaemonError> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let state_dir = config.state_dir.clone();
    let engine = tokio::task::spawn_blocking(move || {
        let engine = Engine::open(&state_dir)?;
        engine.sweep_leftovers();
        Ok::<_, qubes_storage_engine::EngineError>(engine)
    })
    .await
    .map_err(|_| DaemonError::Task)??;
    let conn = connect(&config).await?;
    let svc = Service::new(Arc::new(engine), conn.clone()).await;
    export_all(&svc).await?;
    crate::bus::departures::spawn(Arc::clone(&svc)).await?;
    conn.request_name(BUS_NAME).await?;
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
    let _ = conn.release_name(BUS_NAME).await;
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

/// The ObjectManager first (every object exported below it is then announced with
/// InterfacesAdded), the Manager, then every persisted pool and volume.
async fn export_all(svc: &Arc<Service>) -> Result<(), DaemonError> {
    let server = svc.conn().object_server();
    server
        .at(MANAGER_PATH, ObjectManagerIface::new(Arc::clone(svc)))
        .await?;
    server
        .at(MANAGER_PATH, ManagerIface::new(Arc::clone(svc)))
        .await?;
    let engine_pools = svc.blocking(|e| e.pool_names()).await.unwrap_or_default();
    for pool in engine_pools {
        let name = pool.clone();
        let info = svc
            .blocking(move |e| e.pool_info(&name))
            .await
            .map_err(|_| DaemonError::Task)??;
        svc.export_pool(&info).await?;
        export_volumes_of(svc, pool).await?;
    }
    Ok(())
}

async fn export_volumes_of(
    svc: &Arc<Service>,
    pool: qubes_storage_engine::PoolName,
) -> Result<(), DaemonError> {
    let name = pool.clone();
    let vids = svc
        .blocking(move |e| e.volume_vids(&name))
        .await
        .map_err(|_| DaemonError::Task)??;
    let mut exported = 0usize;
    for vid in vids {
        let vol = qubes_storage_engine::VolumeRef {
            pool: pool.clone(),
            vid,
        };
        let read = vol.clone();
        match svc
            .blocking(move |e| e.volume_info(&read))
            .await
            .map_err(|_| DaemonError::Task)?
        {
            Ok(info) => {
                svc.export_volume(&info).await?;
                exported += 1;
            }
            // One unreadable volume must not keep every other one off the bus.
            Err(err) => {
                tracing::error!(pool = %vol.pool, vid = %vol.vid, error = %err, "volume not exported")
            }
        }
    }
    tracing::info!(pool = %pool, volumes = exported, "pool exported");
    Ok(())
}
