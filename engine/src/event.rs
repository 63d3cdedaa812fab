//! Domain events of volumes: what happened, in the engine's terms. The bus layer turns
//! each into the signal of the same name on the volume's object.

use crate::names::{PoolName, Vid};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Started {
        block_device_path: String,
    },
    Stopped {
        committed: bool,
    },
    RevisionAdded {
        id: u64,
        timestamp: i64,
    },
    RevisionPruned {
        id: u64,
        timestamp: i64,
    },
    Reverted {
        id: u64,
    },
    /// A revision's description or pin changed (not its existence: RevisionAdded and
    /// RevisionPruned say that).
    RevisionDetailsSet {
        id: u64,
        description: String,
        pinned: bool,
    },
    Resized {
        old_size: u64,
        new_size: u64,
    },
    Imported {
        success: bool,
    },
}

impl EventKind {
    /// Does the event tell that an operation failed (an import or a clone discarded)?
    /// Such an event is announced also when the call fails; the others describe
    /// changes, which a failed call gave back.
    pub fn tells_a_failure(&self) -> bool {
        matches!(self, EventKind::Imported { success: false })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub pool: PoolName,
    pub vid: Vid,
    pub kind: EventKind,
}
