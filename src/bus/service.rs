//! The state every interface object shares — the engine, the bus connection, the
//! authorizer, the object registry and the table of running operations — and the two
//! ways engine code runs: [`Service::blocking`] for reads and quick calls, and
//! [`Service::operate`] for volume operations, which get an [`OpCtx`] whose progress
//! sink publishes Job objects and whose cancel token shutdown and `Job.Cancel` trip.
//! Engine calls block (file I/O), so both run on tokio's blocking pool: the executor
//! never waits for a disk.

use std::sync::Arc;

use qubes_storage_engine::{Engine, Event, OpCtx, Result as EngineResult};
use zbus::message::Header;
use zbus::names::OwnedUniqueName;
use zbus::{BoxDBusError, Connection, OwnedObjectPath};

use crate::auth::Authorizer;
use crate::bus::authz::{self, Permission};
use crate::bus::error::StorageError;
use crate::bus::inflight::{Inflight, OpGuard};
use crate::bus::job::JobSink;
use crate::bus::options::Options;
use crate::bus::registry::Registry;

/// The shared state of the service.
pub struct Service {
    engine: Arc<Engine>,
    conn: Connection,
    auth: Authorizer,
    pub registry: Registry,
    inflight: Arc<Inflight>,
    pub jobs: crate::bus::job::JobNumbers,
}

/// Who runs an operation and on what, for the Job objects its copies publish.
pub struct Call {
    /// The D-Bus method, e.g. `ImportVolume`.
    pub method: &'static str,
    /// The volume objects involved (destination first).
    pub objects: Vec<OwnedObjectPath>,
    /// The caller's unique bus name.
    pub caller: Option<OwnedUniqueName>,
}

impl Call {
    pub fn new(method: &'static str, objects: Vec<OwnedObjectPath>, header: &Header<'_>) -> Call {
        let caller = header.sender().map(|s| s.to_owned().into());
        Call {
            method,
            objects,
            caller,
        }
    }
}

/// What an engine operation produced: its result and the events it emitted.
pub struct Outcome<T> {
    pub result: EngineResult<T>,
    pub events: Vec<Event>,
}

impl Service {
    pub async fn new(engine: Arc<Engine>, conn: Connection) -> Arc<Service> {
        let auth = Authorizer::new(&conn).await;
        Arc::new(Service {
            engine,
            conn,
            auth,
            registry: Registry::default(),
            inflight: Arc::new(Inflight::default()),
            jobs: Default::default(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The authorization check of a mutating call; the error is the reply.
    pub async fn authorize(
        &self,
        header: &Header<'_>,
        permission: Permission<'_>,
        options: &Options,
    ) -> Result<(), BoxDBusError> {
        authz::authorize(
            &self.auth,
            header,
            permission,
            options.no_user_interaction(),
        )
        .await
    }

    /// The authorization check of a property write, never interactive: zbus runs a
    /// setter under its object-tree read lock, so an authentication dialog open for it
    /// would hold up every object added or removed meanwhile (and, behind that waiting
    /// writer, every other call). A caller that needs to authenticate does so through a
    /// method (polkit's `auth_admin_keep` then covers the write).
    pub async fn authorize_property_write(
        &self,
        header: &Header<'_>,
        permission: Permission<'_>,
    ) -> Result<(), BoxDBusError> {
        authz::authorize_without_prompt(&self.auth, header, permission).await
    }

    /// Registers a mutating call as running (refused while shutting down).
    pub fn begin(&self) -> Result<OpGuard, StorageError> {
        self.inflight.begin()
    }

    /// Shutdown: refuse new calls, cancel the running ones, wait for them to end.
    pub async fn drain(&self) {
        let running = self.inflight.close_and_cancel();
        tracing::info!(
            running,
            "shutting down: cancelled the running operations, waiting for them"
        );
        self.inflight.wait_idle().await;
    }

    /// Runs `f` on the blocking pool.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> T + Send + 'static,
    {
        let engine = Arc::clone(&self.engine);
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "an engine task died");
                StorageError::failed("The storage engine failed unexpectedly; see the service log.")
            })
    }

    /// Runs a volume operation on the blocking pool with a context whose copies become
    /// Job objects and whose cancel token is `guard`'s.
    pub async fn operate<T, F>(self: &Arc<Self>, guard: &OpGuard, call: Call, f: F) -> Outcome<T>
    where
        T: Send + 'static,
        F: FnOnce(&Engine, &OpCtx) -> EngineResult<T> + Send + 'static,
    {
        let token = guard.token().clone();
        let caller = call.caller.as_ref().map(|name| name.to_string());
        let sink = Arc::new(JobSink::new(Arc::clone(self), call, token.clone()));
        // Transitional until the bus passes the caller's uid: every caller may end any
        // import, as before (the engine now refuses non-owners unless privileged).
        let mut ctx = OpCtx::new(sink.operation(), sink, token).with_privileged(true);
        if let Some(caller) = caller {
            ctx = ctx.with_caller(caller);
        }
        let ran = self
            .blocking(move |engine| {
                let result = f(engine, &ctx);
                (result, ctx.take_events())
            })
            .await;
        match ran {
            Ok((result, events)) => Outcome { result, events },
            Err(_) => Outcome {
                result: Err(qubes_storage_engine::EngineError::new(
                    qubes_storage_engine::ErrorKind::Failed,
                    "the storage engine failed unexpectedly; see the service log",
                )),
                events: Vec::new(),
            },
        }
    }
}
