//! The CLI's revision, space and delta commands against the real service (issue 13):
//! `volume stop --describe --pin`, `volume revisions`, `volume describe|pin|unpin`,
//! `volume revert` naming the revision by its description, `volume space`, `pool
//! space`, and `volume delta` (ranges, and `--apply-to` bringing a backup up to date).

mod common;

use std::path::Path;

use common::*;

const VID: &str = "appvms/work/private";

/// A rw, save-on-stop volume of `size` in pool `p1` on btrfs.
fn world_with_origin(size: &str) -> World {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 256 * MIB);
    world
        .cli(&[
            "volume",
            "create",
            "p1",
            VID,
            "--size",
            size,
            "--rw",
            "--save-on-stop",
        ])
        .ok();
    world
}

/// Imports `data` from a file in the scratch directory.
fn import(world: &World, data: &[u8]) {
    let file = world.scratch().join("import.img");
    std::fs::write(&file, data).unwrap();
    world
        .cli(&[
            "volume",
            "import",
            "p1",
            VID,
            file.to_str().unwrap(),
            "--allow-shrink",
        ])
        .ok();
}

fn revisions(world: &World) -> serde_json::Value {
    world
        .cli(&["--json", "volume", "revisions", "p1", VID])
        .ok()
        .json()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

#[test]
fn a_stop_describes_and_pins_the_revision_it_keeps_and_revisions_lists_it() {
    let world = world_with_origin("4M");
    world.cli(&["volume", "start", "p1", VID]).ok();
    world.cli(&["volume", "stop", "p1", VID]).ok();
    world.cli(&["volume", "start", "p1", VID]).ok();
    let stop = world
        .cli(&[
            "volume",
            "stop",
            "p1",
            VID,
            "--describe",
            "before the upgrade",
            "--pin",
        ])
        .ok();
    assert!(stop.stdout.contains("kept as revision 2"), "{stop:?}");
    let listed = revisions(&world);
    assert_eq!(listed[1]["id"], "2");
    assert_eq!(listed[1]["description"], "before the upgrade");
    assert_eq!(listed[1]["pinned"], true);
    assert_eq!(listed[0]["pinned"], false);
    let table = world.cli(&["volume", "revisions", "p1", VID]).ok().stdout;
    assert!(
        table.starts_with("REVISION  TIMESTAMP")
            && table.contains("yes")
            && table.contains("before the upgrade"),
        "{table}"
    );
}

#[test]
fn describe_pin_and_unpin_change_a_revision() {
    let world = world_with_origin("4M");
    import(&world, &pattern(1, MIB as usize));
    world
        .cli(&["volume", "describe", "p1", VID, "known good"])
        .ok();
    world.cli(&["volume", "pin", "p1", VID]).ok();
    assert_eq!(revisions(&world)[0]["description"], "known good");
    assert_eq!(revisions(&world)[0]["pinned"], true);
    world.cli(&["volume", "unpin", "p1", VID, "1"]).ok();
    world
        .cli(&["volume", "describe", "p1", VID, "", "--revision", "1"])
        .ok();
    assert_eq!(revisions(&world)[0]["description"], "");
    assert_eq!(revisions(&world)[0]["pinned"], false);
    world.cli(&["volume", "pin", "p1", VID, "9"]).fails_with(3);
    // The revision as an option, as `describe` takes it; not both ways at once.
    world
        .cli(&["volume", "pin", "p1", VID, "--revision", "1"])
        .ok();
    assert_eq!(revisions(&world)[0]["pinned"], true);
    let both = world.cli(&["volume", "unpin", "p1", VID, "1", "--revision", "1"]);
    assert_eq!(both.code, 2, "{both:?}");
    assert!(both.stderr.contains("cannot be used with"), "{both:?}");
    assert_eq!(revisions(&world)[0]["pinned"], true);
    world
        .cli(&["volume", "unpin", "p1", VID, "--revision", "1"])
        .ok();
    assert_eq!(revisions(&world)[0]["pinned"], false);
    let run = world
        .cli(&[
            "volume",
            "describe",
            "p1",
            VID,
            "two\nlines",
            "--revision",
            "1",
        ])
        .fails_with(2);
    assert!(run.stderr.contains("control characters"), "{run:?}");
}

/// `volume info --json` shows the revisions as `volume revisions --json` does.
#[test]
fn info_and_revisions_show_a_revision_alike_in_json() {
    let world = world_with_origin("4M");
    import(&world, &pattern(1, MIB as usize));
    let info = world
        .cli(&["--json", "volume", "info", "p1", VID])
        .ok()
        .json();
    let listed = revisions(&world);
    assert_eq!(info["revisions"], listed);
    let first = &listed[0];
    for key in [
        "id",
        "timestamp",
        "nanoseconds",
        "time",
        "description",
        "pinned",
    ] {
        assert!(first.get(key).is_some(), "{key} missing: {first}");
    }
}

/// An empty revision argument (a script's variable that a failed lookup left empty) is
/// refused before anything is asked of the service, which would read it as the newest.
#[test]
fn an_empty_revision_id_is_refused_and_changes_nothing() {
    let world = world_with_origin("4M");
    import(&world, &pattern(1, MIB as usize));
    import(&world, &pattern(2, MIB as usize));
    let before = revisions(&world);
    for args in [
        vec!["volume", "revert", "p1", VID, ""],
        vec!["volume", "revert", "p1", VID, "--revision", ""],
        vec!["volume", "pin", "p1", VID, " "],
        vec!["volume", "unpin", "p1", VID, ""],
        vec!["volume", "describe", "p1", VID, "text", "--revision", ""],
        vec!["volume", "delta", "p1", VID, ""],
    ] {
        let run = world.cli(&args);
        assert!(
            run.code == 2 && run.stderr.contains("a revision id cannot be empty"),
            "{args:?}: {run:?}"
        );
    }
    assert_eq!(revisions(&world), before);
}

/// A revert takes the revision's size (as the reference driver's does); the sentence
/// and the JSON say when that undid a resize.
#[test]
fn a_revert_that_undoes_a_resize_says_the_size_changed() {
    let world = world_with_origin("4M");
    import(&world, &pattern(1, MIB as usize));
    world.cli(&["volume", "resize", "p1", VID, "8M"]).ok();
    let run = world.cli(&["volume", "revert", "p1", VID]).ok();
    assert!(
        run.stdout
            .trim_end()
            .ends_with("; its size went from 8.0 MiB to 4.0 MiB, the revision's"),
        "{run:?}"
    );
    // The image before that revert (8 MiB) is the newest revision now: back to it.
    let json = world
        .cli(&["--json", "volume", "revert", "p1", VID])
        .ok()
        .json();
    assert_eq!(json["size_before"], 4 * MIB, "{json}");
    assert_eq!(json["size"], 8 * MIB, "{json}");
    assert!(json["kept_as"].is_string(), "{json}");
}

#[test]
fn revert_says_which_revision_it_went_to_by_its_description() {
    let world = world_with_origin("4M");
    import(&world, &pattern(1, MIB as usize));
    import(&world, &pattern(2, MIB as usize));
    world
        .cli(&[
            "volume",
            "describe",
            "p1",
            VID,
            "known good",
            "--revision",
            "2",
        ])
        .ok();
    let run = world.cli(&["volume", "revert", "p1", VID]).ok();
    assert!(
        run.stdout
            .starts_with(&format!("reverted p1:{VID} to revision 2 (")),
        "{run:?}"
    );
    assert!(
        run.stdout
            .trim_end()
            .ends_with("\"known good\"); the image before kept as revision 3"),
        "{run:?}"
    );
}

#[test]
fn space_shows_each_file_and_pool_space_what_each_remove_gives_back() {
    let world = world_with_origin("8M");
    import(&world, &pattern(1, 3 * MIB as usize));
    let files = world
        .cli(&["--json", "volume", "space", "p1", VID])
        .ok()
        .json();
    let committed = &files[0];
    assert_eq!(committed["file"], "committed");
    assert_eq!(
        committed["shared"],
        3 * MIB,
        "shared with its precache: {files}"
    );
    assert_eq!(files[2]["file"], "revision");
    assert_eq!(files[2]["revision"], "1");
    let pool = world.cli(&["--json", "pool", "space", "p1"]).ok().json();
    assert_eq!(pool[0]["vid"], VID);
    assert_eq!(pool[0]["exclusive"], 3 * MIB);
    let table = world.cli(&["pool", "space", "p1"]).ok().stdout;
    assert!(
        table.contains("REMOVE GIVES BACK") && table.contains("3.0 MiB"),
        "{table}"
    );
}

#[test]
fn delta_brings_a_backup_of_the_revision_up_to_the_committed_image() {
    let world = world_with_origin("4M");
    let first = pattern(1, 4 * MIB as usize);
    import(&world, &first);
    let backup = world.scratch().join("backup.img");
    world
        .cli(&["volume", "export", "p1", VID, backup.to_str().unwrap()])
        .ok();
    let mut second = first.clone();
    second[4096..8192].fill(1);
    second[3 * MIB as usize + 17] ^= 0xff;
    import(&world, &second);
    let listed = world
        .cli(&["--json", "volume", "delta", "p1", VID])
        .ok()
        .json();
    assert_eq!(
        listed["ranges"],
        serde_json::json!([[4096, 4096], [3 * MIB, 4096]])
    );
    world
        .cli(&[
            "volume",
            "delta",
            "p1",
            VID,
            "--apply-to",
            backup.to_str().unwrap(),
        ])
        .ok();
    assert!(std::fs::read(&backup).unwrap() == second);
    let table = world
        .cli(&["volume", "delta", "p1", VID, "2", "--granularity", "512"])
        .ok();
    assert!(
        table.stdout.lines().last() == Some("3145728     512"),
        "{table:?}"
    );
    world
        .cli(&["volume", "delta", "p1", VID, "--granularity", "3000"])
        .fails_with_usage();
    assert!(Path::new(&backup).exists());
}
