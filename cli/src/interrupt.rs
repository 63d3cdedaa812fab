//! Ctrl-C (SIGINT), SIGTERM (`kill`, a service manager stopping a script) and SIGHUP
//! (the terminal closed) during a long operation: the first one asks the operation to
//! stop cleanly (cancel the service's job, or end an import with
//! `ImportDataEnd(false)`), so nothing half done stays — without this a SIGTERM killed
//! the CLI and left its clone running in the service; a second Ctrl-C or SIGTERM gives
//! up waiting and exits at once (status 128 + the signal's number: 130 for Ctrl-C). A
//! second SIGHUP does not: a closing terminal sends two.
//!
//! Installing the handlers replaces these signals' default action for the rest of the
//! process, so only commands that know how to stop cleanly install them. After a
//! SIGHUP the terminal is gone and writing to it fails: what the CLI says on stderr
//! goes through [`crate::output::say`], which ignores that instead of panicking as `eprintln!` does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::signal::Signal as Sig;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;

use crate::output::say;

/// The signals that ask a long operation to stop, with their names and numbers.
const STOPPING: [(SignalKind, &str, Sig); 3] = [
    (SignalKind::interrupt(), "Ctrl-C", Sig::SIGINT),
    (SignalKind::terminate(), "SIGTERM", Sig::SIGTERM),
    (SignalKind::hangup(), "SIGHUP", Sig::SIGHUP),
];

#[derive(Clone)]
pub struct Interrupt {
    requested: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Interrupt {
    /// Starts listening for Ctrl-C, SIGTERM and SIGHUP. The handlers are in place when
    /// this returns, so none of these signals is from then on the default
    /// "terminate". Must be called inside the tokio runtime.
    pub fn install() -> Interrupt {
        let interrupt = Interrupt {
            requested: Arc::new(AtomicBool::new(false)),
            notify: Arc::new(Notify::new()),
        };
        let mut streams = Vec::new();
        for (kind, name, number) in STOPPING {
            match signal(kind) {
                Ok(stream) => streams.push((stream, number as i32)),
                Err(error) => say(format_args!(
                    "qubes-storage: {name} cannot be caught: {error}"
                )),
            }
        }
        if !streams.is_empty() {
            tokio::spawn(interrupt.clone().listen(streams));
        }
        interrupt
    }

    async fn listen(self, mut streams: Vec<(Signal, i32)>) {
        if next_of(&mut streams).await.is_none() {
            return;
        }
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        // Only a second Ctrl-C or SIGTERM gives up: a closed terminal sends SIGHUP
        // twice (the shell passes it on, then the kernel sends it when the shell
        // exits), which must not cut the clean stop short.
        while let Some(number) = next_of(&mut streams).await {
            if number == Sig::SIGHUP as i32 {
                continue;
            }
            say(format_args!(
                "qubes-storage: interrupted again; not waiting for the service"
            ));
            std::process::exit(128 + number);
        }
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// The flag a blocking copy loop polls between chunks.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.requested)
    }

    /// Returns once a stop was asked for (at once if it already was).
    pub async fn requested(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
    }
}

/// The number of the next of `streams`' signals to arrive (`None`: none can any more).
async fn next_of(streams: &mut [(Signal, i32)]) -> Option<i32> {
    std::future::poll_fn(|context| {
        let mut open = false;
        for (stream, number) in streams.iter_mut() {
            match stream.poll_recv(context) {
                std::task::Poll::Ready(Some(())) => return std::task::Poll::Ready(Some(*number)),
                std::task::Poll::Ready(None) => {}
                std::task::Poll::Pending => open = true,
            }
        }
        if open {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(None)
        }
    })
    .await
}
