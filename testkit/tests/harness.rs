//! The harness's own pieces, each against the real thing: both bus policies are
//! accepted by dbus-daemon and do what they say about owning names, `wait_for_name`
//! returns once a name is owned and fails when the owner exits first, a guard stops
//! and reaps its child, and a lease tears its fixture down only with its last holder.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use qubes_storaged_testkit::bus::{wait_for_name, Bus, Include};
use qubes_storaged_testkit::lease::Lease;
use qubes_storaged_testkit::process::Guard;
use qubes_storaged_testkit::workspace;

const NAME: &str = "org.qubes.StorageTestkit.Probe";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_bus_lets_anyone_own_a_name() {
    let bus = Bus::permissive();
    let conn = bus.connect().await;
    conn.request_name(NAME)
        .await
        .expect("anyone may own any name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_like_bus_refuses_names_no_policy_file_grants() {
    let ours = workspace::path("systemd/org.qubes.Storage.conf");
    let bus = Bus::system_like(&[Include::File(ours)]);
    let conn = bus.connect().await;
    let refused = conn.request_name(NAME).await;
    assert!(refused.is_err(), "{refused:?}");
    // The project's policy file lets root own the service's name.
    conn.request_name("org.qubes.Storage")
        .await
        .expect("root may own org.qubes.Storage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_name_returns_once_the_name_is_owned() {
    let bus = Bus::permissive();
    let conn = bus.connect().await;
    let owner = process_owning(&bus, NAME);
    let mut owner = Guard::new("python3", owner);
    wait_for_name(&conn, NAME, &mut owner, None).await;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
    assert!(dbus.name_has_owner(NAME.try_into().unwrap()).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "exited")]
async fn wait_for_name_fails_when_the_owner_exits_first() {
    let bus = Bus::permissive();
    let conn = bus.connect().await;
    let quitter = Command::new("true").spawn().expect("run true");
    let mut quitter = Guard::new("true", quitter);
    wait_for_name(&conn, NAME, &mut quitter, None).await;
}

/// A process that owns `name` on `bus` until it is stopped.
fn process_owning(bus: &Bus, name: &str) -> std::process::Child {
    let script = "import dbus, sys\n\
                  bus = dbus.bus.BusConnection(sys.argv[1])\n\
                  bus.request_name(sys.argv[2])\n\
                  sys.stdin.read()\n";
    Command::new("/usr/bin/python3")
        .args(["-c", script, bus.address(), name])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run python3")
}

#[test]
fn guard_stops_and_reaps_its_child_on_drop() {
    let sleeper = Command::new("sleep").arg("600").spawn().expect("sleep");
    let pid = sleeper.id();
    drop(Guard::new("sleep", sleeper));
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    assert!(!proc_dir.exists(), "pid {pid} is still there (not reaped)");
}

#[test]
fn lease_tears_down_only_with_its_last_holder() {
    let name = format!("qubes-storaged-testkit-probe-{}", std::process::id());
    let set_ups = Arc::new(AtomicUsize::new(0));
    let tear_downs = Arc::new(AtomicUsize::new(0));
    let take = || {
        let (set_ups, tear_downs) = (set_ups.clone(), tear_downs.clone());
        let present = {
            let (set_ups, tear_downs) = (set_ups.clone(), tear_downs.clone());
            move || set_ups.load(Ordering::SeqCst) > tear_downs.load(Ordering::SeqCst)
        };
        Lease::take(
            &name,
            present,
            move || {
                set_ups.fetch_add(1, Ordering::SeqCst);
            },
            move || {
                tear_downs.fetch_add(1, Ordering::SeqCst);
            },
        )
    };
    let first = take();
    let second = take();
    assert_eq!(set_ups.load(Ordering::SeqCst), 1, "set up once");
    drop(first);
    assert_eq!(
        tear_downs.load(Ordering::SeqCst),
        0,
        "the second still holds it"
    );
    drop(second);
    assert_eq!(
        tear_downs.load(Ordering::SeqCst),
        1,
        "the last holder tears down"
    );
    for suffix in ["lock", "setup.lock"] {
        let _ = std::fs::remove_file(format!("/run/lock/{name}.{suffix}"));
    }
}
