//! Admission: how much one local user may have the service work on at once. Any local
//! user can call the service on the system bus, and reads need no authorization (the
//! contract), so without bounds one user could
//!
//! - keep calls in progress without end: a call sent with `NO_REPLY_EXPECTED` is not
//!   counted by dbus-daemon's limit of pending replies per connection, and each call
//!   here is a task and its message until it has been answered — up to 32 MiB each
//!   (the bus's largest message), which a call waiting for polkit keeps for as long;
//! - pile up reads that hold a thread each: a pool's `MeasureSpace` first waits for the
//!   work left after earlier replies and then maps every file, taking the lock of each
//!   started snapshot it finds (behind a long copy of it, say). Once every engine place
//!   (`engine_places.rs`) held such a read, every other user's read and change would
//!   wait behind them;
//! - or fill the disk queue with measurements, or the memory with listings of every
//!   object, that the others wait behind.
//!
//! So a user other than root has at most [`CALLS_PER_USER`] calls in progress, holding
//! at most [`CALL_BYTES_PER_USER`] of messages — the next is refused at once with
//! `org.freedesktop.DBus.Error.LimitsExceeded` (the service's arguments are small: a
//! legitimate call is a few hundred bytes, a listing of options a few KiB) — and the
//! reads a call may wait long for are admitted a few at a time ([`Work`]), per user and
//! for all users (`user_gate.rs`), each kind apart — light reads (Verify, the live
//! `Usage` properties), heavy ones (`MeasureSpace`) and listings (`GetManagedObjects`,
//! `ListVolumes`) — so a long measurement never holds up a Verify. A call whose
//! caller the bus cannot tell (it has already left) is not run: nobody would get its
//! reply, and it would count for nobody. Root (uid 0) is never limited: it is the
//! administrator, and qubesd's calls must never wait behind another user's; nor is the
//! service's own uid when it does not run as root (a user's private bus). (The
//! polkit checks of the changes other users ask for are bounded by the polkit client,
//! `auth/polkit.rs`, until polkit has answered them.)
//!
//! Users are told apart by uid: the uids of a user namespace count as users of their
//! own, so a user with a range of subordinate uids has that many shares of the per-user
//! limits (the limits for all users still hold).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::bus::error::{BusError, Standard};
use crate::user_gate::{Place, UserGate};

/// The calls one user (other than root) may have in progress at once: as many as
/// dbus-daemon lets one connection of the system bus wait for replies to.
pub const CALLS_PER_USER: usize = 128;

/// The bytes of the messages of the calls one user (other than root) may have in
/// progress at once.
pub const CALL_BYTES_PER_USER: usize = 4 << 20;

/// Work a call may wait long for, admitted a few at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// A read of a few system calls: Verify, a live `Usage` or `UsageDetails`.
    LightRead,
    /// A read that walks images or a pool: `MeasureSpace`.
    HeavyRead,
    /// A reply that lists every object (`GetManagedObjects`) or every volume of a pool
    /// (`ListVolumes`, `Introspect` of its `volumes` node); all callers, root too, also
    /// share `LARGE_READS` in
    /// `service.rs`, which bounds their memory.
    FullListing,
}

impl Work {
    /// How many of this work may run at once: of all users (but root) together, and
    /// of one user.
    pub const fn limits(self) -> (usize, usize) {
        match self {
            Work::LightRead => (8, 2),
            Work::HeavyRead => (2, 1),
            Work::FullListing => (2, 1),
        }
    }
}

/// The calls in progress, by uid: how many, and their messages' bytes.
type CallCounts = Arc<Mutex<HashMap<u32, InProgress>>>;

#[derive(Default)]
struct InProgress {
    calls: usize,
    bytes: usize,
}

/// The service's bookkeeping of what each user has in progress.
pub struct Admission {
    /// The uid the service runs as.
    own_uid: u32,
    calls: CallCounts,
    light: UserGate,
    heavy: UserGate,
    listing: UserGate,
}

impl Default for Admission {
    /// The admission of a service that runs as root.
    fn default() -> Self {
        Admission::for_service_uid(0)
    }
}

impl Admission {
    /// The admission of a service running as `own_uid`: root and that uid (whose
    /// callers can already do everything the service can, as the authorizer knows) are
    /// never limited.
    pub fn for_service_uid(own_uid: u32) -> Admission {
        Admission {
            own_uid,
            calls: Arc::default(),
            light: gate(Work::LightRead),
            heavy: gate(Work::HeavyRead),
            listing: gate(Work::FullListing),
        }
    }

    /// Root and the service's own uid, never limited.
    pub fn is_exempt(&self, uid: u32) -> bool {
        uid == 0 || uid == self.own_uid
    }
}

/// A call in progress, counted for its user until dropped.
pub struct CallTicket {
    counted: Option<(CallCounts, u32, usize)>,
}

impl Drop for CallTicket {
    fn drop(&mut self) {
        let Some((calls, uid, bytes)) = self.counted.take() else {
            return;
        };
        let mut calls = lock(&calls);
        if let Some(user) = calls.get_mut(&uid) {
            user.calls -= 1;
            user.bytes -= bytes;
            if user.calls == 0 {
                calls.remove(&uid);
            }
        }
    }
}

/// Work admitted to run (nothing for root's); its place is free when dropped.
pub struct Permit {
    _held: Option<Place>,
}

impl Permit {
    /// Whether the call waited behind other work for its turn.
    pub fn waited(&self) -> bool {
        self._held.as_ref().is_some_and(Place::waited)
    }
}

impl Admission {
    /// Counts one call of the caller with `uid` whose message has `bytes`, or refuses it
    /// when that user has [`CALLS_PER_USER`] in progress or the message would take
    /// their messages in progress past [`CALL_BYTES_PER_USER`].
    pub fn admit_call(&self, uid: u32, bytes: usize) -> Result<CallTicket, BusError> {
        if self.is_exempt(uid) {
            return Ok(CallTicket { counted: None });
        }
        let mut calls = lock(&self.calls);
        let user = calls.entry(uid).or_default();
        let refusal = if user.calls >= CALLS_PER_USER {
            format!(
                "The user with uid {uid} already has {CALLS_PER_USER} calls in progress, \
                 the most one user may have; try again once some have been answered"
            )
        } else if user.bytes + bytes > CALL_BYTES_PER_USER {
            format!(
                "The user with uid {uid} has calls of {} bytes in progress; this one's \
                 {bytes} bytes would pass the {CALL_BYTES_PER_USER} bytes one user's calls \
                 may hold; try again once some have been answered",
                user.bytes
            )
        } else {
            user.calls += 1;
            user.bytes += bytes;
            return Ok(CallTicket {
                counted: Some((Arc::clone(&self.calls), uid, bytes)),
            });
        };
        if user.calls == 0 {
            calls.remove(&uid);
        }
        Err(BusError::standard(Standard::LimitsExceeded, refusal))
    }

    /// Waits (as a task) until `work` for the caller with `uid` may run: behind the
    /// user's own work of that kind first, then behind all users' (root never waits).
    pub async fn admit(&self, uid: u32, work: Work) -> Permit {
        if self.is_exempt(uid) {
            return Permit { _held: None };
        }
        let gate = match work {
            Work::LightRead => &self.light,
            Work::HeavyRead => &self.heavy,
            Work::FullListing => &self.listing,
        };
        Permit {
            _held: Some(gate.enter(uid).await),
        }
    }

    /// How many users have calls in progress (for tests).
    pub fn users_with_calls(&self) -> usize {
        lock(&self.calls).len()
    }
}

fn gate(work: Work) -> UserGate {
    let (all, per_user) = work.limits();
    UserGate::new(all, per_user)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::task::unconstrained;

    #[test]
    fn a_user_has_at_most_calls_per_user_in_progress_and_root_any_number() {
        let admission = Admission::default();
        let mut tickets: Vec<CallTicket> = (0..CALLS_PER_USER)
            .map(|_| admission.admit_call(1000, 100).expect("admitted"))
            .collect();
        let refused = admission.admit_call(1000, 100).err().expect("refused");
        assert_eq!(refused.name(), "org.freedesktop.DBus.Error.LimitsExceeded");
        assert!(
            refused.message().contains("uid 1000"),
            "{}",
            refused.message()
        );
        // Another user and root are not held up by it.
        let other = admission.admit_call(1001, 100).expect("another user");
        let root: Vec<CallTicket> = (0..3 * CALLS_PER_USER)
            .map(|_| admission.admit_call(0, 100).expect("root"))
            .collect();
        assert_eq!(admission.users_with_calls(), 2, "root is not counted");
        // One answered call makes room for one more.
        tickets.pop();
        let again = admission.admit_call(1000, 100).expect("room again");
        assert!(admission.admit_call(1000, 100).is_err());
        drop((again, other, root, tickets));
    }

    #[test]
    fn the_services_own_uid_is_not_limited_either() {
        let admission = Admission::for_service_uid(1000);
        let held: Vec<CallTicket> = (0..2 * CALLS_PER_USER)
            .map(|_| {
                admission
                    .admit_call(1000, 100)
                    .expect("the service's own uid")
            })
            .collect();
        assert_eq!(admission.users_with_calls(), 0);
        assert!(admission
            .admit(1000, Work::HeavyRead)
            .now_or_never()
            .is_some());
        assert!(admission
            .admit(1000, Work::HeavyRead)
            .now_or_never()
            .is_some());
        drop(held);
    }

    #[test]
    fn the_count_of_a_user_goes_when_their_last_call_is_answered() {
        let admission = Admission::default();
        let ticket = admission.admit_call(1000, 100).unwrap();
        assert_eq!(admission.users_with_calls(), 1);
        drop(ticket);
        assert_eq!(admission.users_with_calls(), 0);
    }

    #[test]
    fn a_users_calls_in_progress_hold_at_most_call_bytes_per_user() {
        let admission = Admission::default();
        let big = CALL_BYTES_PER_USER / 2;
        let first = admission.admit_call(1000, big).expect("half");
        let second = admission.admit_call(1000, big).expect("the other half");
        let refused = admission.admit_call(1000, 1).err().expect("one byte more");
        assert_eq!(refused.name(), "org.freedesktop.DBus.Error.LimitsExceeded");
        assert!(refused.message().contains("bytes"), "{}", refused.message());
        // A message larger than the whole budget never runs; root's always does.
        drop((first, second));
        assert!(admission.admit_call(1000, CALL_BYTES_PER_USER + 1).is_err());
        assert_eq!(admission.users_with_calls(), 0, "a refusal is not counted");
        assert!(admission.admit_call(0, 32 << 20).is_ok());
        // Answered calls give their bytes back.
        let again = admission
            .admit_call(1000, CALL_BYTES_PER_USER)
            .expect("all of it");
        drop(again);
        assert!(admission.admit_call(1000, CALL_BYTES_PER_USER).is_ok());
    }

    #[tokio::test]
    async fn a_users_heavy_reads_run_one_at_a_time_and_all_users_two() {
        let admission = Admission::default();
        let first = admission.admit(1000, Work::HeavyRead).await;
        assert!(!first.waited(), "a free place counted as waited for");
        // The same user's second measurement waits for the first.
        let mut second = Box::pin(admission.admit(1000, Work::HeavyRead));
        assert!(
            (&mut second).now_or_never().is_none(),
            "ran beside the first"
        );
        // A light read of that user does not wait for the measurement.
        let light = admission.admit(1000, Work::LightRead).now_or_never();
        assert!(light.is_some(), "a Verify waited for a measurement");
        // Another user's measurement takes the second place of all users; a third
        // user's waits, root's does not.
        let other = admission.admit(1001, Work::HeavyRead).now_or_never();
        assert!(other.as_ref().is_some_and(|p| !p.waited()));
        let mut third = Box::pin(admission.admit(1002, Work::HeavyRead));
        assert!((&mut third).now_or_never().is_none(), "a third ran at once");
        let root = admission.admit(0, Work::HeavyRead).now_or_never();
        assert!(root.is_some_and(|p| !p.waited()), "root's read waited");
        // The first user's first read ends: the place of all users it held goes to
        // the read that waited for it longest — the third user's — and the first
        // user's second read still waits for a place of all users.
        drop(first);
        let third = (&mut third).now_or_never();
        assert!(
            third.as_ref().is_some_and(|p| p.waited()),
            "the third user's read"
        );
        assert!((&mut second).now_or_never().is_none());
        drop(other);
        let second = second.now_or_never().expect("the second read at last");
        assert!(
            second.waited(),
            "a read that waited for its turn does not say so"
        );
    }

    #[tokio::test]
    async fn each_kind_of_work_runs_its_limits_per_user_and_for_all_users() {
        for work in [Work::LightRead, Work::HeavyRead, Work::FullListing] {
            let admission = Admission::default();
            let (all, per_user) = work.limits();
            assert!(per_user <= all, "{work:?}");
            // One user: `per_user` at once, the next waits until one ends.
            let mut held = Vec::new();
            for _ in 0..per_user {
                held.push(admission.admit(1000, work).await);
            }
            let mut next = Box::pin(admission.admit(1000, work));
            assert!((&mut next).now_or_never().is_none(), "{work:?}");
            held.pop();
            let next = next.now_or_never();
            assert!(next.is_some(), "{work:?}");
            held.extend(next);
            // All users: `all` at once, whoever they are.
            let mut uid = 1001;
            while held.len() < all {
                // Unconstrained: the test's task never yields, and tokio's budget of
                // operations per poll would make later acquires pend.
                match unconstrained(admission.admit(uid, work)).now_or_never() {
                    Some(permit) => held.push(permit),
                    None => uid += 1,
                }
            }
            let waits = unconstrained(admission.admit(uid + 1, work)).now_or_never();
            assert!(waits.is_none(), "{work:?}: more than {all} at once");
        }
    }
}
