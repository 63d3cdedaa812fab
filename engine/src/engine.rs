//! The engine's facade: the registry of pools and volumes, the per-vid locks and the
//! persistence of their configuration. Every method is blocking (file work); the bus
//! layer runs them off its executor. Volume operations take the volume's lock (one per
//! vid, shared by every caller) for their whole duration, so different volumes work in
//! parallel and one volume's operations are serialised.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::context::OpCtx;
use crate::error::Result;
use crate::model::{PoolConfig, PoolInfo, VolumeInfo, VolumeRef, VolumeSpec};
use crate::names::{PoolName, RevisionsToKeep, Vid};

/// What `CreatePool` asks for.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub name: PoolName,
    /// Must be absolute.
    pub dir_path: PathBuf,
    pub setup_check: bool,
    pub revisions_to_keep: RevisionsToKeep,
    pub ephemeral_volatile: bool,
}

pub struct Engine {}

#[allow(unused_variables)]
impl Engine {
    /// Load the pools and volumes persisted in `state_dir` (created if missing).
    pub fn open(state_dir: &Path) -> Result<Engine> {
        unimplemented!()
    }
    pub fn state_dir(&self) -> &Path {
        unimplemented!()
    }

    // ---- pools ----
    pub fn pool_names(&self) -> Vec<PoolName> {
        unimplemented!()
    }
    pub fn pool_config(&self, pool: &PoolName) -> Result<PoolConfig> {
        unimplemented!()
    }
    pub fn pool_info(&self, pool: &PoolName) -> Result<PoolInfo> {
        unimplemented!()
    }
    /// Pool setup (R§3.1) then registration; a refused pool leaves no directory behind.
    pub fn create_pool(&self, spec: PoolSpec) -> Result<PoolConfig> {
        unimplemented!()
    }
    /// `Busy` while the pool holds volumes. Never deletes files.
    pub fn remove_pool(&self, pool: &PoolName) -> Result<()> {
        unimplemented!()
    }
    pub fn set_pool_revisions_to_keep(&self, pool: &PoolName, value: RevisionsToKeep) -> Result<()> {
        unimplemented!()
    }
    pub fn set_pool_ephemeral_volatile(&self, pool: &PoolName, value: bool) -> Result<()> {
        unimplemented!()
    }

    // ---- volumes: registry and properties ----
    pub fn volume_vids(&self, pool: &PoolName) -> Result<Vec<Vid>> {
        unimplemented!()
    }
    pub fn volume_info(&self, vol: &VolumeRef) -> Result<VolumeInfo> {
        unimplemented!()
    }
    /// Registers the volume and creates its files (R§3.3 + R§3.4) as one step; on
    /// failure nothing stays registered.
    pub fn create_volume(&self, vol: &VolumeRef, spec: VolumeSpec, ctx: &OpCtx) -> Result<VolumeInfo> {
        unimplemented!()
    }
    /// `Busy` while started (R§3.6).
    pub fn remove_volume(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<()> {
        unimplemented!()
    }
    /// `Busy` while started.
    pub fn set_rw(&self, vol: &VolumeRef, rw: bool) -> Result<()> {
        unimplemented!()
    }
    /// Switching to or from −1 is `Busy` while started.
    pub fn set_revisions_to_keep(&self, vol: &VolumeRef, value: RevisionsToKeep) -> Result<()> {
        unimplemented!()
    }
    /// `true` is `InvalidArgument` for snap_on_start, save_on_stop or read-only volumes.
    pub fn set_ephemeral(&self, vol: &VolumeRef, value: bool) -> Result<()> {
        unimplemented!()
    }

    // ---- volumes: lifecycle ----
    /// R§3.7; returns the block device path (the dirty image).
    pub fn start(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<PathBuf> {
        unimplemented!()
    }
    /// R§3.8, idempotent.
    pub fn stop(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<()> {
        unimplemented!()
    }
    /// R§3.5: Ok when the image the next start needs exists.
    pub fn verify(&self, vol: &VolumeRef) -> Result<()> {
        unimplemented!()
    }
    /// R§3.13; `None` = highest id. `NotFound` without revisions or for an unknown id.
    pub fn revert(&self, vol: &VolumeRef, revision: Option<u64>, ctx: &OpCtx) -> Result<()> {
        unimplemented!()
    }
    /// R§3.15; shrinking is `InvalidArgument` unless `allow_shrink`.
    pub fn resize(&self, vol: &VolumeRef, size: u64, allow_shrink: bool, ctx: &OpCtx) -> Result<()> {
        unimplemented!()
    }
    /// A read-only open file of the committed image; stays consistent while later
    /// commits replace the file.
    pub fn export(&self, vol: &VolumeRef) -> Result<File> {
        unimplemented!()
    }
    /// R§3.17: a fresh sparse import file of `size` bytes; returns it opened write-only.
    pub fn import_data(&self, vol: &VolumeRef, size: u64, ctx: &OpCtx) -> Result<File> {
        unimplemented!()
    }
    /// R§3.18.
    pub fn import_data_end(&self, vol: &VolumeRef, success: bool, ctx: &OpCtx) -> Result<()> {
        unimplemented!()
    }
    /// R§3.19: clone `source` (any pool) into `vol`.
    pub fn import_volume(&self, vol: &VolumeRef, source: &VolumeRef, ctx: &OpCtx) -> Result<()> {
        unimplemented!()
    }
}
