//! Persistence of the configuration: one human-readable JSON file per pool in
//! `<state dir>/pools/<pool name>.json`, holding the pool's options and its volumes'
//! configurations, always replaced atomically (temp → fsync → rename → fsync dir).
//! Only configuration lives here; the pool directory stays the source of truth for
//! started state, revisions and sizes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::durable;
use crate::error::{EngineError, IoContext, Result};
use crate::model::{PoolConfig, VolumeConfig};
use crate::names::{PoolName, Vid};

/// One pool file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolRecord {
    pub pool: PoolConfig,
    #[serde(default)]
    pub volumes: BTreeMap<Vid, VolumeConfig>,
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Open (creating if needed) `<state_dir>/pools`, dropping temp files a crash left.
    pub fn open(state_dir: &Path) -> Result<Store> {
        let dir = state_dir.join("pools");
        std::fs::create_dir_all(&dir).io_ctx(|| format!("cannot create {}", dir.display()))?;
        let store = Store { dir };
        for entry in store.entries()? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".json~") {
                info!(file = %entry.path().display(), "removing an incomplete state file");
                durable::remove(&entry.path())?;
            }
        }
        Ok(store)
    }

    fn entries(&self) -> Result<Vec<std::fs::DirEntry>> {
        let list = std::fs::read_dir(&self.dir)
            .io_ctx(|| format!("cannot list {}", self.dir.display()))?;
        list.collect::<std::io::Result<Vec<_>>>()
            .io_ctx(|| format!("cannot list {}", self.dir.display()))
    }

    fn path(&self, pool: &PoolName) -> PathBuf {
        self.dir.join(format!("{pool}.json"))
    }

    /// Every persisted pool. A file that does not parse is an error naming the file:
    /// the daemon must not start and silently forget a pool.
    pub fn load(&self) -> Result<Vec<PoolRecord>> {
        let mut records = Vec::new();
        for entry in self.entries()? {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .io_ctx(|| format!("cannot read {}", path.display()))?;
            let record: PoolRecord = serde_json::from_str(&text).map_err(|e| {
                EngineError::invalid(format!("state file {} is not valid: {e}", path.display()))
            })?;
            records.push(record);
        }
        records.sort_by(|a, b| a.pool.name.cmp(&b.pool.name));
        Ok(records)
    }

    pub fn save(&self, record: &PoolRecord) -> Result<()> {
        let mut text = serde_json::to_string_pretty(record).map_err(|e| {
            EngineError::new(
                crate::error::ErrorKind::Failed,
                format!("cannot serialise state: {e}"),
            )
        })?;
        text.push('\n');
        durable::replace_with(&self.path(&record.pool.name), |file| {
            use std::io::Write;
            let mut file = file;
            file.write_all(text.as_bytes())
                .io_ctx(|| "cannot write the state file".to_owned())
        })
    }

    pub fn delete(&self, pool: &PoolName) -> Result<()> {
        durable::remove(&self.path(pool)).map(|_| ())
    }
}
