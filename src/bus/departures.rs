//! Callers that leave the bus. An import belongs to the caller that opened it
//! (ImportData hands it a file descriptor); a caller that disconnects before
//! ImportDataEnd would otherwise leave the volume `Busy` until a restart. Every time a
//! unique name goes away (`NameOwnerChanged` with an empty new owner), its open imports
//! are discarded — as ImportDataEnd(false) would — and announced like any call.
//!
//! The signal stream is only drained here: each departure is handed to a worker over a
//! channel, and each import to discard gets a task of its own, so a departure whose
//! volume is busy (a long copy holds its gate) never stops the stream — and with it
//! zbus's reader of the connection — nor the departures behind it.
//!
//! A departure can come before the import it should end is recorded; ImportData
//! therefore checks, once the import is recorded, that its caller is still on the bus
//! ([`abandon_if_gone`]).

use std::sync::Arc;

use futures_util::StreamExt;
use qubes_storage_engine::{Engine, OpCtx, VolumeRef};
use tokio::sync::mpsc;
use zbus::fdo::DBusProxy;
use zbus::names::UniqueName;

use crate::bus::objects::VolumeObject;
use crate::bus::outbox::Item;
use crate::bus::refresh::Refresher;
use crate::bus::service::Service;
use crate::bus::signals;

/// Follows departures for the life of the connection.
pub async fn watch(svc: Arc<Service>) -> zbus::Result<()> {
    let bus = DBusProxy::new(svc.conn()).await?;
    let mut departures = bus.receive_name_owner_changed_with_args(&[(2, "")]).await?;
    let (gone, mut names) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(signal) = departures.next().await {
            if let Ok(args) = signal.args() {
                let _ = gone.send(args.name().to_string());
            }
        }
    });
    tokio::spawn(async move {
        while let Some(name) = names.recv().await {
            for vol in svc.engine().imports_of(&name) {
                tokio::spawn(abandon(Arc::clone(&svc), vol, name.clone()));
            }
        }
    });
    Ok(())
}

/// After ImportData: if `caller` has already left the bus, its import is discarded.
pub async fn abandon_if_gone(
    svc: &Arc<Service>,
    object: &Arc<VolumeObject>,
    caller: &UniqueName<'_>,
) {
    if !svc.still_on_bus(caller).await {
        abandon(Arc::clone(svc), object.vol.clone(), caller.to_string()).await;
    }
}

async fn abandon(svc: Arc<Service>, vol: VolumeRef, caller: String) {
    let Some(object) = svc.registry.volume(&vol) else {
        return;
    };
    let _gate = object.gate.lock().await;
    let Ok(_running) = svc.begin() else { return }; // shutting down: the restart clears it
    let service = Arc::clone(&svc);
    let target = Arc::clone(&object);
    let ran = svc
        .blocking(move |engine| discard(&service, engine, &target, &caller))
        .await;
    if let Err(err) = ran {
        tracing::warn!(error = %err, "could not discard an abandoned import");
    }
}

/// Discards `caller`'s import of the volume and announces it.
fn discard(svc: &Service, engine: &Engine, object: &Arc<VolumeObject>, caller: &str) {
    let ctx = OpCtx::quiet("ImportAbandoned");
    match engine.abandon_import(&object.vol, caller, &ctx) {
        Ok(true) => {
            let refresh = Refresher {
                engine,
                registry: &svc.registry,
                outbox: &svc.outbox,
            };
            refresh.volume_and_dependents(object);
            for event in ctx.take_events() {
                if let Ok(signal) = signals::volume_event(&event) {
                    svc.outbox.send(Item::Send(signal));
                }
            }
        }
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, "could not discard an abandoned import"),
    }
}
