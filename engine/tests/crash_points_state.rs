//! Crash-point tests of the state directory (issue 8: a snapshot plus a journal per
//! pool): the runner is aborted after every durable step of
//!
//! * a compaction (`compact`: the snapshot is replaced, then the journal emptied) of a
//!   pool whose journal holds every kind of change — volumes created, a property
//!   changed, a volume removed, a snapshot volume, the pool's options;
//! * the same compaction of a state directory of earlier versions (one `<pool>.json`
//!   holding pool and volumes, no journal): the migration;
//! * a CreateVolume on such a state directory (its first change creates the journal);
//!
//! and after each crash a fresh engine must load exactly the configuration of before
//! (or, for the create, of before or after), recover, and work on. The driver is
//! `crash_support`'s. Needs root and the `failpoints` feature.

#![cfg(feature = "failpoints")]

mod common_fs;
mod crash_support;

use std::collections::BTreeMap;

use common_fs::FsType;
use crash_support::{
    build_origin_history, crash_after_every_step, create_origin, ctx, nothing, session, some, vref,
    Case, World, IMAGE_SIZE, POOL,
};
use qubes_storage_engine::{
    Engine, ErrorKind, PoolConfig, PoolName, RevisionsToKeep, VolumeConfig, VolumeSpec,
};

const VID: &str = "appvms/vm1/private";
const OTHER: &str = "appvms/vm5/private";
const GONE: &str = "appvms/vm6/private";
const SNAPSHOT: &str = "appvms/vm7/root";
const NEW: &str = "appvms/vm8/private";

/// What the state directory holds: the pool's options and every volume's config.
type Configs = (PoolConfig, BTreeMap<String, VolumeConfig>);

fn configs(engine: &Engine) -> Configs {
    let pool = PoolName::parse(POOL).unwrap();
    let volumes = engine
        .volume_vids(&pool)
        .unwrap()
        .into_iter()
        .map(|vid| {
            let info = engine.volume_info(&vref(&vid.to_string())).unwrap();
            (vid.to_string(), info.config)
        })
        .collect();
    (engine.pool_config(&pool).unwrap(), volumes)
}

fn expected_file(w: &World) -> std::path::PathBuf {
    w.run_dir.join("expected-configs.json")
}

fn save_expected(w: &World, engine: &Engine) {
    let (pool, volumes) = configs(engine);
    let text = serde_json::to_string(&(pool, volumes)).unwrap();
    std::fs::write(expected_file(w), text).unwrap();
}

fn expected(w: &World) -> Configs {
    serde_json::from_str(&std::fs::read_to_string(expected_file(w)).unwrap()).unwrap()
}

/// A journal with every kind of change: the origin's history, two more volumes (one
/// removed again), a snapshot volume, a property write and a pool option.
fn build_mixed_history(w: &World, engine: &Engine) {
    build_origin_history(w, engine, VID);
    create_origin(engine, OTHER);
    session(engine, OTHER, 'A');
    create_origin(engine, GONE);
    engine.remove_volume(&vref(GONE), &ctx()).expect("remove");
    let snapshot = VolumeSpec {
        snap_on_start: true,
        source: Some(vref(VID).vid),
        ..Default::default()
    };
    engine
        .create_volume(&vref(SNAPSHOT), snapshot, &ctx())
        .expect("create snapshot volume");
    engine
        .set_revisions_to_keep(&vref(OTHER), RevisionsToKeep::new(2).unwrap())
        .expect("set revisions_to_keep");
    let pool = PoolName::parse(POOL).unwrap();
    engine.set_pool_ephemeral_volatile(&pool, true).unwrap();
    save_expected(w, engine);
}

/// The same state as a state directory of earlier versions holds it: one pretty
/// `<pool>.json` with the pool and its volumes, no journal.
fn rewrite_in_the_old_format(w: &World) {
    let (pool, volumes) = expected(w);
    let old = serde_json::json!({ "pool": pool, "volumes": volumes });
    let pools = w.state_dir.join("pools");
    std::fs::write(
        pools.join(format!("{POOL}.json")),
        serde_json::to_string_pretty(&old).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(pools.join(format!("{POOL}.journal"))).unwrap();
}

fn build_old_format_history(w: &World, engine: &Engine) {
    build_mixed_history(w, engine);
    rewrite_in_the_old_format(w);
}

#[track_caller]
fn assert_configs_as_before(w: &World, when: &str) {
    let engine = w.engine();
    let (pool, volumes) = configs(&engine);
    let (want_pool, want_volumes) = expected(w);
    assert_eq!(pool, want_pool, "{when}: the pool's options");
    assert_eq!(
        volumes, want_volumes,
        "{when}: every volume's configuration"
    );
}

/// After the recovery the configuration is as before, a session of the origin commits,
/// and a new volume can be registered and is still there after a restart.
fn works_on(w: &World, engine: &Engine) {
    assert_configs_as_before(w, "before the further work");
    session(engine, VID, 'F');
    assert_eq!(w.clean(VID), some("F"));
    create_origin(engine, "appvms/vm9/private");
    let again = w.engine();
    assert!(again.volume_info(&vref("appvms/vm9/private")).is_ok());
    assert_eq!(
        again.volume_info(&vref(GONE)).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

fn compact_case(name: &'static str, history: fn(&World, &Engine)) -> Case {
    Case {
        name,
        vid: VID,
        history,
        args: |_| vec!["compact".into()],
        check_crashed: |w| assert_configs_as_before(w, "after the crash"),
        check_recovered: |w| assert_configs_as_before(w, "after the recovery"),
        complete: nothing,
        further: works_on,
    }
}

/// The new volume is registered with its files, or not registered at all; the others
/// are as before either way.
fn check_create_on_old_format(w: &World) {
    let engine = w.engine();
    let (pool, mut volumes) = configs(&engine);
    let (want_pool, want_volumes) = expected(w);
    assert_eq!(pool, want_pool);
    if let Some(new) = volumes.remove(NEW) {
        assert_eq!(new.size, IMAGE_SIZE);
        assert_eq!(w.clean(NEW), some("E"), "a registered volume has its image");
    }
    assert_eq!(volumes, want_volumes, "the other volumes are untouched");
}

fn create_on_old_format_case() -> Case {
    Case {
        name: "create-on-old-format",
        vid: NEW,
        history: build_old_format_history,
        args: |_| vec!["create".into(), IMAGE_SIZE.to_string()],
        check_crashed: check_create_on_old_format,
        check_recovered: check_create_on_old_format,
        complete: |w, engine| {
            if engine.volume_info(&vref(NEW)).is_err() {
                create_origin(engine, NEW);
            }
            assert_eq!(w.clean(NEW), some("E"));
        },
        further: |w, engine| {
            let again = w.engine();
            assert!(again.volume_info(&vref(NEW)).is_ok(), "registered for good");
            session(engine, NEW, 'A');
            assert_eq!(w.clean(NEW), some("A"));
        },
    }
}

#[test]
fn btrfs_compact_crash_keeps_every_configuration() {
    crash_after_every_step(FsType::Btrfs, compact_case("compact", build_mixed_history));
}

#[test]
fn ext4_compact_crash_keeps_every_configuration() {
    crash_after_every_step(FsType::Ext4, compact_case("compact", build_mixed_history));
}

#[test]
fn btrfs_compact_crash_of_an_old_state_directory_keeps_every_configuration() {
    let case = compact_case("compact-old-format", build_old_format_history);
    crash_after_every_step(FsType::Btrfs, case);
}

#[test]
fn btrfs_create_crash_on_an_old_state_directory_registers_all_or_nothing() {
    crash_after_every_step(FsType::Btrfs, create_on_old_format_case());
}
