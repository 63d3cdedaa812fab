//! The standard interfaces every node serves besides Properties: `Peer` (Ping,
//! GetMachineId) and `Introspectable`. Introspection describes the node's own
//! interfaces and names its children, never a child's interfaces inline (contract
//! rev 2): a reply stays proportional to one level of the tree, and `busctl tree`
//! walks it by name. The interface descriptions come from `interfaces.rs`.

use std::sync::Arc;

use qubes_storage_engine::PoolName;

use crate::bus::call::{Answer, Call};
use crate::bus::error::{quote, BusError, BusResult, Standard};
use crate::bus::interfaces::interfaces;
use crate::bus::path::{self, Node};
use crate::bus::reply;
use crate::bus::service::Service;

const DOCTYPE: &str = "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n";

/// Answers `Peer` calls.
pub fn peer(call: &Call, member: &str) -> BusResult<Answer> {
    match member {
        "Ping" => call.done(),
        "GetMachineId" => call.reply(&(machine_id()?,)),
        _ => Err(unknown("org.freedesktop.DBus.Peer", member)),
    }
}

/// Answers `Introspectable.Introspect` for `node`, which serves `served`.
pub fn introspect(call: &Call, node: &Node, served: &'static [&'static str]) -> BusResult<Answer> {
    let node = node.clone();
    Ok(call.read(move |registry, msg| {
        let children = registry.children(&node).ok_or_else(gone)?;
        let xml = document(served, &children);
        reply::build(&msg.header(), &(xml,), "Introspect")
    }))
}

/// `Introspect` of a pool's `volumes` node, which names every volume of the pool (a
/// document of megabytes at 100 000 volumes): a large read, as ListVolumes is —
/// admitted a few at a time per user and built off the sequencer, which otherwise held
/// every other caller's reply behind a user's flood of them (seconds for root's
/// ListPools).
pub async fn introspect_volumes(
    svc: &Arc<Service>,
    call: &Call,
    pool: PoolName,
    served: &'static [&'static str],
) -> BusResult<Answer> {
    svc.large_read(
        call,
        move |registry| registry.pool(&pool).map(|_| registry.volumes_of(&pool)),
        move |volumes, _, header| {
            let volumes = volumes.ok_or_else(gone)?;
            let children: Vec<String> = volumes
                .iter()
                .map(|volume| path::encode_element(&volume.vol.vid.to_string()))
                .collect();
            reply::build(header, &(document(served, &children),), "Introspect")
        },
    )
    .await
}

/// A node removed between the call's routing and its answer.
fn gone() -> BusError {
    BusError::standard(Standard::UnknownObject, "The object no longer exists")
}

/// The introspection document of a node.
pub fn document(served: &[&str], children: &[String]) -> String {
    let mut xml = String::from(DOCTYPE);
    xml.push_str("<node>\n");
    for name in served {
        xml.push_str(interfaces().expect(name).xml());
    }
    for child in children {
        xml.push_str("  <node name=\"");
        xml.push_str(child);
        xml.push_str("\"/>\n");
    }
    xml.push_str("</node>\n");
    xml
}

fn machine_id() -> BusResult<String> {
    for file in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            return Ok(text.trim().to_owned());
        }
    }
    Err(BusError::failed("The machine id cannot be read"))
}

fn unknown(iface: &str, member: &str) -> BusError {
    BusError::standard(
        Standard::UnknownMethod,
        format!("{iface} has no method {}", quote(member)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::interfaces::{INTROSPECTABLE, VOLUME};

    #[test]
    fn children_are_named_never_described() {
        let xml = document(&[INTROSPECTABLE, VOLUME], &["a".into(), "b_2fc".into()]);
        assert!(xml.contains("<node name=\"a\"/>"));
        assert!(xml.contains("<node name=\"b_2fc\"/>"));
        assert_eq!(xml.matches("<interface ").count(), 2);
        assert!(zbus_xml::Node::try_from(xml.as_str()).is_ok());
    }
}
