//! Crash points for the crash tests. With the `failpoints` feature, every completed
//! durable step (see [`crate::durable`]) calls [`step`]; when the environment variable
//! `QSD_CRASH_AFTER_STEP=k` is set, the process aborts right after the k-th step, as a
//! power loss would stop it (nothing is unwound, no destructor runs). Without the
//! feature [`step`] is an empty inline function.

#[cfg(feature = "failpoints")]
mod imp {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static STEPS: AtomicU64 = AtomicU64::new(0);
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();

    pub fn step(name: &str) {
        let limit = *LIMIT.get_or_init(|| {
            std::env::var("QSD_CRASH_AFTER_STEP")
                .ok()
                .and_then(|v| v.parse().ok())
        });
        let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
        if limit == Some(n) {
            eprintln!("failpoint: aborting after step {n} ({name})");
            std::process::abort();
        }
    }

    /// Steps completed so far in this process.
    pub fn steps() -> u64 {
        STEPS.load(Ordering::SeqCst)
    }
}

#[cfg(feature = "failpoints")]
pub use imp::{step, steps};

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn step(_name: &str) {}
