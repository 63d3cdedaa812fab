//! Fixtures of the authorization tests (`tests/auth.rs`): a private dbus-daemon that
//! applies a system-bus-like default policy plus the project's own bus policy
//! (`systemd/org.qubes.Storage.conf`) and polkit's, a polkitd attached to it, the
//! project's polkit actions and one test rule where polkitd reads them, an unprivileged
//! user, and a tiny service whose one method is guarded by `Authorizer::check`.
//!
//! Unprivileged calls are made by separate processes (`gdbus`, `python3-dbus`) started
//! with `setpriv` as that user, since the bus takes a caller's uid from its socket.
//! Every process started here is a `Child` killed by PID and reaped in `Drop`.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use qubes_storaged::auth::{Action, AuthError, AuthRequest, Authorizer};
use rustix::fs::{flock, FlockOperation};
use tempfile::TempDir;
use zbus::connection::Builder;
use zbus::message::{Flags, Header};
use zbus::names::BusName;
use zbus::Connection;

pub const SERVICE: &str = "org.qubes.Storage";
pub const TEST_PATH: &str = "/org/qubes/Storage/authtest";
pub const TEST_INTERFACE: &str = "org.qubes.Storage.AuthTest";
pub const TEST_POOL: &str = "testpool";
/// The vid the test rule lets [`TEST_USER`] manage without authentication.
pub const RULED_VID: &str = "appvms/ruled/private";
pub const TEST_USER: &str = "qsd-authtest";
const POLKIT: &str = "org.freedesktop.PolicyKit1";
const DEADLINE: Duration = Duration::from_secs(20);

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const ACTIONS_INSTALLED: &str = "/usr/share/polkit-1/actions/org.qubes.storage.policy";
const RULE_INSTALLED: &str = "/etc/polkit-1/rules.d/49-qubes-storaged-authtest.rules";
const RULE_LOCK: &str = "/run/lock/qubes-storaged-authtest-rule.lock";

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

// ---- polkit files ----

/// The project's actions and the test rule, installed where polkitd reads them.
///
/// The actions file is installed when missing or different and left in place, like
/// the bus harness (`tests/common`) does: tests of several binaries run at once and
/// may share it. The rule is this file's own: every user holds a shared `flock` on
/// [`RULE_LOCK`]; whoever ends and then gets the lock exclusively removes the rule.
pub struct PolkitFiles {
    lock: File,
}

impl PolkitFiles {
    pub fn install() -> PolkitFiles {
        install_if_different(Path::new(ACTIONS_INSTALLED), &actions_text());
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(RULE_LOCK)
            .expect("open the rule lock");
        flock(&lock, FlockOperation::LockExclusive).expect("lock the rule");
        install_if_different(Path::new(RULE_INSTALLED), rule_text().as_bytes());
        flock(&lock, FlockOperation::LockShared).expect("share the rule lock");
        PolkitFiles { lock }
    }
}

impl Drop for PolkitFiles {
    fn drop(&mut self) {
        let _ = flock(&self.lock, FlockOperation::Unlock);
        if flock(&self.lock, FlockOperation::NonBlockingLockExclusive).is_ok() {
            let _ = fs::remove_file(RULE_INSTALLED);
            let _ = flock(&self.lock, FlockOperation::Unlock);
        }
    }
}

fn actions_text() -> Vec<u8> {
    fs::read(Path::new(REPO).join("polkit/org.qubes.storage.policy")).expect("read the policy")
}

fn install_if_different(path: &Path, wanted: &[u8]) {
    if fs::read(path).ok().as_deref() == Some(wanted) {
        return;
    }
    let staged = path.with_extension(format!("staged.{}", std::process::id()));
    fs::write(&staged, wanted).expect("stage a polkit file");
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::rename(&staged, path).expect("install a polkit file");
}

// ---- processes ----

/// A child process that is killed (by its PID) and reaped when dropped.
pub struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A dbus-daemon with a system-bus-like policy, including the project's bus policy.
pub struct PrivateBus {
    daemon: Reaped,
    address: String,
    _dir: TempDir,
}

impl PrivateBus {
    pub fn start() -> PrivateBus {
        let dir = tempfile::tempdir().expect("tempdir");
        // The unprivileged caller must reach the socket inside.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let config = dir.path().join("bus.conf");
        fs::write(&config, bus_config(&dir.path().join("socket"))).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg("--nofork")
            .arg("--print-address=1")
            .arg(format!("--config-file={}", config.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let mut address = String::new();
        let stdout = child.stdout.take().expect("dbus-daemon stdout");
        BufReader::new(stdout)
            .read_line(&mut address)
            .expect("read the bus address");
        let daemon = Reaped(child);
        assert!(!address.trim().is_empty(), "dbus-daemon printed no address");
        PrivateBus {
            daemon,
            address: address.trim().to_owned(),
            _dir: dir,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub async fn connect(&self) -> Connection {
        Builder::address(self.address.as_str())
            .build()
            .await
            .expect("connect to the private bus")
    }
}

/// The system bus's default policy (`/usr/share/dbus-1/system.conf`) in short, then the
/// policies of polkit and of this project.
fn bus_config(socket: &Path) -> String {
    let ours = Path::new(REPO).join("systemd/org.qubes.Storage.conf");
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>
  <include>{ours}</include>
</busconfig>
"#,
        socket = socket.display(),
        ours = ours.display(),
    )
}

/// polkitd attached to a private bus.
pub struct Polkitd {
    _child: Reaped,
}

impl Polkitd {
    pub async fn start(bus: &PrivateBus, conn: &Connection) -> Polkitd {
        let dbus = zbus::fdo::DBusProxy::new(conn)
            .await
            .expect("bus driver proxy");
        let mut owners = dbus
            .receive_name_owner_changed_with_args(&[(0, POLKIT)])
            .await
            .expect("follow polkitd's name");
        let child = Command::new("/usr/lib/polkit-1/polkitd")
            .arg("--no-debug")
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start polkitd");
        let polkitd = Polkitd {
            _child: Reaped(child),
        };
        let name = BusName::try_from(POLKIT).unwrap();
        let deadline = Instant::now() + DEADLINE;
        while !dbus
            .name_has_owner(name.clone())
            .await
            .expect("NameHasOwner")
        {
            assert!(
                Instant::now() < deadline,
                "polkitd did not appear on the bus"
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), owners.next()).await;
        }
        polkitd
    }
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
    pub async fn start(bus: &PrivateBus) -> GuardedService {
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

/// The unprivileged test user, created once (`useradd --system`) if missing.
#[derive(Debug, Clone, Copy)]
pub struct TestUser {
    pub uid: u32,
    pub gid: u32,
}

pub fn test_user() -> TestUser {
    static USER: OnceLock<TestUser> = OnceLock::new();
    *USER.get_or_init(|| {
        if nix::unistd::User::from_name(TEST_USER).unwrap().is_none() {
            let status = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(TEST_USER)
                .status()
                .expect("run useradd");
            assert!(status.success(), "useradd {TEST_USER} failed: {status}");
        }
        let user = nix::unistd::User::from_name(TEST_USER)
            .unwrap()
            .expect("the test user exists");
        TestUser {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }
    })
}

/// `setpriv` arguments that run a program as the test user, without groups.
fn as_test_user() -> tokio::process::Command {
    let user = test_user();
    let mut command = tokio::process::Command::new("setpriv");
    command
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--clear-groups")
        .kill_on_drop(true);
    command
}

/// What an unprivileged `gdbus call` ended with: `Ok(stdout)` or `Err(stderr)`.
pub async fn gdbus_as_user(bus: &PrivateBus, args: &[&str]) -> Result<String, String> {
    let output = as_test_user()
        .args(["gdbus", "call", "--address", bus.address()])
        .args(args)
        .output()
        .await
        .expect("run gdbus");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// `ManageVolume(TEST_POOL, vid)` as the test user.
pub async fn manage_volume_as_user(
    bus: &PrivateBus,
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
pub async fn repeat_as_user(bus: &PrivateBus, vid: &str, count: usize) -> Result<(), String> {
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
