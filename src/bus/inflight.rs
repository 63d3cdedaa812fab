//! The operations in flight: each mutating call holds an [`OpGuard`] from the moment it
//! is authorized until its reply is ready, with the cancel token its engine work polls.
//! Shutdown closes the door (new calls fail), cancels every token (a running copy stops
//! and the engine removes its partial files) and waits until the last guard is gone, so
//! the service never exits in the middle of a file operation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use qubes_storage_engine::CancelToken;
use tokio::sync::Notify;

use crate::bus::error::BusError;

#[derive(Default)]
struct State {
    closing: bool,
    next_id: u64,
    running: HashMap<u64, CancelToken>,
}

/// The table of running operations.
#[derive(Default)]
pub struct Inflight {
    state: Mutex<State>,
    idle: Notify,
}

/// One running operation; dropping it ends it.
pub struct OpGuard {
    inflight: Arc<Inflight>,
    id: u64,
    token: CancelToken,
}

impl OpGuard {
    pub fn token(&self) -> &CancelToken {
        &self.token
    }
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        let mut state = self.inflight.lock();
        state.running.remove(&self.id);
        if state.running.is_empty() {
            self.inflight.idle.notify_waiters();
        }
    }
}

impl Inflight {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new operation, unless the service is shutting down.
    pub fn begin(self: &Arc<Self>) -> Result<OpGuard, BusError> {
        let mut state = self.lock();
        if state.closing {
            return Err(BusError::failed(
                "The storage service is shutting down; try again when it is back.",
            ));
        }
        state.next_id += 1;
        let id = state.next_id;
        let token = CancelToken::new();
        state.running.insert(id, token.clone());
        Ok(OpGuard {
            inflight: Arc::clone(self),
            id,
            token,
        })
    }

    /// Refuses new operations and cancels the running ones.
    pub fn close_and_cancel(&self) -> usize {
        let mut state = self.lock();
        state.closing = true;
        state.running.values().for_each(CancelToken::cancel);
        state.running.len()
    }

    /// Returns when no operation runs any more.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().running.is_empty() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_cancels_running_and_refuses_new_operations() {
        let inflight = Arc::new(Inflight::default());
        let guard = inflight.begin().unwrap();
        assert_eq!(inflight.close_and_cancel(), 1);
        assert!(guard.token().is_cancelled());
        assert!(inflight.begin().is_err());
        let waiter = tokio::spawn({
            let inflight = Arc::clone(&inflight);
            async move { inflight.wait_idle().await }
        });
        drop(guard);
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn wait_idle_returns_at_once_without_operations() {
        Inflight::default().wait_idle().await;
    }
}
