//! One question to polkit: may the sender of this message perform this action?
//!
//! The subject is the caller's unique bus name (`system-bus-name`), which polkitd
//! resolves through the bus to the connection's pid and uid; that binds the answer to
//! the connection that sent the call, with no pid-reuse race. The details `pool` and
//! `vid` are passed so that admins can write rules on them (`action.lookup("vid")`).
//!
//! polkit facts relied on (polkit 122): uid 0 is always authorized; without an agent
//! (or without ALLOW_USER_INTERACTION) an `auth_*` default gives `is_challenge = true`;
//! a dismissed dialog sets the detail `polkit.dismissed`. Every question costs about
//! 1 ms, since polkitd makes several bus round trips of its own.
//!
//! **A question holds one of the service's reply slots until polkit answers it.**
//! dbus-daemon lets one connection of the system bus wait for at most 128 replies, and
//! never times a pending one out: a question polkit does not answer — an interactive
//! one whose agent never replies, say — keeps its slot, and once all 128 are taken
//! every later question fails as if polkit were gone, which refuses every other user's
//! change. So the questions of a user (other than root, who is never asked about) take
//! a place of [`CHECKS`] — a few per user, most of the slots for all — that is given
//! back only when polkit's reply has arrived, not when the service stopped waiting
//! for it; and a question the service stops waiting for is cancelled
//! (`CancelCheckAuthorization` with its own cancellation id), which makes polkit
//! answer it at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use zbus::message::Header;
use zbus::proxy::CacheProperties;
use zbus_polkit::policykit1::{
    AuthorityProxy, AuthorizationResult, CheckAuthorizationFlags, Subject,
};

use super::AuthRequest;
use crate::user_gate::Place;

/// How many questions to polkit may wait for its answer at once: of all users together,
/// and of one user (out of the 128 replies the bus lets the service wait for).
pub const CHECKS: (usize, usize) = (96, 16);

/// What polkit said, reduced to what the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolkitAnswer {
    Authorized,
    /// Authentication would allow the call but did not happen.
    Challenge,
    Denied,
    Dismissed,
    /// polkit could not be asked: not on the bus, not activatable, bus error.
    Unreachable,
    /// polkit answered with an error (e.g. the caller vanished meanwhile).
    Failed,
    /// No answer within the non-interactive limit (`--polkit-timeout`) /
    /// [`INTERACTIVE_LIMIT`].
    Silent,
}

/// How long a check may take when nobody is asked for a password, by default (the
/// daemon's `--polkit-timeout`).
pub const NON_INTERACTIVE_LIMIT: std::time::Duration = std::time::Duration::from_secs(25);

/// The limit in force for non-interactive checks, in milliseconds.
static NON_INTERACTIVE_MS: AtomicU64 = AtomicU64::new(NON_INTERACTIVE_LIMIT.as_millis() as u64);

/// Sets how long a check may take when nobody is asked for a password.
pub fn set_non_interactive_limit(limit: std::time::Duration) {
    NON_INTERACTIVE_MS.store(limit.as_millis() as u64, Ordering::Relaxed);
}
/// How long a check may take while an authentication dialog may be open.
const INTERACTIVE_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// The client of `org.freedesktop.PolicyKit1.Authority`.
pub(crate) struct Polkit {
    /// `None` when the proxy could not even be built; every question is then unreachable.
    authority: Option<AuthorityProxy<'static>>,
}

impl Polkit {
    /// A client on `conn`; sends nothing, so it cannot fail on a bus without polkit.
    pub(crate) async fn new(conn: &zbus::Connection) -> Polkit {
        let built = AuthorityProxy::builder(conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await;
        let authority = built
            .inspect_err(|error| tracing::warn!(%error, "cannot build the polkit proxy"))
            .ok();
        Polkit { authority }
    }

    /// Asks polkit about the sender of `header` for `req`; `place` (the asking user's
    /// place in [`CHECKS`]) is held until polkit has answered.
    pub(crate) async fn ask(
        &self,
        header: &Header<'_>,
        req: &AuthRequest<'_>,
        place: Place,
    ) -> PolkitAnswer {
        let Some(authority) = &self.authority else {
            return PolkitAnswer::Unreachable;
        };
        let subject = match Subject::new_for_message_header(header) {
            Ok(subject) => subject,
            Err(error) => {
                tracing::warn!(%error, action = %req.action, "no polkit subject for the caller");
                return PolkitAnswer::Failed;
            }
        };
        let details: HashMap<&'static str, String> = details_of(req)
            .into_iter()
            .map(|(key, value)| (key, value.to_owned()))
            .collect();
        let flags = flags_of(req);
        let limit = match req.allow_interaction {
            true => INTERACTIVE_LIMIT,
            false => std::time::Duration::from_millis(NON_INTERACTIVE_MS.load(Ordering::Relaxed)),
        };
        let id = cancellation_id();
        let (asking, action, id_sent) = (authority.clone(), req.action.id(), id.clone());
        let check = tokio::spawn(async move {
            let details = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let answer = asking
                .check_authorization(&subject, action, &details, flags, &id_sent)
                .await;
            // The bus's slot for the reply is free again only now.
            drop(place);
            answer
        });
        match tokio::time::timeout(limit, check).await {
            Ok(Ok(Ok(result))) => answer_of(&result, req.allow_interaction),
            Ok(Ok(Err(error))) => answer_of_error(&error, req),
            Ok(Err(died)) => {
                tracing::error!(error = %died, action = %req.action, "the polkit question died");
                PolkitAnswer::Failed
            }
            Err(_) => {
                tracing::warn!(action = %req.action, ?limit, "polkit did not answer in time; cancelling the question");
                // Without a reply: a reply would take another of the slots the bus
                // gives the service for replies, which nothing counts.
                let cancelling = authority.clone();
                tokio::spawn(async move {
                    let body = (id.as_str(),);
                    let cancel = cancelling
                        .inner()
                        .call_noreply("CancelCheckAuthorization", &body);
                    if let Err(error) = cancel.await {
                        tracing::debug!(%error, id, "cannot ask polkit to cancel the question");
                    }
                });
                PolkitAnswer::Silent
            }
        }
    }
}

/// A cancellation id of this process that no other question of it uses.
fn cancellation_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("qubes-storaged-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The details admins' rules can look up: `pool` and `vid`, when the call has them.
fn details_of<'a>(req: &AuthRequest<'a>) -> HashMap<&'static str, &'a str> {
    let mut details = HashMap::new();
    if let Some(pool) = req.pool {
        details.insert("pool", pool);
    }
    if let Some(vid) = req.vid {
        details.insert("vid", vid);
    }
    if let Some(dir_path) = req.dir_path {
        details.insert("dir_path", dir_path);
    }
    details
}

fn flags_of(req: &AuthRequest<'_>) -> CheckAuthorizationFlags {
    if req.allow_interaction {
        CheckAuthorizationFlags::ALLOW_USER_INTERACTION
    } else {
        CheckAuthorizationFlags::empty()
    }
}

/// Reduces a polkit result; `allow_interaction` only affects logging, not the answer.
fn answer_of(result: &AuthorizationResult, allow_interaction: bool) -> PolkitAnswer {
    if result.is_authorized {
        PolkitAnswer::Authorized
    } else if result.is_challenge {
        tracing::debug!(allow_interaction, "polkit wants authentication");
        PolkitAnswer::Challenge
    } else if result
        .details
        .get("polkit.dismissed")
        .is_some_and(|v| !v.is_empty())
    {
        PolkitAnswer::Dismissed
    } else {
        PolkitAnswer::Denied
    }
}

/// Splits call failures into "polkit is not there" and "polkit said: error".
fn answer_of_error(error: &zbus::Error, req: &AuthRequest<'_>) -> PolkitAnswer {
    let from_polkit = matches!(error, zbus::Error::MethodError(name, _, _)
        if name.as_str().starts_with("org.freedesktop.PolicyKit1."));
    if from_polkit {
        tracing::warn!(%error, action = %req.action, "polkit failed the check");
        PolkitAnswer::Failed
    } else {
        tracing::warn!(%error, action = %req.action, "polkit cannot be reached");
        PolkitAnswer::Unreachable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Action;

    fn result(is_authorized: bool, is_challenge: bool, dismissed: bool) -> AuthorizationResult {
        let mut details = HashMap::new();
        if dismissed {
            details.insert("polkit.dismissed".to_owned(), "true".to_owned());
        }
        AuthorizationResult {
            is_authorized,
            is_challenge,
            details,
        }
    }

    #[test]
    fn authorized_wins_over_everything() {
        assert_eq!(
            answer_of(&result(true, true, true), false),
            PolkitAnswer::Authorized
        );
    }

    #[test]
    fn challenge_is_reported_as_challenge() {
        assert_eq!(
            answer_of(&result(false, true, false), true),
            PolkitAnswer::Challenge
        );
    }

    #[test]
    fn dismissed_dialog_is_told_apart_from_refusal() {
        assert_eq!(
            answer_of(&result(false, false, true), true),
            PolkitAnswer::Dismissed
        );
        assert_eq!(
            answer_of(&result(false, false, false), true),
            PolkitAnswer::Denied
        );
    }

    #[test]
    fn details_carry_pool_and_vid_only_when_known() {
        let req = AuthRequest {
            action: Action::RunVolumes,
            pool: Some("p"),
            vid: None,
            dir_path: None,
            allow_interaction: false,
        };
        let details = details_of(&req);
        assert_eq!(details.get("pool"), Some(&"p"));
        assert!(!details.contains_key("vid"));
    }

    #[test]
    fn interaction_flag_follows_the_request() {
        let mut req = AuthRequest {
            action: Action::Export,
            pool: None,
            vid: None,
            dir_path: None,
            allow_interaction: true,
        };
        assert_eq!(
            flags_of(&req),
            CheckAuthorizationFlags::ALLOW_USER_INTERACTION
        );
        req.allow_interaction = false;
        assert!(flags_of(&req).is_empty());
    }
}
