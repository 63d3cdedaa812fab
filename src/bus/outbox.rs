//! The outbox: the one place that changes what the service announces, and the one
//! sender of every signal and every reply, in order.
//!
//! Anything — a call task, the engine's thread copying data, the departures worker —
//! queues [`Item`]s with [`Outbox::send`], which never waits. One task, the sequencer,
//! takes them in order: it applies each change to the registry and to the objects'
//! announced values and turns it into the message that announces it (the diff goes out
//! as one PropertiesChanged; an object's arrival as InterfacesAdded), and it answers the
//! reads that report announced state ([`Item::Read`]) at their place in the sequence.
//! A second task, the sender, puts the messages on the connection in the same order;
//! a read whose reply takes long to serialise (GetManagedObjects of 10 000 volumes)
//! holds later messages back until its reply is out, without holding up the sequencer.
//! When the sender has nothing left to write, the sequencer writes a ready message
//! itself: the hand-over to another task cost every reply and signal a wake-up (a
//! property Get through the bus: 0.237 / 0.258 ms before, 0.224 / 0.244 ms after,
//! p50 of two alternating runs of `cargo bench --bench bus`).
//!
//! What this guarantees by construction: a client that subscribes and then reads sees
//! every change either in the reply or in a signal after it, never only in a signal
//! before it; the signals of a call go out before its reply; nothing that announces
//! state ever waits for zbus's object-server locks (the service does not use zbus's
//! object server), for an engine lock, or for polkit. The sequencer does wait for the
//! connection while it writes a message itself, as the sender did before it: when the
//! bus is slow to take messages, the reads queued behind are answered later, which
//! their replies, queued behind those messages, would be anyway.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use qubes_storage_engine::VolumeSettings;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use zbus::{Connection, Message};

use crate::bus::interfaces::{JOB, POOL, VOLUME};
use crate::bus::objects::{JobObject, Object, PoolObject, VolumeObject};
use crate::bus::registry::Registry;
use crate::bus::signals;
use crate::bus::values::{changed, Entry, JobProgress, PoolValues, VolumeValues};

/// A message whose size makes it worth giving memory back to the system after it left.
const LARGE_MESSAGE: usize = 1024 * 1024;

/// A reply composed from the registry at its place in the sequence.
pub type ReadFn = Box<dyn FnOnce(&Registry) -> Outgoing + Send>;

/// One thing to announce, change or send.
pub enum Item {
    /// Serve an object and announce it (InterfacesAdded). `live` holds the values of the
    /// properties that are read live (Usage, UsageDetails) as of its creation.
    Export {
        object: Object,
        live: Vec<Entry<'static>>,
    },
    /// Stop serving an object and announce it (InterfacesRemoved).
    Unexport(Object),
    /// New values of a volume; the changed ones go out in one PropertiesChanged.
    Volume(Arc<VolumeObject>, VolumeValues),
    /// New settings of a volume whose files cannot be read (its pool directory is
    /// missing): those values change, the rest stay as announced.
    VolumeSettings(Arc<VolumeObject>, VolumeSettings),
    Pool(Arc<PoolObject>, PoolValues),
    Job(Arc<JobObject>, JobProgress),
    /// A message built elsewhere (a domain signal, a reply that reports no state).
    Send(Message),
    Read(ReadFn),
    /// Resolved once everything queued before it is on the connection.
    Flush(oneshot::Sender<()>),
}

/// What the sender puts on the connection next.
pub enum Outgoing {
    Ready(Message),
    /// A reply still being serialised; later messages wait for it. A dropped sender
    /// (the serialising task failed) means no reply: the caller sees NoReply.
    Later(oneshot::Receiver<Message>),
    /// A marker: resolved when reached.
    Reached(oneshot::Sender<()>),
    Nothing,
}

/// The queue into the outbox; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Item>,
}

impl Outbox {
    /// Starts the sequencer and the sender on the current runtime.
    pub fn start(conn: Connection, registry: Arc<Registry>) -> (Outbox, JoinHandle<()>) {
        let (tx, items) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let sequencer = Sequencer {
            out: out_tx,
            backlog: Arc::clone(&backlog),
            conn: conn.clone(),
        };
        tokio::spawn(sequence(items, sequencer, registry));
        // The sender ends only after the sequencer (which holds its queue) has ended:
        // waiting for it waits for every message, written by either.
        let sender = tokio::spawn(send_in_order(out_rx, conn, backlog));
        (Outbox { tx }, sender)
    }

    /// Queues an item; never waits. After shutdown the item is dropped.
    pub fn send(&self, item: Item) {
        if self.tx.send(item).is_err() {
            tracing::debug!("the outbox is closed; an announcement was dropped");
        }
    }

    /// Returns once everything queued so far is on the connection.
    pub async fn flush(&self) {
        let (done, reached) = oneshot::channel();
        self.send(Item::Flush(done));
        let _ = reached.await;
    }
}

/// The sequencer's way out: the sender's queue, or the connection itself while the
/// sender has nothing left to write.
struct Sequencer {
    out: mpsc::UnboundedSender<Outgoing>,
    /// What was handed to the sender and is not yet on the connection. Only the
    /// sequencer adds to it, so at 0 everything before is written and the sender stays
    /// idle while the sequencer writes: the order holds.
    backlog: Arc<AtomicUsize>,
    conn: Connection,
}

async fn sequence(
    mut items: mpsc::UnboundedReceiver<Item>,
    way_out: Sequencer,
    registry: Arc<Registry>,
) {
    while let Some(item) = items.recv().await {
        let outgoing = apply(item, &registry);
        let idle = way_out.backlog.load(Ordering::Acquire) == 0;
        match outgoing {
            Outgoing::Nothing => {}
            Outgoing::Ready(message) if idle => write(&way_out.conn, message).await,
            Outgoing::Reached(done) if idle => drop(done.send(())),
            queued => {
                way_out.backlog.fetch_add(1, Ordering::AcqRel);
                if way_out.out.send(queued).is_err() {
                    return;
                }
            }
        }
    }
}

/// Applies one item to the registry and the announced values; returns what to send.
fn apply(item: Item, registry: &Registry) -> Outgoing {
    let built = match item {
        Item::Export { object, live } => export(object, live, registry),
        Item::Unexport(object) => unexport(&object, registry),
        // An object no longer served (its InterfacesRemoved went out before: a refresh
        // raced its removal) announces nothing: no signal of an object after its end.
        Item::Volume(object, _) | Item::VolumeSettings(object, _)
            if !registry
                .volume(&object.vol)
                .is_some_and(|served| Arc::ptr_eq(&served, &object)) =>
        {
            Ok(None)
        }
        Item::Pool(object, _)
            if !registry
                .pool(&object.name)
                .is_some_and(|served| Arc::ptr_eq(&served, &object)) =>
        {
            Ok(None)
        }
        Item::Job(object, _)
            if !registry
                .job(object.number)
                .is_some_and(|served| Arc::ptr_eq(&served, &object)) =>
        {
            Ok(None)
        }
        Item::Volume(object, values) => announce_volume(&object, values),
        Item::VolumeSettings(object, settings) => {
            let values = object.values().with_settings(&settings);
            announce_volume(&object, values)
        }
        Item::Pool(object, values) => announce_pool(&object, values),
        Item::Job(object, progress) => announce_job(&object, progress),
        Item::Send(message) => Ok(Some(message)),
        Item::Read(read) => return read(registry),
        Item::Flush(done) => return Outgoing::Reached(done),
    };
    match built {
        Ok(Some(message)) => Outgoing::Ready(message),
        Ok(None) => Outgoing::Nothing,
        Err(err) => {
            tracing::error!(error = %err, "cannot build an announcement");
            Outgoing::Nothing
        }
    }
}

fn export(
    object: Object,
    live: Vec<Entry<'static>>,
    registry: &Registry,
) -> zbus::Result<Option<Message>> {
    registry.insert(object.clone());
    let path = object.path().as_ref();
    let message = match &object {
        Object::Pool(pool) => {
            let values = pool.values();
            let mut entries = values.entries();
            entries.extend(live);
            signals::interfaces_added(&path, POOL, &entries)?
        }
        Object::Volume(volume) => {
            let values = volume.values();
            let mut entries = values.entries(&volume.vol);
            entries.extend(live);
            signals::interfaces_added(&path, VOLUME, &entries)?
        }
        Object::Job(job) => {
            let mut entries = job.identity.entries();
            entries.extend(job.announced().entries());
            signals::interfaces_added(&path, JOB, &entries)?
        }
    };
    Ok(Some(message))
}

fn unexport(object: &Object, registry: &Registry) -> zbus::Result<Option<Message>> {
    if !registry.remove(object) {
        return Ok(None);
    }
    let iface = match object {
        Object::Pool(_) => POOL,
        Object::Volume(_) => VOLUME,
        Object::Job(_) => JOB,
    };
    signals::interfaces_removed(&object.path().as_ref(), iface).map(Some)
}

fn announce_volume(object: &VolumeObject, values: VolumeValues) -> zbus::Result<Option<Message>> {
    let new = Arc::new(values);
    let old = object.announce(Arc::clone(&new));
    let diff = new.changes_since(&old, &object.vol);
    properties_changed(object.path.as_ref(), VOLUME, &diff)
}

fn announce_pool(object: &PoolObject, values: PoolValues) -> zbus::Result<Option<Message>> {
    let new = Arc::new(values);
    let old = object.announce(Arc::clone(&new));
    let diff = changed(&old.entries(), new.entries());
    properties_changed(object.path.as_ref(), POOL, &diff)
}

fn announce_job(object: &JobObject, progress: JobProgress) -> zbus::Result<Option<Message>> {
    let old = object.announce(progress);
    let diff = changed(&old.entries(), progress.entries());
    properties_changed(object.path.as_ref(), JOB, &diff)
}

fn properties_changed(
    path: zbus::ObjectPath<'_>,
    iface: &str,
    diff: &[Entry<'_>],
) -> zbus::Result<Option<Message>> {
    if diff.is_empty() {
        return Ok(None);
    }
    signals::properties_changed(&path, iface, diff).map(Some)
}

async fn send_in_order(
    mut out: mpsc::UnboundedReceiver<Outgoing>,
    conn: Connection,
    backlog: Arc<AtomicUsize>,
) {
    while let Some(outgoing) = out.recv().await {
        match outgoing {
            Outgoing::Ready(message) => write(&conn, message).await,
            Outgoing::Later(reply) => {
                if let Ok(message) = reply.await {
                    write(&conn, message).await;
                }
            }
            Outgoing::Reached(done) => drop(done.send(())),
            Outgoing::Nothing => {}
        }
        backlog.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Puts one message on the connection.
async fn write(conn: &Connection, message: Message) {
    let size = message.data().len();
    if let Err(err) = conn.send(&message).await {
        tracing::warn!(error = %err, "cannot send a message");
    }
    drop(message);
    if size >= LARGE_MESSAGE {
        crate::memory::give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::values::JobIdentity;
    use qubes_storage_engine::CancelToken;

    fn job() -> Arc<JobObject> {
        let identity = JobIdentity {
            operation: "ImportVolume".into(),
            objects: vec![],
            total: 100,
            start_time_us: 0,
            started_by: 0,
        };
        Arc::new(JobObject::new(7, identity, CancelToken::new()))
    }

    /// A change queued after an object's removal (a refresh that raced it) sends no
    /// signal: clients never hear of an object after its InterfacesRemoved.
    #[test]
    fn an_object_announces_nothing_after_its_removal() {
        let registry = Registry::default();
        let job = job();
        let added = apply(
            Item::Export {
                object: Object::Job(Arc::clone(&job)),
                live: Vec::new(),
            },
            &registry,
        );
        assert!(matches!(added, Outgoing::Ready(_)));
        job.advance(40);
        let changed = apply(Item::Job(Arc::clone(&job), job.progress_now()), &registry);
        assert!(matches!(changed, Outgoing::Ready(_)));
        let removed = apply(Item::Unexport(Object::Job(Arc::clone(&job))), &registry);
        assert!(matches!(removed, Outgoing::Ready(_)));
        job.advance(80);
        let late = apply(Item::Job(Arc::clone(&job), job.progress_now()), &registry);
        assert!(
            matches!(late, Outgoing::Nothing),
            "a signal after the removal"
        );
    }
}
