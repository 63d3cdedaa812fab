//! The engine's one error type: a stable [`ErrorKind`] (which the bus layer maps one to
//! one onto `org.qubes.Storage.Error.*`), the object the error is about, one human
//! sentence saying why, and the underlying OS error if there was one.
//!
//! Messages never carry raw tool output or backtraces: the OS error is rendered with
//! its `strerror` text only.

use std::fmt;
use std::io;

/// Stable classification of an engine failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Failed,
    NotFound,
    AlreadyExists,
    InvalidArgument,
    Busy,
    NotSupported,
    NoSpace,
    Cancelled,
}

impl ErrorKind {
    /// The errno classes that matter to callers: a full disk or quota is `NoSpace`,
    /// everything else an operation did not expect is `Failed` (a size the filesystem
    /// cannot hold is the caller's mistake only where the caller gave the size:
    /// [`EngineError::size_given_too_large`]).
    pub fn from_io(err: &io::Error) -> ErrorKind {
        match err.raw_os_error() {
            Some(libc_enospc) if libc_enospc == rustix::io::Errno::NOSPC.raw_os_error() => {
                ErrorKind::NoSpace
            }
            Some(e) if e == rustix::io::Errno::DQUOT.raw_os_error() => ErrorKind::NoSpace,
            Some(e) if e == rustix::io::Errno::NOENT.raw_os_error() => ErrorKind::NotFound,
            _ => ErrorKind::Failed,
        }
    }
}

/// An engine failure: kind + object + reason (+ OS error).
#[derive(Debug)]
pub struct EngineError {
    kind: ErrorKind,
    object: Option<String>,
    reason: String,
    source: Option<io::Error>,
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub fn new(kind: ErrorKind, reason: impl Into<String>) -> Self {
        EngineError {
            kind,
            object: None,
            reason: reason.into(),
            source: None,
        }
    }

    /// An OS error while doing `what` (a phrase like "cannot rename a.img to b.img").
    pub fn io(what: impl Into<String>, err: io::Error) -> Self {
        EngineError {
            kind: ErrorKind::from_io(&err),
            object: None,
            reason: what.into(),
            source: Some(err),
        }
    }

    pub fn not_found(reason: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, reason)
    }
    pub fn busy(reason: impl Into<String>) -> Self {
        Self::new(ErrorKind::Busy, reason)
    }
    pub fn invalid(reason: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, reason)
    }
    pub fn not_supported(reason: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotSupported, reason)
    }
    pub fn already_exists(reason: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, reason)
    }
    pub fn cancelled() -> Self {
        Self::new(
            ErrorKind::Cancelled,
            "the operation was cancelled; nothing was changed",
        )
    }

    /// The same failure told from the caller's side: `reason` replaces the inner
    /// phrase ("cannot copy a to a" → "cannot resize to N bytes"), kind and OS error stay.
    pub fn with_reason(err: EngineError, reason: impl Into<String>) -> Self {
        EngineError {
            reason: reason.into(),
            ..err
        }
    }

    /// For an operation whose size the caller gave (Resize, ImportData): a size the
    /// filesystem cannot hold (`EFBIG`) is `InvalidArgument`. Elsewhere (a Start of a
    /// volatile volume created that large, a clone) it stays `Failed`.
    pub fn size_given_too_large(self) -> Self {
        match self.os_error().and_then(io::Error::raw_os_error) {
            Some(e) if e == rustix::io::Errno::FBIG.raw_os_error() => EngineError {
                kind: ErrorKind::InvalidArgument,
                ..self
            },
            _ => self,
        }
    }

    /// Names the object the error is about ("volume appvms/work/private in pool p"),
    /// unless an inner layer already did.
    pub fn on(mut self, object: impl fmt::Display) -> Self {
        if self.object.is_none() {
            self.object = Some(object.to_string());
        }
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn object(&self) -> Option<&str> {
        self.object.as_deref()
    }
    pub fn reason(&self) -> &str {
        &self.reason
    }
    pub fn os_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }

    /// The shortest description of why it failed: the OS error's text ("no space left
    /// on device"), else the reason.
    pub fn cause(&self) -> String {
        self.source
            .as_ref()
            .map_or_else(|| self.reason.clone(), os_error_text)
    }
}

/// Only the strerror text of an OS error, lower case, never the Debug form.
fn os_error_text(err: &io::Error) -> String {
    let text = err.to_string();
    text.split(" (os error")
        .next()
        .unwrap_or(&text)
        .to_lowercase()
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        f.write_str(&self.reason)?;
        if let Some(err) = &self.source {
            write!(f, " ({})", os_error_text(err))?;
        }
        Ok(())
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// `result.io_ctx(|| format!("cannot open {path}"))` turns an `io::Result` into an
/// engine result with the phrase as its reason.
pub trait IoContext<T> {
    fn io_ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn io_ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| EngineError::io(what(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_is_no_space_and_message_names_object_and_reason() {
        let err = EngineError::io("cannot write x", io::Error::from_raw_os_error(28))
            .on("volume appvms/a/private in pool p");
        assert_eq!(err.kind(), ErrorKind::NoSpace);
        assert_eq!(
            err.to_string(),
            "volume appvms/a/private in pool p: cannot write x (no space left on device)"
        );
    }

    #[test]
    fn the_cause_is_the_os_error_text_else_the_reason() {
        let err = EngineError::io("cannot write x", io::Error::from_raw_os_error(28));
        assert_eq!(err.cause(), "no space left on device");
        assert_eq!(EngineError::busy("started").cause(), "started");
    }

    #[test]
    fn inner_object_wins_over_outer() {
        let err = EngineError::busy("started").on("inner").on("outer");
        assert_eq!(err.object(), Some("inner"));
    }
}
