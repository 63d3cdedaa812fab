//! The objects the service serves: a pool, a volume or a running Job, each with its
//! identity (name, path), the property values it last announced, and what calls on it
//! coordinate through.
//!
//! The announced values are written by the outbox only (`outbox.rs`), in the order
//! their PropertiesChanged go out; everything else only reads them. Each is held as an
//! `Arc` snapshot, so a reader (GetManagedObjects serialising 10 000 volumes) takes a
//! reference and lets go of the lock at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use qubes_storage_engine::{CancelToken, PoolName, VolumeRef};
use zbus::OwnedObjectPath;

use crate::bus::path;
use crate::bus::values::{JobIdentity, JobProgress, PoolValues, VolumeValues};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A served volume.
pub struct VolumeObject {
    pub vol: VolumeRef,
    pub path: OwnedObjectPath,
    values: Mutex<Arc<VolumeValues>>,
    /// Held by a call from before its engine work until its signals are queued, so the
    /// calls on one volume announce their changes in the order they made them. Only
    /// call tasks take it, one gate per call: never the engine, never the outbox.
    pub gate: tokio::sync::Mutex<()>,
    /// Held (off the executor) from reading the engine's view of the volume until
    /// its new values are queued, so a later read is never announced before an earlier
    /// one — also when the volume is refreshed as another volume's dependent.
    pub refresh: Mutex<()>,
}

impl VolumeObject {
    pub fn new(vol: VolumeRef, values: VolumeValues) -> VolumeObject {
        VolumeObject {
            path: path::volume_path(&vol),
            vol,
            values: Mutex::new(Arc::new(values)),
            gate: tokio::sync::Mutex::new(()),
            refresh: Mutex::new(()),
        }
    }

    pub fn values(&self) -> Arc<VolumeValues> {
        Arc::clone(&lock(&self.values))
    }

    /// Replaces the announced values (the outbox, as it announces them).
    pub fn announce(&self, values: Arc<VolumeValues>) -> Arc<VolumeValues> {
        std::mem::replace(&mut *lock(&self.values), values)
    }

    /// "volume <vid> in pool <pool>", as messages name it.
    pub fn describe(&self) -> String {
        self.vol.to_string()
    }
}

/// A served pool.
pub struct PoolObject {
    pub name: PoolName,
    pub path: OwnedObjectPath,
    values: Mutex<Arc<PoolValues>>,
    /// As [`VolumeObject::refresh`].
    pub refresh: Mutex<()>,
}

impl PoolObject {
    pub fn new(name: PoolName, values: PoolValues) -> PoolObject {
        PoolObject {
            path: path::pool_path(&name),
            name,
            values: Mutex::new(Arc::new(values)),
            refresh: Mutex::new(()),
        }
    }

    pub fn values(&self) -> Arc<PoolValues> {
        Arc::clone(&lock(&self.values))
    }

    pub fn announce(&self, values: Arc<PoolValues>) -> Arc<PoolValues> {
        std::mem::replace(&mut *lock(&self.values), values)
    }

    /// "pool <name>", as messages name it.
    pub fn describe(&self) -> String {
        format!("pool {}", self.name)
    }
}

/// A running copy, published while it runs.
pub struct JobObject {
    pub number: u64,
    pub path: OwnedObjectPath,
    pub identity: JobIdentity,
    pub cancel: CancelToken,
    started: Instant,
    /// Bytes copied so far, as the engine reports them (from its own thread).
    done: AtomicU64,
    /// The operation passed its point of no return: Cancel changes nothing any more.
    committed: AtomicBool,
    announced: Mutex<JobProgress>,
}

impl JobObject {
    pub fn new(number: u64, identity: JobIdentity, cancel: CancelToken) -> JobObject {
        JobObject {
            number,
            path: path::job_path(number),
            identity,
            cancel,
            started: Instant::now(),
            done: AtomicU64::new(0),
            committed: AtomicBool::new(false),
            announced: Mutex::new(JobProgress::default()),
        }
    }

    /// The engine's report: `done` bytes are copied.
    pub fn advance(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
    }

    /// The operation passed its point of no return (the engine's report).
    pub fn commit(&self) {
        self.committed.store(true, Ordering::Relaxed);
    }

    /// The progress as of now: bytes done, the mean rate since the start, the fraction,
    /// whether a Cancel can still stop it.
    pub fn progress_now(&self) -> JobProgress {
        let done = self.done.load(Ordering::Relaxed);
        let elapsed_us = self.started.elapsed().as_micros().max(1);
        let rate = u64::try_from(u128::from(done) * 1_000_000 / elapsed_us).unwrap_or(u64::MAX);
        let total = self.identity.total;
        let fraction = if total == 0 {
            1.0
        } else {
            (done as f64 / total as f64).min(1.0)
        };
        JobProgress {
            done,
            rate,
            fraction,
            cancelable: !self.committed.load(Ordering::Relaxed),
        }
    }

    pub fn announced(&self) -> JobProgress {
        *lock(&self.announced)
    }

    pub fn announce(&self, progress: JobProgress) -> JobProgress {
        std::mem::replace(&mut *lock(&self.announced), progress)
    }
}

/// Any served object with an interface.
#[derive(Clone)]
pub enum Object {
    Pool(Arc<PoolObject>),
    Volume(Arc<VolumeObject>),
    Job(Arc<JobObject>),
}

impl Object {
    pub fn path(&self) -> &OwnedObjectPath {
        match self {
            Object::Pool(p) => &p.path,
            Object::Volume(v) => &v.path,
            Object::Job(j) => &j.path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(total: u64) -> JobObject {
        let identity = JobIdentity {
            operation: "ImportVolume".into(),
            objects: vec![],
            total,
            start_time_us: 0,
            started_by: 0,
        };
        JobObject::new(1, identity, CancelToken::new())
    }

    #[test]
    fn progress_is_the_done_fraction_capped_at_one() {
        let j = job(200);
        j.advance(50);
        assert_eq!(j.progress_now().fraction, 0.25);
        j.advance(400);
        assert_eq!(j.progress_now().fraction, 1.0);
        assert_eq!(job(0).progress_now().fraction, 1.0);
    }

    #[test]
    fn job_path_is_numbered() {
        assert_eq!(job(1).path.as_str(), "/org/qubes/Storage/jobs/1");
    }
}
