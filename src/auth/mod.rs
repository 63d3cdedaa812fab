//! Authorization: may the sender of this D-Bus call perform this polkit action?
//!
//! The bus layer calls [`Authorizer::check`] before every mutating call and never for
//! reads. The decision, in order:
//!
//! 1. The caller's uid, from the bus (cached per unique name, see `callers`). uid 0 is
//!    allowed at once: polkit authorizes root for everything, so asking it would only
//!    cost a millisecond. This is also what keeps root working when polkit is down.
//!    So is the service's own uid, when it does not run as root (the demo, a user's
//!    private bus): such a caller can already do everything the service can.
//! 2. Everyone else: polkit, with the caller's `system-bus-name` subject and the
//!    details `pool` and `vid`, interactively only if the request allows it — a few
//!    questions of a user at a time, each holding its place until polkit has answered
//!    (`polkit.rs`: the bus lets the service wait for only 128 replies).
//! 3. polkit's answer becomes `Ok`, `InteractionRequired` (a challenge the caller did
//!    not allow to be shown) or `AccessDenied` (everything else, including "polkit
//!    cannot be reached").
//!
//! Every decision is logged at debug (action, uid, pool, vid, outcome); denials at info.

mod action;
mod callers;
mod error;
mod polkit;

use std::sync::Arc;

use zbus::message::Header;

pub use action::Action;
pub use error::AuthError;

use crate::user_gate::UserGate;
pub use callers::Caller;
use callers::CallerUids;
use error::Refusal;
pub use polkit::{
    set_non_interactive_limit as set_polkit_timeout, CHECKS as POLKIT_CHECKS,
    NON_INTERACTIVE_LIMIT as POLKIT_TIMEOUT,
};
use polkit::{Polkit, PolkitAnswer};

/// One authorization question: the action, the objects it touches, and whether polkit
/// may ask the user to authenticate.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    pub action: Action,
    pub pool: Option<&'a str>,
    pub vid: Option<&'a str>,
    /// CreatePool's directory, passed to rules as the detail `dir_path`.
    pub dir_path: Option<&'a str>,
    /// The call carries ALLOW_INTERACTIVE_AUTHORIZATION and its option
    /// `auth.no_user_interaction` is not true.
    pub allow_interaction: bool,
}

/// Decides authorization for calls arriving on one connection. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

struct Inner {
    callers: CallerUids,
    polkit: Polkit,
    /// Places for questions to polkit ([`polkit::CHECKS`]).
    checks: UserGate,
    /// The uid the service runs as.
    own_uid: u32,
}

/// How a check came out, before it is turned into the caller's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// uid 0 or the service's own uid, allowed without asking polkit.
    Privileged,
    Polkit(PolkitAnswer),
}

impl Authorizer {
    /// An authorizer for calls arriving on `conn`. Does not fail: whether polkit can
    /// be reached is decided per call.
    pub async fn new(conn: &zbus::Connection) -> Authorizer {
        let inner = Inner {
            callers: CallerUids::watch(conn).await,
            polkit: Polkit::new(conn).await,
            checks: UserGate::new(polkit::CHECKS.0, polkit::CHECKS.1),
            own_uid: rustix::process::geteuid().as_raw(),
        };
        Authorizer {
            inner: Arc::new(inner),
        }
    }

    /// May the sender of the call with `header` do `req`?
    pub async fn check(&self, header: &Header<'_>, req: AuthRequest<'_>) -> Result<(), AuthError> {
        let uid = match header.sender() {
            Some(sender) => self.inner.callers.uid_of(sender).await,
            None => None,
        };
        let verdict = match uid {
            Some(uid) if uid == 0 || uid == self.inner.own_uid => Verdict::Privileged,
            // A caller whose uid is unknown takes the places of one unknown user.
            _ => {
                let place = self.inner.checks.enter(uid.unwrap_or(u32::MAX)).await;
                Verdict::Polkit(self.inner.polkit.ask(header, &req, place).await)
            }
        };
        let outcome = outcome_of(verdict, &req);
        log_decision(&req, uid, verdict, &outcome);
        outcome
    }

    /// What the bus says of `caller`: its uid, gone, or why it cannot tell.
    pub async fn caller(&self, caller: &zbus::names::UniqueName<'_>) -> Caller {
        self.inner.callers.lookup(caller).await
    }

    /// How many callers' uids are remembered now (diagnostics and tests).
    pub fn cached_callers(&self) -> usize {
        self.inner.callers.len()
    }
}

/// The contract's mapping of a verdict onto the caller's result.
fn outcome_of(verdict: Verdict, req: &AuthRequest<'_>) -> Result<(), AuthError> {
    let refusal = match verdict {
        Verdict::Privileged | Verdict::Polkit(PolkitAnswer::Authorized) => return Ok(()),
        Verdict::Polkit(PolkitAnswer::Challenge) if !req.allow_interaction => {
            return Err(AuthError::interaction_required(req))
        }
        Verdict::Polkit(PolkitAnswer::Challenge) => Refusal::NoAgent,
        Verdict::Polkit(PolkitAnswer::Denied) => Refusal::Denied,
        Verdict::Polkit(PolkitAnswer::Dismissed) => Refusal::Dismissed,
        Verdict::Polkit(PolkitAnswer::Unreachable) => Refusal::PolkitUnreachable,
        Verdict::Polkit(PolkitAnswer::Failed) => Refusal::PolkitFailed,
        Verdict::Polkit(PolkitAnswer::Silent) => Refusal::PolkitSilent,
    };
    Err(AuthError::access_denied(req, refusal))
}

fn log_decision(
    req: &AuthRequest<'_>,
    uid: Option<u32>,
    verdict: Verdict,
    outcome: &Result<(), AuthError>,
) {
    let action = req.action.id();
    let pool = req.pool.unwrap_or("");
    let vid = req.vid.unwrap_or("");
    let verdict = format!("{verdict:?}");
    match outcome {
        Ok(()) => tracing::debug!(action, ?uid, pool, vid, %verdict, "authorized"),
        Err(error) => tracing::info!(action, ?uid, pool, vid, %verdict, %error, "refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(allow_interaction: bool) -> AuthRequest<'static> {
        AuthRequest {
            action: Action::Import,
            pool: Some("p"),
            vid: Some("appvms/a/private"),
            dir_path: None,
            allow_interaction,
        }
    }

    #[test]
    fn root_is_allowed() {
        assert!(outcome_of(Verdict::Privileged, &request(false)).is_ok());
    }

    #[test]
    fn challenge_without_interaction_requires_interaction() {
        let outcome = outcome_of(Verdict::Polkit(PolkitAnswer::Challenge), &request(false));
        assert!(matches!(outcome, Err(AuthError::InteractionRequired(_))));
    }

    #[test]
    fn challenge_despite_interaction_is_access_denied() {
        let outcome = outcome_of(Verdict::Polkit(PolkitAnswer::Challenge), &request(true));
        assert!(matches!(outcome, Err(AuthError::AccessDenied(_))));
    }

    #[test]
    fn unreachable_polkit_denies_non_root() {
        for answer in [PolkitAnswer::Unreachable, PolkitAnswer::Failed] {
            let outcome = outcome_of(Verdict::Polkit(answer), &request(true));
            assert!(
                matches!(outcome, Err(AuthError::AccessDenied(_))),
                "{answer:?}"
            );
        }
    }
}
