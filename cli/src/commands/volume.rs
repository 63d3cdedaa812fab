//! `qubes-storage volume list|info|create|start|stop|verify|resize|set|remove`; import,
//! export and clone live in `transfer.rs`, revisions, revert and delta in
//! `revisions.rs`, space in `space.rs`.

use serde_json::json;
use zbus::{OwnedObjectPath, Variant};

use super::pool::print_path_for_scripts;
use super::Context;
use super::{revisions, space, transfer};
use crate::args::{
    parse_bool, parse_revisions, refused_value, StopArgs, VolumeCommand, VolumeCreateArgs,
    VolumeProperty, VolumeRef,
};
use crate::error::{CliError, Result};
use crate::interrupt::Interrupt;
use crate::job_watch::{run_following_job, JobWatch, Labels};
use crate::model::VolumeInfo;
use crate::output::{
    iso_utc, or_dash, print_json, print_text, render_fields, yes_no, Align, Table,
};
use crate::paths::{POOL_IFACE, VOLUME_IFACE};
use crate::proxies::VolumeProxy;
use crate::size::format_size;

pub async fn run(context: &Context, command: VolumeCommand) -> Result<()> {
    match command {
        VolumeCommand::List { pool } => list(context, pool.as_deref()).await,
        VolumeCommand::Info(volume) => info(context, &volume).await,
        VolumeCommand::Create(args) => create(context, args).await,
        VolumeCommand::Start(volume) => start(context, &volume).await,
        VolumeCommand::Stop(args) => stop(context, args).await,
        VolumeCommand::Verify(volume) => verify(context, &volume).await,
        VolumeCommand::Revert { volume, revision } => {
            revisions::revert(context, &volume, revision.id()).await
        }
        VolumeCommand::Resize {
            volume,
            size,
            allow_shrink,
        } => {
            resize(context, &volume, size, allow_shrink).await?;
            note_if_larger_than_pool(context, &volume.pool, size).await;
            state_for_scripts(context, &volume).await
        }
        VolumeCommand::Import(args) => {
            let volume = args.volume.clone();
            transfer::import(context, args).await?;
            state_for_scripts(context, &volume).await
        }
        VolumeCommand::Export(args) => transfer::export(context, args).await,
        VolumeCommand::Clone(args) => {
            let target = VolumeRef {
                pool: args.dst_pool.clone(),
                vid: args.dst_vid.clone(),
            };
            transfer::clone(context, args).await?;
            state_for_scripts(context, &target).await
        }
        VolumeCommand::Revisions(volume) => revisions::list(context, &volume).await,
        VolumeCommand::Describe {
            volume,
            revision,
            text,
        } => {
            let text = Variant::from(text);
            revisions::set_details(context, &volume, revision, "description", text).await?;
            state_for_scripts(context, &volume).await
        }
        VolumeCommand::Pin { volume, revision } => {
            let pin = Variant::from(true);
            revisions::set_details(context, &volume, revision.id(), "pinned", pin).await?;
            state_for_scripts(context, &volume).await
        }
        VolumeCommand::Unpin { volume, revision } => {
            let unpin = Variant::from(false);
            revisions::set_details(context, &volume, revision.id(), "pinned", unpin).await?;
            state_for_scripts(context, &volume).await
        }
        VolumeCommand::Space(volume) => space::volume(context, &volume).await,
        VolumeCommand::Delta(args) => revisions::delta(context, args).await,
        VolumeCommand::Set {
            volume,
            property,
            value,
        } => {
            set(context, &volume, property, &value).await?;
            state_for_scripts(context, &volume).await
        }
        VolumeCommand::Remove(volume) => {
            call_simple(context, &volume, "Remove").await?;
            match context.json {
                true => {
                    print_json(&json!({ "removed": { "pool": volume.pool, "vid": volume.vid } }))
                }
                false => Ok(()),
            }
        }
    }
}

/// With `--json`, a changed volume's properties after the change (as `volume info
/// --json` prints them), so a script needs no second call; people get silence, as
/// with `mv`.
async fn state_for_scripts(context: &Context, volume: &VolumeRef) -> Result<()> {
    match context.json {
        true => info(context, volume).await,
        false => Ok(()),
    }
}

/// Every volume (of one pool, or all), from one `GetManagedObjects` — or, when the
/// service has more objects than one message carries (100 000 volumes), each pool's
/// ListVolumes and each volume's properties — sorted.
async fn all_volumes(context: &Context, pool: Option<&str>) -> Result<Vec<VolumeInfo>> {
    if let Some(pool) = pool {
        context.client.pool_path(pool).await?;
    }
    let objects = match context.client.managed_objects().await {
        Ok(objects) => objects,
        Err(error) if error.is_listing_too_large() => {
            return volumes_one_by_one(context, pool).await;
        }
        Err(error) => return Err(error),
    };
    let mut volumes: Vec<VolumeInfo> = objects
        .iter()
        .filter_map(|(path, interfaces)| {
            let properties = interfaces.get(VOLUME_IFACE)?;
            Some(VolumeInfo::from_properties(path.as_str(), properties))
        })
        .filter(|volume| pool.is_none_or(|pool| volume.pool == pool))
        .collect();
    volumes.sort_by(|a, b| (&a.pool, &a.vid).cmp(&(&b.pool, &b.vid)));
    Ok(volumes)
}

/// Calls in flight at once while volumes are read one by one.
const READS_IN_FLIGHT: usize = 32;

/// Every volume of `pool` (or all pools), read one by one, sorted.
async fn volumes_one_by_one(context: &Context, pool: Option<&str>) -> Result<Vec<VolumeInfo>> {
    use futures_util::{StreamExt, TryStreamExt};
    let pools = match pool {
        Some(pool) => vec![context.client.pool_path(pool).await?],
        None => {
            let manager = context.client.manager().await?;
            manager.list_pools(&context.client.options()).await?
        }
    };
    let mut paths = Vec::new();
    for pool in &pools {
        paths.extend(context.client.volumes_of(pool).await?);
    }
    let read = |path: OwnedObjectPath| async move {
        match context.client.properties(path.as_str(), VOLUME_IFACE).await {
            Ok(properties) => Ok(Some(VolumeInfo::from_properties(
                path.as_str(),
                &properties,
            ))),
            // Removed since it was listed.
            Err(CliError::Service { name, .. }) if name.ends_with(".UnknownObject") => Ok(None),
            Err(error) => Err(error),
        }
    };
    let read: Vec<Option<VolumeInfo>> = futures_util::stream::iter(paths)
        .map(read)
        .buffer_unordered(READS_IN_FLIGHT)
        .try_collect()
        .await?;
    let mut volumes: Vec<VolumeInfo> = read.into_iter().flatten().collect();
    volumes.sort_by(|a, b| (&a.pool, &a.vid).cmp(&(&b.pool, &b.vid)));
    Ok(volumes)
}

async fn list(context: &Context, pool: Option<&str>) -> Result<()> {
    let volumes = all_volumes(context, pool).await?;
    if context.json {
        return print_json(&volumes);
    }
    print_text(&volume_table(&volumes).render())
}

fn volume_table(volumes: &[VolumeInfo]) -> Table {
    let mut table = Table::new(&[
        ("POOL", Align::Left),
        ("VID", Align::Left),
        ("SIZE", Align::Right),
        ("USAGE", Align::Right),
        ("MODE", Align::Left),
        ("STATE", Align::Left),
        ("REVISIONS", Align::Right),
    ]);
    for volume in volumes {
        table.push(vec![
            volume.pool.clone(),
            volume.vid.clone(),
            format_size(volume.size),
            format_size(volume.usage),
            volume.mode(),
            volume.state(),
            volume.revisions.len().to_string(),
        ]);
    }
    table
}

/// The volume's object path and its properties.
async fn fetch(context: &Context, volume: &VolumeRef) -> Result<(OwnedObjectPath, VolumeInfo)> {
    context.client.volume_info(&volume.pool, &volume.vid).await
}

async fn info(context: &Context, volume: &VolumeRef) -> Result<()> {
    let (_, info) = fetch(context, volume).await?;
    if context.json {
        return print_json(&info);
    }
    print_text(&render_fields(&volume_fields(&info)))
}

fn volume_fields(volume: &VolumeInfo) -> Vec<(&'static str, String)> {
    let newest = volume.revisions.last().map(|revision| revision.timestamp);
    vec![
        ("Pool", volume.pool.clone()),
        ("Vid", volume.vid.clone()),
        (
            "Size",
            format!("{} ({} bytes)", format_size(volume.size), volume.size),
        ),
        ("Usage", format_size(volume.usage)),
        ("Rw", yes_no(volume.rw)),
        ("Snap on start", yes_no(volume.snap_on_start)),
        ("Save on stop", yes_no(volume.save_on_stop)),
        (
            "Source",
            volume.source.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        ("Ephemeral", yes_no(volume.ephemeral)),
        ("Revisions to keep", volume.revisions_to_keep.to_string()),
        ("Snapshots disabled", yes_no(volume.snapshots_disabled)),
        ("State", volume.state()),
        ("Revisions", volume.revisions.len().to_string()),
        ("Newest revision", or_dash(newest, iso_utc)),
        ("Block device", block_device(volume)),
    ]
}

/// The image handed to the VM exists only while the volume is started.
fn block_device(volume: &VolumeInfo) -> String {
    match volume.started {
        true => volume.block_device_path.clone(),
        false => "- (made at start)".to_owned(),
    }
}

async fn create(context: &Context, args: VolumeCreateArgs) -> Result<()> {
    let pool = context.client.pool_path(&args.volume.pool).await?;
    let mut options = context.client.options();
    if args.adopt {
        options.insert("adopt", Variant::from(true));
    }
    let body = (args.volume.vid.as_str(), volume_config(&args), options);
    let path: OwnedObjectPath = context
        .client
        .call(pool.as_str(), POOL_IFACE, "CreateVolume", &body)
        .await?;
    if let Some(size) = args.size {
        note_if_larger_than_pool(context, &args.volume.pool, size).await;
    }
    print_path_for_scripts(context, &path)
}

/// A volume larger than its pool's whole filesystem is allowed (images are sparse, as in
/// Qubes), but it is more often a typo (`1E` for `1G`) than a plan: said on stderr,
/// after the change. Nothing is said when the pool's size cannot be read.
async fn note_if_larger_than_pool(context: &Context, pool: &str, size: u64) {
    let Ok(info) = super::pool::pool_info(context, pool).await else {
        return;
    };
    if let Some(filesystem) = info.data_size.filter(|&filesystem| size > filesystem) {
        crate::output::say(format_args!(
            "note: {} is more than the whole filesystem of pool {pool} ({}); the image is \
             sparse, but writes fail once the filesystem is full",
            format_size(size),
            format_size(filesystem)
        ));
    }
}

/// The `config` map of CreateVolume: only what was given, so the pool's defaults apply.
fn volume_config(args: &VolumeCreateArgs) -> crate::proxies::Options {
    let mut config = crate::proxies::Options::new();
    if let Some(size) = args.size {
        config.insert("size", Variant::from(size));
    }
    let flags = [
        ("rw", args.rw),
        ("snap_on_start", args.snap_on_start),
        ("save_on_stop", args.save_on_stop),
        ("ephemeral", args.ephemeral),
    ];
    for (key, flag) in flags.into_iter().filter(|(_, flag)| *flag) {
        config.insert(key, Variant::from(flag));
    }
    if let Some(source) = &args.source {
        config.insert("source", Variant::from(source.clone()));
    }
    if let Some(revisions) = args.revisions_to_keep {
        config.insert("revisions_to_keep", Variant::from(revisions));
    }
    config
}

/// Start prints the image for the VM on stdout (scripts capture it); a start that
/// changed nothing says so on stderr.
async fn start(context: &Context, volume: &VolumeRef) -> Result<()> {
    let (path, before) = fetch(context, volume).await?;
    let options = (context.client.options(),);
    let device: String = context
        .client
        .call(path.as_str(), VOLUME_IFACE, "Start", &options)
        .await?;
    if context.json {
        return print_json(&json!({ "block_device_path": device, "was_started": before.started }));
    }
    if before.started {
        crate::output::say(format_args!(
            "{}:{} was already started; nothing changed",
            volume.pool, volume.vid
        ));
    }
    print_text(&format!("{device}\n"))
}

/// Stop, then one sentence on what happened to the session's writes. `--describe` and
/// `--pin` give the revision the stop keeps its details.
async fn stop(context: &Context, args: StopArgs) -> Result<()> {
    let volume = &args.volume;
    let (path, before) = fetch(context, volume).await?;
    let mut options = context.client.options();
    if let Some(text) = args.describe {
        options.insert("revision_description", Variant::from(text));
    }
    if args.pin {
        options.insert("revision_pinned", Variant::from(true));
    }
    let options = (options,);
    context
        .client
        .call::<_, ()>(path.as_str(), VOLUME_IFACE, "Stop", &options)
        .await?;
    if context.json {
        return print_json(&json!({ "was_started": before.started }));
    }
    let after = fetch(context, volume).await.map(|(_, info)| info).ok();
    print_text(&format!(
        "{}\n",
        stop_outcome(volume, &before, after.as_ref())
    ))
}

/// What a stop did, from the volume before and (when it could be read) after.
fn stop_outcome(volume: &VolumeRef, before: &VolumeInfo, after: Option<&VolumeInfo>) -> String {
    let name = format!("{}:{}", volume.pool, volume.vid);
    if !before.started {
        return format!("{name} was not started; nothing changed");
    }
    if !before.save_on_stop {
        return format!("stopped {name}; its writes are discarded (it does not save on stop)");
    }
    if before.snapshots_disabled {
        return format!(
            "stopped {name}; the VM's writes are its committed image (snapshots disabled)"
        );
    }
    let kept = after.and_then(|after| after.revision_new_since(before));
    match (kept, after) {
        (Some(revision), _) => format!(
            "stopped {name}; changes committed, the previous image kept as revision {}",
            revision.id
        ),
        (None, Some(after)) if after.revisions_to_keep == 0 => format!(
            "stopped {name}; changes committed, the previous image not kept (it keeps no revisions)"
        ),
        (None, _) => format!("stopped {name}; changes committed"),
    }
}

/// A method taking only options and returning nothing (Remove).
async fn call_simple(context: &Context, volume: &VolumeRef, method: &str) -> Result<()> {
    let path = context
        .client
        .volume_path(&volume.pool, &volume.vid)
        .await?;
    let options = (context.client.options(),);
    context
        .client
        .call(path.as_str(), VOLUME_IFACE, method, &options)
        .await
}

async fn verify(context: &Context, volume: &VolumeRef) -> Result<()> {
    let path = context
        .client
        .volume_path(&volume.pool, &volume.vid)
        .await?;
    let proxy = VolumeProxy::builder(context.client.connection())
        .path(path)
        .build()
        .await?;
    let valid = proxy.verify(&context.client.options()).await?;
    if context.json {
        print_json(&json!({ "valid": valid }))?;
    }
    match valid {
        true if context.json => Ok(()),
        true => print_text(&format!(
            "{}:{}: its files are in place\n",
            volume.pool, volume.vid
        )),
        false => Err(CliError::Failed(format!(
            "volume {}:{} failed verification",
            volume.pool, volume.vid
        ))),
    }
}

/// Resize; on a pool without reflinks a large resize copies, and publishes a job.
async fn resize(
    context: &Context,
    volume: &VolumeRef,
    size: u64,
    allow_shrink: bool,
) -> Result<()> {
    let path = context
        .client
        .volume_path(&volume.pool, &volume.vid)
        .await?;
    let mut options = context.client.options();
    if allow_shrink {
        options.insert("allow_shrink", Variant::from(true));
    }
    let interrupt = Interrupt::install();
    let name = format!("{}:{}", volume.pool, volume.vid);
    let labels = Labels::copy_then_commit(format!("resize {name}"), &name);
    let watch = JobWatch::subscribe(
        &context.client,
        path.as_str(),
        "Resize",
        labels,
        context.progress,
    )
    .await?;
    let body = (size, options);
    let call = context
        .client
        .call(path.as_str(), VOLUME_IFACE, "Resize", &body);
    let result = run_following_job(&context.client, watch, &interrupt, call).await;
    result.map_err(|error| match allow_shrink {
        true => error,
        false => error.with_flag_hint("InvalidArgument", "allow_shrink", "--allow-shrink"),
    })
}

async fn set(
    context: &Context,
    volume: &VolumeRef,
    property: VolumeProperty,
    value: &str,
) -> Result<()> {
    let parsed = match property {
        VolumeProperty::Rw => parse_bool(value).map(|v| ("Rw", Variant::from(v))),
        VolumeProperty::RevisionsToKeep => {
            parse_revisions(value).map(|v| ("RevisionsToKeep", Variant::from(v)))
        }
        VolumeProperty::Ephemeral => parse_bool(value).map(|v| ("Ephemeral", Variant::from(v))),
    };
    let object = format!("{}:{}", volume.pool, volume.vid);
    let (name, value) = parsed.map_err(|error| refused_value(&property, &object, error))?;
    let path = context
        .client
        .volume_path(&volume.pool, &volume.vid)
        .await?;
    context
        .client
        .set_property(path.as_str(), VOLUME_IFACE, name, value)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use crate::model::Revision;
    use clap::Parser;

    fn create_args(args: &[&str]) -> VolumeCreateArgs {
        let argv = ["qubes-storage", "volume", "create", "p", "appvms/a/private"];
        let cli = Cli::try_parse_from(argv.iter().chain(args)).unwrap();
        let Command::Volume(VolumeCommand::Create(create)) = cli.command else {
            unreachable!()
        };
        create
    }

    #[test]
    fn config_holds_only_what_was_given() {
        let config = volume_config(&create_args(&["--size", "2G", "--rw"]));
        let mut keys: Vec<&str> = config.keys().copied().collect();
        keys.sort_unstable();
        assert_eq!(keys, ["rw", "size"]);
        assert_eq!(config["size"], Variant::from(2u64 << 30));
    }

    #[test]
    fn snapshot_config_names_its_source() {
        let config = volume_config(&create_args(&[
            "--snap-on-start",
            "--source",
            "vm-templates/t/root",
        ]));
        assert_eq!(config["snap_on_start"], Variant::from(true));
        assert_eq!(config["source"], Variant::from("vm-templates/t/root"));
    }

    fn private_volume() -> VolumeInfo {
        VolumeInfo {
            pool: "p".into(),
            vid: "appvms/work/private".into(),
            name: "private".into(),
            size: 2 << 30,
            usage: 512 << 20,
            rw: true,
            snap_on_start: false,
            save_on_stop: true,
            source: None,
            revisions_to_keep: 1,
            ephemeral: false,
            snapshots_disabled: false,
            is_dirty: false,
            is_outdated: false,
            started: false,
            revisions: vec![Revision {
                id: "1".into(),
                timestamp: 0,
                ..Revision::default()
            }],
            block_device_path: "/p/appvms/work/private-dirty.img".into(),
        }
    }

    fn private_ref() -> VolumeRef {
        VolumeRef {
            pool: "p".into(),
            vid: "appvms/work/private".into(),
        }
    }

    #[test]
    fn stopping_a_stopped_volume_says_nothing_changed() {
        let outcome = stop_outcome(&private_ref(), &private_volume(), None);
        assert_eq!(
            outcome,
            "p:appvms/work/private was not started; nothing changed"
        );
    }

    #[test]
    fn stopping_an_origin_names_the_revision_it_kept() {
        let before = VolumeInfo {
            started: true,
            ..private_volume()
        };
        let mut after = private_volume();
        after.revisions.push(Revision {
            id: "2".into(),
            timestamp: 5,
            ..Revision::default()
        });
        assert_eq!(
            stop_outcome(&private_ref(), &before, Some(&after)),
            "stopped p:appvms/work/private; changes committed, the previous image kept as revision 2"
        );
    }

    /// Revision 1 is pinned, 2 is not, and the volume keeps no revisions any more: the
    /// stop kept nothing and pruned 2, which leaves 1 newest — not kept by this stop.
    #[test]
    fn a_stop_that_keeps_no_revision_says_so_though_an_older_one_is_left_newest() {
        let revision = |id: &str| Revision {
            id: id.into(),
            timestamp: 5,
            ..Revision::default()
        };
        let before = VolumeInfo {
            started: true,
            revisions_to_keep: 0,
            revisions: vec![revision("1"), revision("2")],
            ..private_volume()
        };
        let after = VolumeInfo {
            started: false,
            revisions: vec![revision("1")],
            ..before.clone()
        };
        assert_eq!(
            stop_outcome(&private_ref(), &before, Some(&after)),
            "stopped p:appvms/work/private; changes committed, the previous image not kept (it keeps no revisions)"
        );
    }

    #[test]
    fn stopping_a_volatile_volume_says_its_writes_are_gone() {
        let before = VolumeInfo {
            started: true,
            save_on_stop: false,
            ..private_volume()
        };
        let outcome = stop_outcome(&private_ref(), &before, None);
        assert!(outcome.ends_with("its writes are discarded (it does not save on stop)"));
    }

    #[test]
    fn block_device_is_shown_only_while_started() {
        assert_eq!(block_device(&private_volume()), "- (made at start)");
        let started = VolumeInfo {
            started: true,
            ..private_volume()
        };
        assert_eq!(block_device(&started), "/p/appvms/work/private-dirty.img");
    }

    #[test]
    fn volume_table_shows_sizes_mode_and_state() {
        let volume = private_volume();
        assert_eq!(
            volume_table(&[volume]).render(),
            "POOL  VID                     SIZE      USAGE  MODE     STATE    REVISIONS\n\
             p     appvms/work/private  2.0 GiB  512.0 MiB  rw,save  stopped          1\n"
        );
    }
}
