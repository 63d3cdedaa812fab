//! What the CLI says, against the real service: sizes it refuses before calling, an
//! import that would shrink a volume, the service's own sentence for a refusal, and the
//! one line that says what a stop, a repeated start or a verify did. Fixtures:
//! `tests/common`.

mod common;

use std::io::Read;
use std::process::Stdio;

use common::*;

const VID: &str = "appvms/work/private";

/// A rw, save-on-stop volume of `size` (e.g. "64M").
fn origin(world: &World, pool: &str, size: &str) {
    let args = [
        "volume",
        "create",
        pool,
        VID,
        "--size",
        size,
        "--rw",
        "--save-on-stop",
    ];
    world.cli(&args).ok();
}

fn size_of(world: &World, pool: &str) -> u64 {
    let info = world.cli(&["--json", "volume", "info", pool, VID]).ok();
    info.json()["size"].as_u64().expect("size")
}

#[test]
fn volume_create_without_a_size_is_refused_before_any_call() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    let run = world
        .cli(&["volume", "create", "p1", VID, "--rw", "--save-on-stop"])
        .fails_with_usage();
    assert!(run.stderr.contains("--size"), "{run:?}");
    let volumes = world.cli(&["--json", "volume", "list"]).ok().json();
    assert_eq!(volumes, serde_json::json!([]));
}

/// Runs the CLI against a bus that does not exist: a run that reached for the bus
/// would exit 10, so an exit 2 proves the refusal came before any call.
fn offline(args: &[&str]) -> Run {
    cli_on_bus("unix:path=/nonexistent/bus", args)
}

#[test]
fn sizes_that_are_not_whole_sectors_are_refused_with_the_nearest_ones() {
    let args = ["volume", "create", "p1", VID, "--size", "1000"];
    let run = offline(&args).fails_with_usage();
    assert!(
        run.stderr
            .contains("not a whole number of 512-byte sectors"),
        "{run:?}"
    );
    assert!(run.stderr.contains("512 and 1024"), "{run:?}");
}

#[test]
fn unknown_units_and_huge_sizes_get_their_own_messages() {
    let run = offline(&["volume", "resize", "p1", VID, "2X"]).fails_with_usage();
    assert!(run.stderr.contains("unknown unit \"X\""), "{run:?}");
    let run = offline(&["volume", "resize", "p1", VID, "16E"]).fails_with_usage();
    assert!(run.stderr.contains("16 EiB is more than"), "{run:?}");
    let run = offline(&["volume", "resize", "p1", VID, "8E"]).fails_with_usage();
    assert!(run.stderr.contains("too large"), "{run:?}");
}

#[test]
fn a_negative_size_is_refused_without_suggesting_a_separator() {
    let args = ["volume", "create", "p1", VID, "--size", "-5G"];
    let run = offline(&args).fails_with_usage();
    assert!(run.stderr.contains("a size cannot be negative"), "{run:?}");
    assert!(!run.stderr.contains("-- -5"), "{run:?}");
}

#[test]
fn importing_a_smaller_image_is_refused_and_changes_nothing() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 256 * MIB);
    origin(&world, "p1", "128M");
    let image = world.scratch().join("small.img");
    std::fs::write(&image, vec![3u8; 4096]).unwrap();
    let run = world
        .cli(&["volume", "import", "p1", VID, image.to_str().unwrap()])
        .fails_with(2);
    assert!(
        run.stderr.contains("would shrink p1:appvms/work/private"),
        "{run:?}"
    );
    assert!(run.stderr.contains("--allow-shrink"), "{run:?}");
    assert_eq!(size_of(&world, "p1"), 128 * MIB);
}

/// Needs the service side of contract rev 2 (`allow_shrink` on ImportData).
#[test]
fn importing_a_smaller_image_with_allow_shrink_gives_the_volume_its_size() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 256 * MIB);
    origin(&world, "p1", "128M");
    let image = world.scratch().join("small.img");
    std::fs::write(&image, vec![3u8; 4096]).unwrap();
    let path = image.to_str().unwrap();
    world
        .cli(&["volume", "import", "p1", VID, path, "--allow-shrink"])
        .ok();
    assert_eq!(size_of(&world, "p1"), 4096);
}

#[test]
fn importing_a_file_that_is_not_whole_sectors_says_how_to_pad_it() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", "1M");
    let image = world.scratch().join("note.txt");
    std::fs::write(&image, b"fourteen bytes").unwrap();
    let run = world
        .cli(&["volume", "import", "p1", VID, image.to_str().unwrap()])
        .fails_with(2);
    assert!(run.stderr.contains("truncate -s %512"), "{run:?}");
    assert_eq!(size_of(&world, "p1"), MIB);
}

#[test]
fn importing_an_empty_file_says_it_is_empty() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", "1M");
    let image = world.scratch().join("empty.img");
    std::fs::write(&image, b"").unwrap();
    let run = world
        .cli(&["volume", "import", "p1", VID, image.to_str().unwrap()])
        .fails_with(2);
    assert!(
        run.stderr.contains("is empty: there is nothing to import"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("truncate"), "{run:?}");
    assert_eq!(size_of(&world, "p1"), MIB);
}

/// An export into a directory that does not exist names the file asked for, not the
/// temporary file it would have been written to first.
#[test]
fn an_export_into_a_missing_directory_names_the_file() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", "1M");
    let target = world.scratch().join("missing/x.img");
    let run = world
        .cli(&["volume", "export", "p1", VID, target.to_str().unwrap()])
        .fails_with(1);
    assert!(
        run.stderr
            .contains(&format!("cannot create {}", target.display()))
            && run.stderr.contains("No such file or directory")
            && !run.stderr.contains(".part"),
        "{run:?}"
    );
}

/// A size beyond the pool's whole filesystem is allowed (sparse, as in Qubes) but said.
#[test]
fn a_volume_larger_than_its_pools_filesystem_is_noted() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", "1G");
    let create = world.cli(&[
        "volume",
        "create",
        "p1",
        "appvms/big/private",
        "--size",
        "1T",
        "--rw",
        "--save-on-stop",
    ]);
    assert_eq!(create.code, 0, "{create:?}");
    assert!(
        create
            .stderr
            .starts_with("note: 1.0 TiB is more than the whole filesystem of pool p1"),
        "{create:?}"
    );
    let resize = world.cli(&["volume", "resize", "p1", VID, "2T"]).ok();
    assert!(
        resize.stderr.contains("note: 2.0 TiB is more"),
        "{resize:?}"
    );
    let fits = world
        .cli(&["volume", "resize", "p1", VID, "4M", "--allow-shrink"])
        .ok();
    assert_eq!(fits.stderr, "", "{fits:?}");
}

/// A value `set` cannot parse is refused naming the property and the object.
#[test]
fn a_bad_property_value_names_the_property_and_the_object() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", "1M");
    let run = world
        .cli(&["volume", "set", "p1", VID, "rw", "maybe"])
        .fails_with(2);
    assert!(
        run.stderr.contains(&format!(
            "cannot set rw of p1:{VID}: \"maybe\" is not a boolean"
        )),
        "{run:?}"
    );
    let run = world
        .cli(&["pool", "set", "p1", "revisions-to-keep", "many"])
        .fails_with(2);
    assert!(
        run.stderr
            .contains("cannot set revisions-to-keep of pool p1: \"many\" is not a revision count"),
        "{run:?}"
    );
}

#[test]
fn a_refusal_shows_the_services_own_sentence() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", "1M");
    world.cli(&["volume", "start", "p1", VID]).ok();
    let refused = world
        .cli(&["--json", "volume", "remove", "p1", VID])
        .fails_with(5);
    let service_said = refused.json()["message"].as_str().unwrap().to_owned();
    assert!(service_said.contains(VID), "{service_said}");
    assert_eq!(refused.stderr, format!("qubes-storage: {service_said}\n"));
}

#[test]
fn stop_says_what_happened_to_the_session() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", "1M");
    let stopped = world.cli(&["volume", "stop", "p1", VID]).ok();
    assert_eq!(
        stopped.stdout,
        "p1:appvms/work/private was not started; nothing changed\n"
    );
    world.cli(&["volume", "start", "p1", VID]).ok();
    let stopped = world.cli(&["volume", "stop", "p1", VID]).ok();
    assert_eq!(
        stopped.stdout,
        "stopped p1:appvms/work/private; changes committed, the previous image kept as revision 1\n"
    );
}

#[test]
fn a_repeated_start_says_nothing_changed_and_still_prints_the_device() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", "1M");
    let first = world.cli(&["volume", "start", "p1", VID]).ok();
    assert_eq!(first.stderr, "");
    let again = world.cli(&["volume", "start", "p1", VID]).ok();
    assert_eq!(again.stdout, first.stdout);
    assert_eq!(
        again.stderr,
        "p1:appvms/work/private was already started; nothing changed\n"
    );
}

#[test]
fn verify_says_the_files_are_in_place() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", "1M");
    let verified = world.cli(&["volume", "verify", "p1", VID]).ok();
    assert_eq!(
        verified.stdout,
        "p1:appvms/work/private: its files are in place\n"
    );
}

#[test]
fn info_of_a_stopped_volume_shows_no_image_path() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", "1M");
    let info = world.cli(&["volume", "info", "p1", VID]).ok().stdout;
    assert!(
        info.contains("Block device:       - (made at start)\n"),
        "{info}"
    );
    assert!(!info.contains("-dirty.img"), "{info}");
}

/// `--json volume export … -` that fails writes its error on stderr only: stdout is
/// the image's stream, and a JSON document there would end up inside the consumer's
/// data (`| gzip > backup.gz`).
#[test]
fn a_failed_export_to_stdout_puts_no_json_document_into_the_stream() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    let run = world
        .cli(&[
            "--json",
            "volume",
            "export",
            "p1",
            "appvms/none/private",
            "-",
        ])
        .fails_with(3);
    assert_eq!(run.stdout, "", "{run:?}");
    assert!(run.stderr.contains("appvms/none/private"), "{run:?}");
    let listed = world
        .cli(&["--json", "volume", "info", "p1", "appvms/none/private"])
        .fails_with(3);
    assert!(listed.stdout.contains("\"exit_status\":3"), "{listed:?}");
}

#[test]
fn export_into_a_closed_pipe_names_standard_output() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", "4M");
    let image = world.scratch().join("data.img");
    std::fs::write(&image, pattern(9, 0, 4 * MIB as usize)).unwrap();
    world
        .cli(&["volume", "import", "p1", VID, image.to_str().unwrap()])
        .ok();
    // `export - | head -c 1`: the reader takes one byte and goes away.
    let mut export = world.spawn(
        &["volume", "export", "p1", VID, "-"],
        Stdio::null(),
        Stdio::piped(),
    );
    let mut stdout = export.0.stdout.take().unwrap();
    stdout.read_exact(&mut [0u8; 1]).unwrap();
    drop(stdout);
    let run = wait_output(export);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "qubes-storage: export stopped: the reader of standard output went away (broken pipe)\n"
    );
}

/// On a pool without reflinks a clone's commit copies the new image into the
/// precache: the CLI shows that copy as the commit's, with a note. A clone within the
/// pool is a hard link of the source's image, so the commit's copy is its only one; a
/// clone from another filesystem copies first, with a bar of its own.
#[test]
fn a_clone_on_a_pool_without_reflinks_explains_its_commit_copy() {
    let mut world = World::start();
    world.pool("e", FsType::Ext4, 256 * MIB);
    world.pool("b", FsType::Btrfs, 256 * MIB);
    origin(&world, "e", "16M");
    origin(&world, "b", "16M");
    for destination in ["appvms/copy/private", "appvms/other/private"] {
        let args = [
            "volume",
            "create",
            "e",
            destination,
            "--size",
            "1M",
            "--rw",
            "--save-on-stop",
        ];
        world.cli(&args).ok();
    }
    let image = world.scratch().join("data.img");
    std::fs::write(&image, pattern(4, 0, 16 * MIB as usize)).unwrap();
    for pool in ["e", "b"] {
        world
            .cli(&["volume", "import", pool, VID, image.to_str().unwrap()])
            .ok();
    }
    let within = [
        "--progress",
        "volume",
        "clone",
        "e",
        VID,
        "e",
        "appvms/copy/private",
    ];
    let run = world.cli(&within).ok();
    assert!(
        !run.stderr.contains("clone e:appvms/work/private to "),
        "{run:?}"
    );
    commit_copy_explained(&run.stderr, "appvms/copy/private");
    let across = [
        "--progress",
        "volume",
        "clone",
        "b",
        VID,
        "e",
        "appvms/other/private",
    ];
    let run = world.cli(&across).ok();
    assert!(
        run.stderr
            .contains("clone b:appvms/work/private to e:appvms/other/private: "),
        "{run:?}"
    );
    commit_copy_explained(&run.stderr, "appvms/other/private");
}

/// The commit's copy into the precache of `vid` (pool `e`) was shown as a bar of its
/// own, with the note saying why.
fn commit_copy_explained(stderr: &str, vid: &str) {
    assert!(
        stderr.contains("note: this pool cannot reflink"),
        "{stderr}"
    );
    let bar = format!("commit e:{vid} (no reflinks: extra copy): 16.0 MiB done");
    assert!(stderr.contains(&bar), "{stderr}");
}
