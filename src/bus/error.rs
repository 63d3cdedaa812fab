//! The one error type of the bus layer, [`BusError`]: every failed call is replied with
//! it. Two families of names:
//!
//! - `org.qubes.Storage.Error.*`, one per engine [`ErrorKind`] (mapped one to one);
//! - the standard `org.freedesktop.DBus.Error.*` names the D-Bus specification and the
//!   contract prescribe: `AccessDenied` / `InteractiveAuthorizationRequired` for
//!   authorization, `UnknownObject` / `UnknownInterface` / `UnknownMethod` /
//!   `UnknownProperty` / `PropertyReadOnly` / `InvalidArgs` for calls that do not fit the
//!   introspection, `LimitsExceeded` for a reply larger than the bus accepts.
//!
//! The message is one human sentence naming the object and the reason, built from
//! `Display` texts only (never `Debug`, never a backtrace). Caller-supplied text is
//! quoted through [`quote`], which keeps at most [`QUOTE_LIMIT`] characters, so a 1 MiB
//! name is never echoed back in full.

use std::fmt;

use qubes_storage_engine::{EngineError, ErrorKind};
use zbus::message::Header;
use zbus::Message;

/// At most this many characters of caller-supplied text appear in a message.
pub const QUOTE_LIMIT: usize = 100;

/// The standard error names the service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standard {
    AccessDenied,
    InteractiveAuthorizationRequired,
    UnknownObject,
    UnknownInterface,
    UnknownMethod,
    UnknownProperty,
    PropertyReadOnly,
    InvalidArgs,
    LimitsExceeded,
}

impl Standard {
    fn name(self) -> &'static str {
        match self {
            Standard::AccessDenied => "org.freedesktop.DBus.Error.AccessDenied",
            Standard::InteractiveAuthorizationRequired => {
                "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
            }
            Standard::UnknownObject => "org.freedesktop.DBus.Error.UnknownObject",
            Standard::UnknownInterface => "org.freedesktop.DBus.Error.UnknownInterface",
            Standard::UnknownMethod => "org.freedesktop.DBus.Error.UnknownMethod",
            Standard::UnknownProperty => "org.freedesktop.DBus.Error.UnknownProperty",
            Standard::PropertyReadOnly => "org.freedesktop.DBus.Error.PropertyReadOnly",
            Standard::InvalidArgs => "org.freedesktop.DBus.Error.InvalidArgs",
            Standard::LimitsExceeded => "org.freedesktop.DBus.Error.LimitsExceeded",
        }
    }
}

/// A failed call: its error name and sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusError {
    /// `org.qubes.Storage.Error.<kind>`.
    Storage { kind: ErrorKind, message: String },
    /// `org.freedesktop.DBus.Error.<name>`.
    Standard { name: Standard, message: String },
}

pub type BusResult<T> = Result<T, BusError>;

impl BusError {
    pub fn storage(kind: ErrorKind, message: impl Into<String>) -> BusError {
        BusError::Storage {
            kind,
            message: sentence(message.into()),
        }
    }

    pub fn standard(name: Standard, message: impl Into<String>) -> BusError {
        BusError::Standard {
            name,
            message: sentence(message.into()),
        }
    }

    pub fn failed(message: impl Into<String>) -> BusError {
        BusError::storage(ErrorKind::Failed, message)
    }

    pub fn invalid(message: impl Into<String>) -> BusError {
        BusError::storage(ErrorKind::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> BusError {
        BusError::storage(ErrorKind::NotFound, message)
    }

    pub fn busy(message: impl Into<String>) -> BusError {
        BusError::storage(ErrorKind::Busy, message)
    }

    pub fn access_denied(message: impl Into<String>) -> BusError {
        BusError::standard(Standard::AccessDenied, message)
    }

    pub fn interaction_required(message: impl Into<String>) -> BusError {
        BusError::standard(Standard::InteractiveAuthorizationRequired, message)
    }

    pub fn invalid_args(message: impl Into<String>) -> BusError {
        BusError::standard(Standard::InvalidArgs, message)
    }

    /// The engine's error kind, if this is a storage error.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            BusError::Storage { kind, .. } => Some(*kind),
            BusError::Standard { .. } => None,
        }
    }

    /// The D-Bus error name.
    pub fn name(&self) -> String {
        match self {
            BusError::Storage { kind, .. } => {
                format!("org.qubes.Storage.Error.{}", kind_name(*kind))
            }
            BusError::Standard { name, .. } => name.name().to_owned(),
        }
    }

    pub fn message(&self) -> &str {
        match self {
            BusError::Storage { message, .. } | BusError::Standard { message, .. } => message,
        }
    }

    /// The error reply to the call with `header`.
    pub fn reply_to(&self, header: &Header<'_>) -> zbus::Result<Message> {
        Message::error(header, self.name()).build(&(self.message(),))
    }
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.message())
    }
}

impl From<EngineError> for BusError {
    fn from(err: EngineError) -> BusError {
        BusError::storage(err.kind(), err.to_string())
    }
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Failed => "Failed",
        ErrorKind::NotFound => "NotFound",
        ErrorKind::AlreadyExists => "AlreadyExists",
        ErrorKind::InvalidArgument => "InvalidArgument",
        ErrorKind::Busy => "Busy",
        ErrorKind::NotSupported => "NotSupported",
        ErrorKind::NoSpace => "NoSpace",
        ErrorKind::Cancelled => "Cancelled",
    }
}

/// Caller-supplied text for a message: Rust-quoted, at most [`QUOTE_LIMIT`] characters
/// of it (then `…`).
pub fn quote(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(QUOTE_LIMIT).collect();
    if chars.next().is_some() {
        format!("{:?}…", head)
    } else {
        format!("{head:?}")
    }
}

/// Makes a message one sentence: capitalised first word (unless it is an identifier
/// such as `revisions_to_keep`), final full stop.
fn sentence(mut text: String) -> String {
    let first_word = text.split(' ').next().unwrap_or("");
    let is_word = first_word.chars().all(|c| c.is_ascii_lowercase());
    if let Some(first) = text.chars().next().filter(|_| is_word) {
        let upper: String = first.to_uppercase().collect();
        text.replace_range(..first.len_utf8(), &upper);
    }
    if !text.ends_with('.') && !text.ends_with('?') {
        text.push('.');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_kind_keeps_its_name() {
        let kinds = [
            (ErrorKind::Failed, "Failed"),
            (ErrorKind::NotFound, "NotFound"),
            (ErrorKind::AlreadyExists, "AlreadyExists"),
            (ErrorKind::InvalidArgument, "InvalidArgument"),
            (ErrorKind::Busy, "Busy"),
            (ErrorKind::NotSupported, "NotSupported"),
            (ErrorKind::NoSpace, "NoSpace"),
            (ErrorKind::Cancelled, "Cancelled"),
        ];
        for (kind, name) in kinds {
            let err = BusError::from(EngineError::new(kind, "why"));
            assert_eq!(err.name(), format!("org.qubes.Storage.Error.{name}"));
        }
    }

    #[test]
    fn message_is_the_engine_sentence() {
        let err =
            EngineError::busy("the volume is started").on("volume appvms/a/private in pool p");
        assert_eq!(
            BusError::from(err).message(),
            "Volume appvms/a/private in pool p: the volume is started."
        );
    }

    #[test]
    fn standard_errors_keep_the_freedesktop_names() {
        let err = BusError::standard(Standard::LimitsExceeded, "too big");
        assert_eq!(err.name(), "org.freedesktop.DBus.Error.LimitsExceeded");
        assert_eq!(err.message(), "Too big.");
    }

    #[test]
    fn quoting_keeps_at_most_the_limit() {
        let long = "x".repeat(1 << 20);
        let quoted = quote(&long);
        assert!(
            quoted.chars().count() <= QUOTE_LIMIT + 3,
            "{}",
            quoted.len()
        );
        assert!(quoted.ends_with('…'));
        assert_eq!(quote("ab"), "\"ab\"");
    }
}
