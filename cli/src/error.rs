//! The CLI's one error type and its exit codes.
//!
//! A D-Bus error reply keeps its name (which picks the exit code) and its message
//! (one sentence from the service, shown as `qubes-storage: <message>`). zbus hands
//! standard `org.freedesktop.DBus.Error.*` names over as `Error::FDO` and every other
//! name as `Error::MethodError`; both end up in [`CliError::Service`]. Failing to reach
//! the bus or the service is its own kind, so scripts can tell "the storage service is
//! down" from "the storage service said no".

use std::fmt;

use zbus::DBusError;

const STORAGE_ERROR_PREFIX: &str = "org.qubes.Storage.Error.";
const FDO_ERROR_PREFIX: &str = "org.freedesktop.DBus.Error.";
const INTERACTION_REQUIRED: &str = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired";

/// Exit codes, documented in `--help` and the man page from [`exit::STATUSES`].
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const ALREADY_EXISTS: u8 = 4;
    pub const BUSY: u8 = 5;
    pub const NOT_SUPPORTED: u8 = 6;
    pub const NO_SPACE: u8 = 7;
    pub const CANCELLED: u8 = 8;
    pub const ACCESS_DENIED: u8 = 9;
    pub const UNREACHABLE: u8 = 10;

    /// Every exit status and what it means, for `--help` and the man page.
    pub const STATUSES: [(u8, &str); 11] = [
        (OK, "success"),
        (FAILED, "the operation failed (org.qubes.Storage.Error.Failed, a local I/O error, anything else)"),
        (USAGE, "usage error, or the service refused an argument (InvalidArgument)"),
        (NOT_FOUND, "no such pool, volume or revision (NotFound)"),
        (ALREADY_EXISTS, "the pool or volume already exists (AlreadyExists)"),
        (BUSY, "the pool or volume is busy, e.g. a started volume (Busy)"),
        (NOT_SUPPORTED, "not supported, e.g. a filesystem without reflinks (NotSupported)"),
        (NO_SPACE, "no space left (NoSpace)"),
        (CANCELLED, "cancelled, e.g. by Ctrl-C, SIGTERM or SIGHUP; nothing half done is left behind (Cancelled)"),
        (ACCESS_DENIED, "not authorized (AccessDenied, InteractiveAuthorizationRequired)"),
        (UNREACHABLE, "the bus or the storage service cannot be reached"),
    ];

    /// How errors are printed, after the table.
    pub const REPORTING: &str = "Errors are printed as `qubes-storage: <message>` on stderr; with \
        --json, also as a JSON object {\"error\": NAME, \"message\": TEXT, \"exit_status\": N} \
        on stdout. NAME is the service's D-Bus error name, or for an error of qubes-storage \
        itself one of qubes-storage.Usage, .Unreachable, .Failed, .Io, .NoSpace, .Cancelled \
        and .Protocol.";
}

/// The `--json` error name of a command line or argument this program refuses.
pub const CLI_USAGE: &str = "qubes-storage.Usage";

#[derive(Debug)]
pub enum CliError {
    /// The service (or the bus on its behalf) replied with a D-Bus error.
    Service { name: String, message: String },
    /// No bus, or no service on it.
    Unreachable(String),
    /// An argument the service would refuse anyway, caught before calling.
    Usage(String),
    /// The operation ran but did not succeed (e.g. Verify said no).
    Failed(String),
    /// A local file could not be read or written.
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The user interrupted the operation, and it was undone.
    Cancelled(String),
    /// The service answered something the contract does not allow.
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, CliError>;

/// A local write that ran out of space or quota: the same exit status as the service's
/// `NoSpace`, so a script tells a full disk apart from other failures.
fn is_no_space(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT
    )
}

impl CliError {
    /// GetManagedObjects refused because its reply would not fit on the bus (100 000
    /// volumes; contract rev 2) — not the other `LimitsExceeded`, a user's calls in
    /// flight: only the first is worth reading the objects one by one.
    pub fn is_listing_too_large(&self) -> bool {
        matches!(self, CliError::Service { name, message }
            if name.ends_with(".LimitsExceeded") && message.contains("GetManagedObjects"))
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> CliError {
        CliError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Service { name, .. } => exit_code_for_error_name(name),
            CliError::Unreachable(_) => exit::UNREACHABLE,
            CliError::Usage(_) => exit::USAGE,
            CliError::Io { source, .. } if is_no_space(source) => exit::NO_SPACE,
            CliError::Failed(_) | CliError::Io { .. } | CliError::Protocol(_) => exit::FAILED,
            CliError::Cancelled(_) => exit::CANCELLED,
        }
    }

    /// Points at the command-line flag when the service refuses with `kind` (e.g.
    /// `NotSupported`) and its message names the option key behind the flag
    /// (`setup_check` → `--no-setup-check`). Other refusals that mention the key stay
    /// as they are: the flag would not help there.
    pub fn with_flag_hint(self, kind: &str, option: &str, flag: &str) -> CliError {
        match self {
            CliError::Service { name, message }
                if name.strip_prefix(STORAGE_ERROR_PREFIX) == Some(kind)
                    && message.contains(option) =>
            {
                let message = format!("{message} (command-line flag: {flag})");
                CliError::Service { name, message }
            }
            other => other,
        }
    }

    /// Says how to authenticate when polkit wanted a password it could not ask for;
    /// `hint` depends on how this run was started (see `client::Interaction`).
    pub fn with_authentication_hint(self, hint: &str) -> CliError {
        match self {
            CliError::Service { name, message } if name == INTERACTION_REQUIRED => {
                let message = format!("{message} ({hint})");
                CliError::Service { name, message }
            }
            other => other,
        }
    }

    /// The error's name for `--json` output: the service's D-Bus error name, or one of
    /// this program's own (`qubes-storage.Usage`, …) so a script can always switch on it.
    pub fn error_name(&self) -> &str {
        match self {
            CliError::Service { name, .. } => name,
            CliError::Unreachable(_) => "qubes-storage.Unreachable",
            CliError::Usage(_) => CLI_USAGE,
            CliError::Failed(_) => "qubes-storage.Failed",
            CliError::Io { source, .. } if is_no_space(source) => "qubes-storage.NoSpace",
            CliError::Io { .. } => "qubes-storage.Io",
            CliError::Cancelled(_) => "qubes-storage.Cancelled",
            CliError::Protocol(_) => "qubes-storage.Protocol",
        }
    }
}

/// The exit code for a D-Bus error name.
pub fn exit_code_for_error_name(name: &str) -> u8 {
    if let Some(kind) = name.strip_prefix(STORAGE_ERROR_PREFIX) {
        return match kind {
            "NotFound" => exit::NOT_FOUND,
            "AlreadyExists" => exit::ALREADY_EXISTS,
            "InvalidArgument" => exit::USAGE,
            "Busy" => exit::BUSY,
            "NotSupported" => exit::NOT_SUPPORTED,
            "NoSpace" => exit::NO_SPACE,
            "Cancelled" => exit::CANCELLED,
            _ => exit::FAILED,
        };
    }
    match name.strip_prefix(FDO_ERROR_PREFIX) {
        Some("AccessDenied" | "InteractiveAuthorizationRequired" | "AuthFailed") => {
            exit::ACCESS_DENIED
        }
        Some("ServiceUnknown" | "NameHasNoOwner" | "NoServer" | "Disconnected" | "NoReply") => {
            exit::UNREACHABLE
        }
        Some("UnknownObject") => exit::NOT_FOUND,
        Some("InvalidArgs") => exit::USAGE,
        _ => exit::FAILED,
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Service { message, .. } => f.write_str(message),
            CliError::Unreachable(message)
            | CliError::Usage(message)
            | CliError::Failed(message)
            | CliError::Cancelled(message)
            | CliError::Protocol(message) => f.write_str(message),
            CliError::Io { context, source } => write!(f, "{context}: {}", io_text(source)),
        }
    }
}

impl std::error::Error for CliError {}

impl From<zbus::Error> for CliError {
    fn from(error: zbus::Error) -> CliError {
        match error {
            zbus::Error::MethodError(name, detail, _) => {
                service_error(name.as_str(), detail.as_deref())
            }
            zbus::Error::FDO(fdo) => CliError::from(*fdo),
            zbus::Error::InputOutput(io) => CliError::Unreachable(format!("lost the bus: {io}")),
            other => CliError::Protocol(format!(
                "unexpected reply from the storage service: {other}"
            )),
        }
    }
}

impl From<zbus::fdo::Error> for CliError {
    fn from(error: zbus::fdo::Error) -> CliError {
        match error {
            zbus::fdo::Error::ZBus(inner) => CliError::from(inner),
            fdo => service_error(fdo.name().as_str(), fdo.description()),
        }
    }
}

/// An error reply, named; a missing or empty message falls back to the name.
fn service_error(name: &str, message: Option<&str>) -> CliError {
    let message = match message {
        Some(text) if !text.is_empty() => text.to_owned(),
        _ => name.to_owned(),
    };
    if exit_code_for_error_name(name) == exit::UNREACHABLE {
        return CliError::Unreachable(format!("the storage service is not reachable: {message}"));
    }
    CliError::Service {
        name: name.to_owned(),
        message,
    }
}

/// An I/O error as people read it: the system's sentence without Rust's "(os error N)".
fn io_text(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_without_the_os_error_number() {
        let err = CliError::io(
            "cannot open /nonexistent",
            std::io::Error::from_raw_os_error(2),
        );
        assert_eq!(
            err.to_string(),
            "cannot open /nonexistent: No such file or directory"
        );
        let custom = CliError::io("x", std::io::Error::other("went wrong"));
        assert_eq!(custom.to_string(), "x: went wrong");
    }

    fn storage(kind: &str) -> String {
        format!("org.qubes.Storage.Error.{kind}")
    }

    #[test]
    fn storage_error_kinds_map_to_their_exit_codes() {
        let expected = [
            ("Failed", 1),
            ("InvalidArgument", 2),
            ("NotFound", 3),
            ("AlreadyExists", 4),
            ("Busy", 5),
            ("NotSupported", 6),
            ("NoSpace", 7),
            ("Cancelled", 8),
        ];
        for (kind, code) in expected {
            assert_eq!(exit_code_for_error_name(&storage(kind)), code, "{kind}");
        }
    }

    #[test]
    fn a_local_write_out_of_space_exits_as_no_space() {
        for code in [nix::libc::ENOSPC, nix::libc::EDQUOT] {
            let error = CliError::io(
                "cannot write out.img",
                std::io::Error::from_raw_os_error(code),
            );
            assert_eq!(error.exit_code(), exit::NO_SPACE);
        }
        let other = CliError::io(
            "cannot write out.img",
            std::io::Error::from_raw_os_error(nix::libc::EIO),
        );
        assert_eq!(other.exit_code(), exit::FAILED);
    }

    #[test]
    fn unknown_storage_kind_is_failed() {
        assert_eq!(
            exit_code_for_error_name(&storage("SomethingNew")),
            exit::FAILED
        );
    }

    #[test]
    fn authorization_failures_share_one_code() {
        for name in [
            "org.freedesktop.DBus.Error.AccessDenied",
            "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
        ] {
            assert_eq!(exit_code_for_error_name(name), exit::ACCESS_DENIED);
        }
    }

    #[test]
    fn missing_service_is_unreachable() {
        assert_eq!(
            exit_code_for_error_name("org.freedesktop.DBus.Error.ServiceUnknown"),
            exit::UNREACHABLE
        );
        assert_eq!(
            exit_code_for_error_name("org.freedesktop.DBus.Error.NameHasNoOwner"),
            exit::UNREACHABLE
        );
    }

    #[test]
    fn foreign_error_names_are_failed() {
        assert_eq!(exit_code_for_error_name("com.example.Oops"), exit::FAILED);
        assert_eq!(
            exit_code_for_error_name("org.freedesktop.DBus.Error.UnknownMethod"),
            1
        );
    }

    #[test]
    fn method_error_keeps_name_and_shows_only_the_message() {
        let reply = zbus::fdo::Error::AccessDenied("not allowed to remove pool p".into());
        let error = CliError::from(zbus::Error::from(reply));
        assert_eq!(error.exit_code(), exit::ACCESS_DENIED);
        assert_eq!(error.to_string(), "not allowed to remove pool p");
        assert_eq!(
            error.error_name(),
            "org.freedesktop.DBus.Error.AccessDenied"
        );
    }

    #[test]
    fn storage_error_reply_keeps_its_name_and_message() {
        let call = zbus::Message::method_call("/org/qubes/Storage", "RemovePool")
            .build(&())
            .unwrap();
        let reply = zbus::Message::error(&call.header(), storage("Busy").as_str())
            .build(&("pool p still holds 3 volumes",))
            .unwrap();
        let error = CliError::from(zbus::Error::from(reply));
        assert_eq!(error.exit_code(), exit::BUSY);
        assert_eq!(error.to_string(), "pool p still holds 3 volumes");
        assert_eq!(error.error_name(), storage("Busy"));
    }

    #[test]
    fn errors_of_the_cli_itself_have_names_for_json() {
        let unreachable = CliError::Unreachable("no bus".into());
        assert_eq!(unreachable.error_name(), "qubes-storage.Unreachable");
        let full = CliError::io("cannot write x", std::io::Error::from_raw_os_error(28));
        assert_eq!(full.error_name(), "qubes-storage.NoSpace");
        assert_eq!(full.exit_code(), exit::NO_SPACE);
        let io = CliError::io("cannot read x", std::io::Error::from_raw_os_error(5));
        assert_eq!(io.error_name(), "qubes-storage.Io");
        assert_eq!(CliError::Usage("x".into()).error_name(), CLI_USAGE);
    }

    #[test]
    fn service_unknown_reply_becomes_unreachable() {
        let reply = zbus::fdo::Error::ServiceUnknown("The name is not activatable".into());
        let error = CliError::from(zbus::Error::from(reply));
        assert!(matches!(error, CliError::Unreachable(_)));
        assert_eq!(error.exit_code(), exit::UNREACHABLE);
    }

    #[test]
    fn empty_message_falls_back_to_the_error_name() {
        let error = service_error(&storage("Busy"), Some(""));
        assert_eq!(error.to_string(), storage("Busy"));
        assert_eq!(error.exit_code(), exit::BUSY);
    }

    #[test]
    fn option_keys_in_messages_get_their_flag() {
        let error = service_error(&storage("InvalidArgument"), Some("pass allow_shrink=true"));
        let error = error.with_flag_hint("InvalidArgument", "allow_shrink", "--allow-shrink");
        assert_eq!(
            error.to_string(),
            "pass allow_shrink=true (command-line flag: --allow-shrink)"
        );
        let other = service_error(&storage("Busy"), Some("busy"));
        let other = other.with_flag_hint("InvalidArgument", "allow_shrink", "x");
        assert_eq!(other.to_string(), "busy");
    }

    #[test]
    fn other_refusals_that_mention_the_option_get_no_flag() {
        let refusal = "/etc is a system directory, whatever setup_check says";
        let error = service_error(&storage("InvalidArgument"), Some(refusal));
        let error = error.with_flag_hint("NotSupported", "setup_check", "--no-setup-check");
        assert_eq!(error.to_string(), refusal);
    }

    #[test]
    fn authentication_hint_is_added_to_interaction_required_only() {
        let error = service_error(
            INTERACTION_REQUIRED,
            Some("authentication is required to create pool p"),
        );
        assert_eq!(
            error
                .with_authentication_hint("run it from a terminal")
                .to_string(),
            "authentication is required to create pool p (run it from a terminal)"
        );
        let denied = service_error(
            "org.freedesktop.DBus.Error.AccessDenied",
            Some("not allowed"),
        );
        assert_eq!(
            denied.with_authentication_hint("x").to_string(),
            "not allowed"
        );
    }
}
