//! The unprivileged callers of the authorization tests and the polkit rule that gives
//! one group one action, both machine-wide and shared through testkit's leases:
//!
//! - [`PLAIN_USER`], a system user in no extra group: polkit's defaults apply to it;
//! - [`RUNNER_USER`], a system user in the group [`RUNNERS_GROUP`];
//! - [`RULE_PATH`], a rule granting `org.qubes.storage.run-volumes` (and nothing else)
//!   to members of [`RUNNERS_GROUP`].
//!
//! They are created when the first test needs them and removed (`userdel`, `groupdel`,
//! the rule file deleted) when the last test holding them ends. polkitd reads the rule
//! directory live, and computes a subject's groups from `/etc/group` (`getgrouplist`),
//! not from the calling process; the callers still run with `setpriv --init-groups`,
//! as a login would give them.

use qubes_storaged_testkit::polkit::RuleFile;
use qubes_storaged_testkit::users::{Account, UserSpec, Users};

pub const PLAIN_USER: &str = "qsd-authz-user";
pub const RUNNER_USER: &str = "qsd-authz-runner";
pub const RUNNERS_GROUP: &str = "qsd-runners";
pub const RULE_PATH: &str = "/etc/polkit-1/rules.d/49-qubes-storaged-bus-authz.rules";
const RULED_ACTION: &str = "org.qubes.storage.run-volumes";

/// Both test users, alive as long as this value.
pub struct Accounts {
    pub plain: Account,
    pub runner: Account,
    _users: Users,
}

impl Accounts {
    pub fn hold() -> Accounts {
        let users = Users::hold(
            "qubes-storaged-bus-authz-users",
            &[RUNNERS_GROUP],
            &[
                UserSpec {
                    name: PLAIN_USER,
                    groups: &[],
                },
                UserSpec {
                    name: RUNNER_USER,
                    groups: &[RUNNERS_GROUP],
                },
            ],
        );
        Accounts {
            plain: users.account(PLAIN_USER),
            runner: users.account(RUNNER_USER),
            _users: users,
        }
    }
}

// ---- the rule ----

/// The rule: members of [`RUNNERS_GROUP`] may start and stop volumes without
/// authentication; it says nothing about any other action.
fn rule_text() -> String {
    format!(
        r#"// Installed by qubes-storaged's tests/bus_authz.rs while it runs; safe to delete.
polkit.addRule(function(action, subject) {{
    if (action.id == "{RULED_ACTION}" && subject.isInGroup("{RUNNERS_GROUP}"))
        return polkit.Result.YES;
}});
"#
    )
}

/// The rule file, in place as long as this value lives. Take it before polkitd starts
/// (it also rereads the directory when it changes).
pub struct RunnersRule {
    _file: RuleFile,
}

impl RunnersRule {
    pub fn hold() -> RunnersRule {
        let file = RuleFile::hold("qubes-storaged-bus-authz-rule", RULE_PATH, rule_text());
        RunnersRule { _file: file }
    }
}
