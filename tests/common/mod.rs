//! The bus test harness: a private dbus-daemon started from its own configuration file
//! in a temp directory (system-bus-like, policy allowing everything, EXTERNAL auth, a
//! unix socket in the temp directory), optionally polkitd attached to it, and the real
//! `qubes-storaged` binary with a temp state directory, serving on that bus. Every
//! process is a child kept in a struct whose `Drop` stops it (SIGTERM, then SIGKILL
//! after a deadline) and waits for it; nothing else is ever signalled. Waiting for the
//! service is done by watching its name appear on the bus, with a deadline.
//!
//! Pools live on real loop-mounted filesystems (`common_fs::LoopFs`, shared with the
//! engine tests), unmounted after the daemon has stopped.
//!
//! Use from a test crate with `mod common;`.

#![allow(dead_code)]

#[path = "../../engine/tests/common_fs/mod.rs"]
pub mod common_fs;
pub mod oracle;
pub mod proxies;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use zbus::connection::Builder;
use zbus::message::Type as MessageType;
use zbus::names::BusName;
use zbus::proxy::CacheProperties;
use zbus::{Connection, DBusError, Message, MessageStream, OwnedObjectPath, Variant};

pub use common_fs::{FsType, LoopFs, MIB};
pub use proxies::{JobProxy, ManagerProxy, Opts, PoolProxy, VolumeProxy};

pub const SERVICE: &str = "org.qubes.Storage";
const POLKIT: &str = "org.freedesktop.PolicyKit1";
/// How long a process gets to appear on the bus or to exit after SIGTERM.
const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);
const POLICY_SOURCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/polkit/org.qubes.storage.policy"
);
const POLICY_INSTALLED: &str = "/usr/share/polkit-1/actions/org.qubes.storage.policy";

/// An empty `a{sv}`.
pub fn opts() -> Opts<'static> {
    HashMap::new()
}

/// An `a{sv}` from pairs.
pub fn opts_of<'a>(pairs: impl IntoIterator<Item = (&'a str, Variant<'a>)>) -> Opts<'a> {
    pairs.into_iter().collect()
}

/// The D-Bus error name of a failed call.
pub fn error_name(err: &zbus::Error) -> String {
    match err {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        zbus::Error::FDO(fdo) => fdo.name().to_string(),
        other => panic!("not an error reply: {other}"),
    }
}

/// The D-Bus error message of a failed call.
pub fn error_message(err: &zbus::Error) -> String {
    match err {
        zbus::Error::MethodError(_, detail, _) => detail.clone().unwrap_or_default(),
        zbus::Error::FDO(fdo) => fdo.description().unwrap_or_default().to_owned(),
        other => panic!("not an error reply: {other}"),
    }
}

/// Asserts that `result` failed with the error `name` (short names get the service's
/// prefix) and returns the message.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(result: zbus::Result<T>, name: &str) -> String {
    let expected = if name.contains('.') {
        name.to_owned()
    } else {
        format!("org.qubes.Storage.Error.{name}")
    };
    match result {
        Ok(value) => panic!("expected {expected}, got Ok({value:?})"),
        Err(err) => {
            assert_eq!(
                error_name(&err),
                expected,
                "message: {}",
                error_message(&err)
            );
            error_message(&err)
        }
    }
}

// ---- ordering ----

/// A match rule registered through zbus's own (reference-counted) bookkeeping, so a
/// proxy that adds and drops the same rule cannot remove it from the bus; its own
/// filtered stream is drained, and readers use the ordered `MessageStream::from(conn)`.
pub struct Subscription {
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    pub async fn new(conn: &Connection, rule: zbus::MatchRule<'static>) -> Subscription {
        let mut stream = MessageStream::for_match_rule(rule, conn, None)
            .await
            .expect("AddMatch");
        let task = tokio::spawn(async move { while stream.next().await.is_some() {} });
        Subscription { task }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Makes the bus deliver every signal of the service to `conn` while the result lives.
pub async fn watch_service_signals(conn: &Connection) -> Subscription {
    let rule = zbus::MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(SERVICE)
        .build()
        .unwrap();
    Subscription::new(conn, rule).await
}

/// What one call produced, in the order the client saw it.
pub struct CallTrace {
    /// The method return or error.
    pub reply: Message,
    /// Every signal of the service that arrived before the reply.
    pub signals_before: Vec<Message>,
}

impl CallTrace {
    /// The signals named `member` that arrived before the reply.
    pub fn before(&self, member: &str) -> Vec<&Message> {
        self.signals_before
            .iter()
            .filter(|m| member_of(m) == member)
            .collect()
    }

    /// The changed properties of the PropertiesChanged signals before the reply on
    /// `path` (merged, later values win).
    pub fn changed_properties(&self, path: &str) -> HashMap<String, zbus::OwnedVariant> {
        let mut changed = HashMap::new();
        for msg in self.before("PropertiesChanged") {
            if msg.header().path().is_some_and(|p| p.as_str() == path) {
                let (_, props, _): (String, HashMap<String, zbus::OwnedVariant>, Vec<String>) =
                    msg.body().deserialize().expect("PropertiesChanged body");
                changed.extend(props);
            }
        }
        changed
    }

    pub fn is_error(&self) -> bool {
        self.reply.message_type() == MessageType::Error
    }
}

pub fn member_of(msg: &Message) -> String {
    msg.header()
        .member()
        .map(|m| m.to_string())
        .unwrap_or_default()
}

/// Sends one method call to the service and collects, in socket order, the signals
/// that arrived before its reply (the client must watch the service's signals).
pub async fn call_traced<B>(
    conn: &Connection,
    path: &str,
    iface: &str,
    method: &str,
    body: &B,
) -> CallTrace
where
    B: serde::Serialize + zbus::DynamicType,
{
    let mut stream = MessageStream::from(conn);
    let call = Message::method_call(path, method)
        .destination(SERVICE)
        .interface(iface)
        .build(body)
        .unwrap();
    let serial = call.primary_header().serial_num();
    conn.send(&call).await.expect("send");
    let mut signals_before = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let msg = next
            .expect("no reply in time")
            .expect("stream ended")
            .expect("bad message");
        let header = msg.header();
        match header.message_type() {
            MessageType::Signal
                if header
                    .sender()
                    .is_some_and(|s| s.as_str() != "org.freedesktop.DBus") =>
            {
                signals_before.push(msg.clone())
            }
            MessageType::MethodReturn | MessageType::Error
                if header.reply_serial() == Some(serial) =>
            {
                drop(header);
                return CallTrace {
                    reply: msg,
                    signals_before,
                };
            }
            _ => {}
        }
    }
}

// ---- processes ----

/// Waits up to [`DEADLINE`] for our child to exit.
fn wait_child(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Sends `signal` to our child, waits up to [`DEADLINE`], then SIGKILLs and reaps it.
fn stop_child(child: &mut Child, signal: Signal) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    let _ = kill(Pid::from_raw(child.id() as i32), signal);
    wait_child(child).unwrap_or_else(|| {
        let _ = child.kill();
        child.wait().expect("cannot reap a child")
    })
}

/// A private dbus-daemon.
pub struct TestBus {
    child: Child,
    address: String,
    _dir: TempDir,
}

impl TestBus {
    pub fn start() -> TestBus {
        let dir = tempfile::Builder::new()
            .prefix("qsd-bus-")
            .tempdir()
            .expect("temp dir");
        // Unprivileged test callers (setpriv) must reach the socket.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod the bus directory");
        let config = dir.path().join("bus.conf");
        std::fs::write(&config, bus_config(&dir.path().join("bus.sock"))).expect("write bus.conf");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            // It complains that a container forbids raising its fd limit; nothing else.
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start dbus-daemon");
        // dbus-daemon prints its address once it listens: that line is the readiness signal.
        let mut line = String::new();
        let stdout = child.stdout.take().expect("dbus-daemon stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the bus address");
        let address = line.trim().to_owned();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        TestBus {
            child,
            address,
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
            .expect("cannot connect to the test bus")
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        stop_child(&mut self.child, Signal::SIGTERM);
    }
}

fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// Waits until `name` has an owner on the bus; fails early if `child` exits.
pub async fn wait_for_name(conn: &Connection, name: &str, child: &mut Child, log: Option<&Path>) {
    let dbus = zbus::fdo::DBusProxy::new(conn).await.expect("DBus proxy");
    let mut owners = dbus
        .receive_name_owner_changed_with_args(&[(0, name)])
        .await
        .expect("match");
    let bus_name = BusName::try_from(name).expect("bus name");
    let deadline = Instant::now() + DEADLINE;
    while !dbus
        .name_has_owner(bus_name.clone())
        .await
        .expect("NameHasOwner")
    {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{name} exited ({status}) before it appeared on the bus{}",
                log_tail(log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not appear on the bus{}",
            log_tail(log)
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), owners.next()).await;
    }
}

fn log_tail(log: Option<&Path>) -> String {
    log.and_then(|p| std::fs::read_to_string(p).ok())
        .map(|text| format!("; its log:\n{text}"))
        .unwrap_or_default()
}

/// polkitd on the test bus, with the service's actions installed.
pub struct Polkitd {
    child: Child,
}

impl Polkitd {
    pub async fn start(bus: &TestBus, conn: &Connection) -> Polkitd {
        install_policy();
        let mut child = Command::new("/usr/lib/polkit-1/polkitd")
            .arg("--no-debug")
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start polkitd");
        wait_for_name(conn, POLKIT, &mut child, None).await;
        Polkitd { child }
    }
}

impl Drop for Polkitd {
    fn drop(&mut self) {
        stop_child(&mut self.child, Signal::SIGTERM);
    }
}

/// polkitd reads actions only from /usr/share/polkit-1/actions. The file is installed
/// when missing or different and left in place (tests of several binaries run at once,
/// so one test removing it would break another's polkitd).
fn install_policy() {
    let wanted = std::fs::read(POLICY_SOURCE).expect("read polkit/org.qubes.storage.policy");
    if std::fs::read(POLICY_INSTALLED).ok().as_deref() != Some(&wanted[..]) {
        let staged = format!("{POLICY_INSTALLED}.{}", std::process::id());
        std::fs::write(&staged, &wanted).expect("stage the polkit policy");
        std::fs::rename(&staged, POLICY_INSTALLED).expect("install the polkit policy");
    }
}

/// The service under test.
pub struct Daemon {
    child: Child,
}

/// How the service finds the test bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusArg {
    /// `--bus-address ADDRESS`.
    Flag,
    /// `DBUS_SYSTEM_BUS_ADDRESS` in the environment, no flag: the system-bus default.
    SystemBusEnv,
}

impl Daemon {
    pub async fn start(bus: &TestBus, conn: &Connection, state_dir: &Path, log: &Path) -> Daemon {
        Daemon::start_with(bus, conn, state_dir, log, BusArg::Flag).await
    }

    pub async fn start_with(
        bus: &TestBus,
        conn: &Connection,
        state_dir: &Path,
        log: &Path,
        bus_arg: BusArg,
    ) -> Daemon {
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("daemon log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_qubes-storaged"));
        command.arg("--state-dir").arg(state_dir);
        match bus_arg {
            BusArg::Flag => command.arg("--bus-address").arg(bus.address()),
            BusArg::SystemBusEnv => command.env("DBUS_SYSTEM_BUS_ADDRESS", bus.address()),
        };
        let mut child = command
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("cannot start qubes-storaged");
        wait_for_name(conn, SERVICE, &mut child, Some(log)).await;
        Daemon { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait; the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        stop_child(&mut self.child, Signal::SIGTERM)
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        stop_child(&mut self.child, Signal::SIGKILL);
    }

    /// Sends SIGTERM without waiting (the caller watches what happens meanwhile).
    pub fn send_sigterm(&self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("kill");
    }

    /// Waits for the exit that a signal sent earlier causes; panics after the deadline.
    pub fn wait_exit(mut self) -> ExitStatus {
        wait_child(&mut self.child).expect("qubes-storaged did not exit in time")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop_child(&mut self.child, Signal::SIGTERM);
    }
}

// ---- unprivileged callers ----

/// The uid and gid unprivileged test calls run as (`nobody`).
pub const NOBODY: u32 = 65534;

/// `gdbus call --address … ARGS` as `nobody` (the bus takes the uid from the socket):
/// `Ok(stdout)` or `Err(stderr)`, which names the D-Bus error.
pub async fn gdbus_as_nobody(bus: &TestBus, args: &[&str]) -> Result<String, String> {
    let output = tokio::process::Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .args([
            "gdbus",
            "call",
            "--address",
            bus.address(),
            "--dest",
            SERVICE,
        ])
        .args(args)
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

// ---- the whole setup ----

/// Bus + (polkitd) + service + a client connection + the filesystems of the pools.
/// Fields drop in order: the service stops before the filesystems are unmounted.
pub struct Harness {
    daemon: Option<Daemon>,
    service_signals: Option<Subscription>,
    pub conn: Connection,
    filesystems: Vec<LoopFs>,
    polkit: Option<Polkitd>,
    pub bus: TestBus,
    dir: TempDir,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(false).await
    }

    pub async fn with_polkit() -> Harness {
        Harness::start_with(true).await
    }

    async fn start_with(polkit: bool) -> Harness {
        common_fs::require_root();
        let bus = TestBus::start();
        let conn = bus.connect().await;
        let polkit = if polkit {
            Some(Polkitd::start(&bus, &conn).await)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("qsd-state-")
            .tempdir()
            .expect("temp dir");
        let mut harness = Harness {
            daemon: None,
            service_signals: None,
            conn,
            filesystems: Vec::new(),
            polkit,
            bus,
            dir,
        };
        harness.start_daemon().await;
        harness
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub async fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "the daemon runs already");
        if self.service_signals.is_none() {
            self.service_signals = Some(watch_service_signals(&self.conn).await);
        }
        let daemon =
            Daemon::start(&self.bus, &self.conn, &self.state_dir(), &self.log_path()).await;
        self.daemon = Some(daemon);
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon runs")
    }

    /// Takes the running daemon out (to signal it by hand).
    pub fn take_daemon(&mut self) -> Daemon {
        self.daemon.take().expect("the daemon runs")
    }

    /// SIGTERM; asserts a clean exit.
    pub fn stop_daemon(&mut self) {
        let status = self.take_daemon().terminate();
        assert!(
            status.success(),
            "qubes-storaged exited with {status}{}",
            log_tail(Some(&self.log_path()))
        );
    }

    pub async fn restart(&mut self) {
        self.stop_daemon();
        self.start_daemon().await;
    }

    pub async fn kill_and_restart(&mut self) {
        self.take_daemon().kill();
        self.start_daemon().await;
    }

    /// A fresh loop-mounted filesystem that lives as long as the harness.
    pub fn mount(&mut self, fs_type: FsType, size: u64) -> PathBuf {
        let fs = LoopFs::new(fs_type, size);
        let path = fs.path().to_owned();
        self.filesystems.push(fs);
        path
    }

    /// A pool on a fresh filesystem of `fs_type` (setup_check off on ext4).
    pub async fn pool_on(&mut self, name: &str, fs_type: FsType, size: u64) -> OwnedObjectPath {
        let dir = self.mount(fs_type, size).join(name);
        let mut options = opts_of([("dir_path", Variant::from(dir.to_str().unwrap()))]);
        if !fs_type.has_reflink() {
            options.insert("setup_check", Variant::from(false));
        }
        self.manager()
            .await
            .create_pool(name, "file-reflink", options)
            .await
            .expect("CreatePool")
    }

    pub async fn manager(&self) -> ManagerProxy<'static> {
        ManagerProxy::builder(&self.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .expect("manager proxy")
    }

    pub async fn pool(&self, path: &OwnedObjectPath) -> PoolProxy<'static> {
        PoolProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .expect("pool proxy")
    }

    pub async fn volume(&self, path: &OwnedObjectPath) -> VolumeProxy<'static> {
        VolumeProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .expect("volume proxy")
    }

    pub async fn job(&self, path: &OwnedObjectPath) -> JobProxy<'static> {
        JobProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .expect("job proxy")
    }

    /// CreateVolume with `config`; panics on failure.
    pub async fn create_volume(
        &self,
        pool: &OwnedObjectPath,
        vid: &str,
        config: Opts<'_>,
    ) -> OwnedObjectPath {
        self.pool(pool)
            .await
            .create_volume(vid, config, opts())
            .await
            .expect("CreateVolume")
    }

    /// A save_on_stop, rw volume of `size` bytes (an "origin", like a private volume).
    pub async fn origin_volume(
        &self,
        pool: &OwnedObjectPath,
        vid: &str,
        size: u64,
    ) -> OwnedObjectPath {
        let config = opts_of([
            ("size", Variant::from(size)),
            ("rw", Variant::from(true)),
            ("save_on_stop", Variant::from(true)),
        ]);
        self.create_volume(pool, vid, config).await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- qubes-storaged log ----\n{}", self.log());
        }
    }
}
