//! The table of served objects: pools (each with its volumes and an index of which
//! volumes use which as their source) and running jobs. Calls read it to route and to
//! list; only the outbox writes it (`outbox.rs`), as it announces each object's arrival
//! or departure, so the table and the InterfacesAdded / InterfacesRemoved a client has
//! seen never disagree.
//!
//! Every lookup is by key (O(log n) in the pool's size); nothing here scans all
//! volumes except the listings that return all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use qubes_storage_engine::{PoolName, Vid, VolumeRef};

use crate::bus::objects::{JobObject, Object, PoolObject, VolumeObject};
use crate::bus::path::{self, Node};

struct PoolEntry {
    object: Arc<PoolObject>,
    volumes: BTreeMap<Vid, Arc<VolumeObject>>,
    /// Source vid → the vids of the volumes snapshotting it.
    consumers: BTreeMap<Vid, BTreeSet<Vid>>,
}

#[derive(Default)]
struct Tables {
    pools: BTreeMap<PoolName, PoolEntry>,
    jobs: BTreeMap<u64, Arc<JobObject>>,
}

/// The served objects.
#[derive(Default)]
pub struct Registry {
    tables: RwLock<Tables>,
}

impl Registry {
    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pool(&self, name: &PoolName) -> Option<Arc<PoolObject>> {
        self.read().pools.get(name).map(|e| Arc::clone(&e.object))
    }

    pub fn pools(&self) -> Vec<Arc<PoolObject>> {
        self.read()
            .pools
            .values()
            .map(|e| Arc::clone(&e.object))
            .collect()
    }

    pub fn volume(&self, vol: &VolumeRef) -> Option<Arc<VolumeObject>> {
        let tables = self.read();
        tables.pools.get(&vol.pool)?.volumes.get(&vol.vid).cloned()
    }

    /// The volumes of a pool, ordered by vid.
    pub fn volumes_of(&self, pool: &PoolName) -> Vec<Arc<VolumeObject>> {
        self.read()
            .pools
            .get(pool)
            .map(|e| e.volumes.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn job(&self, number: u64) -> Option<Arc<JobObject>> {
        self.read().jobs.get(&number).cloned()
    }

    /// The volumes whose `Source` is `vol` (their IsOutdated follows its commits).
    pub fn dependents(&self, vol: &VolumeRef) -> Vec<Arc<VolumeObject>> {
        let tables = self.read();
        let Some(entry) = tables.pools.get(&vol.pool) else {
            return Vec::new();
        };
        let Some(consumers) = entry.consumers.get(&vol.vid) else {
            return Vec::new();
        };
        consumers
            .iter()
            .filter_map(|vid| entry.volumes.get(vid).cloned())
            .collect()
    }

    /// Every object with an interface, pools and their volumes first, then jobs.
    pub fn objects(&self) -> Vec<Object> {
        let tables = self.read();
        let mut out = Vec::new();
        for entry in tables.pools.values() {
            out.push(Object::Pool(Arc::clone(&entry.object)));
            out.extend(entry.volumes.values().cloned().map(Object::Volume));
        }
        out.extend(tables.jobs.values().cloned().map(Object::Job));
        out
    }

    /// The object at a node, if one with an interface is served there.
    pub fn object_at(&self, node: &Node) -> Option<Object> {
        match node {
            Node::Pool(name) => self.pool(name).map(Object::Pool),
            Node::Volume(vol) => self.volume(vol).map(Object::Volume),
            Node::Job(number) => self.job(*number).map(Object::Job),
            _ => None,
        }
    }

    /// Whether a node exists (what [`Registry::children`] says without listing them:
    /// every call asks, and a pool's volumes node may have 100 000 children).
    pub fn exists(&self, node: &Node) -> bool {
        let tables = self.read();
        match node {
            Node::Ancestor(_) | Node::Manager | Node::Pools | Node::Jobs => true,
            Node::Pool(name) | Node::Volumes(name) => tables.pools.contains_key(name),
            Node::Volume(vol) => tables
                .pools
                .get(&vol.pool)
                .is_some_and(|entry| entry.volumes.contains_key(&vol.vid)),
            Node::Job(number) => tables.jobs.contains_key(number),
        }
    }

    /// The names of a node's children, or `None` when the node does not exist.
    pub fn children(&self, node: &Node) -> Option<Vec<String>> {
        let tables = self.read();
        let names = match node {
            Node::Ancestor(child) => vec![(*child).to_owned()],
            Node::Manager => {
                let mut names = vec!["pools".to_owned()];
                if !tables.jobs.is_empty() {
                    names.push("jobs".to_owned());
                }
                names
            }
            Node::Pools => tables
                .pools
                .keys()
                .map(|name| path::encode_element(name.as_str()))
                .collect(),
            Node::Pool(name) => {
                let entry = tables.pools.get(name)?;
                match entry.volumes.is_empty() {
                    true => Vec::new(),
                    false => vec!["volumes".to_owned()],
                }
            }
            Node::Volumes(name) => tables
                .pools
                .get(name)?
                .volumes
                .keys()
                .map(|vid| path::encode_element(&vid.to_string()))
                .collect(),
            Node::Volume(vol) => {
                tables.pools.get(&vol.pool)?.volumes.get(&vol.vid)?;
                Vec::new()
            }
            Node::Jobs => tables.jobs.keys().map(|n| n.to_string()).collect(),
            Node::Job(number) => {
                tables.jobs.get(number)?;
                Vec::new()
            }
        };
        Some(names)
    }

    /// Serves an object (the outbox, as it announces it).
    pub(crate) fn insert(&self, object: Object) {
        let mut tables = self.write();
        match object {
            Object::Pool(pool) => {
                let entry = PoolEntry {
                    object: pool,
                    volumes: BTreeMap::new(),
                    consumers: BTreeMap::new(),
                };
                tables.pools.insert(entry.object.name.clone(), entry);
            }
            Object::Volume(volume) => {
                let Some(entry) = tables.pools.get_mut(&volume.vol.pool) else {
                    tracing::error!(vid = %volume.vol.vid, "a volume of an unserved pool");
                    return;
                };
                if let Some(source) = volume.values().source.clone() {
                    let consumers = entry.consumers.entry(source).or_default();
                    consumers.insert(volume.vol.vid.clone());
                }
                entry.volumes.insert(volume.vol.vid.clone(), volume);
            }
            Object::Job(job) => {
                tables.jobs.insert(job.number, job);
            }
        }
    }

    /// Stops serving an object (the outbox, as it announces its removal); returns
    /// whether it was served.
    pub(crate) fn remove(&self, object: &Object) -> bool {
        let mut tables = self.write();
        match object {
            Object::Pool(pool) => tables.pools.remove(&pool.name).is_some(),
            Object::Volume(volume) => {
                let Some(entry) = tables.pools.get_mut(&volume.vol.pool) else {
                    return false;
                };
                if let Some(source) = volume.values().source.as_ref() {
                    if let Some(consumers) = entry.consumers.get_mut(source) {
                        consumers.remove(&volume.vol.vid);
                        if consumers.is_empty() {
                            entry.consumers.remove(source);
                        }
                    }
                }
                entry.volumes.remove(&volume.vol.vid).is_some()
            }
            Object::Job(job) => tables.jobs.remove(&job.number).is_some(),
        }
    }
}
