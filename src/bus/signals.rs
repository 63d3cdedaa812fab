//! What the service says on its own: the domain signals of volumes, made from the
//! engine's events after an operation (each on the volume's own object, so a client can
//! follow one volume with `path=`, one pool with `path_namespace=` or all with
//! `interface=`), and PropertiesChanged from property diffs. Both go out before the
//! reply of the call that caused them.

use std::borrow::Cow;
use std::collections::HashMap;

use qubes_storage_engine::{Event, EventKind, VolumeRef};
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, ObjectPath, Variant};

use crate::bus::path;
use crate::bus::props::Entry;
use crate::bus::volume::VolumeIface;

/// One PropertiesChanged carrying the new values of `entries` (nothing when empty).
pub async fn properties_changed(
    conn: &Connection,
    path: &ObjectPath<'_>,
    iface: &'static str,
    entries: &[Entry],
) -> zbus::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let emitter = SignalEmitter::new(conn, path.clone())?;
    let changed: HashMap<&str, Variant<'_>> = entries
        .iter()
        .map(|(name, value)| (*name, Variant::from(value.clone())))
        .collect();
    zbus::fdo::Properties::properties_changed(
        &emitter,
        InterfaceName::from_static_str_unchecked(iface),
        changed,
        Cow::Borrowed(&[]),
    )
    .await
}

/// The domain signal of one engine event, on its volume's object.
pub async fn emit_event(conn: &Connection, event: &Event) -> zbus::Result<()> {
    let vol = VolumeRef {
        pool: event.pool.clone(),
        vid: event.vid.clone(),
    };
    let emitter = SignalEmitter::new(conn, path::volume_path(&vol))?;
    tracing::debug!(pool = %event.pool, vid = %event.vid, event = ?event.kind, "signal");
    match &event.kind {
        EventKind::Started { block_device_path } => {
            VolumeIface::volume_started(&emitter, block_device_path).await
        }
        EventKind::Stopped { committed } => VolumeIface::volume_stopped(&emitter, *committed).await,
        EventKind::RevisionAdded { id, timestamp } => {
            VolumeIface::revision_added(&emitter, &id.to_string(), *timestamp).await
        }
        EventKind::RevisionPruned { id, timestamp } => {
            VolumeIface::revision_pruned(&emitter, &id.to_string(), *timestamp).await
        }
        EventKind::Reverted { id } => VolumeIface::volume_reverted(&emitter, &id.to_string()).await,
        EventKind::Resized { old_size, new_size } => {
            VolumeIface::volume_resized(&emitter, *old_size, *new_size).await
        }
        EventKind::Imported { success } => VolumeIface::volume_imported(&emitter, *success).await,
    }
}

/// Every event of an operation, in order; failures are logged, not replied.
pub async fn emit_events(conn: &Connection, events: &[Event]) {
    for event in events {
        if let Err(err) = emit_event(conn, event).await {
            tracing::warn!(error = %err, vid = %event.vid, "cannot emit a volume signal");
        }
    }
}
