//! The errors the service replies with: `org.qubes.Storage.Error.*`, one variant per
//! engine [`ErrorKind`] (mapped one to one), each carrying one human sentence that names
//! the object and the reason. Authorization failures use the two standard names
//! (`org.freedesktop.DBus.Error.AccessDenied` and `…InteractiveAuthorizationRequired`).
//! Messages are built from `Display` texts only — never `Debug`, never a backtrace.
//!
//! Interface methods return `Result<T, zbus::BoxDBusError>` written out in full (the
//! `#[interface]` macro recognises the literal name `Result`); `?` converts a
//! [`StorageError`] or an [`EngineError`] into it.

use qubes_storage_engine::{EngineError, ErrorKind};
use zbus::BoxDBusError;

/// The service's own error names.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.qubes.Storage.Error")]
pub enum StorageError {
    Failed(String),
    NotFound(String),
    AlreadyExists(String),
    InvalidArgument(String),
    Busy(String),
    NotSupported(String),
    NoSpace(String),
    Cancelled(String),
}

impl StorageError {
    pub fn of_kind(kind: ErrorKind, message: String) -> StorageError {
        match kind {
            ErrorKind::Failed => StorageError::Failed(message),
            ErrorKind::NotFound => StorageError::NotFound(message),
            ErrorKind::AlreadyExists => StorageError::AlreadyExists(message),
            ErrorKind::InvalidArgument => StorageError::InvalidArgument(message),
            ErrorKind::Busy => StorageError::Busy(message),
            ErrorKind::NotSupported => StorageError::NotSupported(message),
            ErrorKind::NoSpace => StorageError::NoSpace(message),
            ErrorKind::Cancelled => StorageError::Cancelled(message),
        }
    }

    /// A message for errors that have no engine kind (a task that died, a bus failure).
    pub fn failed(message: impl Into<String>) -> StorageError {
        StorageError::Failed(message.into())
    }

    pub fn invalid(message: impl Into<String>) -> StorageError {
        StorageError::InvalidArgument(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> StorageError {
        StorageError::NotFound(message.into())
    }
}

impl From<EngineError> for StorageError {
    fn from(err: EngineError) -> StorageError {
        StorageError::of_kind(err.kind(), sentence(err.to_string()))
    }
}

impl From<StorageError> for BoxDBusError {
    fn from(err: StorageError) -> BoxDBusError {
        Box::new(err)
    }
}

/// An engine error straight into the boxed reply error (`?` needs one `From` step).
pub fn engine_to_bus(err: EngineError) -> BoxDBusError {
    StorageError::from(err).into()
}

/// The two standard authorization failures.
pub fn access_denied(message: String) -> BoxDBusError {
    Box::new(zbus::fdo::Error::AccessDenied(message))
}

pub fn interaction_required(message: String) -> BoxDBusError {
    Box::new(zbus::fdo::Error::InteractiveAuthorizationRequired(message))
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
    if !text.ends_with('.') {
        text.push('.');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

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
            let err = StorageError::from(EngineError::new(kind, "why"));
            assert_eq!(
                err.name().as_str(),
                format!("org.qubes.Storage.Error.{name}")
            );
        }
    }

    #[test]
    fn message_is_the_engine_sentence() {
        let err =
            EngineError::busy("the volume is started").on("volume appvms/a/private in pool p");
        let err = StorageError::from(err);
        assert_eq!(
            err.description(),
            Some("Volume appvms/a/private in pool p: the volume is started.")
        );
    }
}
