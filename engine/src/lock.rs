//! One read-write lock per volume id (deliberate fix 9): every caller that works on a
//! vid gets the same lock, also across remove and re-create, so two handles on one
//! volume never change it concurrently. An operation that changes a volume holds its
//! lock exclusively; one that only needs a volume to stay as it is — a snapshot volume
//! starting or being created from its source — holds the source's lock shared, so the
//! snapshots of one template start in parallel while the template cannot commit, switch
//! snapshots off or disappear under them. Lock order: source, then consumer (a source
//! never locks its consumers). A clone holds its source shared only while it exports
//! the source's image, and never together with its target's lock.
//!
//! Entries are weak and vanish when unused; dead entries are swept when the map has
//! doubled since the last sweep, so taking a lock costs O(1) amortised however many
//! operations run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard, TryLockError, Weak};
use std::time::{Duration, Instant};

use crate::model::VolumeRef;

/// The map is swept of dead entries once it holds this many (or twice the live ones).
const SWEEP_MIN: usize = 64;

pub struct VidLocks {
    map: Mutex<LockMap>,
}

struct LockMap {
    locks: HashMap<VolumeRef, Weak<RwLock<()>>>,
    sweep_at: usize,
}

impl Default for VidLocks {
    fn default() -> Self {
        VidLocks {
            map: Mutex::new(LockMap {
                locks: HashMap::new(),
                sweep_at: SWEEP_MIN,
            }),
        }
    }
}

impl VidLocks {
    /// The lock of `vol`, shared with every other holder.
    pub fn get(&self, vol: &VolumeRef) -> Arc<RwLock<()>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = map.locks.get(vol).and_then(Weak::upgrade) {
            return lock;
        }
        if map.locks.len() >= map.sweep_at {
            map.locks.retain(|_, w| w.strong_count() > 0);
            map.sweep_at = SWEEP_MIN.max(2 * map.locks.len());
        }
        let lock = Arc::new(RwLock::new(()));
        map.locks.insert(vol.clone(), Arc::downgrade(&lock));
        lock
    }
}

/// The write guard of `lock`: waits as long as it takes (`patience` `None`), or at most
/// `patience`, then `None`. The standard lock has no timed acquire, so a bounded wait
/// retries with growing pauses (1 ms up to 16 ms): a 1 s patience costs some 70 tries.
pub fn write_within(
    lock: &RwLock<()>,
    patience: Option<Duration>,
) -> Option<RwLockWriteGuard<'_, ()>> {
    let Some(patience) = patience else {
        return Some(lock.write().unwrap_or_else(|e| e.into_inner()));
    };
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(1);
    loop {
        match lock.try_write() {
            Ok(guard) => return Some(guard),
            Err(TryLockError::Poisoned(e)) => return Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(16));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_write_gives_up_while_a_reader_holds_the_lock_and_succeeds_after() {
        let lock = RwLock::new(());
        let reader = lock.read().unwrap();
        let patience = Some(Duration::from_millis(30));
        assert!(write_within(&lock, patience).is_none());
        drop(reader);
        assert!(write_within(&lock, patience).is_some());
        assert!(write_within(&lock, None).is_some());
    }
    use crate::names::{PoolName, Vid};

    fn vref(vid: &str) -> VolumeRef {
        VolumeRef {
            pool: PoolName::parse("p").unwrap(),
            vid: Vid::parse(vid).unwrap(),
        }
    }

    #[test]
    fn same_vid_shares_one_lock_and_others_do_not() {
        let locks = VidLocks::default();
        let (a, b) = (vref("appvms/a/private"), vref("appvms/a/root"));
        let l1 = locks.get(&a);
        let l2 = locks.get(&a);
        assert!(Arc::ptr_eq(&l1, &l2));
        assert!(!Arc::ptr_eq(&l1, &locks.get(&b)));
        let _held = l1.write().unwrap();
        assert!(l2.try_read().is_err());
    }

    #[test]
    fn shared_holds_coexist_and_exclude_an_exclusive_one() {
        let locks = VidLocks::default();
        let source = vref("vm-templates/t/root");
        let (l1, l2) = (locks.get(&source), locks.get(&source));
        let r1 = l1.read().unwrap();
        let r2 = l2.try_read().expect("a second shared hold");
        assert!(l1.try_write().is_err());
        drop((r1, r2));
        assert!(l1.try_write().is_ok());
    }

    #[test]
    fn dead_entries_are_swept_as_the_map_grows() {
        let locks = VidLocks::default();
        for i in 0..10 * SWEEP_MIN {
            drop(locks.get(&vref(&format!("appvms/v{i}/private"))));
        }
        let map = locks.map.lock().unwrap();
        assert!(map.locks.len() <= SWEEP_MIN, "{}", map.locks.len());
    }
}
