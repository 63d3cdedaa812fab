//! The `qubes-storage` binary against the real `qubes-storaged` on a private bus, with
//! pools on loop-mounted btrfs (reflinks) and ext4 (copies, so jobs). Each test owns
//! its world (bus, service, filesystems). Fixtures: `tests/common`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Instant;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const VID: &str = "appvms/work/private";

/// A rw, save-on-stop volume of `size` (e.g. "64M").
fn origin(world: &World, pool: &str, vid: &str, size: &str) {
    world
        .cli(&[
            "volume",
            "create",
            pool,
            vid,
            "--size",
            size,
            "--rw",
            "--save-on-stop",
        ])
        .ok();
}

fn files_equal(a: &Path, b: &Path) -> bool {
    std::fs::read(a).expect("read a") == std::fs::read(b).expect("read b")
}

#[test]
fn pool_create_list_info_remove() {
    let mut world = World::start();
    let dir = world.pool("p1", FsType::Btrfs, 128 * MIB);
    let pools = world.cli(&["--json", "pool", "list"]).ok().json();
    assert_eq!(pools[0]["name"], "p1");
    assert_eq!(pools[0]["dir_path"], dir.to_str().unwrap());
    let table = world.cli(&["pool", "list"]).ok().stdout;
    assert!(table.starts_with("NAME") && table.contains("p1"), "{table}");
    let info = world.cli(&["--json", "pool", "info", "p1"]).ok().json();
    assert_eq!(info["driver"], "file-reflink");
    world.cli(&["pool", "remove", "p1"]).ok();
    assert_eq!(
        world.cli(&["--json", "pool", "list"]).ok().json(),
        serde_json::json!([])
    );
}

#[test]
fn no_interaction_option_is_accepted_by_every_call() {
    let mut world = World::start();
    let dir = world.mount(FsType::Btrfs, 128 * MIB).join("p1");
    let quiet = |args: &[&str]| world.cli(&[&["--no-interaction"], args].concat()).ok();
    quiet(&["pool", "create", "p1", "--dir", dir.to_str().unwrap()]);
    quiet(&[
        "volume",
        "create",
        "p1",
        VID,
        "--size",
        "1M",
        "--rw",
        "--save-on-stop",
    ]);
    quiet(&["volume", "start", "p1", VID]);
    quiet(&["volume", "stop", "p1", VID]);
    quiet(&["volume", "info", "p1", VID]);
    quiet(&["volume", "verify", "p1", VID]);
    quiet(&["volume", "set", "p1", VID, "revisions-to-keep", "2"]);
    quiet(&["volume", "remove", "p1", VID]);
    quiet(&["pool", "remove", "p1"]);
}

#[test]
fn missing_pool_exits_3_with_the_service_message() {
    let world = World::start();
    let run = world.cli(&["pool", "info", "nope"]).fails_with(3);
    assert!(run.stderr.contains("nope"), "{run:?}");
}

#[test]
fn json_errors_name_the_error_on_stdout() {
    let world = World::start();
    let run = world
        .cli(&["--json", "volume", "list", "nope"])
        .fails_with(3);
    let error = run.json();
    assert_eq!(error["error"], "org.qubes.Storage.Error.NotFound");
    assert_eq!(error["exit_status"], 3);
}

/// With --json every change prints a document: the changed object's properties after
/// it (a script needs no second call), what was removed, where an export went.
#[test]
fn json_changes_print_what_they_changed() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", VID, "4M");
    let json = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        world.cli(&all).ok().json()
    };
    let resized = json(&["volume", "resize", "p1", VID, "8M"]);
    assert_eq!(
        (resized["vid"].as_str(), resized["size"].as_u64()),
        (Some(VID), Some(8 * MIB))
    );
    let set = json(&["volume", "set", "p1", VID, "revisions-to-keep", "3"]);
    assert_eq!(set["revisions_to_keep"], 3, "{set}");
    let image = world.scratch().join("data.img");
    std::fs::write(&image, vec![7u8; MIB as usize]).unwrap();
    let imported = json(&[
        "volume",
        "import",
        "p1",
        VID,
        image.to_str().unwrap(),
        "--allow-shrink",
    ]);
    assert_eq!(imported["size"], MIB, "{imported}");
    let pinned = json(&["volume", "pin", "p1", VID]);
    assert_eq!(pinned["revisions"][0]["pinned"], true, "{pinned}");
    let described = json(&["volume", "describe", "p1", VID, "before the test"]);
    assert_eq!(described["revisions"][0]["description"], "before the test");
    let out = world.scratch().join("out.img");
    let exported = json(&["volume", "export", "p1", VID, out.to_str().unwrap()]);
    assert_eq!(exported["path"], out.to_str().unwrap(), "{exported}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&image).unwrap());
    origin(&world, "p1", "appvms/copy/private", "4M");
    let cloned = json(&[
        "volume",
        "clone",
        "p1",
        VID,
        "p1",
        "appvms/copy/private",
        "--allow-shrink",
    ]);
    assert_eq!(
        (cloned["vid"].as_str(), cloned["size"].as_u64()),
        (Some("appvms/copy/private"), Some(MIB))
    );
    let removed = json(&["volume", "remove", "p1", "appvms/copy/private"]);
    assert_eq!(
        removed["removed"]["vid"], "appvms/copy/private",
        "{removed}"
    );
    let pool = json(&["pool", "set", "p1", "revisions-to-keep", "2"]);
    assert_eq!(pool["revisions_to_keep"], 2, "{pool}");
    // People still get silence.
    let run = world.cli(&["volume", "resize", "p1", VID, "16M"]).ok();
    assert_eq!(run.stdout, "", "{run:?}");
}

/// Errors of the program itself have a name too (a script switches on it), also a
/// command line clap refuses, which used to print nothing on stdout.
#[test]
fn json_errors_of_the_cli_itself_are_named() {
    let world = World::start();
    let run = world.cli(&[
        "--json",
        "volume",
        "create",
        "p1",
        "appvms/a/b",
        "--size",
        "1.3M",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.starts_with("error: invalid value"), "{run:?}");
    let error = run.json();
    assert_eq!(error["error"], "qubes-storage.Usage", "{error}");
    assert_eq!(error["exit_status"], 2);
    assert!(
        error["message"].as_str().unwrap().contains("1.3M"),
        "{error}"
    );
    let plain = world.cli(&["volume", "create", "p1", "appvms/a/b", "--size", "1.3M"]);
    assert_eq!((plain.code, plain.stdout.as_str()), (2, ""), "{plain:?}");
}

#[test]
fn duplicate_pool_exits_4() {
    let mut world = World::start();
    let dir = world.pool("p1", FsType::Btrfs, 128 * MIB);
    world
        .cli(&["pool", "create", "p1", "--dir", dir.to_str().unwrap()])
        .fails_with(4);
}

#[test]
fn pool_without_reflinks_is_refused_with_the_flag_named() {
    let mut world = World::start();
    let dir = world.mount(FsType::Ext4, 64 * MIB).join("p1");
    let run = world
        .cli(&["pool", "create", "p1", "--dir", dir.to_str().unwrap()])
        .fails_with(6);
    assert!(run.stderr.contains("--no-setup-check"), "{run:?}");
}

#[test]
fn absent_service_exits_10() {
    let world = World::without_service();
    world.cli(&["pool", "list"]).fails_with(10);
}

#[test]
fn unreachable_bus_exits_10() {
    let run = cli_on_bus("unix:path=/nonexistent/bus", &["pool", "list"]);
    run.fails_with(10);
}

#[test]
fn started_volume_prints_its_device_and_refuses_removal() {
    let mut world = World::start();
    let dir = world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", VID, "16M");
    let device = world.cli(&["volume", "start", "p1", VID]).ok().stdout;
    assert_eq!(
        device.trim(),
        dir.join("appvms/work/private-dirty.img").to_str().unwrap()
    );
    world.cli(&["volume", "remove", "p1", VID]).fails_with(5);
    world.cli(&["volume", "stop", "p1", VID]).ok();
    world.cli(&["volume", "remove", "p1", VID]).ok();
    assert_eq!(
        world.cli(&["--json", "volume", "list"]).ok().json(),
        serde_json::json!([])
    );
}

#[test]
fn stop_adds_a_revision_listed_with_an_iso_timestamp() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", VID, "16M");
    world.cli(&["volume", "start", "p1", VID]).ok();
    world.cli(&["volume", "stop", "p1", VID]).ok();
    let revisions = world
        .cli(&["--json", "volume", "revisions", "p1", VID])
        .ok()
        .json();
    assert_eq!(revisions.as_array().unwrap().len(), 1, "{revisions}");
    let time = revisions[0]["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    let table = world.cli(&["volume", "revisions", "p1", VID]).ok().stdout;
    assert!(
        table.starts_with("REVISION  TIMESTAMP ") && table.contains(time),
        "{table}"
    );
}

#[test]
fn created_volume_shows_in_list_and_info() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", VID, "1.5M");
    let info = world
        .cli(&["--json", "volume", "info", "p1", VID])
        .ok()
        .json();
    assert_eq!(
        (info["size"].as_u64(), info["rw"].as_bool()),
        (Some(3 * MIB / 2), Some(true))
    );
    let table = world.cli(&["volume", "list", "p1"]).ok().stdout;
    assert!(
        table.contains("appvms/work/private") && table.contains("1.5 MiB"),
        "{table}"
    );
}

#[test]
fn shrinking_needs_allow_shrink() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", VID, "16M");
    let run = world
        .cli(&["volume", "resize", "p1", VID, "8M"])
        .fails_with(2);
    assert!(run.stderr.contains("--allow-shrink"), "{run:?}");
    world
        .cli(&["volume", "resize", "p1", VID, "8M", "--allow-shrink"])
        .ok();
    assert_eq!(p1_size(&world), 8 * MIB);
}

#[test]
fn import_then_export_keeps_content_and_holes() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 256 * MIB);
    origin(&world, "p1", VID, "64M");
    let image = world.scratch().join("in.img");
    write_sparse_file(&image, 64 * MIB, &[(MIB, 2 * MIB), (40 * MIB, MIB)], 7);
    let run = world.cli(&["-v", "volume", "import", "p1", VID, image.to_str().unwrap()]);
    let log = run.ok().stderr;
    assert!(
        log.contains("sparse file copy") && log.contains("bytes=67108864"),
        "{log}"
    );
    let exported = world.scratch().join("out.img");
    world
        .cli(&["volume", "export", "p1", VID, exported.to_str().unwrap()])
        .ok();
    assert!(files_equal(&image, &exported));
    assert!(allocated_bytes(&exported) < 8 * MIB, "export is not sparse");
}

/// An export over an existing file (last night's backup) that runs out of space — the
/// image is larger than the filesystem — fails with the no-space status and leaves that
/// file as it was, and no partial file beside it: the image is written under a temp
/// name and renamed over the file only once complete (before, the file was emptied
/// first, and a partial image was left under its name).
#[test]
fn a_failed_export_leaves_the_file_it_was_to_replace_as_it_was() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 256 * MIB);
    origin(&world, "p1", VID, "96M");
    let image = world.scratch().join("in.img");
    write_sparse_file(&image, 96 * MIB, &[(0, 96 * MIB)], 5);
    world
        .cli(&["volume", "import", "p1", VID, image.to_str().unwrap()])
        .ok();
    let small = world.mount(FsType::Ext4, 64 * MIB);
    let backup = small.join("backup.img");
    let yesterday = pattern(9, 0, (30 * MIB) as usize);
    std::fs::write(&backup, &yesterday).unwrap();
    let run = world
        .cli(&["volume", "export", "p1", VID, backup.to_str().unwrap()])
        .fails_with(7);
    assert!(run.stderr.contains("backup.img"), "{run:?}");
    assert!(
        std::fs::read(&backup).unwrap() == yesterday,
        "the backup was changed"
    );
    let mut names: Vec<String> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["backup.img", "lost+found"]);
}

/// `import … /dev/zero --size N` (to wipe a volume) reads exactly N bytes: a
/// character device never ends, so it is not held to the end-of-input check a pipe is
/// (the import failed after copying everything, "holds more than …").
#[test]
fn an_import_from_a_character_device_reads_exactly_the_size_given() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", VID, "4M");
    let image = world.scratch().join("data.img");
    std::fs::write(&image, pattern(3, 0, 4 * MIB as usize)).unwrap();
    world
        .cli(&["volume", "import", "p1", VID, image.to_str().unwrap()])
        .ok();
    world
        .cli(&["volume", "import", "p1", VID, "/dev/zero", "--size", "4M"])
        .ok();
    let exported = world.scratch().join("out.img");
    world
        .cli(&["volume", "export", "p1", VID, exported.to_str().unwrap()])
        .ok();
    let data = std::fs::read(&exported).unwrap();
    assert_eq!(data.len() as u64, 4 * MIB);
    assert!(data.iter().all(|&b| b == 0), "not wiped");
}

/// A clone into a volume that does not save on stop would change nothing (the service
/// does nothing, R§3.19): refused with exit status 6, as an import into it is, instead
/// of exiting 0 as if it had been done.
#[test]
fn a_clone_into_a_volume_that_does_not_save_on_stop_is_refused() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", VID, "4M");
    world
        .cli(&[
            "volume",
            "create",
            "p1",
            "appvms/work/volatile",
            "--size",
            "4M",
            "--rw",
        ])
        .ok();
    let run = world
        .cli(&["volume", "clone", "p1", VID, "p1", "appvms/work/volatile"])
        .fails_with(6);
    assert!(run.stderr.contains("does not save on stop"), "{run:?}");
}

/// A clone gives the destination the source's size: a smaller source (the arguments
/// the wrong way round, say) is refused as an import's would be, and changes nothing,
/// unless `--allow-shrink`.
#[test]
fn a_clone_that_would_shrink_the_destination_needs_allow_shrink() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", "vm-templates/t/private", "4M");
    origin(&world, "p1", VID, "8M");
    let run = world
        .cli(&["volume", "clone", "p1", "vm-templates/t/private", "p1", VID])
        .fails_with(2);
    assert!(
        run.stderr
            .contains("would shrink p1:appvms/work/private from 8.0 MiB to 4.0 MiB"),
        "{run:?}"
    );
    assert!(run.stderr.contains("--allow-shrink"), "{run:?}");
    assert_eq!(p1_size(&world), 8 * MIB);
    world
        .cli(&[
            "volume",
            "clone",
            "p1",
            "vm-templates/t/private",
            "p1",
            VID,
            "--allow-shrink",
        ])
        .ok();
    assert_eq!(p1_size(&world), 4 * MIB);
}

/// A started source's `Size` is its running image's; a clone copies its committed image.
/// Grown live to the destination's size, the source still commits 4 MiB: the clone
/// would shrink the destination, and is refused (before, the running size was compared
/// and the destination silently cut to 4 MiB).
#[test]
fn a_clone_from_a_source_resized_while_started_compares_its_committed_size() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    let source = "vm-templates/t/private";
    origin(&world, "p1", source, "4M");
    origin(&world, "p1", VID, "8M");
    world.cli(&["volume", "start", "p1", source]).ok();
    world.cli(&["volume", "resize", "p1", source, "8M"]).ok();
    let run = world
        .cli(&["volume", "clone", "p1", source, "p1", VID])
        .fails_with(2);
    assert!(
        run.stderr
            .contains("would shrink p1:appvms/work/private from 8.0 MiB to 4.0 MiB"),
        "{run:?}"
    );
    assert_eq!(p1_size(&world), 8 * MIB);
    world.cli(&["volume", "stop", "p1", source]).ok();
    world
        .cli(&["volume", "clone", "p1", source, "p1", VID])
        .ok();
    assert_eq!(p1_size(&world), 8 * MIB);
}

/// The size of `p1`'s VID, as `volume info --json` says.
fn p1_size(world: &World) -> u64 {
    let info = world
        .cli(&["--json", "volume", "info", "p1", VID])
        .ok()
        .json();
    info["size"].as_u64().expect("a size")
}

#[test]
fn import_from_stdin_needs_a_size() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", VID, "1M");
    let data = pattern(3, 0, MIB as usize);
    world
        .cli_with_input(&["volume", "import", "p1", VID, "-"], &data)
        .fails_with(2);
    world
        .cli_with_input(&["volume", "import", "p1", VID, "-", "--size", "1M"], &data)
        .ok();
    let exported = world.scratch().join("out.img");
    world
        .cli(&["volume", "export", "p1", VID, exported.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read(&exported).unwrap(), data);
}

#[test]
fn short_stdin_fails_and_leaves_no_import_file() {
    let mut world = World::start();
    let dir = world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", VID, "2M");
    let run = world.cli_with_input(
        &["volume", "import", "p1", VID, "-", "--size", "2M"],
        &[1u8; 1000],
    );
    let run = run.fails_with(1);
    assert!(run.stderr.contains("ended after 1000"), "{run:?}");
    assert!(!dir.join("appvms/work/private-import.img").exists());
}

/// A btrfs pool `src` whose VID holds `image` (of `size`, data in `ranges`) and an
/// ext4 pool `dst` of `dst_size` with an empty VID: what a clone across filesystems
/// starts from. Returns the image file.
fn btrfs_volume_and_ext4_pool(
    world: &mut World,
    dst_size: u64,
    size: u64,
    ranges: &[(u64, u64)],
) -> std::path::PathBuf {
    world.pool("src", FsType::Btrfs, 256 * MIB);
    world.pool("dst", FsType::Ext4, dst_size);
    origin(world, "src", VID, "1M");
    origin(world, "dst", VID, "1M");
    let image = world.scratch().join("in.img");
    write_sparse_file(&image, size, ranges, 11);
    world
        .cli(&["volume", "import", "src", VID, image.to_str().unwrap()])
        .ok();
    image
}

/// `dst`'s VID exported holds exactly `image`.
fn assert_dst_holds(world: &World, image: &Path) {
    let exported = world.scratch().join("out.img");
    world
        .cli(&["volume", "export", "dst", VID, exported.to_str().unwrap()])
        .ok();
    assert!(files_equal(image, &exported));
}

#[test]
fn clone_across_filesystems_copies_the_content() {
    let mut world = World::start();
    let ranges = [(0, 4 * MIB), (20 * MIB, 4 * MIB)];
    let image = btrfs_volume_and_ext4_pool(&mut world, 256 * MIB, 32 * MIB, &ranges);
    world
        .cli(&["--progress", "volume", "clone", "src", VID, "dst", VID])
        .ok();
    assert_dst_holds(&world, &image);
}

/// A clone into an ext4 pool with room for the copy but not for its precache succeeds,
/// and says that the precache's copy did not finish, and why.
#[test]
fn a_clone_whose_precache_does_not_fit_says_so_and_succeeds() {
    let mut world = World::start();
    let image = btrfs_volume_and_ext4_pool(&mut world, 128 * MIB, 80 * MIB, &[(0, 70 * MIB)]);
    let run = world.cli(&["volume", "clone", "src", VID, "dst", VID]).ok();
    assert!(
        run.stderr.contains("note: a copy did not finish: ")
            && run.stderr.contains("no space left on device")
            && run.stderr.contains("next start copies its image instead"),
        "{run:?}"
    );
    assert_dst_holds(&world, &image);
}

#[test]
fn ctrl_c_during_import_leaves_the_volume_unchanged() {
    stop_signal_during_import_leaves_the_volume_unchanged(Signal::SIGINT);
}

/// The terminal closed: the CLI ends the import as on Ctrl-C (it used to die, leaving
/// the service to notice the importer gone) and says so where it still can.
#[test]
fn sighup_during_import_leaves_the_volume_unchanged() {
    stop_signal_during_import_leaves_the_volume_unchanged(Signal::SIGHUP);
}

/// `volume import p1 VID - --size 64M` with its first MiB fed and its import file made
/// (the import under way, waiting for more): the child, its stdin kept open, and the
/// import file in the pool directory `dir`.
fn import_from_stdin_under_way(
    world: &World,
    dir: &Path,
) -> (Guarded, std::process::ChildStdin, std::path::PathBuf) {
    let args = ["volume", "import", "p1", VID, "-", "--size", "64M"];
    let mut import = world.spawn(&args, Stdio::piped(), Stdio::piped());
    let mut stdin = import.0.stdin.take().expect("stdin");
    stdin
        .write_all(&pattern(9, 0, MIB as usize))
        .expect("feed the import");
    let import_file = dir.join("appvms/work/private-import.img");
    wait_until("the import file exists", || import_file.exists());
    (import, stdin, import_file)
}

fn stop_signal_during_import_leaves_the_volume_unchanged(signal: Signal) {
    let mut world = World::start();
    let dir = world.pool("p1", FsType::Btrfs, 256 * MIB);
    origin(&world, "p1", VID, "4M");
    let original = world.scratch().join("original.img");
    write_sparse_file(&original, 4 * MIB, &[(0, 4 * MIB)], 5);
    world
        .cli(&["volume", "import", "p1", VID, original.to_str().unwrap()])
        .ok();

    let (import, stdin, import_file) = import_from_stdin_under_way(&world, &dir);
    kill(Pid::from_raw(import.0.id() as i32), signal).expect("the signal");
    let run = wait_output(import);
    drop(stdin);

    let run = run.fails_with(8);
    assert!(run.stderr.contains("cancelled"), "{run:?}");
    assert!(!import_file.exists(), "the import file stayed");
    let exported = world.scratch().join("out.img");
    world
        .cli(&["volume", "export", "p1", VID, exported.to_str().unwrap()])
        .ok();
    assert!(files_equal(&original, &exported));
}

/// A closing terminal sends SIGHUP twice (the shell passes it on, the kernel sends it
/// again when the shell exits): the second must not cut short the clean end of the
/// import the first began (it exited 129 before ImportDataEnd(false) was answered).
#[test]
fn a_second_sighup_does_not_cut_the_cancel_of_an_import_short() {
    let mut world = World::start();
    let dir = world.pool("p1", FsType::Btrfs, 256 * MIB);
    origin(&world, "p1", VID, "4M");
    let (import, stdin, import_file) = import_from_stdin_under_way(&world, &dir);
    // The service's answer to the import's end is held until the filesystem thaws.
    let frozen = Frozen::new(&dir);
    let pid = Pid::from_raw(import.0.id() as i32);
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    wait_until("the CLI ended the import", || {
        world.log().contains("call method=ImportDataEnd")
    });
    kill(pid, Signal::SIGHUP).expect("the second SIGHUP");
    frozen.thaw();
    let run = wait_output(import);
    drop(stdin);
    let run = run.fails_with(8);
    assert!(run.stderr.contains("cancelled"), "{run:?}");
    assert!(!import_file.exists(), "the import file stayed");
}

/// Lines of a child's pipe, as they come, through a channel.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// The first line matching `wanted`, within the deadline.
#[track_caller]
fn expect_line(lines: &mpsc::Receiver<String>, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("no matching line in time");
        if wanted(&line) {
            return line;
        }
    }
}

/// With more objects than one listing carries (here a small bus limit and a few hundred
/// volumes; on the system bus 100 000 volumes), `pool list`, an export and `monitor`
/// still work: none of them needs GetManagedObjects, which is then `LimitsExceeded`.
/// And an export never writes into a pool's directory.
#[test]
fn pools_exports_and_the_monitor_work_when_the_service_has_too_many_objects_to_list() {
    let mut world = World::start_with_message_limit(128 * 1024);
    let pool_dir = world.pool("p1", FsType::Btrfs, 512 * MIB);
    origin(&world, "p1", VID, "1M");
    for n in 0..250 {
        let vid = format!("appvms/vm{n:03}/volatile");
        world
            .cli(&["volume", "create", "p1", &vid, "--size", "1M", "--rw"])
            .ok();
    }
    let pools = world.cli(&["pool", "list"]).ok().stdout;
    assert!(pools.contains("p1"), "{pools}");
    let status = world.cli(&["--json", "status"]).ok().json();
    assert_eq!(
        (status["pools"].as_u64(), status["volumes"].as_u64()),
        (Some(1), Some(251))
    );
    for args in [&["volume", "list"][..], &["volume", "list", "p1"][..]] {
        let listed = world.cli(&[&["--json"][..], args].concat()).ok().json();
        let listed = listed.as_array().unwrap();
        assert_eq!(listed.len(), 251);
        assert_eq!(listed[0]["vid"], "appvms/vm000/volatile", "sorted");
        assert_eq!(listed[250]["vid"], VID);
    }
    let out = world.scratch().join("out.img");
    world
        .cli(&["volume", "export", "p1", VID, out.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::metadata(&out).unwrap().len(), MIB);
    let inside = pool_dir.join("appvms/work/private.img");
    let run = world
        .cli(&["volume", "export", "p1", VID, inside.to_str().unwrap()])
        .fails_with(2);
    assert!(
        run.stderr.contains("in the directory of pool p1"),
        "{run:?}"
    );

    let mut monitor = world.spawn(&["monitor", "p1"], Stdio::null(), Stdio::piped());
    let stderr = lines_of(monitor.0.stderr.take().unwrap());
    let stdout = lines_of(monitor.0.stdout.take().unwrap());
    expect_line(&stderr, |line| {
        line.contains("jobs already running are not shown")
    });
    expect_line(&stderr, |line| line.starts_with("Monitoring pool p1"));
    world.cli(&["volume", "start", "p1", VID]).ok();
    expect_line(&stdout, |line| line.contains(" VolumeStarted "));
}

#[test]
fn monitor_prints_the_watched_volume_signals_as_json() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", VID, "4M");
    origin(&world, "p1", "appvms/other/private", "4M");
    let mut monitor = world.spawn(
        &["--json", "monitor", "p1", VID],
        Stdio::null(),
        Stdio::piped(),
    );
    let stderr = lines_of(monitor.0.stderr.take().unwrap());
    let stdout = lines_of(monitor.0.stdout.take().unwrap());
    expect_line(&stderr, |line| {
        line.starts_with("Monitoring p1:appvms/work/private")
    });

    world
        .cli(&["volume", "start", "p1", "appvms/other/private"])
        .ok();
    world.cli(&["volume", "start", "p1", VID]).ok();
    let line = expect_line(&stdout, |line| line.contains("VolumeStarted"));
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["subject"], "p1:appvms/work/private");
    assert!(event["args"]["block_device_path"]
        .as_str()
        .unwrap()
        .ends_with("private-dirty.img"));
    drop(monitor);
}

/// A name the service refuses ends the monitor at once with its error (it would watch
/// for nothing forever); one it does not know yet is said, and its events show once it
/// is created.
#[test]
fn monitor_refuses_bad_names_and_says_when_it_waits_for_an_unknown_one() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    for args in [vec!["monitor", "../x"], vec!["monitor", "p1", "a b"]] {
        let run = world.cli(&args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
    }
    let vid = "appvms/later/private";
    let mut monitor = world.spawn(&["monitor", "p1", vid], Stdio::null(), Stdio::piped());
    let stderr = lines_of(monitor.0.stderr.take().unwrap());
    let stdout = lines_of(monitor.0.stdout.take().unwrap());
    expect_line(&stderr, |line| {
        line.starts_with("note: ") && line.ends_with("its events show once it is created")
    });
    expect_line(&stderr, |line| {
        line.starts_with("Monitoring p1:appvms/later/private")
    });
    origin(&world, "p1", vid, "4M");
    // The new volume's line says what kind of volume it is; it has no source.
    let added = expect_line(&stdout, |line| {
        line.contains("p1:appvms/later/private added")
    });
    for shown in [
        "Size=4194304",
        "Rw=true",
        "SaveOnStop=true",
        "SnapOnStart=false",
    ] {
        assert!(added.contains(shown), "{shown} not in {added}");
    }
    assert!(!added.contains("Source"), "{added}");
    drop(monitor);
}

/// Another client's fake of a service signal, addressed to the monitor's connection
/// (delivered whatever its match rules say), is not shown: only messages from the
/// service name's owner are.
#[test]
fn monitor_ignores_signals_faked_by_another_client() {
    let mut world = World::start();
    world.pool("p1", FsType::Btrfs, 128 * MIB);
    origin(&world, "p1", VID, "4M");
    let mut monitor = world.spawn(
        &["--json", "monitor", "p1", VID],
        Stdio::null(),
        Stdio::piped(),
    );
    let monitor_pid = monitor.0.id();
    let stderr = lines_of(monitor.0.stderr.take().unwrap());
    let stdout = lines_of(monitor.0.stdout.take().unwrap());
    expect_line(&stderr, |line| line.starts_with("Monitoring p1:"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let conn = zbus::connection::Builder::address(world.bus_address())
            .build()
            .await
            .unwrap();
        let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
        let mut target = None;
        for name in dbus.list_names().await.unwrap() {
            if !name.starts_with(':') {
                continue;
            }
            let pid = dbus.get_connection_unix_process_id(name.as_ref()).await;
            if pid.ok() == Some(monitor_pid) {
                target = Some(name.to_string());
            }
        }
        let target = target.expect("the monitor's connection");
        let path = format!(
            "/org/qubes/Storage/pools/p1/volumes/{}",
            "appvms_2fwork_2fprivate"
        );
        let fake =
            zbus::Message::signal(path.as_str(), "org.qubes.Storage.Volume", "VolumeStarted")
                .destination(target.as_str())
                .build(&("/etc/shadow",))
                .unwrap();
        conn.send(&fake).await.unwrap();
    });
    // The real start's signal comes after the fake in the monitor's stream: the fake,
    // had it been shown, would be the line before it.
    world.cli(&["volume", "start", "p1", VID]).ok();
    let line = expect_line(&stdout, |line| line.contains("VolumeStarted"));
    assert!(
        !line.contains("/etc/shadow"),
        "a fake signal was shown: {line}"
    );
    assert!(line.contains("private-dirty.img"), "{line}");
    drop(monitor);
}

#[test]
fn monitor_shows_the_job_of_a_copying_clone() {
    let mut world = World::start();
    world.pool("src", FsType::Btrfs, 256 * MIB);
    world.pool("dst", FsType::Ext4, 256 * MIB);
    origin(&world, "src", VID, "16M");
    origin(&world, "dst", VID, "1M");
    // A clone that moves data publishes a job (one without data is instant and silent).
    let image = world.scratch().join("in.img");
    write_dense_file(&image, 16 * MIB);
    world
        .cli(&["volume", "import", "src", VID, image.to_str().unwrap()])
        .ok();
    let mut monitor = world.spawn(&["monitor", "dst", VID], Stdio::null(), Stdio::piped());
    let stderr = lines_of(monitor.0.stderr.take().unwrap());
    let stdout = lines_of(monitor.0.stdout.take().unwrap());
    expect_line(&stderr, |line| line.starts_with("Monitoring"));
    world.cli(&["volume", "clone", "src", VID, "dst", VID]).ok();
    let added = expect_line(&stdout, |line| {
        line.contains(" job ") && line.contains(" added")
    });
    assert!(added.contains("Operation=clone"), "{added}");
    let imported = expect_line(&stdout, |line| line.contains("VolumeImported"));
    assert!(
        imported.ends_with("dst:appvms/work/private VolumeImported success=true"),
        "{imported}"
    );
    drop(monitor);
}

/// A file of `size` bytes that is all data (a 1 MiB pattern repeated): copies of it
/// take real time.
fn write_dense_file(path: &Path, size: u64) {
    let block = pattern(13, 0, MIB as usize);
    let mut file = std::fs::File::create(path).expect("create");
    for _ in 0..size / MIB {
        file.write_all(&block).expect("write");
    }
}

#[test]
fn ctrl_c_during_clone_cancels_the_job_and_changes_nothing() {
    stop_signal_during_clone_cancels_the_job_and_changes_nothing(Signal::SIGINT);
}

/// `kill` (or a service manager stopping a script) cancels the clone as Ctrl-C does:
/// it used to kill the CLI and leave its job copying in the service.
#[test]
fn sigterm_during_clone_cancels_the_job_and_changes_nothing() {
    stop_signal_during_clone_cancels_the_job_and_changes_nothing(Signal::SIGTERM);
}

fn stop_signal_during_clone_cancels_the_job_and_changes_nothing(signal: Signal) {
    let mut world = World::start();
    world.pool("src", FsType::Btrfs, 1024 * MIB);
    let dst = world.pool("dst", FsType::Ext4, 1024 * MIB);
    origin(&world, "src", VID, "512M");
    origin(&world, "dst", VID, "1M");
    let image = world.scratch().join("in.img");
    write_dense_file(&image, 512 * MIB);
    world
        .cli(&["volume", "import", "src", VID, image.to_str().unwrap()])
        .ok();

    let args = ["--progress", "volume", "clone", "src", VID, "dst", VID];
    let mut clone = world.spawn(&args, Stdio::null(), Stdio::piped());
    let stderr = lines_of(clone.0.stderr.take().unwrap());
    expect_line(&stderr, |line| {
        line.starts_with("clone src:appvms/work/private")
    });
    // The copy is held where it is until the cancel has reached the service.
    let frozen = Frozen::new(&dst);
    kill(Pid::from_raw(clone.0.id() as i32), signal).expect("the signal");
    wait_until("the service cancelled the job", || {
        world.log().contains("job cancelled")
    });
    frozen.thaw();
    let status = wait_child(&mut clone.0).expect("the clone did not end in time");
    let rest: Vec<String> = stderr.try_iter().collect();

    assert_eq!(status.code(), Some(8), "stderr: {rest:?}");
    let info = world
        .cli(&["--json", "volume", "info", "dst", VID])
        .ok()
        .json();
    assert_eq!(info["size"].as_u64(), Some(MIB), "the destination changed");
    assert_eq!(info["revisions"], serde_json::json!([]));
}

#[test]
fn an_existing_pools_volume_is_refused_then_adopted_as_it_is() {
    let mut world = World::start();
    let dir = world.pool("p1", FsType::Btrfs, 128 * MIB);
    // A volume of an existing Qubes pool: its committed image and one revision.
    std::fs::create_dir(dir.join("appvms/old")).unwrap();
    std::fs::write(dir.join("appvms/old/private.img"), vec![7u8; 8192]).unwrap();
    std::fs::write(
        dir.join("appvms/old/private.img.4@2024-05-01T12:00:03Z"),
        [1u8; 512],
    )
    .unwrap();
    let args = [
        "volume",
        "create",
        "p1",
        "appvms/old/private",
        "--rw",
        "--save-on-stop",
    ];
    let refused = world
        .cli(&[&args[..], &["--size", "8K"]].concat())
        .fails_with(4);
    assert!(refused.stderr.contains("adopt"), "{}", refused.stderr);
    world.cli(&[&args[..], &["--adopt"]].concat()).ok();
    let info = world
        .cli(&["--json", "volume", "info", "p1", "appvms/old/private"])
        .ok();
    assert_eq!(info.json()["size"], 8192, "{}", info.stdout);
    assert_eq!(
        std::fs::read(dir.join("appvms/old/private.img")).unwrap(),
        vec![7u8; 8192]
    );
    let revisions = world
        .cli(&["volume", "revisions", "p1", "appvms/old/private"])
        .ok();
    assert!(
        revisions.stdout.contains("2024-05-01T12:00:03Z"),
        "{}",
        revisions.stdout
    );
}
