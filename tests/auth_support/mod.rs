//! Fixtures of the authorization tests (`tests/auth.rs`): a private dbus-daemon that
//! applies a system-bus-like default policy plus the project's own bus policy
//! (`systemd/org.qubes.Storage.conf`) and polkit's, a polkitd attached to it, the
//! project's polkit actions and one test rule where polkitd reads them, an unprivileged
//! user, and a tiny service whose one method is guarded by `Authorizer::check`.
//!
//! The bus, polkitd, the rule's lease and the user come from `qubes-storaged-testkit`.
//! Unprivileged calls are made by separate processes (`gdbus`, `python3-dbus`) started
//! with `setpriv` as that user, since the bus takes a caller's uid from its socket.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qubes_storaged::auth::{Action, AuthError, AuthRequest, Authorizer};
use qubes_storaged_testkit::bus::Include;
use qubes_storaged_testkit::polkit::RuleFile;
use qubes_storaged_testkit::users::{gdbus_call_as, Account, Groups, UserSpec, Users};
use qubes_storaged_testkit::workspace;
use zbus::message::{Flags, Header};
use zbus::Connection;

pub use qubes_storaged_testkit::bus::Bus;
pub use qubes_storaged_testkit::polkit::Polkitd;

pub const SERVICE: &str = "org.qubes.Storage";
pub const TEST_PATH: &str = "/org/qubes/Storage/authtest";
pub const TEST_INTERFACE: &str = "org.qubes.Storage.AuthTest";
pub const TEST_POOL: &str = "testpool";
/// The vid the test rule lets [`TEST_USER`] manage without authentication.
pub const RULED_VID: &str = "appvms/ruled/private";
pub const TEST_USER: &str = "qsd-authtest";

const RULE_INSTALLED: &str = "/etc/polkit-1/rules.d/49-qubes-storaged-authtest.rules";
/// The rule's lease: `/run/lock/qubes-storaged-authtest-rule.lock`.
const RULE_LEASE: &str = "qubes-storaged-authtest-rule";
const USER_LEASE: &str = "qubes-storaged-authtest-user";

/// A polkit rule that uses both details the authorizer passes.
fn rule_text() -> String {
    format!(
        r#"// Installed by qubes-storaged's tests/auth.rs while it runs; safe to delete.
polkit.addRule(function(action, subject) {{
    if (action.id == "org.qubes.storage.manage-volumes" && subject.user == "{TEST_USER}" &&
        action.lookup("pool") == "{TEST_POOL}" && action.lookup("vid") == "{RULED_VID}")
        return polkit.Result.YES;
}});
"#
    )
}

// ---- machine-wide fixtures ----

/// The test rule where polkitd reads it and the test user, for as long as any test
/// (of any binary) holds them; the last holder removes them. Polkitd installs the
/// project's actions itself.
pub struct MachineFixtures {
    _rule: RuleFile,
    _user: Users,
}

impl MachineFixtures {
    pub fn hold() -> MachineFixtures {
        let user = Users::hold(
            USER_LEASE,
            &[],
            &[UserSpec {
                name: TEST_USER,
                groups: &[],
            }],
        );
        let rule = RuleFile::hold(RULE_LEASE, RULE_INSTALLED, rule_text());
        MachineFixtures {
            _rule: rule,
            _user: user,
        }
    }
}

/// A bus with the system bus's default policy, then polkit's and the project's.
pub fn policy_bus() -> Bus {
    Bus::system_like(&[
        Include::File("/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf".into()),
        Include::File(workspace::path("systemd/org.qubes.Storage.conf")),
    ])
}

// ---- the guarded service ----

/// The test object: `ManageVolume(s pool, s vid)` checks `manage-volumes` and does
/// nothing else. It records how long each check took.
struct AuthTest {
    authorizer: Authorizer,
    check_times: Arc<Mutex<Vec<Duration>>>,
}

#[zbus::interface(name = "org.qubes.Storage.AuthTest")]
impl AuthTest {
    async fn manage_volume(
        &self,
        #[zbus(header)] header: Header<'_>,
        pool: &str,
        vid: &str,
    ) -> zbus::fdo::Result<()> {
        let allow_interaction = header
            .primary()
            .flags()
            .contains(Flags::ALLOW_INTERACTIVE_AUTH);
        let request = AuthRequest {
            action: Action::ManageVolumes,
            pool: Some(pool),
            vid: Some(vid),
            dir_path: None,
            allow_interaction,
        };
        let started = Instant::now();
        let outcome = self.authorizer.check(&header, request).await;
        self.check_times.lock().unwrap().push(started.elapsed());
        outcome.map_err(AuthError::into_fdo)
    }
}

/// The guarded service, owning `org.qubes.Storage` on the private bus as root.
pub struct GuardedService {
    pub conn: Connection,
    pub authorizer: Authorizer,
    check_times: Arc<Mutex<Vec<Duration>>>,
}

impl GuardedService {
    pub async fn start(bus: &Bus) -> GuardedService {
        let conn = bus.connect().await;
        let authorizer = Authorizer::new(&conn).await;
        let check_times = Arc::new(Mutex::new(Vec::new()));
        let object = AuthTest {
            authorizer: authorizer.clone(),
            check_times: check_times.clone(),
        };
        conn.object_server()
            .at(TEST_PATH, object)
            .await
            .expect("serve the test object");
        conn.request_name(SERVICE)
            .await
            .expect("own org.qubes.Storage");
        GuardedService {
            conn,
            authorizer,
            check_times,
        }
    }

    /// How long each check took, in call order; empties the record.
    pub fn take_check_times(&self) -> Vec<Duration> {
        std::mem::take(&mut self.check_times.lock().unwrap())
    }
}

// ---- callers ----

/// Calls `ManageVolume` as root over `conn`, with or without the interactive flag.
pub async fn call_as_root(
    conn: &Connection,
    vid: &str,
    interactive: bool,
) -> Result<(), zbus::Error> {
    let proxy = zbus::Proxy::new(conn, SERVICE, TEST_PATH, TEST_INTERFACE)
        .await
        .expect("test proxy");
    let flags = if interactive {
        zbus::proxy::MethodFlags::ALLOW_INTERACTIVE_AUTH
    } else {
        zbus::proxy::MethodFlags::empty()
    };
    proxy
        .call_with_flags::<_, _, ()>("ManageVolume", flags, &(TEST_POOL, vid))
        .await
        .map(|_| ())
}

/// The unprivileged test user (held by [`MachineFixtures`]).
pub fn test_user() -> Account {
    Account::look_up(TEST_USER).expect("the test user exists (MachineFixtures holds it)")
}

/// A command that runs a program as the test user, without groups.
fn as_test_user() -> tokio::process::Command {
    let mut command = tokio::process::Command::from(test_user().setpriv(Groups::Cleared));
    command.kill_on_drop(true);
    command
}

/// What an unprivileged `gdbus call` ended with: `Ok(stdout)` or `Err(stderr)`.
pub async fn gdbus_as_user(bus: &Bus, args: &[&str]) -> Result<String, String> {
    gdbus_call_as(&test_user(), bus.address(), args).await
}

/// `ManageVolume(TEST_POOL, vid)` as the test user.
pub async fn manage_volume_as_user(
    bus: &Bus,
    vid: &str,
    interactive: bool,
) -> Result<String, String> {
    let method = format!("{TEST_INTERFACE}.ManageVolume");
    let pool_arg = format!("'{TEST_POOL}'");
    let vid_arg = format!("'{vid}'");
    let mut args = vec!["--dest", SERVICE, "--object-path", TEST_PATH];
    args.extend(["--method", method.as_str()]);
    if interactive {
        args.push("--interactive");
    }
    args.extend([pool_arg.as_str(), vid_arg.as_str()]);
    gdbus_as_user(bus, &args).await
}

/// `count` calls of `ManageVolume(TEST_POOL, vid)` as the test user over one
/// connection (python3-dbus); fails on the first error.
pub async fn repeat_as_user(bus: &Bus, vid: &str, count: usize) -> Result<(), String> {
    let script = format!(
        "import dbus, sys\n\
         bus = dbus.bus.BusConnection(sys.argv[1])\n\
         proxy = bus.get_object('{SERVICE}', '{TEST_PATH}', introspect=False)\n\
         call = proxy.get_dbus_method('ManageVolume', '{TEST_INTERFACE}')\n\
         for _ in range(int(sys.argv[2])):\n    call('{TEST_POOL}', sys.argv[3])\n"
    );
    let output = as_test_user()
        .args(["/usr/bin/python3", "-c", &script, bus.address()])
        .arg(count.to_string())
        .arg(vid)
        .output()
        .await
        .expect("run python3");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Polls `condition` until it holds or the deadline passes.
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// The median of `times`.
pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}
