//! `qubes-storage status`: the service's version, drivers and features, and how many
//! pools and volumes it holds — a quick "is it there and what can it do".

use serde::Serialize;

use super::Context;
use crate::error::Result;
use crate::output::{print_json, print_text, render_fields};

#[derive(Debug, Serialize)]
struct Status {
    version: String,
    drivers: Vec<String>,
    features: Vec<String>,
    pools: usize,
    volumes: usize,
}

/// Counted from ListPools and each pool's ListVolumes (paths only): GetManagedObjects
/// would carry every volume's properties, and does not fit on the bus at 100 000.
pub async fn status(context: &Context) -> Result<()> {
    let manager = context.client.manager().await?;
    let options = context.client.options();
    let pools = manager.list_pools(&options).await?;
    let mut volumes = 0;
    for pool in &pools {
        volumes += context.client.volumes_of(pool).await?.len();
    }
    let status = Status {
        version: manager.version().await?,
        drivers: manager.drivers().await?,
        features: manager.features().await?,
        pools: pools.len(),
        volumes,
    };
    if context.json {
        return print_json(&status);
    }
    print_text(&render_fields(&[
        ("Version", status.version),
        ("Drivers", status.drivers.join(" ")),
        ("Features", status.features.join(" ")),
        ("Pools", status.pools.to_string()),
        ("Volumes", status.volumes.to_string()),
    ]))
}
