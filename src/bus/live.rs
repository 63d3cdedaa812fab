//! The properties that are read live and never announced (contract: they change with
//! every write of a running VM): a volume's `Usage` (allocated bytes of its current
//! image, one stat) and a pool's `UsageDetails` (statvfs of its directory). They are
//! read off the executor when asked for, and for each object that
//! GetManagedObjects or InterfacesAdded lists.

use std::collections::HashMap;

use qubes_storage_engine::{Engine, PoolInfo, PoolName, VolumeRef};
use zbus::Variant;

use crate::bus::error::BusResult;

/// `Usage` of a volume.
pub fn volume_usage(engine: &Engine, vol: &VolumeRef) -> BusResult<Variant<'static>> {
    Ok(Variant::from(engine.volume_usage(vol)?))
}

/// `UsageDetails` of a pool.
pub fn pool_usage_details(engine: &Engine, pool: &PoolName) -> BusResult<Variant<'static>> {
    Ok(usage_details(&engine.pool_info(pool)?))
}

/// `data_size` and `data_usage` of the pool's file system; absent when the directory
/// is missing.
pub fn usage_details(info: &PoolInfo) -> Variant<'static> {
    let mut details: HashMap<&'static str, Variant<'static>> = HashMap::new();
    if let Some((size, usage)) = info.usage {
        details.insert("data_size", Variant::from(size));
        details.insert("data_usage", Variant::from(usage));
    }
    Variant::from(details)
}
