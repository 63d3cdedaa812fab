//! The call pipeline, written once and used by every method and property write that
//! changes something:
//!
//! authorize → gate → engine (off the executor) → refresh → PropertiesChanged → domain
//! signals → Jobs' Completed → reply.
//!
//! 1. **Authorize** every permission the call needs (polkit, possibly a dialog). No
//!    lock of any kind is held meanwhile: a slow or stopped polkitd delays this call
//!    only.
//! 2. **Gate**: wait for the volume's gate, so calls on one volume announce their
//!    changes in the order they made them. Only call tasks take gates, one each. A
//!    property write waits at most [`WRITE_PATIENCE`], then it is `Busy`.
//! 3. **Engine**: the operation runs off the executor (`Service::blocking`) with an [`OpCtx`] whose copies
//!    become Job objects (queued, never waited for) and whose cancel token shutdown and
//!    `Job.Cancel` trip — once an engine place is free; a call that had to wait for
//!    one is not run if its caller has left the bus meanwhile.
//! 4. **Refresh**, still off the executor: the objects the call changed are read
//!    again and their values queued for the outbox, which announces the differences.
//! 5. The engine's **events** are queued as domain signals, then each Job's
//!    `Completed` (with the call's outcome) and its removal.
//! 6. The handler returns; the dispatcher queues the **reply** behind all of that.

use std::sync::Arc;
use std::time::Duration;

use qubes_storage_engine::{Engine, Event, OpCtx, Result as EngineResult};
use zbus::OwnedObjectPath;

use crate::bus::authz::{Permission, Prompt};
use crate::bus::call::Call;
use crate::bus::error::{BusError, BusResult};
use crate::bus::jobs::{JobOwner, JobSink};
use crate::bus::objects::{Object, VolumeObject};
use crate::bus::outbox::Item;
use crate::bus::refresh::Refresher;
use crate::bus::service::Service;
use crate::bus::signals;

/// What the engine work of a call is handed.
pub struct Work<'a> {
    pub engine: &'a Engine,
    pub ctx: &'a OpCtx,
    /// Queues refreshed values (step 4).
    pub refresh: Refresher<'a>,
}

/// How a call changes one volume.
pub struct Change {
    pub permissions: Vec<Permission>,
    pub prompt: Prompt,
    pub afterwards: Afterwards,
    /// Other objects the call involves (a clone's source), for its Jobs' `Objects`.
    pub also: Vec<OwnedObjectPath>,
    /// How long to wait for the volume's gate; `None`: as long as it takes. A property
    /// write does not queue behind a long copy: after this it is `Busy`.
    pub patience: Option<Duration>,
}

/// How long a property write waits for another call on its volume to finish.
pub const WRITE_PATIENCE: Duration = Duration::from_secs(1);

impl Change {
    /// A method call needing one permission, announcing the volume's new values.
    pub fn method(permission: Permission, no_user_interaction: bool) -> Change {
        Change {
            permissions: vec![permission],
            prompt: Prompt::Allowed {
                no_user_interaction,
            },
            afterwards: Afterwards::Refresh,
            also: Vec::new(),
            patience: None,
        }
    }
}

/// What follows a volume operation that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Afterwards {
    /// Announce the volume's (and its dependents') new values.
    Refresh,
    /// The volume is gone: stop serving it (InterfacesRemoved).
    Unexport,
}

impl Service {
    /// A change to one volume: steps 1–5 for `op`.
    pub async fn change_volume<T, F>(
        self: &Arc<Self>,
        call: &Call,
        object: &Arc<VolumeObject>,
        change: Change,
        op: F,
    ) -> BusResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Engine, &OpCtx) -> EngineResult<T> + Send + 'static,
    {
        self.authorize(&call.header(), &change.permissions, change.prompt)
            .await?;
        let _gate = match change.patience {
            None => object.gate.lock().await,
            Some(patience) => tokio::time::timeout(patience, object.gate.lock())
                .await
                .map_err(|_| {
                    BusError::busy(format!(
                        "The {}: another call on this volume is running; try again when it has finished",
                        object.vol
                    ))
                })?,
        };
        let target = Arc::clone(object);
        let afterwards = change.afterwards;
        let mut involved = vec![object.path.clone()];
        involved.extend(change.also);
        tracing::info!(method = %call.member(), pool = %object.vol.pool, vid = %object.vol.vid, "call");
        self.operate(call, involved, move |work| {
            let result = op(work.engine, work.ctx);
            match afterwards {
                Afterwards::Unexport if result.is_ok() => work
                    .refresh
                    .outbox
                    .send(Item::Unexport(Object::Volume(Arc::clone(&target)))),
                _ => work.refresh.volume_and_dependents(&target),
            }
            result
        })
        .await
    }

    /// Steps 3–5: runs `work` as an engine operation of `call` off the executor.
    pub async fn operate<T, F>(
        self: &Arc<Self>,
        call: &Call,
        objects: Vec<OwnedObjectPath>,
        work: F,
    ) -> BusResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Work<'_>) -> EngineResult<T> + Send + 'static,
    {
        let guard = self.begin()?;
        let caller = call.sender();
        // As the dispatcher learnt it (u32::MAX when the bus driver cannot be asked).
        let uid = call.uid();
        let svc = Arc::clone(self);
        let sink = Arc::new(JobSink::new(
            self.outbox.clone(),
            JobOwner { objects, uid },
            guard.token().clone(),
            move || svc.next_job_number(),
        ));
        // Root may end anyone's import (contract rev 2); everyone else only their own.
        let mut ctx = OpCtx::new(call.member(), sink.clone(), guard.token().clone())
            .with_privileged(uid == 0);
        if let Some(caller) = caller {
            ctx = ctx.with_caller(caller.to_string());
        }
        let svc = Arc::clone(self);
        let ran = self
            .blocking_for(call, move |engine| {
                let work_ctx = Work {
                    engine,
                    ctx: &ctx,
                    refresh: Refresher {
                        engine,
                        registry: &svc.registry,
                        outbox: &svc.outbox,
                    },
                };
                let result = work(&work_ctx);
                let events = ctx.take_events();
                // A call that failed before its point of no return changed nothing (its
                // batch gave back what it had pruned): what it had announced to itself
                // — a revision added or pruned — did not happen. What says that it
                // failed — a clone's VolumeImported(false) — did.
                let happened = result.is_ok() || ctx.is_committed();
                if !happened && !events.is_empty() {
                    tracing::debug!(
                        events = events.len(),
                        "the call failed: its changes are not announced"
                    );
                }
                let announced = |event: &Event| happened || event.kind.tells_a_failure();
                for event in events.into_iter().filter(announced) {
                    match signals::volume_event(&event) {
                        Ok(signal) => svc.outbox.send(Item::Send(signal)),
                        Err(err) => tracing::error!(error = %err, "cannot build a volume signal"),
                    }
                }
                result
            })
            .await;
        let outcome = match ran {
            Ok(result) => result.map_err(BusError::from),
            Err(err) => Err(err),
        };
        sink.finish(&outcome);
        drop(guard);
        if let Err(err) = &outcome {
            tracing::info!(method = %call.member(), error = %err, "call failed");
        }
        outcome
    }
}
