//! Progress and cancellation of the long read-only walks — measuring space
//! ([`crate::space`]) and comparing two images ([`crate::delta`]): above a size they are
//! announced through the operation's [`ProgressSink`] like a copy (the bus layer
//! publishes a Job with progress and Cancel), and the cancel token is polled between
//! batches. Such a walk changes nothing, so a cancel at any point fails it with
//! `Cancelled` and nothing to undo.
//!
//! [`ProgressSink`]: crate::context::ProgressSink

use crate::context::OpCtx;
use crate::error::{EngineError, Result};

/// Progress is reported at most once per this many bytes (and at the end).
const REPORT_STEP: u64 = 16 << 20;

/// The progress of one walk over `total` bytes.
pub struct Meter<'a> {
    ctx: &'a OpCtx,
    /// Announced as a Job (the walk is large enough).
    announced: bool,
    done: u64,
    reported: u64,
    finished: bool,
}

impl<'a> Meter<'a> {
    /// A walk over `total` bytes, announced when `total` reaches `announce_from`.
    pub fn start(ctx: &'a OpCtx, total: u64, announce_from: u64) -> Meter<'a> {
        let announced = total >= announce_from && total > 0;
        if announced {
            ctx.progress().copy_started(ctx.operation(), total);
        }
        Meter {
            ctx,
            announced,
            done: 0,
            reported: 0,
            finished: false,
        }
    }

    /// `bytes` more are done; `Cancelled` when a cancel was asked for.
    pub fn advance(&mut self, bytes: u64) -> Result<()> {
        if self.ctx.is_cancelled() {
            return Err(EngineError::cancelled());
        }
        self.done += bytes;
        if self.announced && self.done >= self.reported + REPORT_STEP {
            self.reported = self.done;
            self.ctx.progress().copy_advanced(self.done);
        }
        Ok(())
    }

    /// The walk ended (`success` or not).
    pub fn finish(&mut self, success: bool) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.announced {
            if success && self.done != self.reported {
                self.ctx.progress().copy_advanced(self.done);
            }
            self.ctx.progress().copy_finished(success);
        }
    }
}

impl Drop for Meter<'_> {
    /// A walk left by an error or a cancel ends unsuccessfully.
    fn drop(&mut self) {
        self.finish(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{CancelToken, ProgressSink};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);
    impl ProgressSink for Heard {
        fn copy_started(&self, operation: &str, total: u64) {
            self.0
                .lock()
                .unwrap()
                .push(format!("start {operation} {total}"));
        }
        fn copy_advanced(&self, done: u64) {
            self.0.lock().unwrap().push(format!("done {done}"));
        }
        fn copy_finished(&self, success: bool) {
            self.0.lock().unwrap().push(format!("end {success}"));
        }
    }

    fn ctx(sink: &Arc<Heard>, token: &CancelToken) -> OpCtx {
        OpCtx::new("MeasureSpace", sink.clone(), token.clone())
    }

    #[test]
    fn a_small_walk_is_silent() {
        let (sink, token) = (Arc::new(Heard::default()), CancelToken::new());
        let ctx = ctx(&sink, &token);
        let mut meter = Meter::start(&ctx, 10, 100);
        meter.advance(10).unwrap();
        meter.finish(true);
        assert!(sink.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_large_walk_is_announced_with_its_progress_and_end() {
        let (sink, token) = (Arc::new(Heard::default()), CancelToken::new());
        let ctx = ctx(&sink, &token);
        let mut meter = Meter::start(&ctx, 40 << 20, 1);
        meter.advance(20 << 20).unwrap();
        meter.advance(20 << 20).unwrap();
        meter.finish(true);
        let heard = sink.0.lock().unwrap().clone();
        assert_eq!(
            heard,
            [
                format!("start MeasureSpace {}", 40 << 20),
                format!("done {}", 20 << 20),
                format!("done {}", 40 << 20),
                "end true".to_owned()
            ]
        );
    }

    #[test]
    fn a_cancel_stops_the_walk_and_ends_it_unsuccessfully() {
        let (sink, token) = (Arc::new(Heard::default()), CancelToken::new());
        let ctx = ctx(&sink, &token);
        {
            let mut meter = Meter::start(&ctx, 40 << 20, 1);
            token.cancel();
            let err = meter.advance(1).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Cancelled);
        }
        assert_eq!(sink.0.lock().unwrap().last().unwrap(), "end false");
    }
}
