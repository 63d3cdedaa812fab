//! One local user cannot keep the service busy without end (`src/bus/admission.rs`,
//! `src/auth/polkit.rs`): a user other than root has at most `CALLS_PER_USER` calls in
//! progress, and the next is refused at once with `LimitsExceeded` — whatever it is, a
//! read too — while root goes on being served; the user's questions to polkit wait for
//! polkit's answer a few at a time (`POLKIT_CHECKS` per user), so that the 128 replies
//! the bus lets the service wait for are never all taken by one user; once the user's
//! calls are answered, the user is served again.
//!
//! The calls are kept in progress by stopping polkitd: each unprivileged Start waits for
//! polkit's answer. A monitor on the bus sees every question to polkit and every reply
//! of polkit, in the order the bus passes them, which gives the number of questions
//! outstanding at every moment. The callers are `gdbus` processes run as `nobody`, one
//! connection each, as a flood from several connections of one user would be.
//!
//! Nor can a user make it fall off the bus with calls that carry file descriptors (no
//! method takes one): they are refused at once and their descriptors closed, and the
//! service raises its limit of open files beyond what its queue of calls can hold.
//!
//! A read that waits for its turn is held behind the user's measurement of a pool where
//! a held copy writes (its filesystem frozen); its caller then leaves. A call whose
//! caller leaves before the service reads it waits in the socket of a stopped service
//! (SIGSTOP) until its caller is gone.
//!
//! Nor can one user's flood of listings of a large pool hold up the others: a monitor
//! counts the listings answered between another caller's read and its reply.

mod authz_support;
mod common;

use std::collections::HashSet;
use std::time::Duration;

use authz_support::client::{DbusCall, PyClient, Reply};
use common::{
    gdbus_as_nobody_at, is_polkit_cancel, is_polkit_check, make_caller_leave,
    measure_pool_as_nobody, opts, FsType, Harness, MIB, NOBODY,
};
use futures_util::StreamExt;
use nix::sys::signal::Signal;
use qubes_storaged::auth::POLKIT_CHECKS;
use qubes_storaged::bus::admission::{CALLS_PER_USER, CALL_BYTES_PER_USER};
use serde_json::json;
use zbus::MessageStream;

const LIMITS_EXCEEDED: &str = "org.freedesktop.DBus.Error.LimitsExceeded";
/// Longer than any step here takes, shorter than the service's wait for polkit (25 s).
const HUNG: Duration = Duration::from_secs(20);

/// The service's questions to polkit as a monitor sees them pass: asked, answered.
#[derive(Default)]
struct Questions {
    /// The serials of the questions asked and not yet answered.
    waiting: HashSet<u32>,
    most_waiting: usize,
    asked: usize,
    answered: usize,
    cancelled: usize,
}

impl Questions {
    /// Takes the monitor's next message into account (a reply to anything but a
    /// question seen asked — polkitd's own business — is passed over).
    async fn follow(&mut self, monitor: &mut MessageStream, what: &str) {
        let msg = tokio::time::timeout(HUNG, monitor.next())
            .await
            .unwrap_or_else(|_| panic!("{what}"))
            .expect("monitor")
            .expect("message");
        let header = msg.header();
        if is_polkit_check(&msg) {
            self.waiting.insert(header.primary().serial_num().get());
            self.most_waiting = self.most_waiting.max(self.waiting.len());
            self.asked += 1;
        } else if is_polkit_cancel(&msg) {
            self.cancelled += 1;
        } else if let Some(serial) = header.reply_serial() {
            if self.waiting.remove(&serial.get()) {
                self.answered += 1;
            }
        }
    }
}

/// A Start as nobody, answered by polkit: refused as needing a password.
async fn assert_needs_interaction(start: tokio::task::JoinHandle<Result<String, String>>) {
    let err = tokio::time::timeout(HUNG, start)
        .await
        .expect("a Start still waits")
        .unwrap()
        .expect_err("a Start as nobody succeeded");
    assert!(
        err.contains("org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_with_the_most_calls_in_progress_is_refused_the_next_and_root_is_served() {
    let mut h = Harness::with_polkit().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let volume = h.origin_volume(&pool, "appvms/work/private", MIB).await;
    let other = h.origin_volume(&pool, "appvms/other/private", MIB).await;
    let mut polkit = h.monitor_polkit_checks_and_replies().await;
    h.polkitd().signal(Signal::SIGSTOP);
    let bus = h.bus.address().to_owned();
    let as_nobody = |args: Vec<String>| {
        let bus = bus.clone();
        tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            gdbus_as_nobody_at(&bus, &args).await
        })
    };
    let call = |method: &str| -> Vec<String> {
        // gdbus's own limit (25 s) would end a waiting call before polkit answers.
        let mut args = vec!["--timeout".into(), "120".into()];
        args.extend([
            "--object-path".into(),
            volume.to_string(),
            "--method".into(),
        ]);
        args.push(format!("org.qubes.Storage.Volume.{method}"));
        args.push("@a{sv} {}".into());
        args
    };
    // One Start more than the user may have in progress.
    let mut starts: Vec<_> = (0..=CALLS_PER_USER)
        .map(|_| as_nobody(call("Start")))
        .collect();
    // Exactly one is refused at once, without polkit …
    let first = tokio::time::timeout(HUNG, futures_util::future::select_all(&mut starts));
    let (refused, index, _) = first
        .await
        .expect("no Start was refused: the user's calls are not bounded");
    let refused = refused.unwrap().expect_err("a Start as nobody succeeded");
    assert!(refused.contains(LIMITS_EXCEEDED), "{refused}");
    assert!(refused.contains("calls in progress"), "{refused}");
    starts.remove(index);
    // … and the others wait for polkit's answer, a few questions at a time.
    let per_user = POLKIT_CHECKS.1;
    let mut questions = Questions::default();
    while questions.waiting.len() < per_user {
        let what = format!("only {} questions reached polkit", questions.waiting.len());
        questions.follow(&mut polkit, &what).await;
    }
    assert_eq!(questions.answered, 0, "a stopped polkitd answered");
    assert_eq!(questions.cancelled, 0);
    // Meanwhile any other call of the user is refused at once, a read too.
    let verify = as_nobody(call("Verify"));
    let err = tokio::time::timeout(HUNG, verify)
        .await
        .expect("a Verify waited")
        .unwrap()
        .expect_err("a Verify beyond the user's calls in progress");
    assert!(err.contains(LIMITS_EXCEEDED), "{err}");
    // Root is not counted with them.
    let root = h.volume(&other).await;
    root.start(opts()).await.expect("root's Start");
    root.stop(opts()).await.expect("root's Stop");
    // polkitd answers: each waiting Start is refused for what it is, none started, and
    // never were more of the user's questions waiting for polkit than its share.
    h.polkitd().signal(Signal::SIGCONT);
    while questions.answered < CALLS_PER_USER {
        let what = format!("polkit answered {} questions only", questions.answered);
        questions.follow(&mut polkit, &what).await;
    }
    assert!(questions.waiting.is_empty());
    assert_eq!(
        questions.most_waiting, per_user,
        "questions of one user waiting for polkit at once"
    );
    for start in starts {
        assert_needs_interaction(start).await;
    }
    assert!(!h.volume(&volume).await.started().await.unwrap());
    // The user's calls are answered: the user is served again.
    let verified = as_nobody(call("Verify")).await.unwrap();
    assert!(verified.expect("Verify as nobody").contains("true"));
}

/// A question polkit leaves unanswered past `--polkit-timeout` refuses its call and is
/// cancelled, but keeps its place until polkit has replied — the bus keeps a slot for
/// the reply until then — so a user whose questions time out again and again cannot
/// take more of the service's slots than their share.
#[tokio::test(flavor = "multi_thread")]
async fn a_question_polkit_leaves_unanswered_keeps_its_place_until_polkit_replies() {
    let mut h = Harness::with_polkit_and_args(&["--polkit-timeout", "1"]).await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let volume = h.origin_volume(&pool, "appvms/work/private", MIB).await;
    let mut polkit = h.monitor_polkit_checks_and_replies().await;
    h.polkitd().signal(Signal::SIGSTOP);
    let bus = h.bus.address().to_owned();
    let per_user = POLKIT_CHECKS.1;
    // One Start more than the user's share of questions.
    let mut starts: Vec<_> = (0..=per_user)
        .map(|_| {
            let (bus, path) = (bus.clone(), volume.to_string());
            tokio::spawn(async move {
                let method = "org.qubes.Storage.Volume.Start";
                let args = [
                    "--timeout",
                    "120",
                    "--object-path",
                    &path,
                    "--method",
                    method,
                    "@a{sv} {}",
                ];
                gdbus_as_nobody_at(&bus, &args).await
            })
        })
        .collect();
    let mut questions = Questions::default();
    while questions.asked < per_user {
        let what = format!("only {} questions reached polkit", questions.asked);
        questions.follow(&mut polkit, &what).await;
    }
    // Each of them goes unanswered for its second: its Start is refused …
    for n in 0..per_user {
        let finished = tokio::time::timeout(HUNG, futures_util::future::select_all(&mut starts));
        let (refused, index, _) = finished
            .await
            .unwrap_or_else(|_| panic!("only {n} Starts were refused when polkit was silent"));
        let refused = refused.unwrap().expect_err("a Start as nobody succeeded");
        assert!(
            refused.contains("org.freedesktop.DBus.Error.AccessDenied"),
            "{refused}"
        );
        starts.remove(index);
    }
    // … and its question cancelled; none more asked while polkit has not replied (with
    // the places given back when the service stopped waiting, the last Start's
    // question would be asked now).
    while questions.cancelled < per_user {
        let what = format!("only {} questions were cancelled", questions.cancelled);
        questions.follow(&mut polkit, &what).await;
    }
    assert_eq!((questions.asked, questions.answered), (per_user, 0));
    // polkitd goes on: it replies, and only then is the last Start's question asked.
    h.polkitd().signal(Signal::SIGCONT);
    while questions.answered < per_user + 1 {
        let what = format!("polkit answered {} questions only", questions.answered);
        questions.follow(&mut polkit, &what).await;
    }
    assert_eq!(
        questions.most_waiting, per_user,
        "questions waiting for polkit at once"
    );
    assert_needs_interaction(starts.pop().expect("the last Start")).await;
}

/// The reads anyone may make that run engine work or list everything are admitted, not
/// refused: a user's measurements, Verify, live Usage and listings run (one measurement
/// and one listing of the user at a time), and answer as they do for root.
#[tokio::test(flavor = "multi_thread")]
async fn an_unprivileged_users_reads_are_answered() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let volume = h.origin_volume(&pool, "appvms/work/private", MIB).await;
    let bus = h.bus.address().to_owned();
    let read = |path: String, method: &'static str, extra: Vec<&'static str>| {
        let bus = bus.clone();
        tokio::spawn(async move {
            let mut args = vec!["--object-path", path.as_str(), "--method", method];
            args.extend(extra);
            gdbus_as_nobody_at(&bus, &args).await
        })
    };
    let reads = vec![
        read(
            pool.to_string(),
            "org.qubes.Storage.Pool.MeasureSpace",
            vec!["@a{sv} {}"],
        ),
        read(
            pool.to_string(),
            "org.qubes.Storage.Pool.MeasureSpace",
            vec!["@a{sv} {}"],
        ),
        read(
            volume.to_string(),
            "org.qubes.Storage.Volume.MeasureSpace",
            vec!["@a{sv} {}"],
        ),
        read(
            volume.to_string(),
            "org.qubes.Storage.Volume.Verify",
            vec!["@a{sv} {}"],
        ),
        read(
            volume.to_string(),
            "org.freedesktop.DBus.Properties.Get",
            vec!["org.qubes.Storage.Volume", "Usage"],
        ),
        read(
            pool.to_string(),
            "org.freedesktop.DBus.Properties.Get",
            vec!["org.qubes.Storage.Pool", "UsageDetails"],
        ),
        read(
            "/org/qubes/Storage".to_owned(),
            "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
            vec![],
        ),
        read(
            "/org/qubes/Storage".to_owned(),
            "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
            vec![],
        ),
    ];
    let answers: Vec<String> = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .map(|r| r.unwrap().expect("a read as nobody"))
        .collect();
    assert!(answers[0].contains("appvms/work/private"), "{}", answers[0]);
    assert_eq!(answers[0], answers[1], "two measurements of one pool");
    assert!(answers[2].contains("committed"), "{}", answers[2]);
    assert!(answers[3].contains("true"), "{}", answers[3]);
    assert!(answers[4].contains("uint64"), "{}", answers[4]);
    assert!(answers[6].contains("appvms/work/private"), "{}", answers[6]);
    assert_eq!(answers[6], answers[7], "two listings one after the other");
}

/// A user's message of more bytes than one user's calls in progress may hold is refused
/// before anything reads it; the same call small is run (and refused for its unknown
/// option, which shows it was read). Root's is run whatever its size.
#[tokio::test(flavor = "multi_thread")]
async fn a_users_call_larger_than_a_users_calls_may_hold_is_refused_unread() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let volume = h.origin_volume(&pool, "appvms/work/private", MIB).await;
    let verify = |padding: String| {
        let options = json!({ "padding": padding });
        DbusCall::new(
            volume.as_str(),
            "org.qubes.Storage.Volume",
            "Verify",
            "a{sv}",
            vec![options],
        )
    };
    let client = PyClient::new();
    let error_of = |reply: &Reply| reply.error_name().map(str::to_owned);
    let huge = verify("x".repeat(CALL_BYTES_PER_USER));
    let reply = client.call(h.bus.address(), NOBODY.into(), &huge).await;
    assert_eq!(
        error_of(&reply).as_deref(),
        Some(LIMITS_EXCEEDED),
        "{reply:?}"
    );
    let small = verify("x".into());
    let reply = client.call(h.bus.address(), NOBODY.into(), &small).await;
    let invalid = "org.qubes.Storage.Error.InvalidArgument";
    assert_eq!(error_of(&reply).as_deref(), Some(invalid), "{reply:?}");
    let reply = client
        .call(h.bus.address(), authz_support::client::Who::Root, &huge)
        .await;
    assert_eq!(error_of(&reply).as_deref(), Some(invalid), "{reply:?}");
}

/// A read that waited for its turn is not run when its caller has left meanwhile: the
/// user's place would otherwise go to work nobody waits for, and a user who floods and
/// disconnects would keep the places of all users busy.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_whose_caller_left_while_it_waited_for_its_turn_is_not_run() {
    let mut h = Harness::start().await;
    let held = common::HeldClone::start(&mut h, 128 * MIB).await;
    let measure = || measure_pool_as_nobody(&h, &held.pool);
    let taken = |log: &str| log.matches("method=\"MeasureSpace\"").count();
    // The user's one place for measurements: taken by a measurement that waits in the
    // engine behind the held copy (its file is on the frozen filesystem); it is
    // admitted as it is taken off the bus.
    let first = measure();
    h.wait_for_log_where("the first measurement", |log| taken(log) == 1)
        .await;
    let second = measure();
    h.wait_for_log_where("the second measurement", |log| taken(log) == 2)
        .await;
    // Its caller leaves while it waits for its turn: the gdbus process is killed, and
    // the bus has seen it go before the place is given back.
    make_caller_leave(&h, second, 1, HUNG).await;
    held.finish().await;
    first.await.unwrap().expect("the first measurement");
    h.wait_for_log_where("the end of the second measurement", |log| {
        log.contains("its caller has left the bus: not run")
            || log.matches("pool space measured").count() == 2
    })
    .await;
    assert!(
        h.log().contains("its caller has left the bus: not run"),
        "the read of a caller that left was run"
    );
    assert_eq!(h.log().matches("pool space measured").count(), 1);
}

/// Whether a unix socket of process `pid` has bytes it has not read (`ss`, iproute2).
fn bytes_waiting_for(pid: u32) -> bool {
    let listed = std::process::Command::new("ss")
        .args(["-x", "-p", "-n"])
        .output()
        .expect("ss (iproute2)");
    let owner = format!("pid={pid},");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|line| line.contains(&owner))
        .any(|line| {
            let receive_queue = line.split_whitespace().nth(2);
            receive_queue
                .and_then(|q| q.parse::<u64>().ok())
                .unwrap_or(0)
                > 0
        })
}

/// The service stopped (SIGSTOP) until dropped (SIGCONT), also when the test fails.
struct Stopped(nix::unistd::Pid);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, Signal::SIGSTOP).expect("SIGSTOP the service");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, Signal::SIGCONT);
    }
}

/// A call whose sender has left the bus before the service read it is not run: the
/// service learns the sender's uid from the bus driver, which no longer knows it, and
/// does not count such a call as anybody's. Built by stopping the service while the
/// bus hands it a user's measurement, whose caller then leaves.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_whose_caller_left_before_it_was_read_is_not_run() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    h.origin_volume(&pool, "appvms/a/private", MIB).await;
    let mut passed = h
        .monitor(&["type='method_call',interface='org.qubes.Storage.Pool',member='MeasureSpace'"])
        .await;
    let stopped = Stopped::new(h.daemon().pid());
    let caller = measure_pool_as_nobody(&h, &pool);
    // The bus has passed the call on, and it waits in the service's socket, which the
    // service cannot read yet (a message the bus has not written out when its sender
    // leaves may never be written).
    tokio::time::timeout(HUNG, passed.next())
        .await
        .expect("the call never reached the bus")
        .expect("monitor")
        .expect("message");
    let deadline = std::time::Instant::now() + HUNG;
    while !bytes_waiting_for(h.daemon().pid()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never reached the service's socket"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    make_caller_leave(&h, caller, 0, HUNG).await;
    drop(stopped);
    h.wait_for_log_where("what became of the call", |log| {
        log.contains("a call whose sender has left the bus: not run")
            || log.contains("pool space measured")
    })
    .await;
    assert!(
        !h.log().contains("pool space measured"),
        "the call of a caller that had left was run"
    );
    // The service goes on serving.
    let measured = h.pool(&pool).await.measure_space(opts()).await;
    assert!(measured.is_ok(), "{measured:?}");
}

/// Sends, as `nobody`, `connections` × `calls` Peer.Ping calls each carrying `fds`
/// descriptors of /dev/null (replies expected, never read), then one Ping carrying one
/// descriptor whose reply it waits for — sent again while the bus refuses it because
/// the service's queue at the bus is still full of the flood (the bus's backpressure,
/// not the service's answer: on a loaded machine the service may not have read the
/// flood yet) —; prints that reply's error name and message, or `no error`.
const DESCRIPTOR_FLOOD: &str = r#"
import os, sys
import dbus, dbus.lowlevel
address, connections, calls, fds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
null = os.open('/dev/null', os.O_RDONLY)
def ping(descriptors):
    call = dbus.lowlevel.MethodCallMessage('org.qubes.Storage', '/org/qubes/Storage',
                                           'org.freedesktop.DBus.Peer', 'Ping')
    call.append(*[dbus.types.UnixFd(null) for _ in range(descriptors)], signature='h' * descriptors)
    return call
flooding = [dbus.bus.BusConnection(address) for _ in range(connections)]
for conn in flooding:
    for _ in range(calls):
        conn.send_message(ping(fds))
    conn.flush()
last = dbus.bus.BusConnection(address)
import time
deadline = time.monotonic() + 60
while True:
    try:
        last.send_message_with_reply_and_block(ping(1), 60000)
        print('no error')
    except dbus.exceptions.DBusException as e:
        # The bus's own backpressure while the service still works through the flood
        # (its queue at the bus is full): a client sends again. Anything else is the
        # answer.
        if (e.get_dbus_name() == 'org.freedesktop.DBus.Error.LimitsExceeded'
                and 'full message queue' in e.get_dbus_message()
                and time.monotonic() < deadline):
            time.sleep(0.05)
            continue
        print(e.get_dbus_name())
        print(e.get_dbus_message())
    break
"#;

/// A user who floods the service with calls carrying file descriptors — 1024 calls of
/// 16 each, as many as the bus lets one user's 8 connections have waiting — while the
/// service's soft limit of open files is systemd's 1024 does not make it fall off the
/// bus (before, the kernel dropped descriptors of a message once the limit was reached,
/// zbus took that for a broken connection, and the service exited): each such call is
/// refused with `InvalidArgs`, and root is served throughout.
#[tokio::test(flavor = "multi_thread")]
async fn calls_carrying_file_descriptors_are_refused_and_cannot_take_the_service_off_the_bus() {
    let h = Harness::with_soft_open_files_limit(1024).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let script = dir.path().join("flood.py");
    std::fs::write(&script, DESCRIPTOR_FLOOD).unwrap();
    let mut command = NOBODY.setpriv(qubes_storaged_testkit::users::Groups::Cleared);
    command
        .arg("/usr/bin/python3")
        .arg(&script)
        .args([h.bus.address(), "8", "128", "16"]);
    let output = tokio::time::timeout(HUNG * 3, tokio::process::Command::from(command).output())
        .await
        .expect("the flood never ended")
        .expect("python3");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.starts_with("org.freedesktop.DBus.Error.InvalidArgs"),
        "the last call: {printed}{}\nlog:\n{}",
        String::from_utf8_lossy(&output.stderr),
        h.log()
    );
    assert!(
        printed.contains("carried") && printed.contains("file descriptor"),
        "{printed}"
    );
    let bus = zbus::fdo::DBusProxy::new(&h.conn).await.unwrap();
    let name = zbus::names::BusName::try_from(common::SERVICE).unwrap();
    assert!(
        bus.name_has_owner(name).await.unwrap(),
        "the service fell off the bus; log:\n{}",
        h.log()
    );
    let pools = tokio::time::timeout(
        HUNG,
        h.conn.call_method(
            Some(common::SERVICE),
            "/org/qubes/Storage",
            Some("org.qubes.Storage.Manager"),
            "ListPools",
            &(opts(),),
        ),
    )
    .await
    .expect("root's call was not answered");
    assert!(pools.is_ok(), "{pools:?}");
    assert!(
        !h.log().contains("connection to the bus was lost"),
        "{}",
        h.log()
    );
}

/// Volumes in the pool of the listing flood: enough that each listing takes the service
/// a millisecond or more, so that the flood is still being answered when the probes go.
const LARGE_POOL: usize = 5_000;
/// The ListVolumes one user sends at once.
const FLOOD: usize = 64;
/// The listings that may go out between another caller's read reaching the bus and its
/// reply: the one or two in flight, and a few more if the read is slow to reach the
/// service on a busy machine — never the user's whole queue (62 of the 64, answered
/// back to back, before listings were admitted one at a time).
const MOST_AHEAD: usize = 8;

/// A user's listings of a large pool wait for their turn one at a time (like
/// GetManagedObjects, `Work::FullListing`) and are built off the outbox's sequencer:
/// another caller's read sent while they are being answered is answered after at most
/// the one or two listings already in flight, not after every listing the user had
/// sent before it (62 of 64 when they were built in the sequencer and admitted at
/// once: 64 listings of a 100 000-volume pool held every reply and signal of the
/// service for seconds).
///
/// A monitor sees the messages in the order the bus passes them: the listings' replies
/// (signature `ao`, to nobody's connection), each probe (`Get`, from this test's
/// connection) and its reply.
#[tokio::test(flavor = "multi_thread")]
async fn a_users_flood_of_listings_holds_up_another_callers_read_by_one_listing_at_most() {
    flood_of_listings_holds_up_a_read_by_one_at_most(Listing::list_volumes).await;
}

/// The same for `Introspect` of a pool's `volumes` node, which names every volume: it
/// was built in the sequencer, and a user's flood of it held root's ListPools for
/// seconds at 34 600 volumes (a hostile-caller review).
#[tokio::test(flavor = "multi_thread")]
async fn a_users_flood_of_volume_introspections_holds_up_another_callers_read_by_one_at_most() {
    flood_of_listings_holds_up_a_read_by_one_at_most(Listing::introspect_volumes).await;
}

/// A call that lists a whole pool, as the flood sends it.
struct Listing {
    path: String,
    interface: &'static str,
    member: &'static str,
    /// Whether it takes the `a{sv}` options argument.
    options: bool,
    /// Its reply's signature, which tells the flood's replies apart.
    reply: &'static str,
}

impl Listing {
    fn list_volumes(pool: &zbus::OwnedObjectPath) -> Listing {
        Listing {
            path: pool.to_string(),
            interface: "org.qubes.Storage.Pool",
            member: "ListVolumes",
            options: true,
            reply: "ao",
        }
    }

    fn introspect_volumes(pool: &zbus::OwnedObjectPath) -> Listing {
        Listing {
            path: format!("{pool}/volumes"),
            interface: "org.freedesktop.DBus.Introspectable",
            member: "Introspect",
            options: false,
            reply: "s",
        }
    }
}

async fn flood_of_listings_holds_up_a_read_by_one_at_most(
    listing_of: fn(&zbus::OwnedObjectPath) -> Listing,
) {
    let mut h = Harness::start().await;
    let pool = h.pool_on("big", FsType::Ext4, 256 * MIB).await;
    h.stop_daemon();
    fill_pool_in_process(&h.state_dir(), "big", LARGE_POOL);
    h.start_daemon().await;
    let listing = listing_of(&pool);
    let me = h.conn.unique_name().expect("a unique name").to_string();
    let mut monitor = h
        .monitor(&[
            "type='method_call',member='Get'",
            "type='method_return'",
            "type='error'",
        ])
        .await;
    let flood = ListingFlood::start(h.bus.address(), &listing, FLOOD).await;
    // The flood is being answered.
    while !is_listing_reply(&next_seen(&mut monitor).await, &me, &listing) {}
    let pool_proxy = h.pool(&pool).await;
    let mut ahead_of_probes = Vec::new();
    for _ in 0..3 {
        let probe = {
            let pool_proxy = pool_proxy.clone();
            tokio::spawn(async move { pool_proxy.name().await })
        };
        // From the probe's call passing the bus to its reply passing it.
        loop {
            let msg = next_seen(&mut monitor).await;
            let header = msg.header();
            if header.message_type() == zbus::message::Type::MethodCall
                && header.sender().is_some_and(|s| s.as_str() == me)
            {
                break;
            }
        }
        let mut ahead = 0;
        loop {
            let msg = next_seen(&mut monitor).await;
            if is_listing_reply(&msg, &me, &listing) {
                ahead += 1;
            } else if msg.header().destination().is_some_and(|d| d.as_str() == me) {
                break;
            }
        }
        assert_eq!(probe.await.unwrap().expect("Get Name"), "big");
        ahead_of_probes.push(ahead);
        assert!(
            ahead <= MOST_AHEAD,
            "another caller's read waited behind {ahead} of a user's listings"
        );
    }
    // The flood outlasted the probes: they were made while it was being answered.
    while !is_listing_reply(&next_seen(&mut monitor).await, &me, &listing) {}
    eprintln!("listings answered between a probe and its reply: {ahead_of_probes:?}");
    flood.finish();
}

/// The monitor's next message (panics if none comes within [`HUNG`]).
async fn next_seen(monitor: &mut MessageStream) -> zbus::Message {
    tokio::time::timeout(HUNG, monitor.next())
        .await
        .expect("the bus passed nothing")
        .expect("monitor")
        .expect("message")
}

/// A reply to a listing of the flood: a method return of the listing's signature to
/// someone else than `me`.
fn is_listing_reply(msg: &zbus::Message, me: &str, listing: &Listing) -> bool {
    let header = msg.header();
    header.message_type() == zbus::message::Type::MethodReturn
        && header.destination().is_some_and(|d| d.as_str() != me)
        && msg.body().signature().to_string_no_parens() == listing.reply
}

/// Registers `count` volatile volumes in pool `pool` through the engine itself, with
/// the daemon stopped (through the bus this would take minutes).
fn fill_pool_in_process(state_dir: &std::path::Path, pool: &str, count: usize) {
    use qubes_storage_engine::{Engine, OpCtx, PoolName, Vid, VolumeRef, VolumeSpec};
    let engine = Engine::open(state_dir).expect("open the engine");
    let ctx = OpCtx::quiet("test");
    let pool = PoolName::parse(pool).unwrap();
    for n in 0..count {
        let vol = VolumeRef {
            pool: pool.clone(),
            vid: Vid::parse(&format!("appvms/vm{}/v{n}", n / 100)).unwrap(),
        };
        let spec = VolumeSpec {
            size: MIB,
            rw: true,
            ..VolumeSpec::default()
        };
        engine
            .create_volume(&vol, spec, &ctx)
            .expect("create a volume");
    }
}

/// `nobody` sending `count` listings of one pool over one connection without waiting
/// for their replies (python3-dbus); the connection stays until [`Self::finish`].
struct ListingFlood {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

const FLOOD_SCRIPT: &str = r#"
import os, sys
import dbus, dbus.lowlevel
bus = dbus.bus.BusConnection(os.environ['QSD_TEST_BUS_ADDRESS'])
path, interface, member, options, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == 'options', int(sys.argv[5])
for _ in range(count):
    call = dbus.lowlevel.MethodCallMessage('org.qubes.Storage', path, interface, member)
    if options:
        call.append(dbus.Dictionary({}, signature='sv'))
    bus.send_message(call)
bus.flush()
print('sent', flush=True)
sys.stdin.read()
"#;

impl ListingFlood {
    async fn start(address: &str, listing: &Listing, count: usize) -> ListingFlood {
        use std::os::unix::fs::PermissionsExt;
        use tokio::io::AsyncBufReadExt;
        let dir = tempfile::Builder::new()
            .prefix("qsd-flood-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.path().join("flood.py");
        std::fs::write(&script, FLOOD_SCRIPT).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut command = tokio::process::Command::from(
            NOBODY.setpriv(qubes_storaged_testkit::users::Groups::Cleared),
        );
        command
            .arg("/usr/bin/python3")
            .arg(&script)
            .arg(&listing.path)
            .arg(listing.interface)
            .arg(listing.member)
            .arg(if listing.options { "options" } else { "none" })
            .arg(count.to_string())
            .current_dir("/")
            .env_clear()
            .env("QSD_TEST_BUS_ADDRESS", address)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start python3 as nobody");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::time::timeout(HUNG, tokio::io::BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("the flood was never sent")
            .expect("read the flood's stdout");
        assert_eq!(line.trim(), "sent", "the flood client said {line:?}");
        ListingFlood { child, _dir: dir }
    }

    /// Closes the connection (python3 ends when its stdin does).
    fn finish(mut self) {
        drop(self.child.stdin.take());
    }
}
