//! The outbox's order on a real dbus-daemon, a guard for the sequencer's own writes
//! (it writes a message itself only while the sender has nothing left to write): a
//! reply still being serialised (a large listing) holds back everything queued after
//! it — here two messages the sequencer had finished with, as a probe proves, before
//! the reply was ready (a sequencer that always wrote itself fails this) — and
//! messages queued back to back, which either task may write, arrive in order.

use std::sync::Arc;

use futures_util::StreamExt;
use qubes_storaged::bus::outbox::{Item, Outbox, Outgoing};
use qubes_storaged::bus::registry::Registry;
use qubes_storaged_testkit::bus::Bus;
use qubes_storaged_testkit::process::DEADLINE;
use tokio::sync::oneshot;
use zbus::message::Type as MessageType;
use zbus::{Message, MessageStream};

/// The members of the next `count` test signals the listener receives.
async fn next_notes(received: &mut MessageStream, count: usize) -> Vec<String> {
    let mut members = Vec::new();
    while members.len() < count {
        let msg = tokio::time::timeout(DEADLINE, received.next())
            .await
            .unwrap_or_else(|_| panic!("no message after {DEADLINE:?}; so far {members:?}"))
            .expect("a message")
            .expect("readable");
        if msg.message_type() == MessageType::Signal
            && msg
                .header()
                .interface()
                .is_some_and(|i| i.as_str() == "org.qubes.Test")
        {
            members.push(msg.header().member().expect("a member").to_string());
        }
    }
    members
}

/// A signal addressed to `to` (dbus-daemon routes it without a match rule), named `member`.
fn note(to: &str, member: &str) -> Message {
    Message::signal("/order", "org.qubes.Test", member)
        .destination(to)
        .build(&())
        .expect("a signal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_being_serialised_holds_back_what_was_queued_after_it() {
    let bus = Bus::permissive();
    let service = bus.connect().await;
    let listener = bus.connect().await;
    let to = listener.unique_name().expect("a unique name").to_string();
    let mut received = MessageStream::from(&listener);
    let (outbox, _sender) = Outbox::start(service, Arc::new(Registry::default()));
    for round in 0..20 {
        let (reply_tx, reply_rx) = oneshot::channel::<Message>();
        let later = std::sync::Mutex::new(Some(reply_rx));
        outbox.send(Item::Read(Box::new(move |_| {
            Outgoing::Later(later.lock().unwrap().take().expect("once"))
        })));
        outbox.send(Item::Send(note(&to, "First")));
        outbox.send(Item::Send(note(&to, "Second")));
        // Reached by the sequencer only after it has dealt with both.
        let (probe_tx, probe_rx) = oneshot::channel();
        outbox.send(Item::Read(Box::new(move |_| {
            let _ = probe_tx.send(());
            Outgoing::Nothing
        })));
        tokio::time::timeout(DEADLINE, probe_rx)
            .await
            .expect("the sequencer reaches the probe in time")
            .expect("the probe ran");
        reply_tx
            .send(note(&to, "Reply"))
            .expect("the sender waits for the reply");
        let order = next_notes(&mut received, 3).await;
        assert_eq!(order, ["Reply", "First", "Second"], "round {round}");
        // Back to back, as the sender goes idle again.
        for n in 0..5 {
            outbox.send(Item::Send(note(&to, &format!("Idle{n}"))));
        }
        let idle = next_notes(&mut received, 5).await;
        assert_eq!(idle, ["Idle0", "Idle1", "Idle2", "Idle3", "Idle4"]);
    }
}
