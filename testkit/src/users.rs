//! Unprivileged test callers: system users (and groups) created when the first test
//! needs them and removed when the last one ends ([`Users::hold`], a [`Lease`]), and
//! commands run as a user through `setpriv` — the bus takes a caller's uid from its
//! socket, so an unprivileged call needs a process of its own.
//!
//! `useradd`, `userdel`, `groupadd` and `groupdel` take `/etc/passwd`'s lock and fail
//! at once when another one holds it; every call here is serialized through the flock
//! [`ACCOUNTS_LOCK`], so concurrent test binaries do not trip over each other. polkitd
//! computes a subject's groups from `/etc/group`, not from the calling process.

use std::process::Command;

use rustix::fs::FlockOperation;

use crate::lease::{self, Lease};

/// Serializes every account change of the tests.
pub const ACCOUNTS_LOCK: &str = "/run/lock/qubes-storaged-test-accounts.lock";

/// One system user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
}

/// `nobody`: a caller polkit knows nothing about, with no account to set up.
pub const NOBODY: Account = Account {
    name: "nobody",
    uid: 65534,
    gid: 65534,
};

impl Account {
    /// The user `name` from the passwd database, if it exists.
    pub fn look_up(name: &'static str) -> Option<Account> {
        let user = nix::unistd::User::from_name(name).expect("getpwnam")?;
        Some(Account {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// `setpriv` running a program as this user; see [`setpriv`].
    pub fn setpriv(&self, groups: Groups) -> Command {
        setpriv(self.uid, self.gid, groups)
    }
}

/// The supplementary groups of a command run as another user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Groups {
    /// None (`--clear-groups`).
    Cleared,
    /// The user's groups from `/etc/group`, as a login gives them (`--init-groups`).
    Login,
}

/// `setpriv --reuid UID --regid GID <groups>`: append the program and its arguments.
pub fn setpriv(uid: u32, gid: u32, groups: Groups) -> Command {
    let mut command = Command::new("/usr/bin/setpriv");
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg(match groups {
            Groups::Cleared => "--clear-groups",
            Groups::Login => "--init-groups",
        });
    command
}

/// `gdbus call --address ADDRESS ARGS` as `account` without groups: `Ok(stdout)` or
/// `Err(stderr)`, which names the D-Bus error.
pub async fn gdbus_call_as(
    account: &Account,
    address: &str,
    args: &[&str],
) -> Result<String, String> {
    let mut command = account.setpriv(Groups::Cleared);
    command
        .args(["gdbus", "call", "--address", address])
        .args(args);
    let output = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run setpriv gdbus");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// A test user to create: its name and the extra groups it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct UserSpec {
    pub name: &'static str,
    pub groups: &'static [&'static str],
}

/// System groups and users, alive as long as any holder of the lease lives.
pub struct Users {
    _lease: Lease,
}

impl Users {
    /// Holds `groups` and `users` under the lease `lock_name`; creates them (removing
    /// any partial leftovers first) when one is missing. Users get no home and
    /// `/usr/sbin/nologin` as shell.
    pub fn hold(
        lock_name: &str,
        groups: &'static [&'static str],
        users: &'static [UserSpec],
    ) -> Users {
        let lease = Lease::take(
            lock_name,
            || all_exist(groups, users),
            || {
                remove_all(groups, users);
                create_all(groups, users);
            },
            move || remove_all(groups, users),
        );
        Users { _lease: lease }
    }

    /// One of the held users; panics if it does not exist.
    pub fn account(&self, name: &'static str) -> Account {
        Account::look_up(name).unwrap_or_else(|| panic!("the test user {name} exists"))
    }
}

fn group_members(name: &str) -> Option<Vec<String>> {
    let group = nix::unistd::Group::from_name(name).expect("getgrnam")?;
    Some(group.mem)
}

fn all_exist(groups: &[&str], users: &[UserSpec]) -> bool {
    let groups_exist = groups.iter().all(|group| group_members(group).is_some());
    groups_exist && users.iter().all(user_exists)
}

fn user_exists(user: &UserSpec) -> bool {
    let in_groups = |group: &&str| {
        group_members(group).is_some_and(|members| members.iter().any(|m| m == user.name))
    };
    Account::look_up(user.name).is_some() && user.groups.iter().all(in_groups)
}

fn create_all(groups: &[&str], users: &[UserSpec]) {
    for group in groups {
        change_accounts("groupadd", &["--system", group]);
    }
    for user in users {
        let mut args = vec![
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ];
        let extra = user.groups.join(",");
        if !extra.is_empty() {
            args.extend(["--groups", extra.as_str()]);
        }
        args.push(user.name);
        change_accounts("useradd", &args);
    }
}

/// Removes whatever exists of the users, then of the groups (each user's own group
/// goes with `userdel`).
fn remove_all(groups: &[&str], users: &[UserSpec]) {
    for user in users {
        if Account::look_up(user.name).is_some() {
            change_accounts("userdel", &[user.name]);
        }
    }
    for group in groups {
        if group_members(group).is_some() {
            change_accounts("groupdel", &[group]);
        }
    }
}

/// Runs an account tool under [`ACCOUNTS_LOCK`]; panics unless it succeeds.
fn change_accounts(program: &str, args: &[&str]) {
    let lock = lease::open_lock(ACCOUNTS_LOCK);
    lease::lock_or_panic(&lock, FlockOperation::LockExclusive);
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
    tracing::info!(op = program, ?args, "test accounts");
}
