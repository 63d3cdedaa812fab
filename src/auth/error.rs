//! The one error type of the authorization layer and the sentences it carries.
//!
//! The contract (`docs/dbus-api.md`, "Errors") maps authorization failures onto the
//! standard D-Bus names, as systemd's services do:
//! `org.freedesktop.DBus.Error.InteractiveAuthorizationRequired` when polkit would allow
//! the call after authentication but the caller did not allow interaction, and
//! `org.freedesktop.DBus.Error.AccessDenied` for everything else. Each message is one
//! sentence naming the action and the pool/volume, never raw polkit output.

use super::AuthRequest;

/// Why a call was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// polkit would allow the call after authentication, but the caller did not allow
    /// interactive authorization (no header flag, or `auth.no_user_interaction`).
    #[error("{0}")]
    InteractionRequired(String),
    /// The call is refused.
    #[error("{0}")]
    AccessDenied(String),
}

/// Why an [`AuthError::AccessDenied`] was given; each becomes the end of the sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// polkit said no.
    Denied,
    /// The caller dismissed the authentication dialog.
    Dismissed,
    /// polkit wanted authentication, interaction was allowed, but no agent asked.
    NoAgent,
    /// polkit could not be reached (not running, not activatable, bus error).
    PolkitUnreachable,
    /// polkit answered the check with an error.
    PolkitFailed,
    /// polkit did not answer in time.
    PolkitSilent,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Denied => "polkit refused the request",
            Refusal::Dismissed => "the authentication dialog was dismissed",
            Refusal::NoAgent => {
                "authentication is required and no authentication agent is available"
            }
            Refusal::PolkitUnreachable => {
                "polkit cannot be reached, and without it only root may make changes"
            }
            Refusal::PolkitFailed => {
                "polkit could not decide, and without its answer only root may make changes"
            }
            Refusal::PolkitSilent => {
                "polkit did not answer in time, and without its answer only root may make changes"
            }
        }
    }
}

impl AuthError {
    /// The refusal for a caller who could authenticate but did not allow interaction.
    pub(crate) fn interaction_required(req: &AuthRequest<'_>) -> AuthError {
        AuthError::InteractionRequired(format!(
            "Authentication is required to {}{}, but the caller did not allow interactive \
             authorization.",
            req.action.purpose(),
            object_phrase(req)
        ))
    }

    /// The refusal of `req` for `refusal`.
    pub(crate) fn access_denied(req: &AuthRequest<'_>, refusal: Refusal) -> AuthError {
        AuthError::AccessDenied(format!(
            "Not authorized to {}{}: {}.",
            req.action.purpose(),
            object_phrase(req),
            refusal.reason()
        ))
    }

    /// The D-Bus error name the contract gives this refusal.
    pub fn dbus_error_name(&self) -> &'static str {
        match self {
            AuthError::InteractionRequired(_) => {
                "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
            }
            AuthError::AccessDenied(_) => "org.freedesktop.DBus.Error.AccessDenied",
        }
    }

    /// This refusal as the standard D-Bus error of the same name.
    pub fn into_fdo(self) -> zbus::fdo::Error {
        match self {
            AuthError::InteractionRequired(message) => {
                zbus::fdo::Error::InteractiveAuthorizationRequired(message)
            }
            AuthError::AccessDenied(message) => zbus::fdo::Error::AccessDenied(message),
        }
    }
}

/// " for volume V in pool P", " for pool P", " for volume V" or "".
fn object_phrase(req: &AuthRequest<'_>) -> String {
    match (req.pool, req.vid) {
        (Some(pool), Some(vid)) => format!(" for volume {vid} in pool {pool}"),
        (Some(pool), None) => format!(" for pool {pool}"),
        (None, Some(vid)) => format!(" for volume {vid}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Action;
    use zbus::DBusError;

    fn volume_request() -> AuthRequest<'static> {
        AuthRequest {
            action: Action::ManageVolumes,
            pool: Some("varlibqubes"),
            vid: Some("appvms/work/private"),
            dir_path: None,
            allow_interaction: false,
        }
    }

    #[test]
    fn denial_names_action_volume_and_pool_in_one_sentence() {
        let error = AuthError::access_denied(&volume_request(), Refusal::Denied);
        assert_eq!(
            error.to_string(),
            "Not authorized to manage volumes for volume appvms/work/private in pool \
             varlibqubes: polkit refused the request."
        );
    }

    #[test]
    fn pool_only_request_names_the_pool() {
        let req = AuthRequest {
            action: Action::ManagePools,
            pool: Some("p1"),
            vid: None,
            dir_path: None,
            allow_interaction: true,
        };
        let error = AuthError::access_denied(&req, Refusal::PolkitUnreachable);
        assert!(error.to_string().starts_with(
            "Not authorized to manage storage pools for pool p1: polkit cannot be reached"
        ));
    }

    #[test]
    fn interaction_required_keeps_its_standard_name() {
        let error = AuthError::interaction_required(&volume_request());
        assert_eq!(error.dbus_error_name(), error.into_fdo().name().as_str());
    }

    #[test]
    fn access_denied_keeps_its_standard_name() {
        let error = AuthError::access_denied(&volume_request(), Refusal::NoAgent);
        assert_eq!(
            error.dbus_error_name(),
            "org.freedesktop.DBus.Error.AccessDenied"
        );
        assert_eq!(error.dbus_error_name(), error.into_fdo().name().as_str());
    }
}
