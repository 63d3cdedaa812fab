//! The signal oracle: record every signal the service sends during a test, replay
//! InterfacesAdded / InterfacesRemoved / PropertiesChanged onto the first
//! GetManagedObjects, and compare the result with the last GetManagedObjects. A change
//! the service made without saying so — or said wrongly — shows up as a difference.
//!
//! Ordering: the recorder sees messages in socket order. To know it has seen every
//! signal sent before a reply, [`Recorder::flush`] sends a marker signal to itself
//! through the bus and waits until the marker comes back.
//!
//! `Usage` and `UsageDetails` are live (EmitsChangedSignal=false) and left out of the
//! comparison. Every entry of GetManagedObjects must carry at least one interface (the
//! specification's ObjectManager lists objects with their interfaces, not the bare
//! parent nodes such as `/org/qubes/Storage/pools`); [`managed_objects`] asserts it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::sync::watch;
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, Message, MessageStream, OwnedObjectPath, OwnedVariant};

use super::{Subscription, SERVICE};

const MARKER_PATH: &str = "/org/qubes/StorageTest/Marker";
const MARKER_IFACE: &str = "org.qubes.StorageTest";
/// Properties read live, never announced.
const LIVE_PROPERTIES: [&str; 2] = ["Usage", "UsageDetails"];

/// path → interface → property → value.
pub type Objects = BTreeMap<String, BTreeMap<String, BTreeMap<String, OwnedVariant>>>;

/// Records the service's signals in the background.
pub struct Recorder {
    conn: Connection,
    signals: Arc<Mutex<Vec<Message>>>,
    markers: watch::Receiver<u64>,
    next_marker: u64,
    task: tokio::task::JoinHandle<()>,
    _subscriptions: [Subscription; 2],
}

impl Recorder {
    pub async fn start(conn: &Connection) -> Recorder {
        let stream = MessageStream::from(conn);
        let from_service = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(SERVICE)
            .build()
            .unwrap();
        let markers_rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .path(MARKER_PATH)
            .build()
            .unwrap();
        let subscriptions = [
            Subscription::new(conn, from_service).await,
            Subscription::new(conn, markers_rule).await,
        ];
        let signals = Arc::new(Mutex::new(Vec::new()));
        let (marker_tx, markers) = watch::channel(0);
        let task = tokio::spawn(record(stream, Arc::clone(&signals), marker_tx));
        Recorder {
            conn: conn.clone(),
            signals,
            markers,
            next_marker: 0,
            task,
            _subscriptions: subscriptions,
        }
    }

    /// Returns once every signal delivered before this call has been recorded.
    pub async fn flush(&mut self) {
        self.next_marker += 1;
        let n = self.next_marker;
        self.conn
            .emit_signal(None::<&str>, MARKER_PATH, MARKER_IFACE, "Marker", &(n,))
            .await
            .expect("marker");
        let seen = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.markers.wait_for(|m| *m >= n),
        );
        seen.await
            .expect("the marker signal did not come back")
            .expect("recorder ended");
    }

    /// The service's signals recorded so far.
    pub fn signals(&self) -> Vec<Message> {
        self.signals.lock().unwrap().clone()
    }

    /// The recorded signals named `member` on `path`.
    pub fn named(&self, member: &str) -> Vec<Message> {
        self.signals()
            .into_iter()
            .filter(|m| m.header().member().is_some_and(|n| n.as_str() == member))
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    mut stream: MessageStream,
    signals: Arc<Mutex<Vec<Message>>>,
    markers: watch::Sender<u64>,
) {
    while let Some(Ok(msg)) = stream.next().await {
        let header = msg.header();
        if header.message_type() != MessageType::Signal {
            continue;
        }
        if header.path().is_some_and(|p| p.as_str() == MARKER_PATH) {
            if let Ok((n,)) = msg.body().deserialize::<(u64,)>() {
                markers.send_replace(n);
            }
            continue;
        }
        signals.lock().unwrap().push(msg.clone());
    }
}

/// GetManagedObjects of the service, without the live properties; asserts that every
/// entry has an interface.
pub async fn managed_objects(conn: &Connection) -> Objects {
    let objects = raw_managed_objects(conn).await;
    assert_every_entry_has_an_interface(&objects);
    normalise(objects)
}

/// Panics naming the entries of GetManagedObjects without any interface.
#[track_caller]
pub fn assert_every_entry_has_an_interface(objects: &Objects) {
    let empty: Vec<&String> = objects
        .iter()
        .filter(|(_, ifaces)| ifaces.is_empty())
        .map(|(path, _)| path)
        .collect();
    assert!(
        empty.is_empty(),
        "GetManagedObjects lists objects without interfaces: {empty:?}"
    );
}

/// GetManagedObjects of the service as it came, in sorted maps.
pub async fn raw_managed_objects(conn: &Connection) -> Objects {
    let manager = zbus::fdo::ObjectManagerProxy::builder(conn)
        .destination(SERVICE)
        .path("/org/qubes/Storage")
        .build()
        .await
        .expect("ObjectManager proxy");
    let objects = manager
        .get_managed_objects()
        .await
        .expect("GetManagedObjects");
    let mut out = Objects::new();
    for (path, ifaces) in objects {
        let ifaces: BTreeMap<_, _> = ifaces
            .into_iter()
            .map(|(iface, props)| {
                (
                    iface.to_string(),
                    props.into_iter().collect::<BTreeMap<_, _>>(),
                )
            })
            .collect();
        out.insert(path.to_string(), ifaces);
    }
    out
}

/// Drops the live properties.
pub fn normalise(objects: Objects) -> Objects {
    objects
        .into_iter()
        .map(|(path, ifaces)| {
            let ifaces = ifaces
                .into_iter()
                .map(|(iface, mut props)| {
                    props.retain(|name, _| !LIVE_PROPERTIES.contains(&name.as_str()));
                    (iface, props)
                })
                .collect::<BTreeMap<_, _>>();
            (path, ifaces)
        })
        .collect()
}

type AddedBody = (
    OwnedObjectPath,
    BTreeMap<String, BTreeMap<String, OwnedVariant>>,
);
type ChangedBody = (String, BTreeMap<String, OwnedVariant>, Vec<String>);

/// Applies the signals to `objects`; a signal that does not fit (a change of an
/// unknown object, an invalidation without value) is returned as a problem.
pub fn replay(mut objects: Objects, signals: &[Message]) -> (Objects, Vec<String>) {
    let mut problems = Vec::new();
    for msg in signals {
        let header = msg.header();
        let (Some(iface), Some(member), Some(path)) =
            (header.interface(), header.member(), header.path())
        else {
            continue;
        };
        match (iface.as_str(), member.as_str()) {
            ("org.freedesktop.DBus.ObjectManager", "InterfacesAdded") => {
                let (object, ifaces): AddedBody =
                    msg.body().deserialize().expect("InterfacesAdded body");
                objects
                    .entry(object.to_string())
                    .or_default()
                    .extend(ifaces);
            }
            ("org.freedesktop.DBus.ObjectManager", "InterfacesRemoved") => {
                let (object, ifaces): (OwnedObjectPath, Vec<String>) =
                    msg.body().deserialize().expect("InterfacesRemoved body");
                let key = object.to_string();
                match objects.get_mut(&key) {
                    Some(entry) => ifaces.iter().for_each(|i| drop(entry.remove(i))),
                    None => problems.push(format!("InterfacesRemoved for unknown {key}")),
                }
                if objects.get(&key).is_some_and(|e| e.is_empty()) {
                    objects.remove(&key);
                }
            }
            ("org.freedesktop.DBus.Properties", "PropertiesChanged") => {
                let (changed_iface, changed, invalidated): ChangedBody =
                    msg.body().deserialize().expect("PropertiesChanged body");
                if !invalidated.is_empty() {
                    problems.push(format!(
                        "{path}: invalidated without values: {invalidated:?}"
                    ));
                }
                match objects
                    .get_mut(path.as_str())
                    .and_then(|o| o.get_mut(&changed_iface))
                {
                    Some(props) => props.extend(changed),
                    None => problems.push(format!(
                        "PropertiesChanged for unknown {path} {changed_iface}"
                    )),
                }
            }
            _ => {}
        }
    }
    (normalise(objects), problems)
}

/// Asserts that replaying `signals` onto `first` gives `last`.
#[track_caller]
pub fn assert_replay_matches(first: &Objects, signals: &[Message], last: &Objects) {
    let (replayed, problems) = replay(first.clone(), signals);
    assert!(
        problems.is_empty(),
        "signals that do not fit: {problems:#?}"
    );
    for path in replayed.keys().chain(last.keys()) {
        assert_eq!(
            replayed.get(path),
            last.get(path),
            "object {path}: the replayed signals (left) disagree with GetManagedObjects (right)"
        );
    }
}
