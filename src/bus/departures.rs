//! Callers that leave the bus. An import belongs to the caller that opened it
//! (ImportData hands it a file descriptor); a caller that disconnects before
//! ImportDataEnd would otherwise leave the volume `Busy` until a restart. Every time a
//! unique name goes away (`NameOwnerChanged` with an empty new owner), its open imports
//! are discarded — as ImportDataEnd(false) would — and announced like any call
//! (PropertiesChanged, VolumeImported(false)).

use std::sync::Arc;

use futures_util::StreamExt;
use qubes_storage_engine::{OpCtx, VolumeRef};
use zbus::fdo::DBusProxy;

use crate::bus::service::Service;
use crate::bus::signals;

/// Watches departures for the life of the connection.
pub async fn spawn(svc: Arc<Service>) -> zbus::Result<()> {
    let bus = DBusProxy::new(svc.conn()).await?;
    let mut departures = bus.receive_name_owner_changed_with_args(&[(2, "")]).await?;
    tokio::spawn(async move {
        while let Some(signal) = departures.next().await {
            let Ok(args) = signal.args() else { continue };
            let name = args.name().to_string();
            for vol in svc.engine().imports_of(&name) {
                abandon(&svc, vol, &name).await;
            }
        }
    });
    Ok(())
}

async fn abandon(svc: &Arc<Service>, vol: VolumeRef, caller: &str) {
    let Some(object) = svc.registry.volume(&vol) else {
        return;
    };
    let _gate = object.enter().await;
    let Ok(_running) = svc.begin() else { return }; // shutting down: the restart clears it
    let caller = caller.to_owned();
    let ran = svc
        .blocking(move |engine| {
            let ctx = OpCtx::quiet("ImportAbandoned");
            let result = engine.abandon_import(&vol, &caller, &ctx);
            (result, ctx.take_events())
        })
        .await;
    let Ok((result, events)) = ran else { return };
    match result {
        Ok(true) => {
            svc.refresh_volume_and_dependents(&object, &[]).await;
            signals::emit_events(svc.conn(), &events).await;
        }
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, "could not discard an abandoned import"),
    }
}
