//! `qubes-storage pool list|info|create|remove|set`.

use serde_json::json;
use zbus::{OwnedObjectPath, Variant};

use super::Context;
use crate::args::{
    parse_bool, parse_revisions, refused_value, PoolCommand, PoolCreateArgs, PoolProperty,
};
use crate::error::{CliError, Result};
use crate::model::PoolInfo;
use crate::output::{or_dash, print_json, print_text, render_fields, yes_no, Align, Table};
use crate::paths::{MANAGER_IFACE, POOL_IFACE, ROOT_PATH};
use crate::size::format_size;

pub async fn run(context: &Context, command: PoolCommand) -> Result<()> {
    match command {
        PoolCommand::List => list(context).await,
        PoolCommand::Info { pool } => info(context, &pool).await,
        PoolCommand::Create(args) => create(context, args).await,
        PoolCommand::Space { pool } => super::space::pool(context, &pool).await,
        PoolCommand::Remove { pool } => {
            remove(context, &pool).await?;
            match context.json {
                true => print_json(&json!({ "removed": pool })),
                false => Ok(()),
            }
        }
        PoolCommand::Set {
            pool,
            property,
            value,
        } => {
            set(context, &pool, property, &value).await?;
            // With --json, the pool's properties after the change.
            match context.json {
                true => info(context, &pool).await,
                false => Ok(()),
            }
        }
    }
}

/// Every pool (ListPools, then each pool's properties: GetManagedObjects would carry
/// every volume too, and does not fit on the bus at 100 000 volumes), sorted by name.
pub async fn all_pools(context: &Context) -> Result<Vec<PoolInfo>> {
    let paths = context
        .client
        .manager()
        .await?
        .list_pools(&context.client.options())
        .await?;
    let mut pools = Vec::with_capacity(paths.len());
    for path in paths {
        let properties = match context.client.properties(path.as_str(), POOL_IFACE).await {
            Ok(properties) => properties,
            // Removed since it was listed.
            Err(CliError::Service { name, .. }) if name.ends_with(".UnknownObject") => continue,
            Err(error) => return Err(error),
        };
        pools.push(PoolInfo::from_properties(path.as_str(), &properties));
    }
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pools)
}

async fn list(context: &Context) -> Result<()> {
    let pools = all_pools(context).await?;
    if context.json {
        return print_json(&pools);
    }
    print_text(&pool_table(&pools).render())
}

fn pool_table(pools: &[PoolInfo]) -> Table {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("DRIVER", Align::Left),
        ("DIRECTORY", Align::Left),
        ("SIZE", Align::Right),
        ("USED", Align::Right),
        ("USE%", Align::Right),
    ]);
    for pool in pools {
        table.push(vec![
            pool.name.clone(),
            pool.driver.clone(),
            pool.dir_path.clone(),
            or_dash(pool.data_size, format_size),
            or_dash(pool.data_usage, format_size),
            or_dash(pool.used_percent(), |percent| format!("{percent:.0}%")),
        ]);
    }
    table
}

/// One pool's properties.
pub async fn pool_info(context: &Context, pool: &str) -> Result<PoolInfo> {
    let path = context.client.pool_path(pool).await?;
    let properties = context.client.properties(path.as_str(), POOL_IFACE).await?;
    Ok(PoolInfo::from_properties(path.as_str(), &properties))
}

async fn info(context: &Context, pool: &str) -> Result<()> {
    let info = pool_info(context, pool).await?;
    if context.json {
        return print_json(&info);
    }
    print_text(&render_fields(&pool_fields(&info)))
}

fn pool_fields(pool: &PoolInfo) -> Vec<(&'static str, String)> {
    vec![
        ("Name", pool.name.clone()),
        ("Driver", pool.driver.clone()),
        ("Directory", pool.dir_path.clone()),
        ("Size", or_dash(pool.data_size, format_size)),
        ("Used", or_dash(pool.data_usage, format_size)),
        ("Revisions to keep", pool.revisions_to_keep.to_string()),
        ("Ephemeral volatile", yes_no(pool.ephemeral_volatile)),
        ("Setup check", yes_no(pool.setup_check)),
        (
            "Included in",
            pool.included_in.clone().unwrap_or_else(|| "-".to_owned()),
        ),
    ]
}

async fn create(context: &Context, args: PoolCreateArgs) -> Result<()> {
    let dir = std::path::absolute(&args.dir)
        .map_err(|error| CliError::io(format!("cannot resolve {}", args.dir.display()), error))?;
    let dir = dir
        .to_str()
        .ok_or_else(|| CliError::Usage(format!("{} is not valid UTF-8", dir.display())))?
        .to_owned();
    let mut options = context.client.options();
    options.insert("dir_path", Variant::from(dir));
    if args.no_setup_check {
        options.insert("setup_check", Variant::from(false));
    }
    if let Some(revisions) = args.revisions_to_keep {
        options.insert("revisions_to_keep", Variant::from(revisions));
    }
    if args.ephemeral_volatile {
        options.insert("ephemeral_volatile", Variant::from(true));
    }
    let body = (args.pool.as_str(), args.driver.as_str(), options);
    let path: OwnedObjectPath = context
        .client
        .call(ROOT_PATH, MANAGER_IFACE, "CreatePool", &body)
        .await
        .map_err(|error| error.with_flag_hint("NotSupported", "setup_check", "--no-setup-check"))?;
    print_path_for_scripts(context, &path)
}

/// With `--json`, a created object's path; people get silence, as with `mkdir`.
pub fn print_path_for_scripts(context: &Context, path: &OwnedObjectPath) -> Result<()> {
    if context.json {
        return print_json(&json!({ "path": path.as_str() }));
    }
    Ok(())
}

async fn remove(context: &Context, pool: &str) -> Result<()> {
    let body = (pool, context.client.options());
    context
        .client
        .call(ROOT_PATH, MANAGER_IFACE, "RemovePool", &body)
        .await
}

async fn set(context: &Context, pool: &str, property: PoolProperty, value: &str) -> Result<()> {
    let parsed = match property {
        PoolProperty::RevisionsToKeep => {
            parse_revisions(value).map(|v| ("RevisionsToKeep", Variant::from(v)))
        }
        PoolProperty::EphemeralVolatile => {
            parse_bool(value).map(|v| ("EphemeralVolatile", Variant::from(v)))
        }
    };
    let object = format!("pool {pool}");
    let (name, value) = parsed.map_err(|error| refused_value(&property, &object, error))?;
    let path = context.client.pool_path(pool).await?;
    context
        .client
        .set_property(path.as_str(), POOL_IFACE, name, value)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_table_shows_dashes_for_unknown_usage() {
        let pool = PoolInfo {
            name: "varlibqubes".into(),
            driver: "file-reflink".into(),
            dir_path: "/var/lib/qubes".into(),
            setup_check: true,
            revisions_to_keep: 1,
            ephemeral_volatile: false,
            data_size: Some(100 << 30),
            data_usage: Some(25 << 30),
            included_in: None,
        };
        let missing = PoolInfo {
            name: "gone".into(),
            data_size: None,
            data_usage: None,
            ..pool.clone()
        };
        assert_eq!(
            pool_table(&[missing, pool]).render(),
            "NAME         DRIVER        DIRECTORY            SIZE      USED  USE%\n\
             gone         file-reflink  /var/lib/qubes          -         -     -\n\
             varlibqubes  file-reflink  /var/lib/qubes  100.0 GiB  25.0 GiB   25%\n"
        );
    }
}
