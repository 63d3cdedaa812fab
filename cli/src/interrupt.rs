//! Ctrl-C during a long operation: the first one asks the operation to stop cleanly
//! (cancel the service's job, or end an import with `ImportDataEnd(false)`), so nothing
//! half done stays; a second one gives up waiting and exits at once (status 130).
//!
//! Installing the handler replaces SIGINT's default action for the rest of the
//! process, so only commands that know how to stop cleanly install it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;

const EXIT_ON_SECOND_INTERRUPT: i32 = 130;

#[derive(Clone)]
pub struct Interrupt {
    requested: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Interrupt {
    /// Starts listening for Ctrl-C (SIGINT). The handler is in place when this
    /// returns, so a SIGINT from then on is never the default "terminate". Must be
    /// called inside the tokio runtime.
    pub fn install() -> Interrupt {
        let interrupt = Interrupt {
            requested: Arc::new(AtomicBool::new(false)),
            notify: Arc::new(Notify::new()),
        };
        match signal(SignalKind::interrupt()) {
            Ok(sigint) => {
                tokio::spawn(interrupt.clone().listen(sigint));
            }
            Err(error) => eprintln!("qubes-storage: Ctrl-C cannot be caught: {error}"),
        }
        interrupt
    }

    async fn listen(self, mut sigint: Signal) {
        if sigint.recv().await.is_none() {
            return;
        }
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        if sigint.recv().await.is_some() {
            eprintln!("qubes-storage: interrupted again; not waiting for the service");
            std::process::exit(EXIT_ON_SECOND_INTERRUPT);
        }
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// The flag a blocking copy loop polls between chunks.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.requested)
    }

    /// Returns once Ctrl-C was pressed (at once if it already was).
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
