//! Every method call on the test bus, recorded by a monitor connection
//! (`org.freedesktop.DBus.Monitoring.BecomeMonitor`, allowed to root), so a test can
//! say what the page asked the service: one GetManagedObjects at load, then no
//! polling — only reads of the two unannounced properties and the actions the test
//! clicked.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, MessageStream};

use crate::common::{TestBus, SERVICE};

/// One method call seen on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub sender: String,
    pub destination: String,
    pub path: String,
    pub interface: String,
    pub member: String,
    /// For Properties.Get/GetAll: the interface and property asked for.
    pub property: Option<(String, String)>,
}

impl Call {
    pub fn is(&self, interface: &str, member: &str) -> bool {
        self.interface == interface && self.member == member
    }
}

pub struct BusMonitor {
    calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
    /// A normal connection, to ask the bus who a sender is.
    conn: Connection,
}

impl BusMonitor {
    pub async fn start(bus: &TestBus) -> BusMonitor {
        let monitor = bus.connect().await;
        let stream = MessageStream::from(&monitor);
        let rule = MatchRule::builder()
            .msg_type(MessageType::MethodCall)
            .build()
            .expect("match rule");
        zbus::fdo::MonitoringProxy::new(&monitor)
            .await
            .expect("Monitoring proxy")
            .become_monitor(&[rule], 0)
            .await
            .expect("BecomeMonitor");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(record(monitor, stream, calls.clone()));
        BusMonitor {
            calls,
            task,
            conn: bus.connect().await,
        }
    }

    /// Puts a mark in the record: a call of the test's own (GetId to the bus), which
    /// the bus orders after everything the bus processed before it; returns its index
    /// once recorded.
    pub async fn mark(&self) -> usize {
        let dbus = zbus::fdo::DBusProxy::new(&self.conn)
            .await
            .expect("DBus proxy");
        dbus.get_id().await.expect("GetId");
        let me = self.conn.unique_name().expect("unique name").to_string();
        let deadline = tokio::time::Instant::now() + qubes_storaged_testkit::process::DEADLINE;
        loop {
            let found = self
                .calls
                .lock()
                .expect("calls")
                .iter()
                .rposition(|c| c.sender == me && c.member == "GetId");
            if let Some(index) = found {
                return index;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the monitor missed the mark"
            );
            tokio::time::sleep(qubes_storaged_testkit::process::POLL).await;
        }
    }

    /// Watches, for `span`, the calls of the process `pid` to the service recorded after
    /// the index `after`; the first that `unexpected` accepts, or None once the span
    /// passed without one. "The page does not poll" is a statement about a span of
    /// time: this is the one wait here whose expected end is its deadline.
    pub async fn unexpected_call_within(
        &self,
        pid: u32,
        after: usize,
        span: std::time::Duration,
        unexpected: impl Fn(&Call) -> bool,
    ) -> Option<Call> {
        let deadline = tokio::time::Instant::now() + span;
        loop {
            let calls = self.calls_to_service_from(pid).await;
            if let Some((_, call)) = calls.into_iter().find(|(i, c)| *i > after && unexpected(c)) {
                return Some(call);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(qubes_storaged_testkit::process::POLL).await;
        }
    }

    /// The calls to the service (by its well-known or unique name) from the process
    /// `pid` so far, each with its index in the record.
    pub async fn calls_to_service_from(&self, pid: u32) -> Vec<(usize, Call)> {
        let dbus = zbus::fdo::DBusProxy::new(&self.conn)
            .await
            .expect("DBus proxy");
        let owner = dbus
            .get_name_owner(SERVICE.try_into().expect("bus name"))
            .await
            .expect("the service owns its name")
            .to_string();
        let calls = self.calls.lock().expect("calls").clone();
        let mut from_pid = Vec::new();
        for (index, call) in calls.into_iter().enumerate() {
            if call.destination != SERVICE && call.destination != owner {
                continue;
            }
            let sender = call.sender.as_str().try_into().expect("bus name");
            if dbus.get_connection_unix_process_id(sender).await.ok() == Some(pid) {
                from_pid.push((index, call));
            }
        }
        from_pid
    }
}

impl Drop for BusMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(_monitor: Connection, mut stream: MessageStream, calls: Arc<Mutex<Vec<Call>>>) {
    while let Some(Ok(message)) = stream.next().await {
        let header = message.header();
        if header.message_type() != MessageType::MethodCall {
            continue;
        }
        let text = |value: Option<String>| value.unwrap_or_default();
        let interface = text(header.interface().map(|i| i.to_string()));
        let member = text(header.member().map(|m| m.to_string()));
        let property = if interface == "org.freedesktop.DBus.Properties" && member == "Get" {
            message.body().deserialize::<(String, String)>().ok()
        } else if interface == "org.freedesktop.DBus.Properties" && member == "GetAll" {
            message
                .body()
                .deserialize::<(String,)>()
                .ok()
                .map(|(i,)| (i, String::new()))
        } else {
            None
        };
        let call = Call {
            sender: text(header.sender().map(|s| s.to_string())),
            destination: text(header.destination().map(|d| d.to_string())),
            path: text(header.path().map(|p| p.to_string())),
            interface,
            member,
            property,
        };
        calls.lock().expect("calls").push(call);
    }
}
