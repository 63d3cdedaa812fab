//! `org.freedesktop.DBus.Properties` of every object: Get and GetAll serve the values
//! the object last announced (at their place in the sequence of announcements, so a
//! read never contradicts a signal the client already has), plus the live values read
//! off the executor; Set checks the property against the introspection (unknown,
//! read-only, wrong type) and hands the write to the object's setter, which runs it
//! through the call pipeline like a method — without ever prompting for a password.

use std::collections::HashMap;
use std::sync::Arc;

use zbus::{OwnedVariant, Variant};

use crate::bus::admission::Work;
use crate::bus::call::{Answer, Call};
use crate::bus::error::{quote, BusError, BusResult, Standard};
use crate::bus::interfaces::{interfaces, Emits, PropertySpec, MANAGER, POOL, VOLUME};
use crate::bus::live;
use crate::bus::manager;
use crate::bus::objects::Object;
use crate::bus::path::Node;
use crate::bus::registry::Registry;
use crate::bus::reply;
use crate::bus::service::Service;
use crate::bus::setters;
use crate::bus::values::Entry;

/// Where a property call lands: the node, the interfaces it serves, its object.
pub struct Target<'a> {
    pub node: &'a Node,
    pub path: &'a str,
    pub served: &'a [&'static str],
    pub object: Option<Object>,
}

impl Target<'_> {
    fn interface(&self, name: &str) -> BusResult<&'static str> {
        self.served
            .iter()
            .copied()
            .find(|served| *served == name)
            .ok_or_else(|| {
                BusError::standard(
                    Standard::UnknownInterface,
                    format!(
                        "The object at {} has no interface {}",
                        self.path,
                        quote(name)
                    ),
                )
            })
    }

    fn property(&self, iface: &'static str, name: &str) -> BusResult<&'static PropertySpec> {
        interfaces()
            .expect(iface)
            .properties
            .get(name)
            .ok_or_else(|| {
                BusError::standard(
                    Standard::UnknownProperty,
                    format!("Interface {iface} has no property {}", quote(name)),
                )
            })
    }
}

/// Answers a call of `member` of the Properties interface.
pub async fn answer(
    svc: &Arc<Service>,
    call: &Call,
    target: Target<'_>,
    member: &str,
) -> BusResult<Answer> {
    match member {
        "Get" => get(svc, call, target).await,
        "GetAll" => get_all(svc, call, target).await,
        "Set" => set(svc, call, target).await,
        _ => Err(BusError::standard(
            Standard::UnknownMethod,
            format!(
                "org.freedesktop.DBus.Properties has no method {}",
                quote(member)
            ),
        )),
    }
}

async fn get(svc: &Arc<Service>, call: &Call, target: Target<'_>) -> BusResult<Answer> {
    let (iface, name): (String, String) = call.args()?;
    let iface = target.interface(&iface)?;
    let spec = target.property(iface, &name)?;
    if spec.emits == Emits::Never {
        let value = live_value(svc, call, &target, &name).await?;
        return call.reply(&(value,));
    }
    let node = target.node.clone();
    Ok(call.read(move |registry, msg| {
        let entries = announced(registry, &node, iface)?;
        let value = entries
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| BusError::failed(format!("Property {name} has no value")))?;
        reply::build(&msg.header(), &(value,), "Get")
    }))
}

async fn get_all(svc: &Arc<Service>, call: &Call, target: Target<'_>) -> BusResult<Answer> {
    let (iface,): (String,) = call.args()?;
    let iface = target.interface(&iface)?;
    let mut live = Vec::new();
    for (name, spec) in &interfaces().expect(iface).properties {
        if spec.emits == Emits::Never {
            live.push((name.clone(), live_value(svc, call, &target, name).await?));
        }
    }
    let node = target.node.clone();
    Ok(call.read(move |registry, msg| {
        let entries = announced(registry, &node, iface)?;
        let mut all: HashMap<&str, &Variant<'_>> = entries.iter().map(|(n, v)| (*n, v)).collect();
        for (name, value) in &live {
            all.insert(name.as_str(), value);
        }
        reply::build(&msg.header(), &(all,), "GetAll")
    }))
}

async fn set(svc: &Arc<Service>, call: &Call, target: Target<'_>) -> BusResult<Answer> {
    let (iface, name, value): (String, String, OwnedVariant) = call.args()?;
    let iface = target.interface(&iface)?;
    let spec = target.property(iface, &name)?;
    if !spec.writable {
        return Err(BusError::standard(
            Standard::PropertyReadOnly,
            format!("Property {name} of {iface} is read-only"),
        ));
    }
    let value = Variant::from(value);
    let value = match value {
        Variant::Variant(inner) => *inner,
        other => other,
    };
    let found = value.value_signature().to_string();
    if found != spec.signature {
        return Err(BusError::invalid_args(format!(
            "Property {name} of {iface} has type {}, not {found}",
            spec.signature
        )));
    }
    match target.object {
        Some(Object::Volume(volume)) => setters::volume(svc, call, &volume, &name, value).await,
        Some(Object::Pool(pool)) => setters::pool(svc, call, &pool, &name, value).await,
        _ => Err(BusError::standard(
            Standard::PropertyReadOnly,
            format!("Property {name} of {iface} is read-only"),
        )),
    }
}

/// The live value of property `name` of the target's object.
async fn live_value(
    svc: &Arc<Service>,
    call: &Call,
    target: &Target<'_>,
    name: &str,
) -> BusResult<Variant<'static>> {
    match (&target.object, name) {
        (Some(Object::Volume(volume)), "Usage") => {
            let vol = volume.vol.clone();
            svc.read(call, Work::LightRead, move |e| live::volume_usage(e, &vol))
                .await?
        }
        (Some(Object::Pool(pool)), "UsageDetails") => {
            let name = pool.name.clone();
            svc.read(call, Work::LightRead, move |e| {
                live::pool_usage_details(e, &name)
            })
            .await?
        }
        _ => Err(BusError::failed(format!(
            "Property {name} cannot be read live"
        ))),
    }
}

/// The announced entries of `iface` of the object at `node`, as of now.
fn announced(registry: &Registry, node: &Node, iface: &str) -> BusResult<Vec<Entry<'static>>> {
    let owned = |entries: Vec<Entry<'_>>| -> Vec<Entry<'static>> {
        entries
            .into_iter()
            .filter_map(|(n, v)| v.try_to_owned().ok().map(|v| (n, Variant::from(v))))
            .collect()
    };
    if iface == MANAGER {
        return Ok(manager::entries());
    }
    match registry.object_at(node) {
        Some(Object::Volume(volume)) if iface == VOLUME => {
            Ok(owned(volume.values().entries(&volume.vol)))
        }
        Some(Object::Pool(pool)) if iface == POOL => Ok(owned(pool.values().entries())),
        Some(Object::Job(job)) => {
            let mut entries = owned(job.identity.entries());
            entries.extend(job.announced().entries());
            Ok(entries)
        }
        Some(_) => Ok(Vec::new()),
        None if matches!(node, Node::Pool(_) | Node::Volume(_) | Node::Job(_)) => Err(
            BusError::standard(Standard::UnknownObject, "The object no longer exists"),
        ),
        None => Ok(Vec::new()),
    }
}
