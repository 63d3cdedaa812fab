//! `org.freedesktop.DBus.ObjectManager` at `/org/qubes/Storage`: GetManagedObjects
//! lists exactly the objects that serve one of the service's interfaces — every pool,
//! volume and running job — each with the same dictionary `Properties.GetAll` returns.
//!
//! Why not zbus's own `fdo::ObjectManager`: zbus 6.2 lists every descendant node of the
//! object tree, also the interface-less parents that only lead to objects
//! (`/org/qubes/Storage/pools`, `…/pools/<P>/volumes`, `/org/qubes/Storage/jobs`), each
//! with an empty dictionary. The D-Bus specification's ObjectManager reports objects
//! with their interfaces; empty entries are noise every client has to skip.
//!
//! What stays zbus's: InterfacesAdded and InterfacesRemoved. `ObjectServer::at` and
//! `ObjectServer::remove` emit them from the closest ancestor that serves an interface
//! *named* `org.freedesktop.DBus.ObjectManager` (zbus compares the name, not the type),
//! so this interface, registered under that name, keeps them coming. Its signals are
//! declared here with zbus's argument names and types only so that introspection is the
//! same as with zbus's interface; zbus's own emitter sends them.
//!
//! The objects come from the registry (an object enters it before it is put on the
//! object server and leaves it before it is taken off); one listed but not (or no
//! longer) on the object server is left out. The properties are read through zbus's
//! `Interface::get_all` on the object's own interface instance — the code
//! `Properties.GetAll` runs — one object at a time, without holding zbus's object-tree
//! lock while a getter runs.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use zbus::fdo::ManagedObjects;
use zbus::names::InterfaceName;
use zbus::object_server::{Interface, SignalEmitter};
use zbus::{
    interface, Connection, ObjectPath, ObjectServer, OwnedObjectPath, OwnedVariant, Variant,
};

use crate::bus::job::JobIface;
use crate::bus::pool::PoolIface;
use crate::bus::service::Service;
use crate::bus::volume::VolumeIface;

/// The ObjectManager of the service's root object.
pub struct ObjectManagerIface {
    svc: Arc<Service>,
}

impl ObjectManagerIface {
    pub fn new(svc: Arc<Service>) -> ObjectManagerIface {
        ObjectManagerIface { svc }
    }

    /// Every pool, volume and job the registry lists and the object server serves.
    async fn managed_objects(
        &self,
        server: &ObjectServer,
        conn: &Connection,
    ) -> zbus::fdo::Result<ManagedObjects> {
        let registry = &self.svc.registry;
        let pools: Vec<_> = registry.pools().iter().map(|p| p.path.clone()).collect();
        let volumes: Vec<_> = registry.volumes().iter().map(|v| v.path.clone()).collect();
        let mut objects = ManagedObjects::new();
        add_objects::<PoolIface>(&mut objects, server, conn, pools).await?;
        add_objects::<VolumeIface>(&mut objects, server, conn, volumes).await?;
        add_objects::<JobIface>(&mut objects, server, conn, registry.jobs()).await?;
        Ok(objects)
    }
}

/// Adds each of `paths` that serves `I`, with `I`'s properties.
async fn add_objects<I: Interface>(
    objects: &mut ManagedObjects,
    server: &ObjectServer,
    conn: &Connection,
    paths: Vec<OwnedObjectPath>,
) -> zbus::fdo::Result<()> {
    for path in paths {
        if let Some(properties) = properties_of::<I>(server, conn, &path).await? {
            let interfaces = HashMap::from([(I::name().into(), properties)]);
            objects.insert(path, interfaces);
        }
    }
    Ok(())
}

/// `Properties.GetAll` of interface `I` at `path`; `None` when `path` does not serve it
/// (not yet exported, or just removed).
async fn properties_of<I: Interface>(
    server: &ObjectServer,
    conn: &Connection,
    path: &OwnedObjectPath,
) -> zbus::fdo::Result<Option<HashMap<String, OwnedVariant>>> {
    let iface = match server.interface::<_, I>(path.as_ref()).await {
        Ok(iface) => iface,
        Err(zbus::Error::InterfaceNotFound) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let instance = iface.get().await;
    let properties = instance
        .get_all(server, conn, None, iface.signal_emitter())
        .await?;
    Ok(Some(properties))
}

#[interface(
    name = "org.freedesktop.DBus.ObjectManager",
    introspection_docs = false
)]
impl ObjectManagerIface {
    /// Every object of the service that has an interface, with each interface's
    /// properties (as GetAll returns them).
    async fn get_managed_objects(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<ManagedObjects, zbus::fdo::Error> {
        self.managed_objects(server, conn).await
    }

    /// Declared for introspection; zbus emits it from `ObjectServer::at`.
    #[zbus(signal)]
    pub async fn interfaces_added(
        emitter: &SignalEmitter<'_>,
        object_path: ObjectPath<'_>,
        interfaces_and_properties: HashMap<InterfaceName<'_>, HashMap<&str, Variant<'_>>>,
    ) -> zbus::Result<()>;

    /// Declared for introspection; zbus emits it from `ObjectServer::remove`.
    #[zbus(signal)]
    pub async fn interfaces_removed(
        emitter: &SignalEmitter<'_>,
        object_path: ObjectPath<'_>,
        interfaces: Cow<'_, [InterfaceName<'_>]>,
    ) -> zbus::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// zbus emits InterfacesAdded / InterfacesRemoved for the objects below a node that
    /// serves an interface of this name. (That introspection is the same as zbus's own
    /// ObjectManager is checked against the running service in
    /// tests/bus_object_manager.rs.)
    #[test]
    fn has_the_name_zbus_emits_the_object_signals_for() {
        assert_eq!(ObjectManagerIface::name(), zbus::fdo::ObjectManager::name());
    }
}
