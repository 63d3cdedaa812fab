//! What every engine operation is handed besides its arguments: a [`ProgressSink`] that
//! hears about long data copies (the bus layer publishes them as Job objects), a
//! [`CancelToken`] the copy engine polls between data ranges, and an event collector
//! ([`Event`]s become the bus layer's domain signals). Events are collected, not sent,
//! so the caller emits them after the operation and before its reply.
//!
//! An operation's outcome is its return value, nothing else. It may make several
//! copies (a clone copies the image, then the commit copies a revision on a filesystem
//! without reflinks), each announced with `copy_started` … `copy_finished`: the end of
//! one copy is not the end of the operation. Each operation that makes a copy has a
//! **point of no return** ([`OpCtx::point_of_no_return`], announced with
//! [`ProgressSink::committed`]): up to it a cancel makes it fail with `Cancelled`
//! having changed nothing; from it on a cancel changes nothing — the operation commits
//! and returns its real outcome, success or a failure of another kind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::event::{Event, EventKind};
use crate::model::VolumeRef;

/// Hears about data copies that are not reflinks (a reflink is instant and silent).
pub trait ProgressSink: Send + Sync {
    /// A byte copy of `total` bytes of data (holes excluded) begins, for `operation`
    /// (e.g. "ImportVolume").
    fn copy_started(&self, _operation: &str, _total: u64) {}
    /// A byte copy of the volume's own image begins (the precache of a pool without
    /// reflinks, made by a commit): the operation's target is the only volume it works
    /// on. The same as [`Self::copy_started`] unless a sink tells them apart.
    fn own_copy_started(&self, operation: &str, total: u64) {
        self.copy_started(operation, total)
    }
    /// `done` bytes of the current copy are written (monotonic, ≤ total).
    fn copy_advanced(&self, _done: u64) {}
    /// The current copy ended (successfully or not). Not the end of the operation:
    /// another copy may follow, and the operation may still fail or succeed.
    fn copy_finished(&self, _success: bool) {}
    /// Why the current copy failed, just before its [`Self::copy_finished`]: a copy
    /// whose failure the operation survives (a commit's precache) can say so.
    fn copy_failed(&self, _why: &str) {}
    /// The operation passed its point of no return: a cancel no longer has any effect
    /// (a Job stops being cancelable). Called at most once.
    fn committed(&self) {}
}

/// A sink that ignores everything.
pub struct NoProgress;
impl ProgressSink for NoProgress {}

/// A shared cancellation flag.
#[derive(Clone, Default, Debug)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The context of one engine operation.
pub struct OpCtx {
    operation: String,
    progress: Arc<dyn ProgressSink>,
    cancel: CancelToken,
    /// Past the point of no return: the cancel token is no longer heard.
    committed: AtomicBool,
    events: Mutex<Vec<Event>>,
    subject: Mutex<Option<VolumeRef>>,
    /// Who asked (the bus layer puts the caller's unique bus name here): an import
    /// remembers its owner, so it can be abandoned when the owner goes away, and only
    /// the owner may end it.
    caller: Option<String>,
    /// The caller holds every privilege the service has (the bus layer sets it for uid
    /// 0): it may end another caller's import.
    privileged: bool,
    /// How long the operation waits for the volume's lock before it is `Busy`
    /// (`None`: as long as the operation holding it runs).
    patience: Option<Duration>,
}

impl OpCtx {
    pub fn new(
        operation: impl Into<String>,
        progress: Arc<dyn ProgressSink>,
        cancel: CancelToken,
    ) -> Self {
        OpCtx {
            operation: operation.into(),
            progress,
            cancel,
            committed: AtomicBool::new(false),
            events: Mutex::new(Vec::new()),
            subject: Mutex::new(None),
            caller: None,
            privileged: false,
            patience: None,
        }
    }

    /// A context with no progress reporting and no cancellation (tests, internal use).
    pub fn quiet(operation: impl Into<String>) -> Self {
        Self::new(operation, Arc::new(NoProgress), CancelToken::new())
    }

    /// The same context, for an operation that waits at most `patience` for another
    /// operation on its volume, then is `Busy`.
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = Some(patience);
        self
    }

    pub fn patience(&self) -> Option<Duration> {
        self.patience
    }

    /// The same context, on behalf of `caller`.
    pub fn with_caller(mut self, caller: impl Into<String>) -> Self {
        self.caller = Some(caller.into());
        self
    }

    pub fn caller(&self) -> Option<&str> {
        self.caller.as_deref()
    }

    /// The same context, for a caller that is (or is not) privileged.
    pub fn with_privileged(mut self, privileged: bool) -> Self {
        self.privileged = privileged;
        self
    }

    pub fn is_privileged(&self) -> bool {
        self.privileged
    }

    pub fn operation(&self) -> &str {
        &self.operation
    }
    pub fn progress(&self) -> &dyn ProgressSink {
        &*self.progress
    }
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }
    /// A cancel was asked for before the point of no return.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled() && !self.is_committed()
    }

    /// From now on the operation commits whatever a cancel says (see the module doc).
    pub fn point_of_no_return(&self) {
        if !self.committed.swap(true, Ordering::SeqCst) {
            self.progress.committed();
        }
    }

    /// Whether the operation passed its point of no return.
    pub fn is_committed(&self) -> bool {
        self.committed.load(Ordering::SeqCst)
    }

    /// The volume that events emitted with [`Self::emit_volume`] are about (set by the
    /// engine before it runs a volume operation).
    pub fn set_subject(&self, vol: &VolumeRef) {
        *self.subject.lock().unwrap_or_else(|e| e.into_inner()) = Some(vol.clone());
    }

    /// Emit an event about the current subject volume.
    pub fn emit_volume(&self, kind: EventKind) {
        let subject = self
            .subject
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(vol) = subject {
            self.emit(Event {
                pool: vol.pool,
                vid: vol.vid,
                kind,
            });
        }
    }

    pub fn emit(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }

    /// The events emitted so far, in order; the collector is emptied.
    pub fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct CountCommits(AtomicUsize);
    impl ProgressSink for CountCommits {
        fn committed(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_cancel_is_not_heard_after_the_point_of_no_return() {
        let sink = Arc::new(CountCommits::default());
        let token = CancelToken::new();
        let ctx = OpCtx::new("t", sink.clone(), token.clone());
        token.cancel();
        assert!(ctx.is_cancelled());
        ctx.point_of_no_return();
        ctx.point_of_no_return();
        assert!(!ctx.is_cancelled());
        assert!(ctx.is_committed());
        assert_eq!(sink.0.load(Ordering::SeqCst), 1, "announced once");
    }
}
