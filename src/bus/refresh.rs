//! Reading objects again after a change and queueing their new values for the outbox
//! (which announces whatever differs). These run off the executor, right after the
//! engine work of a call, under the object's refresh lock: reading the engine's view
//! and queueing it is one step per object, so two refreshes of one object are queued
//! in the order they read.

use std::sync::Arc;

use qubes_storage_engine::{Engine, ErrorKind};

use crate::bus::objects::{PoolObject, VolumeObject};
use crate::bus::outbox::{Item, Outbox};
use crate::bus::registry::Registry;
use crate::bus::values::{PoolValues, VolumeValues};

/// Where refreshed values go, and where the objects are found.
pub struct Refresher<'a> {
    pub engine: &'a Engine,
    pub registry: &'a Registry,
    pub outbox: &'a Outbox,
}

impl Refresher<'_> {
    /// Reads a volume again and queues its values. When its files cannot be read (the
    /// pool directory is missing) what was announced of them stays, and only what its
    /// configuration says is queued (a pool property write changed it).
    pub fn volume(&self, object: &Arc<VolumeObject>) {
        let _serial = object.refresh.lock().unwrap_or_else(|e| e.into_inner());
        match self.engine.volume_info(&object.vol) {
            Ok(info) => self
                .outbox
                .send(Item::Volume(Arc::clone(object), VolumeValues::of(&info))),
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the volume again");
                if let Ok(settings) = self.engine.volume_settings(&object.vol) {
                    self.outbox
                        .send(Item::VolumeSettings(Arc::clone(object), settings));
                }
            }
        }
    }

    /// A volume and the volumes that use it as their source (their `IsOutdated` and,
    /// while stopped, `Size` follow it).
    pub fn volume_and_dependents(&self, object: &Arc<VolumeObject>) {
        self.volume(object);
        for dependent in self.registry.dependents(&object.vol) {
            self.volume(&dependent);
        }
    }

    /// Reads a pool again and queues its values.
    pub fn pool(&self, object: &Arc<PoolObject>) {
        let _serial = object.refresh.lock().unwrap_or_else(|e| e.into_inner());
        match self.engine.pool_info(&object.name) {
            Ok(info) => self
                .outbox
                .send(Item::Pool(Arc::clone(object), PoolValues::of(&info))),
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => tracing::warn!(error = %err, "cannot read the pool again"),
        }
    }

    /// Every pool (the `IncludedIn` of any pool may change when one comes or goes).
    pub fn pools(&self) {
        for pool in self.registry.pools() {
            self.pool(&pool);
        }
    }

    /// A pool and all its volumes (a pool default that volumes follow changed).
    pub fn pool_and_volumes(&self, object: &Arc<PoolObject>) {
        self.pool(object);
        for volume in self.registry.volumes_of(&object.name) {
            self.volume(&volume);
        }
    }
}
