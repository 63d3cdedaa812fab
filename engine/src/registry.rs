//! One live pool: its state in memory ([`PoolState`]) and the files that make each
//! change durable. A change is applied only after the store made it durable
//! ([`Pool::change`]), so memory never runs ahead of the disk; readers (getters) take the
//! state's read lock only for a lookup and never wait for a journal flush or a copy.
//! Changes recorded at the same time share one journal fdatasync: each is written under
//! the files' lock, synced without it, and applied in journal order by whoever takes
//! the lock next.

use std::sync::{Mutex, RwLock, RwLockReadGuard};

use tracing::warn;

use crate::error::{EngineError, Result};
use crate::model::PoolConfig;
pub use crate::pool_state::{check_pool, check_volume, validate_ephemeral, Change, PoolState};
use crate::store::PoolFiles;

/// A change written to its pool's journal, not yet durable ([`Pool::begin`]).
pub struct Recording<'a> {
    pool: &'a Pool,
    written: crate::store::Written,
}

impl Recording<'_> {
    /// Wait until the change is durable (sharing the fdatasync with changes written at
    /// the same time), then apply it with every change durable before it.
    pub fn finish(self) -> Result<()> {
        let Recording { pool, written } = self;
        let outcome = written.syncer.sync(written.ticket);
        let mut files = pool.files();
        files.finish(written.ticket, outcome)?;
        pool.apply_durable(&mut files);
        Ok(())
    }
}

/// A live pool: its state, and the files that make each change durable.
pub struct Pool {
    state: RwLock<PoolState>,
    /// Held while a change is written and while durable changes are applied: memory
    /// follows the journal in order, and a compaction sees a state that holds exactly
    /// the recorded changes. Not held while a change waits for its fdatasync.
    files: Mutex<PoolFiles>,
    /// Held for the whole of a change of the pool's options (read, changed, recorded,
    /// applied), so two never lose one another.
    options: Mutex<()>,
}

impl Pool {
    pub fn new(state: PoolState, files: PoolFiles) -> Pool {
        Pool {
            state: RwLock::new(state),
            files: Mutex::new(files),
            options: Mutex::new(()),
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, PoolState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn files(&self) -> std::sync::MutexGuard<'_, PoolFiles> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `change` durably, then apply it (with any change recorded at the same
    /// time, in order); compact when the journal has grown enough (a failed
    /// compaction only costs load time: the change is recorded).
    pub fn change(&self, change: Change) -> Result<()> {
        self.begin(change)?.finish()
    }

    /// Write `change` to the journal now and make it durable (and applied) with
    /// [`Recording::finish`] — e.g. on another thread while the file work it protects
    /// is prepared.
    pub fn begin(&self, change: Change) -> Result<Recording<'_>> {
        let written = self.files().write(change)?;
        Ok(Recording {
            pool: self,
            written,
        })
    }

    /// Apply every change now durable, in order; then compact if it is due.
    fn apply_durable(&self, files: &mut PoolFiles) {
        let changes = files.take_durable();
        if changes.is_empty() {
            return;
        }
        let volumes = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            for change in changes {
                state.apply(change);
            }
            state.len()
        };
        if files.should_compact(volumes) {
            if let Err(err) = files.compact(&self.read()) {
                warn!(error = %err, "cannot compact the state journal; it keeps growing until a compaction succeeds");
            }
        }
    }

    /// Change the pool's options: read, changed by `f`, recorded and applied under
    /// the options' lock, so two concurrent changes never lose one another.
    pub fn change_config(&self, f: impl FnOnce(&mut PoolConfig)) -> Result<()> {
        let _options = self.options.lock().unwrap_or_else(|e| e.into_inner());
        let mut config = self.read().config().clone();
        f(&mut config);
        self.change(Change::Pool(config))
    }

    /// Fold the journal into the snapshot now (changes being recorded are made
    /// durable and applied first).
    pub fn compact(&self) -> Result<()> {
        let mut files = self.files();
        let changes = files.settle()?;
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            for change in changes {
                state.apply(change);
            }
        }
        files.compact(&self.read())
    }

    /// Forget the pool's files if it holds no volume (`Busy` otherwise); later
    /// changes are `NotFound`. Checked under the files' lock, so no volume can be
    /// registered in between.
    pub fn delete_if_empty(&self) -> Result<()> {
        let mut files = self.files();
        if !files.is_settled() {
            return Err(EngineError::busy("changes of the pool are being recorded"));
        }
        let state = self.read();
        let (volumes, removing) = (state.len(), state.removing().count());
        if volumes > 0 {
            let holds = match volumes {
                1 => "1 volume; remove it first".to_owned(),
                n => format!("{n} volumes; remove them first"),
            };
            return Err(EngineError::busy(format!("the pool still holds {holds}")));
        }
        if removing > 0 {
            let noun = if removing == 1 { "volume" } else { "volumes" };
            return Err(EngineError::busy(format!(
                "the files of {removing} removed {noun} could not be deleted yet"
            )));
        }
        drop(state);
        files.delete()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{pool_config, volume};
    use crate::store::Store;

    fn vids(pool: &Pool) -> Vec<String> {
        pool.read().volumes().map(|c| c.vid.to_string()).collect()
    }

    /// A change recorded while another's flush has failed and before that one's writer
    /// came back to cut it: the failed change is neither kept nor applied, the other
    /// is both — in memory and in the journal.
    #[test]
    fn a_change_recorded_beside_a_failed_flush_is_kept_and_the_failed_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let config = pool_config("p");
        let pool = Pool::new(
            PoolState::new(config.clone()),
            store.create(&config).unwrap(),
        );
        let failed = pool.begin(Change::Put(volume("appvms/a/private"))).unwrap();
        failed.written.syncer.fail_next();
        let outcome = failed.written.syncer.sync(failed.written.ticket);
        assert!(outcome.is_err());
        pool.begin(Change::Put(volume("appvms/b/private")))
            .unwrap()
            .finish()
            .expect("the change recorded after the failure");
        // The failed change's writer comes back.
        let mut files = pool.files();
        assert!(files.finish(failed.written.ticket, outcome).is_err());
        pool.apply_durable(&mut files);
        drop(files);
        assert_eq!(vids(&pool), ["appvms/b/private"]);
        let (reloaded, _) = store.load().unwrap().pop().unwrap();
        let reloaded: Vec<String> = reloaded.volumes().map(|c| c.vid.to_string()).collect();
        assert_eq!(reloaded, ["appvms/b/private"]);
    }
}
