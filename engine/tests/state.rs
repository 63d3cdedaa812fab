//! The engine's state and live views as a pool grows (issue 8): a CreateVolume appends
//! one journal line and never rewrites the pool's state file, whatever the pool holds;
//! what was recorded loads again after a restart; and the whole-pool live view
//! (`volume_infos`, one listing per VM directory — what the daemon reads at start-up)
//! equals the per-volume `volume_info` for every kind and state of volume. On
//! loop-mounted btrfs, XFS and ext4.

mod common_fs;
mod scenario_support;

use std::os::unix::fs::MetadataExt;

use common_fs::{FsType, MIB};
use qubes_storage_engine::{Engine, OpCtx, RevisionsToKeep, VolumeRef, VolumeSpec};
use scenario_support::{on_every_fs, write_at, Fixture};

fn volatile(size: u64) -> VolumeSpec {
    VolumeSpec {
        size,
        rw: true,
        ..Default::default()
    }
}

fn snapshot_of(source: &VolumeRef, save_on_stop: bool) -> VolumeSpec {
    VolumeSpec {
        rw: save_on_stop,
        snap_on_start: true,
        save_on_stop,
        source: Some(source.vid.clone()),
        ..Default::default()
    }
}

fn creates_append_to_the_journal_and_never_rewrite_the_pool_file(t: FsType) {
    let f = Fixture::new(t);
    let pools = f.engine.state_dir().join("pools");
    let (snapshot, journal) = (pools.join("p.json"), pools.join("p.journal"));
    let before = std::fs::metadata(&snapshot).unwrap();
    for i in 0..40 {
        f.create(
            &format!("appvms/vm{i}/private"),
            scenario_support::origin_spec(MIB, 1),
        );
        let after = std::fs::metadata(&snapshot).unwrap();
        assert_eq!(
            (after.ino(), after.len()),
            (before.ino(), before.len()),
            "create {i} left the pool file alone"
        );
        let lines = std::fs::read_to_string(&journal).unwrap().lines().count();
        assert_eq!(lines, i + 1, "one journal line per create");
    }
    let reopened = Engine::open(f.engine.state_dir()).unwrap();
    assert_eq!(reopened.volume_vids(&f.pool).unwrap().len(), 40);
}

/// Every kind in every state: origins halted (with revisions and a stray name) and
/// started, snapshots disabled and started, snapshot volumes halted, started and
/// outdated, volatile halted and started (grown by hand), origin_snapshot, a snapshot
/// volume sharing its VM directory with an origin.
fn volume_infos_equal_every_volume_info(t: FsType) {
    let f = Fixture::new(t);
    let template = f.origin("vm-templates/t/root", 4 * MIB, 2);
    f.session(&template, 0, b"t1");
    f.session(&template, 0, b"t2");
    let stray = f
        .paths("vm-templates/t/root")
        .dir()
        .join("root.img.07@2024-01-01T00:00:00Z");
    std::fs::write(stray, b"").unwrap();
    let running = f.origin("appvms/a/private", 2 * MIB, 1);
    f.start(&running);
    let disabled = f.origin("appvms/b/private", 2 * MIB, -1);
    f.start(&disabled);
    let halted = f.create("appvms/a/root", snapshot_of(&template, false));
    let outdated = f.create("appvms/c/root", snapshot_of(&template, false));
    f.start(&outdated);
    f.session(&template, 0, b"t3");
    let started = f.create("appvms/b/root", snapshot_of(&template, false));
    f.start(&started);
    let quiet = f.create("appvms/c/volatile", volatile(MIB));
    let grown = f.create("appvms/d/volatile", volatile(MIB));
    let dirty = f.start(&grown);
    write_at(&dirty, 3 * MIB, b"grown by hand");
    let both = f.create(
        "appvms/e/root",
        VolumeSpec {
            revisions_to_keep: Some(RevisionsToKeep::new(1).unwrap()),
            ..snapshot_of(&template, true)
        },
    );
    f.session(&both, 0, b"own");
    let all = [
        &template, &running, &disabled, &halted, &started, &outdated, &quiet, &grown, &both,
    ];
    let bulk = f.engine.volume_infos(&f.pool).unwrap();
    assert_eq!(bulk.len(), all.len());
    for view in bulk {
        let view = view.expect("every view reads");
        let vol = f.vref(&view.config.vid.to_string());
        assert_eq!(view, f.engine.volume_info(&vol).unwrap(), "{vol}");
    }
    let info = |v: &VolumeRef| f.engine.volume_info(v).unwrap();
    assert!(info(&outdated).is_outdated && !info(&started).is_outdated);
    assert!(
        info(&both).is_outdated,
        "a committed origin_snapshot is not its source"
    );
    assert_eq!(
        info(&halted).size,
        4 * MIB,
        "a halted snapshot shows its source's size"
    );
    assert_eq!(info(&grown).size, 3 * MIB + 13);
    assert_eq!(
        info(&template).revisions.len(),
        2,
        "the stray name is no revision"
    );
    f.engine.stop(&grown, &OpCtx::quiet("Stop")).unwrap();
}

on_every_fs!(
    creates_append_to_the_journal_and_never_rewrite_the_pool_file,
    volume_infos_equal_every_volume_info,
);
