//! The one place the bus layer asks the authorization layer: every mutating call
//! (methods and property writes, see the contract's Authorization table) passes here
//! before anything changes; reads never do. A call may need several permissions (a
//! clone needs `import` on its target and `export` on its source, contract rev 2): all
//! are checked, in order, and the first refusal is the reply.
//!
//! Interaction is allowed only when the message carries
//! ALLOW_INTERACTIVE_AUTHORIZATION and the option `auth.no_user_interaction` is not
//! true. Property writes never prompt (contract rev 2): a caller that allowed
//! interaction gets `AccessDenied` with a sentence saying how to authenticate.

use zbus::message::{Flags, Header};

use crate::auth::{Action, AuthError, AuthRequest, Authorizer};
use crate::bus::error::BusError;

/// What a call asks to do, on which pool and volume (the polkit details).
#[derive(Debug, Clone)]
pub struct Permission {
    pub action: Action,
    pub pool: Option<String>,
    pub vid: Option<String>,
    pub dir_path: Option<String>,
}

impl Permission {
    pub fn on_pool(action: Action, pool: &str) -> Permission {
        Permission {
            action,
            pool: Some(pool.to_owned()),
            vid: None,
            dir_path: None,
        }
    }

    pub fn on_volume(action: Action, pool: &str, vid: &str) -> Permission {
        Permission {
            action,
            pool: Some(pool.to_owned()),
            vid: Some(vid.to_owned()),
            dir_path: None,
        }
    }

    fn request(&self, allow_interaction: bool) -> AuthRequest<'_> {
        AuthRequest {
            action: self.action,
            pool: self.pool.as_deref(),
            vid: self.vid.as_deref(),
            dir_path: self.dir_path.as_deref(),
            allow_interaction,
        }
    }
}

/// How a call may be authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// A method call: interactively if the caller allows it.
    Allowed { no_user_interaction: bool },
    /// A property write: never interactively.
    Never,
}

/// Checks every permission for the sender of `header`; the first refusal is the reply.
pub async fn authorize(
    auth: &Authorizer,
    header: &Header<'_>,
    permissions: &[Permission],
    prompt: Prompt,
) -> Result<(), BusError> {
    let caller_allowed = header
        .primary()
        .flags()
        .contains(Flags::ALLOW_INTERACTIVE_AUTH);
    let allow_interaction = match prompt {
        Prompt::Allowed {
            no_user_interaction,
        } => caller_allowed && !no_user_interaction,
        Prompt::Never => false,
    };
    for permission in permissions {
        let request = permission.request(allow_interaction);
        auth.check(header, request)
            .await
            .map_err(|err| refusal(err, prompt, caller_allowed))?;
    }
    Ok(())
}

fn refusal(err: AuthError, prompt: Prompt, caller_allowed: bool) -> BusError {
    match err {
        AuthError::InteractionRequired(message) if prompt == Prompt::Never && caller_allowed => {
            BusError::access_denied(format!(
                "{message} A property write cannot ask for a password: authenticate through a method call that allows it, then write again."
            ))
        }
        AuthError::InteractionRequired(message) => BusError::interaction_required(message),
        AuthError::AccessDenied(message) => BusError::access_denied(message),
    }
}
