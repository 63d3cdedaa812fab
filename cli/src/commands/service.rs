//! `qubes-storage status`: the service's version, drivers and features, and how many
//! pools and volumes it holds — a quick "is it there and what can it do".

use serde::Serialize;

use super::Context;
use crate::error::Result;
use crate::output::{print_json, print_text, render_fields};
use crate::paths::{POOL_IFACE, VOLUME_IFACE};

#[derive(Debug, Serialize)]
struct Status {
    version: String,
    drivers: Vec<String>,
    features: Vec<String>,
    pools: usize,
    volumes: usize,
}

pub async fn status(context: &Context) -> Result<()> {
    let manager = context.client.manager().await?;
    let objects = context.client.managed_objects().await?;
    let count = |interface: &str| {
        objects
            .values()
            .filter(|ifaces| ifaces.contains_key(interface))
            .count()
    };
    let status = Status {
        version: manager.version().await?,
        drivers: manager.drivers().await?,
        features: manager.features().await?,
        pools: count(POOL_IFACE),
        volumes: count(VOLUME_IFACE),
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
