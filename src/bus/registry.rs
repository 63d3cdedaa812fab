//! The exported pool and volume objects: a table from engine names to objects (each
//! with the property values it last announced), exporting and unexporting them on the
//! object server (which emits InterfacesAdded / InterfacesRemoved through the
//! ObjectManager at `/org/qubes/Storage`), and refreshing their announced values from
//! the engine with one PropertiesChanged per object for whatever changed. The paths of
//! the running Job objects are listed here too, so that GetManagedObjects
//! (`object_manager.rs`) can name every object the service serves from this table.
//! An object enters the table before it is put on the object server and leaves it
//! before it is taken off.
//!
//! Nothing here touches the object server's tree while reading or refreshing: property
//! getters and setters run under zbus's tree lock, so they must reach other objects
//! through this table only (see docs/zbus-and-polkit.md on locking).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use qubes_storage_engine::{ErrorKind, PoolInfo, PoolName, VolumeInfo, VolumeRef};
use zbus::OwnedObjectPath;

use crate::bus::error::StorageError;
use crate::bus::path;
use crate::bus::pool::PoolIface;
use crate::bus::props::{changed, Entry, PoolProps, VolumeProps};
use crate::bus::service::Service;
use crate::bus::signals;
use crate::bus::volume::VolumeIface;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// An exported volume.
pub struct VolumeObject {
    pub vol: VolumeRef,
    pub path: OwnedObjectPath,
    published: Mutex<VolumeProps>,
    /// Serialises refreshes, so a later engine read is never overwritten by an earlier one.
    refresh: tokio::sync::Mutex<()>,
    /// Held by a call for its whole engine work. Method calls wait for it; property
    /// writes only try it: a write runs under zbus's object-tree read lock, and waiting
    /// there (for the engine's lock of this vid) behind a copy that needs the tree's
    /// write lock to publish its Job would deadlock.
    gate: tokio::sync::Mutex<()>,
}

impl VolumeObject {
    pub fn props(&self) -> MutexGuard<'_, VolumeProps> {
        lock(&self.published)
    }

    /// Waits until no other call works on this volume (method calls).
    pub async fn enter(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.gate.lock().await
    }

    /// Enters only if no other call works on this volume (property writes).
    pub fn try_enter(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        self.gate.try_lock().ok()
    }
}

/// An exported pool.
pub struct PoolObject {
    pub name: PoolName,
    pub path: OwnedObjectPath,
    published: Mutex<PoolProps>,
    refresh: tokio::sync::Mutex<()>,
}

impl PoolObject {
    /// "pool <name>", as error messages name it.
    pub fn describe(&self) -> String {
        format!("pool {}", self.name)
    }

    pub fn props(&self) -> MutexGuard<'_, PoolProps> {
        lock(&self.published)
    }
}

/// The table of exported objects.
#[derive(Default)]
pub struct Registry {
    pools: Mutex<BTreeMap<PoolName, Arc<PoolObject>>>,
    volumes: Mutex<BTreeMap<VolumeRef, Arc<VolumeObject>>>,
    jobs: Mutex<Vec<OwnedObjectPath>>,
}

impl Registry {
    pub fn pool(&self, name: &PoolName) -> Option<Arc<PoolObject>> {
        lock(&self.pools).get(name).cloned()
    }

    pub fn pools(&self) -> Vec<Arc<PoolObject>> {
        lock(&self.pools).values().cloned().collect()
    }

    pub fn volume(&self, vol: &VolumeRef) -> Option<Arc<VolumeObject>> {
        lock(&self.volumes).get(vol).cloned()
    }

    pub fn volumes_of(&self, pool: &PoolName) -> Vec<Arc<VolumeObject>> {
        lock(&self.volumes)
            .values()
            .filter(|v| &v.vol.pool == pool)
            .cloned()
            .collect()
    }

    /// Every exported volume.
    pub fn volumes(&self) -> Vec<Arc<VolumeObject>> {
        lock(&self.volumes).values().cloned().collect()
    }

    /// The paths of the running Job objects.
    pub fn jobs(&self) -> Vec<OwnedObjectPath> {
        lock(&self.jobs).clone()
    }

    /// Lists a Job object (before it is put on the object server).
    pub fn add_job(&self, path: OwnedObjectPath) {
        lock(&self.jobs).push(path);
    }

    /// Unlists a Job object (before it is taken off the object server).
    pub fn remove_job(&self, path: &OwnedObjectPath) {
        lock(&self.jobs).retain(|listed| listed != path);
    }

    /// The volumes whose `Source` is `vol` (their IsOutdated follows its commits).
    pub fn dependents(&self, vol: &VolumeObject) -> Vec<Arc<VolumeObject>> {
        self.volumes_of(&vol.vol.pool)
            .into_iter()
            .filter(|v| v.props().source == vol.path)
            .collect()
    }

    /// The pool object, or `NotFound` naming the pool.
    pub fn require_pool(&self, name: &PoolName) -> Result<Arc<PoolObject>, StorageError> {
        self.pool(name)
            .ok_or_else(|| StorageError::not_found(format!("Pool {name} does not exist.")))
    }

    /// The volume object, or `NotFound` naming the volume.
    pub fn require_volume(&self, vol: &VolumeRef) -> Result<Arc<VolumeObject>, StorageError> {
        self.volume(vol)
            .ok_or_else(|| StorageError::not_found(format!("The {vol} does not exist.")))
    }
}

impl Service {
    /// Exports a pool object (InterfacesAdded).
    pub async fn export_pool(self: &Arc<Self>, info: &PoolInfo) -> zbus::Result<OwnedObjectPath> {
        let name = info.config.name.clone();
        let object = Arc::new(PoolObject {
            path: path::pool_path(&name),
            name: name.clone(),
            published: Mutex::new(PoolProps::of(info)),
            refresh: tokio::sync::Mutex::new(()),
        });
        lock(&self.registry.pools).insert(name, Arc::clone(&object));
        let iface = PoolIface::new(Arc::clone(self), Arc::clone(&object));
        self.conn()
            .object_server()
            .at(object.path.clone(), iface)
            .await?;
        Ok(object.path.clone())
    }

    /// Exports a volume object (InterfacesAdded).
    pub async fn export_volume(
        self: &Arc<Self>,
        info: &VolumeInfo,
    ) -> zbus::Result<OwnedObjectPath> {
        let vol = VolumeRef {
            pool: info.pool.clone(),
            vid: info.config.vid.clone(),
        };
        let object = Arc::new(VolumeObject {
            path: path::volume_path(&vol),
            vol: vol.clone(),
            published: Mutex::new(VolumeProps::of(info)),
            refresh: tokio::sync::Mutex::new(()),
            gate: tokio::sync::Mutex::new(()),
        });
        lock(&self.registry.volumes).insert(vol, Arc::clone(&object));
        let iface = VolumeIface::new(Arc::clone(self), Arc::clone(&object));
        self.conn()
            .object_server()
            .at(object.path.clone(), iface)
            .await?;
        Ok(object.path.clone())
    }

    /// Removes a volume object (InterfacesRemoved).
    pub async fn unexport_volume(&self, vol: &VolumeRef) -> zbus::Result<()> {
        let removed = lock(&self.registry.volumes).remove(vol);
        if let Some(object) = removed {
            self.conn()
                .object_server()
                .remove::<VolumeIface, _>(object.path.clone())
                .await?;
        }
        Ok(())
    }

    /// Removes a pool object (InterfacesRemoved).
    pub async fn unexport_pool(&self, name: &PoolName) -> zbus::Result<()> {
        let removed = lock(&self.registry.pools).remove(name);
        if let Some(object) = removed {
            self.conn()
                .object_server()
                .remove::<PoolIface, _>(object.path.clone())
                .await?;
        }
        Ok(())
    }

    /// Reads a volume again and announces what changed, except the properties in
    /// `except` (a property setter's own value, which zbus announces itself).
    pub async fn refresh_volume(&self, object: &VolumeObject, except: &[&str]) {
        let _serial = object.refresh.lock().await;
        let vol = object.vol.clone();
        let info = match self.blocking(move |engine| engine.volume_info(&vol)).await {
            Ok(Ok(info)) => info,
            Ok(Err(err)) if err.kind() == ErrorKind::NotFound => return,
            Ok(Err(err)) => return tracing::warn!(error = %err, "cannot read the volume again"),
            Err(_) => return,
        };
        let new = VolumeProps::of(&info);
        let diff = {
            let mut published = object.props();
            let diff = changed(&published.entries(), new.entries());
            *published = new;
            diff
        };
        self.announce(&object.path, "org.qubes.Storage.Volume", diff, except)
            .await;
    }

    /// A volume and the volumes that use it as their source.
    pub async fn refresh_volume_and_dependents(&self, object: &VolumeObject, except: &[&str]) {
        self.refresh_volume(object, except).await;
        for dependent in self.registry.dependents(object) {
            self.refresh_volume(&dependent, &[]).await;
        }
    }

    /// Reads a pool again and announces what changed (except `except`).
    pub async fn refresh_pool(&self, object: &PoolObject, except: &[&str]) {
        let _serial = object.refresh.lock().await;
        let name = object.name.clone();
        let info = match self.blocking(move |engine| engine.pool_info(&name)).await {
            Ok(Ok(info)) => info,
            Ok(Err(err)) if err.kind() == ErrorKind::NotFound => return,
            Ok(Err(err)) => return tracing::warn!(error = %err, "cannot read the pool again"),
            Err(_) => return,
        };
        let new = PoolProps::of(&info);
        let diff = {
            let mut published = object.props();
            let diff = changed(&published.entries(), new.entries());
            *published = new;
            diff
        };
        self.announce(&object.path, "org.qubes.Storage.Pool", diff, except)
            .await;
    }

    /// Every pool (IncludedIn of any pool may change when one comes or goes).
    pub async fn refresh_pools(&self) {
        for pool in self.registry.pools() {
            self.refresh_pool(&pool, &[]).await;
        }
    }

    async fn announce(
        &self,
        path: &OwnedObjectPath,
        iface: &'static str,
        diff: Vec<Entry>,
        except: &[&str],
    ) {
        let diff: Vec<Entry> = diff
            .into_iter()
            .filter(|(name, _)| !except.contains(name))
            .collect();
        if let Err(err) = signals::properties_changed(self.conn(), path, iface, &diff).await {
            tracing::warn!(error = %err, path = %path.as_str(), "cannot emit PropertiesChanged");
        }
    }
}
