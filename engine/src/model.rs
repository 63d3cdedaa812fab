//! The engine's data model as callers see it: what a pool and a volume are configured
//! as (persisted), and snapshots of their live state (derived from the filesystem on
//! every read, never cached).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::layout::Revision;
use crate::names::{PoolName, RevisionsToKeep, Vid};
use crate::note::RevisionNotes;

pub const DRIVER: &str = "file-reflink";

/// A pool as configured (persisted in the state directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: PoolName,
    pub dir_path: PathBuf,
    pub setup_check: bool,
    pub revisions_to_keep: RevisionsToKeep,
    pub ephemeral_volatile: bool,
}

/// A pool's live view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    pub config: PoolConfig,
    /// `(data_size, data_usage)` from statvfs; `None` when the directory is missing.
    pub usage: Option<(u64, u64)>,
    /// Another pool whose directory contains this one's (R§3.23).
    pub included_in: Option<PoolName>,
}

/// A volume as configured (persisted). The filesystem remains the source of truth for
/// started/dirty state, revisions and size; `size` here is the nominal size, used only
/// when no image file exists (R§3.21).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    pub vid: Vid,
    pub size: u64,
    pub rw: bool,
    pub snap_on_start: bool,
    pub save_on_stop: bool,
    pub source: Option<Vid>,
    pub revisions_to_keep: RevisionsToKeep,
    /// `None` = the default of R§1.3.
    pub ephemeral: Option<bool>,
    /// Set when snapshots are disabled (revisions_to_keep switched to −1): the
    /// committed image may still be read through exports made while they were enabled,
    /// so the next start gives the VM a copy of it rather than that very inode (an
    /// export never changes afterwards). Cleared by that start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub committed_image_shared: bool,
    /// Descriptions and pins of its revisions ([`crate::note`]); absent from the state
    /// files when there are none, as in earlier versions.
    #[serde(default, skip_serializing_if = "RevisionNotes::is_empty")]
    pub revision_notes: RevisionNotes,
}

/// What `CreateVolume` asks for, before defaults are applied.
#[derive(Debug, Clone, Default)]
pub struct VolumeSpec {
    pub size: u64,
    pub rw: bool,
    pub snap_on_start: bool,
    pub save_on_stop: bool,
    pub source: Option<Vid>,
    pub revisions_to_keep: Option<RevisionsToKeep>,
    pub ephemeral: Option<bool>,
    /// Register a volume whose files already exist in the pool directory (an existing
    /// Qubes pool) instead of refusing with `AlreadyExists`. Nothing is touched.
    pub adopt: bool,
}

/// The kind of a volume (R§1.4), derived from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    /// save_on_stop: commits at stop, keeps revisions.
    Origin,
    /// save_on_stop with revisions_to_keep −1: the VM writes into the committed image.
    OriginSnapshotsDisabled,
    /// snap_on_start: a fresh copy of the source at each start, discarded at stop.
    Snapshot,
    /// neither: an empty sparse image at each start, discarded at stop.
    Volatile,
    /// snap_on_start and save_on_stop.
    OriginSnapshot,
}

impl VolumeConfig {
    pub fn kind(&self) -> VolumeKind {
        match (self.snap_on_start, self.save_on_stop) {
            (false, true) if self.revisions_to_keep.is_disabled() => {
                VolumeKind::OriginSnapshotsDisabled
            }
            (false, true) => VolumeKind::Origin,
            (true, false) => VolumeKind::Snapshot,
            (false, false) => VolumeKind::Volatile,
            (true, true) => VolumeKind::OriginSnapshot,
        }
    }

    pub fn snapshots_disabled(&self) -> bool {
        self.kind() == VolumeKind::OriginSnapshotsDisabled
    }

    /// The effective `ephemeral` value (R§1.3).
    pub fn ephemeral_effective(&self, pool_ephemeral_volatile: bool) -> bool {
        match self.ephemeral {
            Some(v) => v,
            None if self.snap_on_start || self.save_on_stop || !self.rw => false,
            None => pool_ephemeral_volatile,
        }
    }
}

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

/// One revision as people see it: its timestamp to the nanosecond, its note, and the
/// bytes only it holds as last measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionDetails {
    pub revision: Revision,
    /// The nanoseconds of the timestamp: the revision file's mtime, which is its
    /// image's mtime to the nanosecond when its whole seconds match the name's
    /// timestamp; 0 otherwise (files made by the reference driver or earlier versions,
    /// whose mtime is the time they were made).
    pub nanos: u32,
    pub description: String,
    pub pinned: bool,
    /// Bytes only this revision references (what deleting it gives back), as the last
    /// measurement found them; `None` when it was never measured since the service
    /// started.
    pub exclusive: Option<u64>,
}

/// A volume's live view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub pool: PoolName,
    pub config: VolumeConfig,
    /// Size of the dirty, else the clean image, else the nominal size.
    pub size: u64,
    /// Allocated bytes of the dirty, else the clean image, else 0.
    pub usage: u64,
    pub ephemeral: bool,
    pub snapshots_disabled: bool,
    pub is_dirty: bool,
    pub is_outdated: bool,
    /// The dirty image exists.
    pub started: bool,
    /// Ordered by id ascending.
    pub revisions: Vec<Revision>,
    /// The same revisions, with their details.
    pub revision_details: Vec<RevisionDetails>,
    pub block_device_path: PathBuf,
}

/// What a volume's registered configuration and its pool's defaults say of it, read
/// without its files: what the property writes change, known also while the files
/// cannot be read (the pool directory moved away, its filesystem not mounted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSettings {
    pub config: VolumeConfig,
    pub ephemeral: bool,
    pub snapshots_disabled: bool,
}

/// A volume's address: pool and vid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeRef {
    pub pool: PoolName,
    pub vid: Vid,
}

impl std::fmt::Display for VolumeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "volume {} in pool {}", self.vid, self.pool)
    }
}
