//! The dispatcher: every method call addressed to the service arrives here, from one
//! message stream that is only drained — each call gets a task of its own at once, so
//! a call that waits (for polkit, for a volume's gate, for a copy) never holds up the
//! stream, zbus's reader of the connection, or any other call.
//!
//! A call is routed by its path (`path::Node`), interface and member; it must fit the
//! introspection (`interfaces.rs`): an unknown object, interface or method and
//! arguments of the wrong signature are refused with the standard error names before
//! any handler runs. The handler's answer — a reply, an error or a read — goes to the
//! outbox, which sends it after everything the call queued before it.
//!
//! A call that carries file descriptors is refused before it gets a task (no method
//! takes one): its descriptors are closed at once, so a flood of them cannot fill the
//! process's table (`open_files.rs`).
//!
//! The service does not use zbus's `ObjectServer`: its tree lock and per-interface
//! locks, held across awaits, were what let one waiting call freeze the whole service.
//! Nothing here holds a lock across an await.

use std::num::NonZeroUsize;
use std::sync::Arc;

use futures_util::StreamExt;
use zbus::message::Type as MessageType;
use zbus::{MatchRule, Message, MessageStream};

use crate::auth::Caller;
use crate::bus::call::{Answer, Call};
use crate::bus::error::{quote, BusError, BusResult, Standard};
use crate::bus::interfaces::{
    interfaces, INTROSPECTABLE, JOB, MANAGER, OBJECT_MANAGER, PEER, POOL, PROPERTIES, VOLUME,
};
use crate::bus::objects::Object;
use crate::bus::outbox::Item;
use crate::bus::path::Node;
use crate::bus::properties::{self, Target};
use crate::bus::service::Service;
use crate::bus::{job, manager, object_manager, pool, standard, volume};

/// How many calls may wait in the stream before the dispatcher takes them (it takes
/// them as fast as it can spawn a task).
pub const QUEUED_CALLS: usize = 1024;

/// Starts taking method calls; returns once the stream is subscribed.
pub async fn serve(svc: Arc<Service>) -> zbus::Result<()> {
    let conn = svc.conn().clone();
    let mut rule = MatchRule::builder().msg_type(MessageType::MethodCall);
    if let Some(name) = conn.unique_name() {
        rule = rule.destination(name.to_owned());
    }
    let capacity = NonZeroUsize::new(QUEUED_CALLS).expect("nonzero");
    let mut calls = MessageStream::for_match_rule(rule.build()?, &conn, Some(capacity)).await?;
    tokio::spawn(async move {
        while let Some(msg) = calls.next().await {
            match msg {
                Ok(msg) => match msg.header().unix_fds().unwrap_or(0) {
                    0 => drop(tokio::spawn(answer(Arc::clone(&svc), msg))),
                    // No method takes a descriptor: refused here, and the message's
                    // descriptors are closed at once (`open_files.rs`).
                    carried => refuse_descriptors(&svc, msg, carried),
                },
                Err(err) => tracing::debug!(error = %err, "an unreadable message"),
            }
        }
    });
    Ok(())
}

/// Refuses `msg`, which carried `count` file descriptors, with `InvalidArgs` (unless no
/// reply is expected); dropping it closes them. Not logged above debug: a flood of
/// them must not flood the journal either.
fn refuse_descriptors(svc: &Service, msg: Message, count: u32) {
    let header = msg.header();
    let (path, member) = (header.path(), header.member());
    tracing::debug!(
        ?path,
        ?member,
        count,
        "a call carrying file descriptors: not run"
    );
    if header
        .primary()
        .flags()
        .contains(zbus::message::Flags::NO_REPLY_EXPECTED)
    {
        return;
    }
    let what = match (path, member) {
        (Some(path), Some(member)) => format!("{} on {}", quote(member), quote(path.as_str())),
        _ => "This call".to_owned(),
    };
    let descriptors = match count {
        1 => "a file descriptor".to_owned(),
        n => format!("{n} file descriptors"),
    };
    let refusal = BusError::invalid_args(format!(
        "{what} carried {descriptors}; no method of this service takes one, and it was not run"
    ));
    match refusal.reply_to(&header) {
        Ok(reply) => svc.outbox.send(Item::Send(reply)),
        Err(err) => tracing::error!(error = %err, "cannot build an error reply"),
    }
}

/// Answers one call: admit (`admission.rs`), route, run, queue the answer.
async fn answer(svc: Arc<Service>, msg: Message) {
    let caller = match msg.header().sender() {
        Some(sender) => svc.caller(&sender.to_owned()).await,
        None => Caller::Gone,
    };
    // A caller the bus no longer knows has left: its call is not run, and the refusal
    // reaches it should it still be there (admission.rs). If the bus driver failed to
    // answer, the call is not run either, but may be made again. If the bus driver
    // cannot be asked at all, all callers are counted as one.
    let (uid, refusal) = match caller {
        Caller::Uid(uid) => (uid, None),
        Caller::Unasked => (u32::MAX, None),
        Caller::Gone => {
            tracing::info!(member = ?msg.header().member(), "a call whose sender has left the bus: not run");
            (u32::MAX, Some(BusError::standard(
            Standard::AccessDenied,
            "The bus no longer knows the sender of this call (it has left the bus); it was not run",
        )))
        }
        Caller::Unknown(why) => (
            u32::MAX,
            Some(BusError::failed(format!(
            "The bus could not tell which user sent this call ({why}); it was not run: try again"
        ))),
        ),
    };
    let call = Call::new(msg, uid);
    let answered = match refusal {
        Some(refusal) => Err(refusal),
        None => match svc.admission.admit_call(uid, call.message().data().len()) {
            // A read's reply is built later, by the outbox: the call stays in
            // progress (counted against its user) until then.
            Ok(in_progress) => route(&svc, &call)
                .await
                .map(|answer| answer.holding(in_progress)),
            Err(refused) => Err(refused),
        },
    };
    if call.no_reply_expected() {
        return;
    }
    let item = match answered {
        Ok(Answer::Reply(reply)) => Item::Send(reply),
        Ok(Answer::Read(read)) => Item::Read(read),
        Err(err) => match err.reply_to(&call.header()) {
            Ok(reply) => Item::Send(reply),
            Err(build) => {
                tracing::error!(error = %build, "cannot build an error reply");
                return;
            }
        },
    };
    svc.outbox.send(item);
}

/// The interfaces a node serves.
pub fn served(node: &Node) -> &'static [&'static str] {
    const PLAIN: &[&str] = &[PEER, INTROSPECTABLE, PROPERTIES];
    match node {
        Node::Manager => &[PEER, INTROSPECTABLE, PROPERTIES, OBJECT_MANAGER, MANAGER],
        Node::Pool(_) => &[PEER, INTROSPECTABLE, PROPERTIES, POOL],
        Node::Volume(_) => &[PEER, INTROSPECTABLE, PROPERTIES, VOLUME],
        Node::Job(_) => &[PEER, INTROSPECTABLE, PROPERTIES, JOB],
        _ => PLAIN,
    }
}

async fn route(svc: &Arc<Service>, call: &Call) -> BusResult<Answer> {
    let header = call.header();
    let path = header
        .path()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let unknown_object = || {
        BusError::standard(
            Standard::UnknownObject,
            format!("There is no object at {}", quote(&path)),
        )
    };
    let node = Node::of(&path).ok_or_else(unknown_object)?;
    if !svc.registry.exists(&node) {
        return Err(unknown_object());
    }
    let object = svc.registry.object_at(&node);
    let member = call.member();
    let served = served(&node);
    let iface = match header.interface() {
        Some(iface) => served
            .iter()
            .copied()
            .find(|s| *s == iface.as_str())
            .ok_or_else(|| {
                BusError::standard(
                    Standard::UnknownInterface,
                    format!("The object at {path} has no interface {}", quote(iface)),
                )
            })?,
        None => interface_of_member(served, &member)?,
    };
    check_signature(call, iface, &member)?;
    match (iface, object) {
        (PEER, _) => standard::peer(call, &member),
        (INTROSPECTABLE, _) => match &node {
            Node::Volumes(pool) => {
                standard::introspect_volumes(svc, call, pool.clone(), served).await
            }
            _ => standard::introspect(call, &node, served),
        },
        (PROPERTIES, object) => {
            let target = Target {
                node: &node,
                path: &path,
                served,
                object,
            };
            properties::answer(svc, call, target, &member).await
        }
        (OBJECT_MANAGER, _) => object_manager::answer(svc, call, &member).await,
        (MANAGER, _) => manager::answer(svc, call, &member).await,
        (POOL, Some(Object::Pool(p))) => pool::answer(svc, call, &p, &member).await,
        (VOLUME, Some(Object::Volume(v))) => volume::answer(svc, call, &v, &member).await,
        (JOB, Some(Object::Job(j))) => job::answer(call, &j, &member),
        _ => Err(unknown_object()),
    }
}

/// A call without an interface field: the one served interface that has the member.
fn interface_of_member(served: &[&'static str], member: &str) -> BusResult<&'static str> {
    served
        .iter()
        .copied()
        .find(|iface| interfaces().expect(iface).methods.contains_key(member))
        .ok_or_else(|| {
            BusError::standard(
                Standard::UnknownMethod,
                format!("There is no method {}", quote(member)),
            )
        })
}

/// The member exists and the arguments have the signature the introspection declares.
fn check_signature(call: &Call, iface: &str, member: &str) -> BusResult<()> {
    let spec = interfaces().expect(iface);
    let method = spec.methods.get(member).ok_or_else(|| {
        BusError::standard(
            Standard::UnknownMethod,
            format!("{iface} has no method {}", quote(member)),
        )
    })?;
    let body = call.message().body();
    let found = body.signature().to_string_no_parens();
    if found != method.input {
        return Err(BusError::invalid_args(format!(
            "{iface}.{member} takes arguments of type ({}), not ({})",
            method.input,
            quote(&found)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_serves_the_standard_interfaces() {
        for node in [
            Node::Ancestor("org"),
            Node::Manager,
            Node::Pools,
            Node::Jobs,
            Node::Job(1),
        ] {
            let served = served(&node);
            for iface in [PEER, INTROSPECTABLE, PROPERTIES] {
                assert!(served.contains(&iface), "{node:?} {iface}");
            }
        }
        assert!(served(&Node::Manager).contains(&OBJECT_MANAGER));
    }
}
