//! Crash points for the crash tests. With the `failpoints` feature, every completed
//! durable step (see [`crate::durable`]) calls [`step`]; when the environment variable
//! `QSD_CRASH_AFTER_STEP=k` is set, the process aborts right after the k-th step, as a
//! power loss would stop it (nothing is unwound, no destructor runs). A test may also
//! make one named step fail on its own thread ([`refuse_next_on_this_thread`], checked
//! by [`refused`]), as a failing disk would. Without the feature [`step`] and
//! [`refused`] are empty inline functions.

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

#[cfg(feature = "failpoints")]
mod refusal {
    use std::cell::Cell;

    thread_local! {
        /// The step to refuse, and how many of its checks pass before.
        static REFUSED: Cell<Option<(&'static str, usize)>> = const { Cell::new(None) };
    }

    /// The next [`refused`] check of the step `name` on this thread fails (EIO).
    pub fn refuse_next_on_this_thread(name: &'static str) {
        refuse_on_this_thread(name, 0);
    }

    /// The check of the step `name` on this thread after `passing` ones that pass fails
    /// (EIO).
    pub fn refuse_on_this_thread(name: &'static str, passing: usize) {
        REFUSED.with(|r| r.set(Some((name, passing))));
    }

    /// An I/O error if a test asked the step `name` to fail on this thread (once).
    pub fn refused(name: &str) -> std::io::Result<()> {
        match REFUSED.with(|r| r.get()) {
            Some((armed, 0)) if armed == name => {
                REFUSED.with(|r| r.set(None));
                Err(std::io::Error::from_raw_os_error(libc::EIO))
            }
            Some((armed, passing)) if armed == name => {
                REFUSED.with(|r| r.set(Some((armed, passing - 1))));
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(feature = "failpoints")]
pub use refusal::{refuse_next_on_this_thread, refuse_on_this_thread, refused};

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn step(_name: &str) {}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn refused(_name: &str) -> std::io::Result<()> {
    Ok(())
}
