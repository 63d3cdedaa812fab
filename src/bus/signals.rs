//! The signal messages the service sends, built (not sent: the outbox sends them, in
//! order): PropertiesChanged carrying new values, InterfacesAdded / InterfacesRemoved
//! from the ObjectManager at `/org/qubes/Storage`, the Volume domain signals made from
//! the engine's events (each on the volume's own object, so a client can follow one
//! volume with `path=`, one pool with `path_namespace=` or all with `interface=`), and
//! a Job's `Completed`.

use std::collections::HashMap;

use qubes_storage_engine::{Event, EventKind, VolumeRef};
use zbus::{Message, ObjectPath, Variant};

use crate::bus::interfaces::{JOB, OBJECT_MANAGER, PROPERTIES, VOLUME};
use crate::bus::path;
use crate::bus::values::Entry;

/// One PropertiesChanged carrying the new values of `entries`.
pub fn properties_changed(
    path: &ObjectPath<'_>,
    iface: &str,
    entries: &[Entry<'_>],
) -> zbus::Result<Message> {
    let changed: HashMap<&str, &Variant<'_>> = entries.iter().map(|(n, v)| (*n, v)).collect();
    let invalidated: &[&str] = &[];
    Message::signal(path, PROPERTIES, "PropertiesChanged").build(&(iface, changed, invalidated))
}

/// InterfacesAdded for the object at `path` serving `iface` with `entries`.
pub fn interfaces_added(
    path: &ObjectPath<'_>,
    iface: &str,
    entries: &[Entry<'_>],
) -> zbus::Result<Message> {
    let properties: HashMap<&str, &Variant<'_>> = entries.iter().map(|(n, v)| (*n, v)).collect();
    let interfaces = HashMap::from([(iface, properties)]);
    Message::signal(path::MANAGER_PATH, OBJECT_MANAGER, "InterfacesAdded")
        .build(&(path, interfaces))
}

/// InterfacesRemoved for the object at `path` that served `iface`.
pub fn interfaces_removed(path: &ObjectPath<'_>, iface: &str) -> zbus::Result<Message> {
    Message::signal(path::MANAGER_PATH, OBJECT_MANAGER, "InterfacesRemoved")
        .build(&(path, &[iface][..]))
}

/// A Job's `Completed(success, message)`.
pub fn job_completed(path: &ObjectPath<'_>, success: bool, message: &str) -> zbus::Result<Message> {
    Message::signal(path, JOB, "Completed").build(&(success, message))
}

/// The domain signal of one engine event, on its volume's object.
pub fn volume_event(event: &Event) -> zbus::Result<Message> {
    let vol = VolumeRef {
        pool: event.pool.clone(),
        vid: event.vid.clone(),
    };
    let path = path::volume_path(&vol);
    let signal = |member: &'static str| Message::signal(&path, VOLUME, member);
    match &event.kind {
        EventKind::Started { block_device_path } => {
            signal("VolumeStarted").build(&(block_device_path.as_str(),))
        }
        EventKind::Stopped { committed } => signal("VolumeStopped").build(&(*committed,)),
        EventKind::RevisionAdded { id, timestamp } => {
            signal("RevisionAdded").build(&(id.to_string(), *timestamp))
        }
        EventKind::RevisionPruned { id, timestamp } => {
            signal("RevisionPruned").build(&(id.to_string(), *timestamp))
        }
        EventKind::Reverted { id } => signal("VolumeReverted").build(&(id.to_string(),)),
        EventKind::RevisionDetailsSet {
            id,
            description,
            pinned,
        } => signal("RevisionDetailsSet").build(&(id.to_string(), description, *pinned)),
        EventKind::Resized { old_size, new_size } => {
            signal("VolumeResized").build(&(*old_size, *new_size))
        }
        EventKind::Imported { success } => signal("VolumeImported").build(&(*success,)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::interfaces::interfaces;
    use qubes_storage_engine::{PoolName, Vid};

    fn event(kind: EventKind) -> Event {
        Event {
            pool: PoolName::parse("p").unwrap(),
            vid: Vid::parse("appvms/a/private").unwrap(),
            kind,
        }
    }

    /// Every domain signal has the name and argument types the introspection declares.
    #[test]
    fn domain_signals_match_the_introspection() {
        let kinds = [
            EventKind::Started {
                block_device_path: "/x".into(),
            },
            EventKind::Stopped { committed: true },
            EventKind::RevisionAdded {
                id: 1,
                timestamp: 2,
            },
            EventKind::RevisionPruned {
                id: 1,
                timestamp: 2,
            },
            EventKind::Reverted { id: 3 },
            EventKind::RevisionDetailsSet {
                id: 3,
                description: "known good".into(),
                pinned: true,
            },
            EventKind::Resized {
                old_size: 1,
                new_size: 2,
            },
            EventKind::Imported { success: true },
        ];
        let spec = interfaces().expect(VOLUME);
        for kind in kinds {
            let msg = volume_event(&event(kind)).unwrap();
            let header = msg.header();
            let member = header.member().unwrap().to_string();
            let declared = spec.signals.get(&member).expect("declared");
            assert_eq!(
                &msg.body().signature().to_string_no_parens(),
                declared,
                "{member}"
            );
        }
        assert_eq!(spec.signals.len(), 8);
    }

    #[test]
    fn object_signals_have_the_standard_signatures() {
        let path = ObjectPath::try_from("/org/qubes/Storage/pools/p").unwrap();
        let entries = [("Name", Variant::from("p"))];
        let added = interfaces_added(&path, "org.qubes.Storage.Pool", &entries).unwrap();
        assert_eq!(added.body().signature().to_string_no_parens(), "oa{sa{sv}}");
        let removed = interfaces_removed(&path, "org.qubes.Storage.Pool").unwrap();
        assert_eq!(removed.body().signature().to_string_no_parens(), "oas");
        let changed = properties_changed(&path, "org.qubes.Storage.Pool", &entries).unwrap();
        assert_eq!(changed.body().signature().to_string_no_parens(), "sa{sv}as");
    }
}
