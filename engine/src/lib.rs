//! The reflink storage engine of qubes-storaged: pools of plain sparse image files,
//! volumes with the Qubes `file-reflink` semantics, snapshots and clones by FICLONE
//! with a hole-preserving copy fallback, and the crash-safety discipline of temp file →
//! fsync → rename → fsync(dir).
//!
//! This crate knows nothing about D-Bus or async runtimes: every function blocks, and
//! the bus layer decides where it runs. See ARCHITECTURE.md for the map.

pub mod background;
pub mod barrier;
pub mod context;
pub mod copy;
pub mod delta;
pub mod dir;
pub mod durable;
pub mod engine;
pub mod error;
pub mod event;
pub mod extent;
pub mod failpoint;
pub mod fsync_fault;
pub mod instance;
pub mod journal;
pub mod layout;
pub mod lock;
pub mod loopdev;
pub mod meter;
pub mod model;
pub mod names;
pub mod note;
pub mod pool;
pub mod pool_state;
pub mod precache;
pub mod registry;
pub mod revision;
pub mod running;
pub mod space;
pub mod store;
pub mod sys;
pub mod volume;
pub mod writeback;
pub mod writers;

pub use context::{CancelToken, NoProgress, OpCtx, ProgressSink};
pub use delta::{Delta, Granularity};
pub use engine::{Engine, PoolSpec};
pub use error::{EngineError, ErrorKind, Result};
pub use event::{Event, EventKind};
pub use model::{
    PoolConfig, PoolInfo, Revision, RevisionDetails, VolumeConfig, VolumeInfo, VolumeKind,
    VolumeRef, VolumeSettings, VolumeSpec, DRIVER,
};
pub use names::{quote, ImageSize, PoolName, RevisionsToKeep, Vid, VmClass};
pub use note::{Description, NoteChange, RevisionNotes};
pub use space::{FileSpace, ImageRole, ImageSpace, VolumeSpace};
