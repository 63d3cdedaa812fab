//! Subscribing to the service's signals: the match rules (sent to the bus, so only
//! matching signals reach this process) and one merged stream of messages.
//!
//! The rules are disjoint by interface, so a signal arrives once even when several
//! rules are active: Volume signals (`path=` one volume, `path_namespace=` one pool,
//! or all), `PropertiesChanged` below `/org/qubes/Storage`, the ObjectManager's
//! `InterfacesAdded`/`InterfacesRemoved` on `/org/qubes/Storage`, Job signals below
//! `/org/qubes/Storage/jobs`, and the bus's `NameOwnerChanged` for the service name.
//! The merged stream yields the messages in the order they were received, and only
//! those the service sent: every rule names the service as sender, but that alone does
//! not keep out another client's fakes (a rule's well-known sender is not checked by
//! zbus, and a signal addressed to this connection is delivered whatever the rules
//! say), so each message's sender is compared with the unique name that owns the
//! service name now — asked once, then followed through the bus's own
//! `NameOwnerChanged` (the bus driver's sender is `org.freedesktop.DBus`, which no
//! client can take).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::{self, Stream, StreamExt};
use futures_util::FutureExt;
use zbus::message::Type;
use zbus::{MatchRule, Message, MessageStream, OwnedObjectPath, Structure};

use crate::error::Result;
use crate::paths::{
    JOBS_PATH, JOB_IFACE, OBJECT_MANAGER_IFACE, PROPERTIES_IFACE, ROOT_PATH, SERVICE, VOLUME_IFACE,
};
use crate::props::{to_json, PropertyMap};

/// Which objects' signals to receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathScope {
    All,
    /// `path_namespace=`: an object and everything below it.
    Namespace(String),
    /// `path=`: one object.
    Exact(String),
}

fn from_service() -> zbus::match_rule::Builder<'static> {
    MatchRule::builder().msg_type(Type::Signal).sender(SERVICE)
}

fn scoped(
    builder: zbus::match_rule::Builder<'static>,
    scope: &PathScope,
) -> zbus::match_rule::Builder<'static> {
    match scope {
        PathScope::All => builder,
        PathScope::Namespace(path) => builder.path_namespace(path.clone()),
        PathScope::Exact(path) => builder.path(path.clone()),
    }
}

pub fn volume_signals(scope: &PathScope) -> zbus::Result<MatchRule<'static>> {
    scoped(from_service().interface(VOLUME_IFACE), scope).build()
}

pub fn properties_changed(namespace: &str) -> zbus::Result<MatchRule<'static>> {
    from_service()
        .interface(PROPERTIES_IFACE)
        .member("PropertiesChanged")
        .path_namespace(namespace.to_owned())
        .build()
}

pub fn object_manager_signals() -> zbus::Result<MatchRule<'static>> {
    from_service()
        .interface(OBJECT_MANAGER_IFACE)
        .path(ROOT_PATH)
        .build()
}

pub fn job_signals() -> zbus::Result<MatchRule<'static>> {
    from_service()
        .interface(JOB_IFACE)
        .path_namespace(JOBS_PATH)
        .build()
}

pub fn service_owner_changes() -> zbus::Result<MatchRule<'static>> {
    MatchRule::builder()
        .msg_type(Type::Signal)
        .sender("org.freedesktop.DBus")
        .interface("org.freedesktop.DBus")
        .member("NameOwnerChanged")
        .arg(0, SERVICE)
        .build()
}

pub type SignalStream = Pin<Box<dyn Stream<Item = Message> + Send>>;

/// Adds every rule to the bus and merges the matching messages into one stream, of
/// the service's messages only (see the module comment). The bus's `NameOwnerChanged`
/// for the service is followed always, and passed on when `rules` ask for it.
pub async fn subscribe(
    connection: &zbus::Connection,
    mut rules: Vec<MatchRule<'static>>,
) -> Result<SignalStream> {
    let owner_changes = service_owner_changes()?;
    let pass_owner_changes = rules.contains(&owner_changes);
    if !pass_owner_changes {
        rules.push(owner_changes);
    }
    let mut streams = Vec::with_capacity(rules.len());
    for rule in rules {
        streams.push(MessageStream::for_match_rule(rule, connection, None).await?);
    }
    // Asked after subscribing: a change of owner from here on arrives as a signal.
    let owner = zbus::fdo::DBusProxy::new(connection)
        .await?
        .get_name_owner(SERVICE.try_into().expect("a valid bus name"))
        .await
        .ok()
        .map(|owner| owner.to_string());
    let merged = stream::select_all(streams).filter_map(|message| async move { message.ok() });
    let in_order = InOrder {
        inner: Box::pin(merged),
        ready: VecDeque::new(),
    };
    let mut from_service = FromService {
        owner,
        pass_owner_changes,
    };
    Ok(Box::pin(in_order.filter(move |message| {
        std::future::ready(from_service.passes(message))
    })))
}

/// Which unique name speaks for the service now, and whether its changes are passed on.
struct FromService {
    owner: Option<String>,
    pass_owner_changes: bool,
}

impl FromService {
    /// Whether `message` goes on: a message of the bus driver about the service name
    /// (which also moves the owner), or any other message sent by the owner.
    fn passes(&mut self, message: &Message) -> bool {
        let header = message.header();
        let sender = header.sender().map(|sender| sender.as_str());
        if header
            .member()
            .is_some_and(|m| m.as_str() == "NameOwnerChanged")
            && header
                .interface()
                .is_some_and(|i| i.as_str() == "org.freedesktop.DBus")
        {
            if sender != Some("org.freedesktop.DBus") {
                return false;
            }
            if let Ok((name, _, new)) = message.body().deserialize::<(String, String, String)>() {
                if name == SERVICE {
                    self.owner = Some(new).filter(|new| !new.is_empty());
                }
            }
            return self.pass_owner_changes;
        }
        sender.is_some() && sender == self.owner.as_deref()
    }
}

/// The messages of several match-rule streams in the order this connection received
/// them, which is the order the service sent them. Merging alone does not keep it: a
/// job's `Completed` (one rule) could come out before its last `PropertiesChanged`
/// (another rule). So each time, everything already queued is taken in and sorted by
/// receive position. That is complete: the connection hands a message to its stream
/// before it reads the next one, so anything not yet queued arrived later.
struct InOrder {
    inner: SignalStream,
    ready: VecDeque<Message>,
}

impl Stream for InOrder {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        if self.ready.is_empty() {
            let mut taken = Vec::new();
            let mut ended = false;
            while let Poll::Ready(next) = self.inner.as_mut().poll_next(cx) {
                match next {
                    Some(message) => taken.push(message),
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            taken.sort_by_key(Message::recv_position);
            self.ready.extend(taken);
            if ended && self.ready.is_empty() {
                return Poll::Ready(None);
            }
        }
        match self.ready.pop_front() {
            Some(message) => Poll::Ready(Some(message)),
            None => Poll::Pending,
        }
    }
}

/// The messages already queued on `stream`, in order, without waiting for more.
pub fn queued(stream: &mut SignalStream) -> Vec<Message> {
    let mut messages = Vec::new();
    while let Some(Some(message)) = stream.next().now_or_never() {
        messages.push(message);
    }
    messages
}

/// The body of `InterfacesAdded`: the object and its interfaces' properties.
pub fn interfaces_added(message: &Message) -> Option<(String, HashMap<String, PropertyMap>)> {
    let (path, interfaces): (OwnedObjectPath, HashMap<String, PropertyMap>) =
        message.body().deserialize().ok()?;
    Some((path.as_str().to_owned(), interfaces))
}

/// The body of `InterfacesRemoved`: the object and the interfaces it lost.
pub fn interfaces_removed(message: &Message) -> Option<(String, Vec<String>)> {
    let (path, interfaces): (OwnedObjectPath, Vec<String>) = message.body().deserialize().ok()?;
    Some((path.as_str().to_owned(), interfaces))
}

/// The body of `PropertiesChanged`: interface, new values, invalidated names.
pub fn properties_changed_body(message: &Message) -> Option<(String, PropertyMap, Vec<String>)> {
    message.body().deserialize().ok()
}

/// Any message body as a list of JSON values, one per argument.
pub fn body_as_json(message: &Message) -> Vec<serde_json::Value> {
    let body = message.body();
    if body.signature().to_string().is_empty() {
        return Vec::new();
    }
    match body.deserialize::<Structure<'_>>() {
        Ok(structure) => structure.fields().iter().map(to_json).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths;

    #[test]
    fn volume_rule_scopes_by_path_or_namespace() {
        let volume = paths::volume_path("p", "appvms/a/b");
        let exact = volume_signals(&PathScope::Exact(volume.clone()))
            .unwrap()
            .to_string();
        assert!(exact.contains(&format!("path='{volume}'")), "{exact}");
        assert!(exact.contains("interface='org.qubes.Storage.Volume'"));
        assert!(exact.contains("sender='org.qubes.Storage'"));
        let pool = paths::pool_path("p");
        let namespace = volume_signals(&PathScope::Namespace(pool.clone()))
            .unwrap()
            .to_string();
        assert!(
            namespace.contains(&format!("path_namespace='{pool}'")),
            "{namespace}"
        );
        let all = volume_signals(&PathScope::All).unwrap().to_string();
        assert!(!all.contains("path"), "{all}");
    }

    #[test]
    fn owner_rule_watches_only_the_service_name() {
        let rule = service_owner_changes().unwrap().to_string();
        assert!(rule.contains("arg0='org.qubes.Storage'"), "{rule}");
    }

    #[test]
    fn signal_bodies_become_json_arguments() {
        let message = Message::signal(
            paths::volume_path("p", "appvms/a/b"),
            VOLUME_IFACE,
            "VolumeResized",
        )
        .build(&(1u64, 2u64))
        .unwrap();
        assert_eq!(
            body_as_json(&message),
            [serde_json::json!(1), serde_json::json!(2)]
        );
        let single = Message::signal("/org/qubes/Storage/jobs/1", JOB_IFACE, "Completed")
            .build(&(true, "done"))
            .unwrap();
        assert_eq!(
            body_as_json(&single),
            [serde_json::json!(true), serde_json::json!("done")]
        );
        let one = Message::signal(
            paths::volume_path("p", "appvms/a/b"),
            VOLUME_IFACE,
            "VolumeStarted",
        )
        .build(&("/dev/x",))
        .unwrap();
        assert_eq!(body_as_json(&one), [serde_json::json!("/dev/x")]);
    }

    #[test]
    fn empty_body_has_no_arguments() {
        let message = Message::signal("/org/qubes/Storage", VOLUME_IFACE, "X")
            .build(&())
            .unwrap();
        assert!(body_as_json(&message).is_empty());
    }

    #[test]
    fn interfaces_added_body_decodes() {
        let mut props: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
        props.insert("Operation", zbus::Variant::from("clone"));
        let mut interfaces = HashMap::new();
        interfaces.insert(JOB_IFACE, props);
        let path = zbus::ObjectPath::try_from("/org/qubes/Storage/jobs/4").unwrap();
        let message = Message::signal(ROOT_PATH, OBJECT_MANAGER_IFACE, "InterfacesAdded")
            .build(&(path, interfaces))
            .unwrap();
        let (path, interfaces) = interfaces_added(&message).unwrap();
        assert_eq!(path, "/org/qubes/Storage/jobs/4");
        assert!(interfaces.contains_key(JOB_IFACE));
    }
}
