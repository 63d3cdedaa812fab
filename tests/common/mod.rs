//! The bus test harness: a private dbus-daemon with a policy allowing everything,
//! optionally polkitd attached to it, and the real `qubes-storaged` binary with a temp
//! state directory, serving on that bus — all from `qubes-storaged-testkit` (every
//! process a child stopped by PID and reaped on drop; waits watch the bus with a
//! deadline). This module adds what the service's tests share on top: the [`Harness`]
//! that wires them together, error and option helpers, ordered call traces, the
//! signal oracle and the contract's proxies.
//!
//! Pools live on real loop-mounted filesystems (`common_fs::LoopFs`, shared with the
//! engine tests), unmounted after the daemon has stopped.
//!
//! Use from a test crate with `mod common;`.

#![allow(dead_code)]

pub mod oracle;
pub mod proxies;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use tempfile::TempDir;
use zbus::message::Type as MessageType;
use zbus::proxy::CacheProperties;
use zbus::{Connection, DBusError, Message, MessageStream, OwnedObjectPath, Variant};

pub use proxies::{JobProxy, ManagerProxy, Opts, PoolProxy, VolumeProxy};
pub use qubes_storaged_testkit::bus::Bus as TestBus;
pub use qubes_storaged_testkit::common_fs;
pub use qubes_storaged_testkit::daemon::{BusArg, Daemon, DaemonSpec, SERVICE};
pub use qubes_storaged_testkit::polkit::Polkitd;
pub use qubes_storaged_testkit::users::NOBODY;
pub use qubes_storaged_testkit::{FsType, LoopFs, MIB};

use qubes_storaged_testkit::bus::log_tail;
use qubes_storaged_testkit::process::DEADLINE;
use qubes_storaged_testkit::users::gdbus_call_as;

/// ImportVolume of `source` into `destination`, started in the background. The moment
/// its Job appears (InterfacesAdded), the filesystem holding `hold_dir` is frozen: the
/// copy is held where it is until the test thaws it (the `Frozen` drops), so it cannot
/// finish before the test has acted, however fast the machine. Returns the Job's path,
/// the running call and the freeze.
pub async fn start_held_import(
    h: &Harness,
    destination: &OwnedObjectPath,
    source: &OwnedObjectPath,
    hold_dir: &Path,
) -> (
    OwnedObjectPath,
    tokio::task::JoinHandle<zbus::Result<()>>,
    common_fs::Frozen,
) {
    type Added = (
        OwnedObjectPath,
        HashMap<String, HashMap<String, zbus::OwnedVariant>>,
    );
    let mut stream = MessageStream::from(&h.conn);
    let volume = h.volume(destination).await;
    let source = source.clone();
    let import = tokio::spawn(async move { volume.import_volume(&source.as_ref(), opts()).await });
    let job = tokio::time::timeout(DEADLINE, async {
        loop {
            let msg = stream.next().await.expect("stream").expect("message");
            if member_of(&msg) != "InterfacesAdded" {
                continue;
            }
            let (path, _): Added = msg.body().deserialize().expect("InterfacesAdded body");
            if path.as_str().starts_with("/org/qubes/Storage/jobs/") {
                return path;
            }
        }
    })
    .await
    .expect("no Job appeared");
    (job, import, common_fs::Frozen::new(hold_dir))
}

/// A clone held where it is: ImportVolume of an ext4 template root holding `data`
/// bytes (pool `slow`) into `appvms/clone/root` of a btrfs pool (`fast`), frozen the
/// moment its Job appears ([`start_held_import`]). The clone keeps the destination's
/// lock until the test thaws it.
pub struct HeldClone {
    pub source_pool: OwnedObjectPath,
    pub pool: OwnedObjectPath,
    pub copy: tokio::task::JoinHandle<zbus::Result<()>>,
    pub frozen: common_fs::Frozen,
}

impl HeldClone {
    pub async fn start(h: &mut Harness, data: u64) -> HeldClone {
        HeldClone::start_with_snapshots(h, data, 0).await.0
    }

    /// [`HeldClone::start`], with `count` snapshot volumes of the clone's destination
    /// (`appvms/s<i>/root` in `fast`, made before the clone holds it): their Starts
    /// wait in the engine for the destination (shared, behind the clone's exclusive
    /// hold), as snapshot VMs of a template wait while the template commits.
    pub async fn start_with_snapshots(
        h: &mut Harness,
        data: u64,
        count: usize,
    ) -> (HeldClone, Vec<OwnedObjectPath>) {
        let source_pool = h.pool_on("slow", FsType::Ext4, 1024 * MIB).await;
        let pool = h.pool_on("fast", FsType::Btrfs, 1024 * MIB).await;
        let source = h
            .origin_volume(&source_pool, "vm-templates/big/root", MIB)
            .await;
        fill_scattered(&h.volume(&source).await, data, 11).await;
        let destination = h.origin_volume(&pool, "appvms/clone/root", MIB).await;
        let snapshots = h.snapshots_of(&pool, "appvms/clone/root", count).await;
        let hold = PathBuf::from(h.pool(&pool).await.dir_path().await.unwrap());
        let (_job, copy, frozen) = start_held_import(h, &destination, &source, &hold).await;
        let held = HeldClone {
            source_pool,
            pool,
            copy,
            frozen,
        };
        (held, snapshots)
    }

    /// Thaws the destination and waits for the clone to succeed.
    pub async fn finish(self) {
        self.frozen.thaw();
        self.copy.await.unwrap().expect("the held clone");
    }
}

/// The daemon this test run built.
const DAEMON_BINARY: &str = env!("CARGO_BIN_EXE_qubes-storaged");

/// An empty `a{sv}`.
pub fn opts() -> Opts<'static> {
    HashMap::new()
}

/// ImportData's options for an import smaller than the volume (contract rev 2: a
/// shrink must be asked for).
pub fn shrink_ok() -> Opts<'static> {
    opts_of([("allow_shrink", Variant::from(true))])
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

// ---- the service ----

/// Starts this build's daemon on `bus` (see [`DaemonSpec`]).
pub async fn start_daemon(
    bus: &TestBus,
    conn: &Connection,
    state_dir: &Path,
    log: &Path,
    bus_arg: BusArg,
) -> Daemon {
    let spec = DaemonSpec {
        bus_arg,
        ..DaemonSpec::new(Path::new(DAEMON_BINARY), state_dir, log)
    };
    Daemon::start(&spec, bus, conn).await
}

/// The match rule of the service's questions to polkit.
const CHECK_AUTHORIZATION: &str = "type='method_call',interface='org.freedesktop.PolicyKit1.Authority',member='CheckAuthorization'";

/// The match rule of the service's cancellations of questions to polkit.
const CANCEL_CHECK: &str = "type='method_call',interface='org.freedesktop.PolicyKit1.Authority',member='CancelCheckAuthorization'";

/// Is `msg` (from [`Harness::monitor_polkit_checks_and_replies`]) a question to polkit?
pub fn is_polkit_check(msg: &Message) -> bool {
    is_polkit_call(msg, "CheckAuthorization")
}

/// Is `msg` (from [`Harness::monitor_polkit_checks_and_replies`]) the cancellation of a
/// question to polkit?
pub fn is_polkit_cancel(msg: &Message) -> bool {
    is_polkit_call(msg, "CancelCheckAuthorization")
}

fn is_polkit_call(msg: &Message, member: &str) -> bool {
    msg.message_type() == MessageType::MethodCall
        && msg.header().member().is_some_and(|m| m.as_str() == member)
}

// ---- unprivileged callers ----

/// `gdbus call --address … --dest org.qubes.Storage ARGS` as `nobody` (the bus takes
/// the uid from the socket): `Ok(stdout)` or `Err(stderr)`, which names the D-Bus error.
pub async fn gdbus_as_nobody(bus: &TestBus, args: &[&str]) -> Result<String, String> {
    gdbus_as_nobody_at(bus.address(), args).await
}

/// [`gdbus_as_nobody`] on the bus at `address` (from a task that does not own the bus).
pub async fn gdbus_as_nobody_at(address: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["--dest", SERVICE];
    all.extend_from_slice(args);
    gdbus_call_as(&NOBODY, address, &all).await
}

/// Pool.MeasureSpace of `pool` by `nobody` (a gdbus process, killed if the task is
/// aborted).
pub fn measure_pool_as_nobody(
    h: &Harness,
    pool: &zbus::OwnedObjectPath,
) -> tokio::task::JoinHandle<Result<String, String>> {
    let (bus, pool) = (h.bus.address().to_owned(), pool.to_string());
    tokio::spawn(async move {
        let args = [
            "--object-path",
            pool.as_str(),
            "--method",
            "org.qubes.Storage.Pool.MeasureSpace",
            "@a{sv} {}",
        ];
        gdbus_as_nobody_at(&bus, &args).await
    })
}

/// Makes `nobody`'s caller leave: its gdbus process (a task of
/// [`measure_pool_as_nobody`]) is killed, and this returns once the bus driver has seen
/// it go (at most `left` of nobody's connections remain), within `patience`.
pub async fn make_caller_leave(
    h: &Harness,
    caller: tokio::task::JoinHandle<Result<String, String>>,
    left: usize,
    patience: Duration,
) {
    caller.abort();
    assert!(caller.await.is_err(), "the caller had already ended");
    until_nobody_has_at_most(h, left, patience).await;
}

/// Waits until at most `most` connections of `nobody` are left on the bus (the bus
/// driver has seen the others leave), for at most `patience`.
pub async fn until_nobody_has_at_most(h: &Harness, most: usize, patience: Duration) {
    let deadline = std::time::Instant::now() + patience;
    while connections_of(h, NOBODY.uid).await > most {
        assert!(std::time::Instant::now() < deadline, "a caller never left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many connections of the bus belong to `uid` (asked of the bus driver).
pub async fn connections_of(h: &Harness, uid: u32) -> usize {
    let bus = zbus::fdo::DBusProxy::new(&h.conn)
        .await
        .expect("bus driver");
    let mut count = 0;
    for name in bus.list_names().await.expect("ListNames") {
        if !name.starts_with(':') {
            continue;
        }
        let name = zbus::names::BusName::try_from(name.as_str()).expect("a unique name");
        if bus.get_connection_unix_user(name).await.ok() == Some(uid) {
            count += 1;
        }
    }
    count
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
    /// More arguments for the service.
    daemon_args: Vec<String>,
    /// The service's soft limit of open files, if not this process's.
    soft_open_files: Option<u64>,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(false).await
    }

    pub async fn with_polkit() -> Harness {
        Harness::start_with(true).await
    }

    /// A harness whose bus carries messages of at most `bytes`, and a service told so.
    pub async fn start_with_message_limit(bytes: usize) -> Harness {
        let args = vec!["--max-message-size".to_owned(), bytes.to_string()];
        Harness::start_on(TestBus::permissive_with_message_limit(bytes), false, args).await
    }

    /// [`Harness::with_polkit`] on a bus whose messages are of at most `bytes`, the
    /// service told so.
    pub async fn with_polkit_and_message_limit(bytes: usize) -> Harness {
        let args = vec!["--max-message-size".to_owned(), bytes.to_string()];
        Harness::start_on(TestBus::permissive_with_message_limit(bytes), true, args).await
    }

    /// [`Harness::with_polkit`], the service started with `args` besides its usual ones.
    pub async fn with_polkit_and_args(args: &[&str]) -> Harness {
        let args = args.iter().map(|a| a.to_string()).collect();
        Harness::start_on(TestBus::permissive(), true, args).await
    }

    /// A harness whose service starts with the soft limit of open files systemd gives
    /// (1024), as a service started by the unit without its LimitNOFILE would.
    pub async fn with_soft_open_files_limit(soft: u64) -> Harness {
        Harness::start_configured(TestBus::permissive(), false, Vec::new(), Some(soft)).await
    }

    async fn start_with(polkit: bool) -> Harness {
        Harness::start_on(TestBus::permissive(), polkit, Vec::new()).await
    }

    async fn start_on(bus: TestBus, polkit: bool, daemon_args: Vec<String>) -> Harness {
        Harness::start_configured(bus, polkit, daemon_args, None).await
    }

    async fn start_configured(
        bus: TestBus,
        polkit: bool,
        daemon_args: Vec<String>,
        soft_open_files: Option<u64>,
    ) -> Harness {
        common_fs::require_root();
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
            daemon_args,
            soft_open_files,
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

    /// Returns once the daemon has done the work it left for after its replies so far
    /// (the precache it makes after a commit, the files it deletes after one), as its
    /// log says; panics after the deadline.
    pub async fn settled(&self) {
        self.wait_for_log_where(
            "the daemon finished its work after its replies",
            qubes_storaged_testkit::daemon::after_reply_work_done,
        )
        .await;
    }

    /// The names in `dir` once the daemon's work after its replies is done.
    pub async fn settled_names(&self, dir: &Path) -> Vec<String> {
        self.settled().await;
        common_fs::names_in(dir)
    }

    /// Returns once the daemon's log holds `line` (a fact the daemon logs only after it
    /// happened, such as a cancelled job); panics after the deadline.
    pub async fn wait_for_log(&self, line: &str) {
        self.wait_for_log_where(&format!("the daemon logged {line:?}"), |log| {
            log.contains(line)
        })
        .await;
    }

    /// Polls the daemon's log until `holds` says yes; panics with `what` after the
    /// deadline.
    pub async fn wait_for_log_where(&self, what: &str, holds: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + DEADLINE;
        while !holds(&self.log()) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting until {what}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "the daemon runs already");
        if self.service_signals.is_none() {
            self.service_signals = Some(watch_service_signals(&self.conn).await);
        }
        let args: Vec<&str> = self.daemon_args.iter().map(String::as_str).collect();
        let state_dir = self.state_dir();
        let log = self.log_path();
        let spec = DaemonSpec {
            extra_args: &args,
            soft_open_files: self.soft_open_files,
            ..DaemonSpec::new(Path::new(DAEMON_BINARY), &state_dir, &log)
        };
        let daemon = Daemon::start(&spec, &self.bus, &self.conn).await;
        self.daemon = Some(daemon);
    }

    /// The harness's polkitd (started by [`Harness::with_polkit`]).
    pub fn polkitd(&self) -> &Polkitd {
        self.polkit.as_ref().expect("the harness runs polkitd")
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon runs")
    }

    /// A connection that sees every CheckAuthorization sent to polkit on the test bus.
    pub async fn monitor_polkit_checks(&self) -> MessageStream {
        self.monitor(&[CHECK_AUTHORIZATION]).await
    }

    /// A connection that sees every CheckAuthorization and CancelCheckAuthorization
    /// sent to polkit on the test bus and every reply polkit sends (`is_polkit_check`
    /// and `is_polkit_cancel` tell them apart).
    pub async fn monitor_polkit_checks_and_replies(&self) -> MessageStream {
        let polkit = zbus::fdo::DBusProxy::new(&self.conn)
            .await
            .expect("bus driver proxy")
            .get_name_owner("org.freedesktop.PolicyKit1".try_into().unwrap())
            .await
            .expect("polkitd owns its name");
        let returns = format!("type='method_return',sender='{polkit}'");
        let errors = format!("type='error',sender='{polkit}'");
        self.monitor(&[CHECK_AUTHORIZATION, CANCEL_CHECK, &returns, &errors])
            .await
    }

    /// A connection that sees every message matching one of `rules` on the test bus.
    pub async fn monitor(&self, rules: &[&str]) -> MessageStream {
        let monitor = self.bus.connect().await;
        monitor
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus.Monitoring"),
                "BecomeMonitor",
                &(rules.to_vec(), 0u32),
            )
            .await
            .expect("BecomeMonitor");
        MessageStream::from(monitor)
    }

    pub fn daemon_mut(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("the daemon runs")
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

    /// `count` snapshot volumes (`appvms/s<i>/root`, snap_on_start) of `source` in
    /// `pool`, created 50 at a time.
    pub async fn snapshots_of(
        &self,
        pool: &OwnedObjectPath,
        source: &str,
        count: usize,
    ) -> Vec<OwnedObjectPath> {
        let proxy = self.pool(pool).await;
        let mut made = Vec::new();
        for batch in (0..count).collect::<Vec<_>>().chunks(50) {
            let creating = batch.iter().map(|i| {
                let config = opts_of([
                    ("snap_on_start", Variant::from(true)),
                    ("source", Variant::from(source)),
                ]);
                let proxy = &proxy;
                async move {
                    let vid = format!("appvms/s{i}/root");
                    proxy
                        .create_volume(&vid, config, opts())
                        .await
                        .expect("CreateVolume")
                }
            });
            made.extend(futures_util::future::join_all(creating).await);
        }
        made
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

/// Imports `size` bytes into `volume` with a data range of 1 MiB in every 2 MiB (each
/// stamped with its offset; `seed` picks the pattern): enough scattered data that a
/// copy across filesystems is a byte copy with a Job, while a debug build stays fast.
pub async fn fill_scattered(volume: &VolumeProxy<'_>, size: u64, seed: u64) {
    let fd = volume.import_data(size, opts()).await.unwrap();
    let file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    write_scattered(&file, size, seed);
    drop(file);
    volume.import_data_end(true, opts()).await.unwrap();
}

/// Writes the data of [`fill_scattered`] into an import file.
pub fn write_scattered(file: &std::fs::File, size: u64, seed: u64) {
    use std::os::unix::fs::FileExt;
    let mut block = common_fs::pattern(seed, 0, MIB as usize);
    for chunk in 0..size / (2 * MIB) {
        let offset = chunk * 2 * MIB;
        block[..8].copy_from_slice(&offset.to_le_bytes());
        file.write_all_at(&block, offset).unwrap();
    }
}
