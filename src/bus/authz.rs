//! The one place the bus layer asks the authorization layer: every mutating call
//! (methods and property writes, see the contract's Authorization table) passes here
//! before anything changes; reads never do. Interaction is allowed only when the message
//! carries ALLOW_INTERACTIVE_AUTHORIZATION and the option `auth.no_user_interaction` is
//! not true.

use zbus::message::{Flags, Header};
use zbus::BoxDBusError;

use crate::auth::{Action, AuthError, AuthRequest, Authorizer};
use crate::bus::error::{access_denied, interaction_required};

/// What a call asks to do, on which pool and volume.
#[derive(Debug, Clone, Copy)]
pub struct Permission<'a> {
    pub action: Action,
    pub pool: Option<&'a str>,
    pub vid: Option<&'a str>,
}

/// The check of a property write, which never prompts (see
/// `Service::authorize_property_write`). A caller that allowed interaction did nothing
/// wrong, so a challenge is `AccessDenied` with a sentence saying how to authenticate
/// (the contract keeps `InteractiveAuthorizationRequired` for callers that did not allow
/// interaction).
pub async fn authorize_without_prompt(
    auth: &Authorizer,
    header: &Header<'_>,
    permission: Permission<'_>,
) -> Result<(), BoxDBusError> {
    let caller_allowed = header
        .primary()
        .flags()
        .contains(Flags::ALLOW_INTERACTIVE_AUTH);
    let request = AuthRequest {
        action: permission.action,
        pool: permission.pool,
        vid: permission.vid,
        allow_interaction: false,
    };
    auth.check(header, request).await.map_err(|err| match err {
        AuthError::InteractionRequired(message) if caller_allowed => access_denied(format!(
            "{message} A property write cannot ask for a password: authenticate through a method call that allows it, then write again."
        )),
        AuthError::InteractionRequired(message) => interaction_required(message),
        AuthError::AccessDenied(message) => access_denied(message),
    })
}

/// Checks `permission` for the sender of `header`; the error is the reply.
pub async fn authorize(
    auth: &Authorizer,
    header: &Header<'_>,
    permission: Permission<'_>,
    no_user_interaction: bool,
) -> Result<(), BoxDBusError> {
    let allow_interaction = header
        .primary()
        .flags()
        .contains(Flags::ALLOW_INTERACTIVE_AUTH)
        && !no_user_interaction;
    let request = AuthRequest {
        action: permission.action,
        pool: permission.pool,
        vid: permission.vid,
        allow_interaction,
    };
    auth.check(header, request).await.map_err(|err| match err {
        AuthError::InteractionRequired(message) => interaction_required(message),
        AuthError::AccessDenied(message) => access_denied(message),
    })
}
