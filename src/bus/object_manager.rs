//! `org.freedesktop.DBus.ObjectManager` at `/org/qubes/Storage`: GetManagedObjects
//! lists every pool, volume and running job with the same properties GetAll returns.
//!
//! It is the one read whose reply grows with the whole service (about 1.5 KiB per
//! volume), so it is built with care:
//!
//! - the outbox takes the snapshot at the reply's place in the sequence of
//!   announcements — only `Arc` references to each object's announced values, a few
//!   milliseconds for 10 000 volumes — and later signals wait until the reply is out,
//!   so a client that applies the signals after the reply is never behind;
//! - the body is serialised on the blocking pool straight from those values (a custom
//!   `Serialize`, no intermediate maps), measured first and refused with
//!   `LimitsExceeded` if it would not fit on the bus (`reply.rs`);
//! - at most `LARGE_READS` (`service.rs`) are built at a time, so concurrent callers cannot
//!   multiply the memory a reply needs, and one at a time per user other than root
//!   (`admission.rs`), so one user's stream of them cannot keep the others waiting;
//!   after a large reply is sent its memory is given back (`memory.rs`). The waiting,
//!   the snapshot in the sequence and the building off it are `Service::large_read`,
//!   which Pool.ListVolumes shares.
//!
//! InterfacesAdded / InterfacesRemoved are sent by the outbox as objects come and go.

use std::collections::HashMap;
use std::sync::Arc;

use qubes_storage_engine::{Engine, VolumeRef};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use zbus::{OwnedObjectPath, OwnedVariant, Type, Variant};

use crate::bus::call::{Answer, Call};
use crate::bus::error::{quote, BusError, BusResult, Standard};
use crate::bus::interfaces::{JOB, POOL, VOLUME};
use crate::bus::live;
use crate::bus::objects::{JobObject, Object, PoolObject, VolumeObject};
use crate::bus::reply;
use crate::bus::service::Service;
use crate::bus::values::{Entry, JobProgress, PoolValues, VolumeValues};

/// Answers a call of `member` of the ObjectManager.
pub async fn answer(svc: &Arc<Service>, call: &Call, member: &str) -> BusResult<Answer> {
    match member {
        "GetManagedObjects" => get_managed_objects(svc, call).await,
        _ => Err(BusError::standard(
            Standard::UnknownMethod,
            format!(
                "org.freedesktop.DBus.ObjectManager has no method {}",
                quote(member)
            ),
        )),
    }
}

async fn get_managed_objects(svc: &Arc<Service>, call: &Call) -> BusResult<Answer> {
    svc.large_read(
        call,
        |registry| -> Vec<Snapshot> { registry.objects().into_iter().map(Snapshot::of).collect() },
        |snapshot, engine, header| {
            let body = ManagedObjects::read(snapshot, engine);
            reply::build(header, &(body,), "GetManagedObjects")
        },
    )
    .await
}

/// One object and the values it had announced when the snapshot was taken.
enum Snapshot {
    Pool(Arc<PoolObject>, Arc<PoolValues>),
    Volume(Arc<VolumeObject>, Arc<VolumeValues>),
    Job(Arc<JobObject>, JobProgress),
}

impl Snapshot {
    fn of(object: Object) -> Snapshot {
        match object {
            Object::Pool(p) => {
                let values = p.values();
                Snapshot::Pool(p, values)
            }
            Object::Volume(v) => {
                let values = v.values();
                Snapshot::Volume(v, values)
            }
            Object::Job(j) => {
                let progress = j.announced();
                Snapshot::Job(j, progress)
            }
        }
    }

    fn path(&self) -> &OwnedObjectPath {
        match self {
            Snapshot::Pool(p, _) => &p.path,
            Snapshot::Volume(v, _) => &v.path,
            Snapshot::Job(j, _) => &j.path,
        }
    }

    fn interface(&self) -> &'static str {
        match self {
            Snapshot::Pool(..) => POOL,
            Snapshot::Volume(..) => VOLUME,
            Snapshot::Job(..) => JOB,
        }
    }

    fn entries(&self) -> Vec<Entry<'_>> {
        match self {
            Snapshot::Pool(_, values) => values.entries(),
            Snapshot::Volume(v, values) => values.entries(&v.vol),
            Snapshot::Job(j, progress) => {
                let mut entries = j.identity.entries();
                entries.extend(progress.entries());
                entries
            }
        }
    }

    /// The live property of the object (read now), if it has one; volumes' usage comes
    /// from `usages`, read for their whole pool at once.
    fn live(&self, engine: &Engine, usages: &Usages) -> Option<Entry<'static>> {
        match self {
            Snapshot::Pool(p, _) => live::pool_usage_details(engine, &p.name)
                .ok()
                .map(|v| ("UsageDetails", v)),
            Snapshot::Volume(v, _) => match usages.get(&v.vol) {
                Some(usage) => Some(("Usage", Variant::from(*usage))),
                None => live::volume_usage(engine, &v.vol)
                    .ok()
                    .map(|u| ("Usage", u)),
            },
            Snapshot::Job(..) => None,
        }
    }
}

/// The body of GetManagedObjects: `a{oa{sa{sv}}}`, serialised from the snapshot.
struct ManagedObjects {
    items: Vec<(Snapshot, Option<Entry<'static>>)>,
}

/// Volumes' `Usage`, by volume.
type Usages = HashMap<VolumeRef, u64>;

impl ManagedObjects {
    fn read(snapshot: Vec<Snapshot>, engine: &Engine) -> ManagedObjects {
        let usages = usages_of_pools(&snapshot, engine);
        let items = snapshot
            .into_iter()
            .map(|s| {
                let live = s.live(engine, &usages);
                (s, live)
            })
            .collect();
        ManagedObjects { items }
    }
}

/// The usage of every volume of the snapshot's pools, one pass over each pool's
/// directories (`Engine::volume_infos`) instead of a lookup per volume.
fn usages_of_pools(snapshot: &[Snapshot], engine: &Engine) -> Usages {
    let mut usages = Usages::new();
    for pool in snapshot.iter().filter_map(|s| match s {
        Snapshot::Pool(p, _) => Some(&p.name),
        _ => None,
    }) {
        let Ok(infos) = engine.volume_infos(pool) else {
            continue;
        };
        for info in infos.into_iter().flatten() {
            let vol = VolumeRef {
                pool: info.pool,
                vid: info.config.vid,
            };
            usages.insert(vol, info.usage);
        }
    }
    usages
}

impl Type for ManagedObjects {
    const SIGNATURE: &'static zbus::Signature =
        <HashMap<OwnedObjectPath, HashMap<String, HashMap<String, OwnedVariant>>>>::SIGNATURE;
}

impl Serialize for ManagedObjects {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.items.len()))?;
        for item in &self.items {
            map.serialize_entry(item.0.path(), &Interfaces(item))?;
        }
        map.end()
    }
}

/// `a{sa{sv}}` of one object: its one interface.
struct Interfaces<'a>(&'a (Snapshot, Option<Entry<'static>>));

impl Serialize for Interfaces<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0 .0.interface(), &Properties(self.0))?;
        map.end()
    }
}

/// `a{sv}` of one object's interface.
struct Properties<'a>(&'a (Snapshot, Option<Entry<'static>>));

impl Serialize for Properties<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (snapshot, live) = self.0;
        let entries = snapshot.entries();
        let mut map =
            serializer.serialize_map(Some(entries.len() + usize::from(live.is_some())))?;
        for (name, value) in entries.iter().chain(live.iter()) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}
