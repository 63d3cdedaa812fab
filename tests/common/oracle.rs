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
//! comparison. The Volume domain signals are replayed too, for the revisions' details
//! ([`assert_revision_details_follow_the_signals`]). Every entry of GetManagedObjects
//! must carry at least one interface (the specification's ObjectManager lists objects
//! with their interfaces, not the bare parent nodes such as `/org/qubes/Storage/pools`);
//! [`managed_objects`] asserts it.

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

const VOLUME_IFACE: &str = "org.qubes.Storage.Volume";

/// One entry of `RevisionDetails`: id, seconds, nanoseconds, description, pinned,
/// exclusive bytes.
pub type RevisionEntry = (String, i64, u32, String, bool, i64);

/// The `RevisionDetails` of the volume at `path` in `objects`.
pub fn revision_details(objects: &Objects, path: &str) -> Option<Vec<RevisionEntry>> {
    let value = objects
        .get(path)?
        .get(VOLUME_IFACE)?
        .get("RevisionDetails")?;
    Some(Vec::<RevisionEntry>::try_from(value.try_clone().ok()?).expect("RevisionDetails"))
}

/// Every volume's revision details as the domain signals tell them: id → (description,
/// pinned).
type Told = BTreeMap<String, BTreeMap<String, (String, bool)>>;

fn told(details: &[RevisionEntry]) -> BTreeMap<String, (String, bool)> {
    details
        .iter()
        .map(|(id, _, _, text, pinned, _)| (id.clone(), (text.clone(), *pinned)))
        .collect()
}

/// Asserts that the Volume domain signals tell the story of every volume's revision
/// details: starting from `first`, RevisionAdded adds a revision without details,
/// RevisionPruned removes it, VolumeReverted consumes it unless it is pinned,
/// RevisionDetailsSet changes the details of one that exists, and objects coming
/// and going bring and take theirs — which must give `last`. Also checks that every
/// snapshot's RevisionDetails lists exactly the revisions of `Revisions`.
#[track_caller]
pub fn assert_revision_details_follow_the_signals(
    first: &Objects,
    signals: &[Message],
    last: &Objects,
) {
    assert_details_list_the_revisions(first);
    assert_details_list_the_revisions(last);
    let mut state: Told = first
        .keys()
        .filter_map(|path| Some((path.clone(), told(&revision_details(first, path)?))))
        .collect();
    let mut problems = Vec::new();
    for msg in signals {
        if let Err(problem) = tell(&mut state, msg) {
            problems.push(problem);
        }
    }
    assert!(
        problems.is_empty(),
        "revision signals that do not fit: {problems:#?}"
    );
    let expected: Told = last
        .keys()
        .filter_map(|path| Some((path.clone(), told(&revision_details(last, path)?))))
        .collect();
    assert_eq!(
        state, expected,
        "revision details told by the signals (left) vs GetManagedObjects (right)"
    );
}

/// Applies one signal to the told details.
fn tell(state: &mut Told, msg: &Message) -> Result<(), String> {
    let header = msg.header();
    let (Some(member), Some(path)) = (header.member(), header.path()) else {
        return Ok(());
    };
    let path = path.to_string();
    match member.as_str() {
        "InterfacesAdded" => {
            let (object, ifaces): AddedBody = msg.body().deserialize().expect("InterfacesAdded");
            if let Some(details) = ifaces
                .get(VOLUME_IFACE)
                .and_then(|p| p.get("RevisionDetails"))
            {
                let details = Vec::<RevisionEntry>::try_from(details.try_clone().unwrap())
                    .expect("RevisionDetails");
                state.insert(object.to_string(), told(&details));
            }
        }
        "InterfacesRemoved" => {
            let (object, _): (OwnedObjectPath, Vec<String>) =
                msg.body().deserialize().expect("InterfacesRemoved");
            state.remove(object.as_str());
        }
        "RevisionAdded" => {
            let (id, _): (String, i64) = msg.body().deserialize().expect("RevisionAdded");
            let volume = state.entry(path.clone()).or_default();
            if volume.insert(id.clone(), (String::new(), false)).is_some() {
                return Err(format!("{path}: RevisionAdded {id}, which exists"));
            }
        }
        "RevisionPruned" => {
            let (id, _): (String, i64) = msg.body().deserialize().expect("RevisionPruned");
            let removed = state.get_mut(&path).and_then(|v| v.remove(&id));
            if removed.is_none() {
                return Err(format!("{path}: RevisionPruned {id}, which does not exist"));
            }
        }
        "VolumeReverted" => {
            let (id,): (String,) = msg.body().deserialize().expect("VolumeReverted");
            let volume = state.entry(path.clone()).or_default();
            match volume.get(&id) {
                Some((_, true)) => {}
                Some(_) => drop(volume.remove(&id)),
                None => return Err(format!("{path}: VolumeReverted {id}, which does not exist")),
            }
        }
        "RevisionDetailsSet" => {
            let (id, text, pinned): (String, String, bool) =
                msg.body().deserialize().expect("RevisionDetailsSet");
            match state.get_mut(&path).and_then(|v| v.get_mut(&id)) {
                Some(details) => *details = (text, pinned),
                None => {
                    return Err(format!(
                        "{path}: RevisionDetailsSet {id}, which does not exist"
                    ))
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Every volume's RevisionDetails names the revisions of its Revisions, in order.
#[track_caller]
fn assert_details_list_the_revisions(objects: &Objects) {
    for (path, ifaces) in objects {
        let Some(volume) = ifaces.get(VOLUME_IFACE) else {
            continue;
        };
        let revisions = Vec::<(String, i64)>::try_from(volume["Revisions"].try_clone().unwrap())
            .expect("Revisions");
        let details = revision_details(objects, path).expect("RevisionDetails");
        let from_details: Vec<(String, i64)> = details.iter().map(|d| (d.0.clone(), d.1)).collect();
        assert_eq!(from_details, revisions, "{path}");
    }
}

/// `objects` as a restarted service sees them: measurements are not kept across
/// restarts, so every revision's exclusive bytes are unknown (-1).
pub fn without_measurements(mut objects: Objects) -> Objects {
    for ifaces in objects.values_mut() {
        let Some(volume) = ifaces.get_mut(VOLUME_IFACE) else {
            continue;
        };
        let Some(value) = volume.get("RevisionDetails") else {
            continue;
        };
        let details: Vec<RevisionEntry> =
            Vec::<RevisionEntry>::try_from(value.try_clone().unwrap())
                .expect("RevisionDetails")
                .into_iter()
                .map(|(id, s, ns, text, pinned, _)| (id, s, ns, text, pinned, -1))
                .collect();
        let variant = zbus::Variant::from(details);
        volume.insert(
            "RevisionDetails".into(),
            OwnedVariant::try_from(variant).unwrap(),
        );
    }
    objects
}
