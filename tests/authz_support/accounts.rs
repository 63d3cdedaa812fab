//! The unprivileged callers of the authorization tests and the polkit rule that gives
//! one group one action, both machine-wide and shared through [`Lease`]s:
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

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::client::Who;
use super::lease::Lease;

pub const PLAIN_USER: &str = "qsd-authz-user";
pub const RUNNER_USER: &str = "qsd-authz-runner";
pub const RUNNERS_GROUP: &str = "qsd-runners";
pub const RULE_PATH: &str = "/etc/polkit-1/rules.d/49-qubes-storaged-bus-authz.rules";
const RULED_ACTION: &str = "org.qubes.storage.run-volumes";

/// One system user.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
}

impl Account {
    fn look_up(name: &'static str) -> Option<Account> {
        let user = nix::unistd::User::from_name(name).expect("getpwnam")?;
        Some(Account {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// How the test client runs as this user.
    pub fn who(&self) -> Who {
        Who::User {
            uid: self.uid,
            gid: self.gid,
        }
    }
}

/// Both test users, alive as long as this value.
pub struct Accounts {
    pub plain: Account,
    pub runner: Account,
    _lease: Lease,
}

impl Accounts {
    pub fn hold() -> Accounts {
        let lease = Lease::take(
            "qubes-storaged-bus-authz-users",
            accounts_exist,
            create_accounts,
            remove_accounts,
        );
        let plain = Account::look_up(PLAIN_USER).expect("the plain test user exists");
        let runner = Account::look_up(RUNNER_USER).expect("the runner test user exists");
        Accounts {
            plain,
            runner,
            _lease: lease,
        }
    }
}

fn accounts_exist() -> bool {
    let runner_in_group = nix::unistd::Group::from_name(RUNNERS_GROUP)
        .expect("getgrnam")
        .is_some_and(|group| group.mem.iter().any(|member| member == RUNNER_USER));
    runner_in_group && Account::look_up(PLAIN_USER).is_some()
}

fn create_accounts() {
    remove_accounts();
    run_ok("groupadd", &["--system", RUNNERS_GROUP]);
    add_system_user(PLAIN_USER, &[]);
    add_system_user(RUNNER_USER, &["--groups", RUNNERS_GROUP]);
}

fn add_system_user(name: &str, extra: &[&str]) {
    let mut args = vec![
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
    ];
    args.extend(extra);
    args.push(name);
    run_ok("useradd", &args);
}

/// Removes whatever exists of the users and the group (each user's own group goes
/// with `userdel`).
fn remove_accounts() {
    for user in [PLAIN_USER, RUNNER_USER] {
        if Account::look_up(user).is_some() {
            run_ok("userdel", &[user]);
        }
    }
    if nix::unistd::Group::from_name(RUNNERS_GROUP)
        .expect("getgrnam")
        .is_some()
    {
        run_ok("groupdel", &[RUNNERS_GROUP]);
    }
}

fn run_ok(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
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
    _lease: Lease,
}

impl RunnersRule {
    pub fn hold() -> RunnersRule {
        let lease = Lease::take(
            "qubes-storaged-bus-authz-rule",
            rule_in_place,
            install_rule,
            || {
                let _ = fs::remove_file(RULE_PATH);
            },
        );
        RunnersRule { _lease: lease }
    }
}

fn rule_in_place() -> bool {
    fs::read_to_string(RULE_PATH).is_ok_and(|text| text == rule_text())
}

fn install_rule() {
    let path = Path::new(RULE_PATH);
    let staged = path.with_extension(format!("staged.{}", std::process::id()));
    fs::write(&staged, rule_text()).expect("stage the polkit rule");
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o644)).expect("chmod the rule");
    fs::rename(&staged, path).expect("install the polkit rule");
}
