//! The state every part of the bus layer shares: the engine, the bus connection, the
//! authorizer, the registry of served objects, the outbox that announces and replies,
//! the table of running operations and the job numbers. Engine calls block (file I/O),
//! so they run through [`Service::blocking`], on a thread the executor has handed its
//! other tasks away from (or the blocking pool): the executor never waits for a disk.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use qubes_storage_engine::Engine;
use tokio::runtime::RuntimeFlavor;
use zbus::message::Header;
use zbus::names::UniqueName;
use zbus::Connection;

use crate::auth::{Authorizer, Caller};
use crate::bus::admission::{Admission, Permit, Work};
use crate::bus::authz::{self, Permission, Prompt};
use crate::bus::call::{self, Answer, Call};
use crate::bus::engine_places::EnginePlaces;
use crate::bus::error::BusResult;
use crate::bus::error::{BusError, Standard};
use crate::bus::inflight::{Inflight, OpGuard};
use crate::bus::outbox::{Outbox, Outgoing};
use crate::bus::registry::Registry;

/// How many replies that list every object (GetManagedObjects) or every volume of a
/// pool (ListVolumes) are built at once.
pub const LARGE_READS: usize = 2;

/// The shared state of the service.
pub struct Service {
    engine: Arc<Engine>,
    conn: Connection,
    auth: Authorizer,
    pub registry: Arc<Registry>,
    pub outbox: Outbox,
    inflight: Arc<Inflight>,
    job_numbers: AtomicU64,
    /// Bounds the listings ([`Service::large_read`]) built at the same time.
    pub large_reads: Arc<tokio::sync::Semaphore>,
    /// What each user has in progress ([`Admission`]).
    pub admission: Admission,
    /// How many engine operations hold a thread at once ([`EnginePlaces`]).
    engine_places: EnginePlaces,
}

impl Service {
    pub async fn new(
        engine: Arc<Engine>,
        conn: Connection,
        registry: Arc<Registry>,
        outbox: Outbox,
    ) -> Arc<Service> {
        let auth = Authorizer::new(&conn).await;
        Arc::new(Service {
            engine,
            conn,
            auth,
            registry,
            outbox,
            inflight: Arc::new(Inflight::default()),
            job_numbers: AtomicU64::new(0),
            large_reads: Arc::new(tokio::sync::Semaphore::new(LARGE_READS)),
            admission: Admission::for_service_uid(rustix::process::geteuid().as_raw()),
            engine_places: EnginePlaces::default(),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Checks every permission of a call; the first refusal is the reply.
    pub async fn authorize(
        &self,
        header: &Header<'_>,
        permissions: &[Permission],
        prompt: Prompt,
    ) -> Result<(), BusError> {
        authz::authorize(&self.auth, header, permissions, prompt).await
    }

    /// What the bus says of `caller` (its uid, cached per unique name).
    pub async fn caller(&self, caller: &UniqueName<'_>) -> Caller {
        self.auth.caller(caller).await
    }

    /// Registers a mutating call as running (refused while shutting down).
    pub fn begin(&self) -> Result<OpGuard, BusError> {
        self.inflight.begin()
    }

    /// The next Job number: increasing, never reused while the service runs.
    pub fn next_job_number(&self) -> u64 {
        self.job_numbers.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Shutdown: refuse new calls, cancel the running ones, wait for them to end, then
    /// for their announcements and replies to leave.
    pub async fn drain(&self) {
        let running = self.inflight.close_and_cancel();
        tracing::info!(
            running,
            "shutting down: cancelled the running operations, waiting for them"
        );
        self.inflight.wait_idle().await;
        self.outbox.flush().await;
    }

    /// [`Self::blocking`] for a read of `call` that needs no authorization, once it is
    /// admitted ([`Self::admit_read`]).
    pub async fn read<T, F>(&self, call: &Call, work: Work, f: F) -> Result<T, BusError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> T + Send + 'static,
    {
        let _admitted = self.admit_read(call, work).await?;
        self.blocking_for(call, f).await
    }

    /// A read whose reply may be megabytes — a listing of every object or of a large
    /// pool's volumes. It waits for its turn as [`Work::FullListing`] (one of a user's at
    /// a time) and for one of the [`LARGE_READS`]; at its place in the outbox's sequence
    /// only `take` runs (it takes what the reply reports, cheaply: `Arc`s and paths),
    /// and `build` turns that into the reply on the blocking pool, so the sequencer,
    /// which orders every signal and reply of the service, never serialises a listing.
    /// (Built in the sequencer, a user's 64 listings of a large pool answered back to
    /// back held every other caller's reply behind them.)
    pub async fn large_read<S, T, B>(
        self: &Arc<Self>,
        call: &Call,
        take: T,
        build: B,
    ) -> BusResult<Answer>
    where
        S: Send + 'static,
        T: FnOnce(&Registry) -> S + Send + 'static,
        B: FnOnce(S, &Engine, &Header<'_>) -> BusResult<zbus::Message> + Send + 'static,
    {
        let admitted = self.admit_read(call, Work::FullListing).await?;
        let permit = Arc::clone(&self.large_reads)
            .acquire_owned()
            .await
            .map_err(|_| BusError::failed("The service is shutting down"))?;
        let engine = Arc::clone(&self.engine);
        let msg = call.message().clone();
        Ok(Answer::Read(Box::new(move |registry| {
            let taken = take(registry);
            let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
            tokio::task::spawn_blocking(move || {
                let _permits = (admitted, permit);
                let answer = unless_it_panics(|| build(taken, &engine, &msg.header()));
                if let Outgoing::Ready(message) = call::outgoing(&msg, answer) {
                    let _ = reply_tx.send(message);
                }
            });
            Outgoing::Later(reply_rx)
        })))
    }

    /// Waits until `call`, a read, may run ([`Admission::admit`]: a few at a time per
    /// user and for all users). A read that had to wait for its turn is not run if its
    /// caller has left the bus meanwhile ([`Service::refuse_if_gone`]): a user's flood
    /// of reads would otherwise keep the places busy for a caller that is gone.
    pub async fn admit_read(&self, call: &Call, work: Work) -> Result<Permit, BusError> {
        let permit = self.admission.admit(call.uid(), work).await;
        if permit.waited() {
            self.refuse_if_gone(call, "its turn").await?;
        }
        Ok(permit)
    }

    /// `AccessDenied` when the sender of `call`, which waited for `what`, has left the
    /// bus meanwhile — asked of the bus driver, not of the cache of callers, which
    /// learns of departures a little later. The call is then not run, as one whose
    /// sender had left before the service read it (`dispatch.rs`).
    async fn refuse_if_gone(&self, call: &Call, what: &str) -> Result<(), BusError> {
        let Some(sender) = call.sender() else {
            return Ok(());
        };
        if self.still_on_bus(&sender).await {
            return Ok(());
        }
        tracing::info!(method = %call.member(), caller = %sender, "a call waited for {what} and its caller has left the bus: not run");
        Err(BusError::standard(
            Standard::AccessDenied,
            format!(
                "The sender of this call left the bus while it waited for {what}; it was not run"
            ),
        ))
    }

    /// Whether `name` is still connected (true when the bus driver cannot tell).
    pub async fn still_on_bus(&self, name: &UniqueName<'_>) -> bool {
        let asked = self
            .conn
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "NameHasOwner",
                &(name.as_str(),),
            )
            .await;
        asked
            .and_then(|reply| reply.body().deserialize::<bool>())
            .unwrap_or(true)
    }

    /// [`Service::blocking`] for the engine work of `call`: if every engine place was
    /// taken and the caller has left the bus while the call waited for one, it is not
    /// run ([`Service::refuse_if_gone`]) — a flood of calls whose callers are gone
    /// would otherwise keep every place busy with work nobody waits for.
    pub async fn blocking_for<T, F>(&self, call: &Call, f: F) -> Result<T, BusError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> T + Send + 'static,
    {
        let place = self.engine_places.enter().await;
        if place.waited {
            self.refuse_if_gone(call, "an engine place").await?;
        }
        self.run_blocking(f).await
    }

    /// Runs `f`, which blocks, without holding up the runtime, once one of the engine's
    /// places is free ([`EnginePlaces`]: 1024 at once): the service's own work, which no
    /// caller waits for ([`Service::blocking_for`] for a call's).
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, BusError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> T + Send + 'static,
    {
        let _place = self.engine_places.enter().await;
        self.run_blocking(f).await
    }

    /// Runs `f` in the engine place its caller holds: on the multi-threaded runtime the
    /// daemon runs, in place (`block_in_place`: the worker's other tasks move to
    /// another thread, and the call continues on this one without the two thread hops
    /// of the blocking pool: a Start through the bus 0.99–1.16× the Python driver's on
    /// XFS instead of 1.21–1.25×, `cargo bench --bench compare`); elsewhere (a
    /// single-threaded runtime in tests) on the blocking pool. A panic in `f` is the
    /// call's `Failed` reply, not the end of the task.
    async fn run_blocking<T, F>(&self, f: F) -> Result<T, BusError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> T + Send + 'static,
    {
        let engine = Arc::clone(&self.engine);
        let died = |what: &dyn std::fmt::Display| {
            tracing::error!(error = %what, "an engine task died");
            BusError::failed("The storage engine failed unexpectedly; see the service log.")
        };
        if tokio::runtime::Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
            let run = AssertUnwindSafe(move || f(&engine));
            return tokio::task::block_in_place(|| std::panic::catch_unwind(run))
                .map_err(|panic| died(&panic_message(&*panic)));
        }
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|err| died(&err))
    }
}

/// A listing's reply, or `Failed` if building it panicked: the caller is told at once
/// instead of waiting for its call to time out with no reply.
fn unless_it_panics(build: impl FnOnce() -> BusResult<zbus::Message>) -> BusResult<zbus::Message> {
    std::panic::catch_unwind(AssertUnwindSafe(build)).unwrap_or_else(|panic| {
        tracing::error!(error = %panic_message(&*panic), "building a listing failed");
        Err(BusError::failed(
            "The service failed to build this listing; see the service log.",
        ))
    })
}

/// What a panic said, for the log.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_owned(),
        (None, Some(text)) => text.clone(),
        (None, None) => "a panic".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_whose_build_panics_is_answered_failed() {
        let answer = unless_it_panics(|| panic!("a listing's build broke"));
        let err = answer.expect_err("a panic is no reply");
        assert_eq!(err.name(), "org.qubes.Storage.Error.Failed");
        assert!(err.to_string().contains("see the service log"), "{err}");
    }
}
