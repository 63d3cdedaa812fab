//! A kind of work admitted a few at a time: per user first, then for all users together
//! — the fairness both the bus layer's admission (`bus/admission.rs`) and the polkit
//! client (`auth/polkit.rs`) need. Waiting is a task, not a thread, and tokio's
//! semaphores are first come, first served, so a user waits behind their own work
//! first and then behind at most what the others already have running.
//!
//! A user's semaphore stays in the map once made: there is one per local account that
//! ever asked, which the system bounds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The places of one kind of work.
pub struct UserGate {
    all: Arc<Semaphore>,
    per_user: Mutex<HashMap<u32, Arc<Semaphore>>>,
    user_places: usize,
}

/// A place taken in a [`UserGate`]; free again when dropped.
pub struct Place {
    _held: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    waited: bool,
}

impl Place {
    /// Whether it was not free at once: the caller waited behind other work.
    pub fn waited(&self) -> bool {
        self.waited
    }
}

/// A permit of `semaphore`, at once if one is free; and whether it had to be waited for.
async fn take(semaphore: Arc<Semaphore>) -> (OwnedSemaphorePermit, bool) {
    match Arc::clone(&semaphore).try_acquire_owned() {
        Ok(permit) => (permit, false),
        // The semaphores are never closed.
        Err(_) => (semaphore.acquire_owned().await.expect("never closed"), true),
    }
}

impl UserGate {
    /// `all` places for all users together, `per_user` of them for one user.
    pub fn new(all: usize, per_user: usize) -> UserGate {
        UserGate {
            all: Arc::new(Semaphore::new(all)),
            per_user: Mutex::default(),
            user_places: per_user,
        }
    }

    /// Waits until `uid` may have one more of this work running.
    pub async fn enter(&self, uid: u32) -> Place {
        let own = {
            let mut per_user = self.per_user.lock().unwrap_or_else(PoisonError::into_inner);
            let own = per_user
                .entry(uid)
                .or_insert_with(|| Arc::new(Semaphore::new(self.user_places)));
            Arc::clone(own)
        };
        let (own, waited_own) = take(own).await;
        let (all, waited_all) = take(Arc::clone(&self.all)).await;
        Place {
            _held: (own, all),
            waited: waited_own || waited_all,
        }
    }
}
