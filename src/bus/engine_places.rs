//! How many engine operations run at once. An engine operation blocks its thread for
//! as long as it runs — and for as long as it waits, for a volume another operation
//! holds (a copy of minutes) or for a barrier. Calls of unprivileged users are admitted
//! a few at a time (`admission.rs`), root's are not, and each of them took a thread of
//! the runtime's blocking pool (tokio's default: at most 512): with that many waiting, a runtime worker
//! that handed its place to a new thread before running the next operation found none
//! left, and nothing read the bus any more until the copy ended (513 measurements of a
//! pool waiting for a held copy froze the service; `tests/bus_liveness.rs` now holds
//! 1100 snapshot starts behind a held clone of their source).
//!
//! So at most [`ENGINE_PLACES`] operations hold a thread; the calls beyond wait for a
//! place as tasks, first come first served, while everything that needs no engine
//! thread — reads of announced properties, introspection, `Job.Cancel`, the
//! announcements — goes on (the live `Usage`, `UsageDetails` and Verify read the
//! engine and wait too). The runtime may start that many blocking threads,
//! [`OTHER_BLOCKING_THREADS`] more and one per runtime worker. Calls that wait for a place also wait behind the
//! operation that holds up the others (a copy): the bound is set high so that only a
//! flood reaches it. A place is taken only around the engine work itself, never while waiting
//! for polkit or a volume's gate, and an operation that holds one waits only for
//! operations that hold one too (locks are taken inside the engine), so the bound
//! cannot deadlock. When every place is taken, the log says so once, until a place is
//! free again. A place says whether it was waited for: a call that waited for one is
//! not run if its caller has left the bus meanwhile (`Service::blocking_for`).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Engine operations running at once. Most of them, when there are this many, wait
/// (snapshots of a template starting while it commits): a waiting thread costs a few
/// pages, and every place fewer is an unrelated call that waits for the template too.
pub const ENGINE_PLACES: usize = 1024;
/// The runtime's blocking threads besides the engine's places and the workers'
/// hand-offs (one per runtime worker, which the daemon adds: a host with many CPUs has
/// many workers): the GetManagedObjects builders (`LARGE_READS`) and a margin.
pub const OTHER_BLOCKING_THREADS: usize = 64;

/// One engine operation's place, given back when dropped.
pub struct EnginePlace<'a> {
    _permit: SemaphorePermit<'a>,
    /// Every place was taken when it was asked for: the call waited for this one.
    pub waited: bool,
}

/// The places engine operations run in.
pub struct EnginePlaces {
    places: Semaphore,
    /// How many there are.
    size: usize,
    /// Every place was taken when a call last asked (logged once per such spell).
    full: AtomicBool,
}

impl Default for EnginePlaces {
    fn default() -> EnginePlaces {
        EnginePlaces::new(ENGINE_PLACES)
    }
}

impl EnginePlaces {
    pub fn new(places: usize) -> EnginePlaces {
        EnginePlaces {
            places: Semaphore::new(places),
            size: places,
            full: AtomicBool::new(false),
        }
    }

    /// A place for one engine operation, held until it drops; waits (as a task) while
    /// every place is taken.
    pub async fn enter(&self) -> EnginePlace<'_> {
        if let Ok(permit) = self.places.try_acquire() {
            self.full.store(false, Ordering::Relaxed);
            return EnginePlace {
                _permit: permit,
                waited: false,
            };
        }
        if !self.full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                places = self.size,
                "every engine place is taken (operations waiting for a busy volume?); further calls wait for one"
            );
        }
        let permit = self
            .places
            .acquire()
            .await
            .expect("the engine places are never closed");
        EnginePlace {
            _permit: permit,
            waited: true,
        }
    }

    /// Places free now (for tests).
    pub fn free(&self) -> usize {
        self.places.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_call_beyond_the_places_waits_until_one_is_given_back() {
        let places = Arc::new(EnginePlaces::new(2));
        let first = places.enter().await;
        let second = places.enter().await;
        assert!(
            !first.waited && !second.waited,
            "a free place was waited for"
        );
        assert_eq!(places.free(), 0);
        let waiting = {
            let places = Arc::clone(&places);
            tokio::spawn(async move { places.enter().await.waited })
        };
        // It cannot finish while both places are held.
        let early = tokio::time::timeout(Duration::from_millis(50), async {
            while !waiting.is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(
            early.is_err(),
            "a third operation ran beside two in two places"
        );
        drop(first);
        let waited = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting call never got the place given back")
            .unwrap();
        assert!(
            waited,
            "the third place does not say that it was waited for"
        );
        assert_eq!(places.free(), 1);
    }

    #[tokio::test]
    async fn full_is_remembered_until_a_place_is_free_at_once() {
        let places = EnginePlaces::new(1);
        let held = places.enter().await;
        let waited = tokio::time::timeout(Duration::from_millis(20), places.enter()).await;
        assert!(waited.is_err(), "entered a full set of places");
        assert!(places.full.load(Ordering::Relaxed));
        drop(held);
        let _free = places.enter().await;
        assert!(!places.full.load(Ordering::Relaxed));
    }
}
