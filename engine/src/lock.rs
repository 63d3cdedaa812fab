//! One lock per volume id (deliberate fix 9): every caller that works on a vid gets the
//! same mutex, also across remove and re-create, so two handles on one volume never
//! run operations concurrently. Entries are weak and vanish when unused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::model::VolumeRef;

#[derive(Default)]
pub struct VidLocks {
    map: Mutex<HashMap<VolumeRef, Weak<Mutex<()>>>>,
}

impl VidLocks {
    /// The lock of `vol`, shared with every other holder.
    pub fn get(&self, vol: &VolumeRef) -> Arc<Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = map.get(vol).and_then(Weak::upgrade) {
            return lock;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let lock = Arc::new(Mutex::new(()));
        map.insert(vol.clone(), Arc::downgrade(&lock));
        lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{PoolName, Vid};

    #[test]
    fn same_vid_shares_one_lock_and_others_do_not() {
        let locks = VidLocks::default();
        let a = VolumeRef {
            pool: PoolName::parse("p").unwrap(),
            vid: Vid::parse("appvms/a/private").unwrap(),
        };
        let b = VolumeRef {
            pool: PoolName::parse("p").unwrap(),
            vid: Vid::parse("appvms/a/root").unwrap(),
        };
        let l1 = locks.get(&a);
        let l2 = locks.get(&a);
        assert!(Arc::ptr_eq(&l1, &l2));
        assert!(!Arc::ptr_eq(&l1, &locks.get(&b)));
        let _held = l1.lock().unwrap();
        assert!(l2.try_lock().is_err());
    }
}
