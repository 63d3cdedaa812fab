//! The recorder's self-test, against the real kernel: a known sequence of block
//! requests (a write, an fsync, a write without fsync) comes out of the log exactly as
//! it went in — each request one entry with its offset and bytes, the fsync one flush,
//! nothing invented — and a file system's fsync reaches it as flushes, so that
//! replaying the whole log onto the base image rebuilds the disk byte for byte.
//!
//! Needs root (loop devices, FUSE mounts).

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use qubes_storaged_powercut::crash_state::boundaries;
use qubes_storaged_powercut::{CrashImages, CrashState, Entry, Phase, Recorder, WriteLog};
use qubes_storaged_testkit::{FsType, LoopFs, MIB};

const O_DIRECT: i32 = 0o40000;

/// `len` bytes of `seed`'s pattern in a buffer aligned for O_DIRECT.
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize, seed: u8) -> Aligned {
        let mut buf = vec![0u8; len + 4096];
        let start = buf.as_ptr().align_offset(4096);
        for (i, b) in buf[start..start + len].iter_mut().enumerate() {
            *b = seed ^ (i % 251) as u8;
        }
        Aligned { buf, start, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

fn sparse_file(path: &Path, size: u64) {
    File::create(path).unwrap().set_len(size).unwrap();
}

fn open_direct(device: &Path) -> File {
    File::options()
        .write(true)
        .custom_flags(O_DIRECT)
        .open(device)
        .expect("open the recorded device with O_DIRECT")
}

/// The log after the mark `from`, as (kind, offset, length) triples.
fn shape(log: &WriteLog, from: &str) -> Vec<(&'static str, u64, u64)> {
    let start = log.mark(from).expect("the mark is logged") + 1;
    log.entries()[start..]
        .iter()
        .filter_map(|e| match *e {
            Entry::Write { offset, len, .. } => Some(("write", offset, len)),
            Entry::Zero { offset, len } => Some(("zero", offset, len)),
            Entry::Flush => Some(("flush", 0, 0)),
            Entry::Mark(_) => None,
        })
        .collect()
}

#[test]
fn a_write_an_fsync_and_an_unsynced_write_are_recorded_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing.img");
    sparse_file(&backing, 16 * MIB);
    std::fs::create_dir(dir.path().join("fuse")).unwrap();
    let recorder = Recorder::start(&backing, &dir.path().join("fuse")).unwrap();
    let (first, second) = (Aligned::new(8192, 0x11), Aligned::new(4096, 0x22));
    let device = open_direct(recorder.device());
    // Attaching and opening the device may flush it: the sequence starts here.
    recorder.mark("begin");
    // 64 KiB + 512: not page-aligned, so a page cache in between would split it.
    device.write_all_at(first.bytes(), 65536 + 512).unwrap();
    device.sync_all().unwrap();
    device.write_all_at(second.bytes(), MIB).unwrap();
    let log = recorder.log();
    assert_eq!(
        shape(&log, "begin"),
        [
            ("write", 65536 + 512, 8192),
            ("flush", 0, 0),
            ("write", MIB, 4096)
        ]
    );
    let begin = log.mark("begin").unwrap();
    assert_eq!(log.bytes_of(&log.entries()[begin + 1]), first.bytes());
    assert_eq!(log.bytes_of(&log.entries()[begin + 3]), second.bytes());
    drop(device);
    recorder.finish().unwrap();
    let mut on_backing = vec![0; 4096];
    File::open(&backing)
        .unwrap()
        .read_exact_at(&mut on_backing, MIB)
        .unwrap();
    assert_eq!(
        on_backing,
        second.bytes(),
        "the backing file took the write"
    );
}

#[test]
fn marks_sit_between_the_requests_answered_before_and_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing.img");
    sparse_file(&backing, 16 * MIB);
    std::fs::create_dir(dir.path().join("fuse")).unwrap();
    let recorder = Recorder::start(&backing, &dir.path().join("fuse")).unwrap();
    let block = Aligned::new(4096, 0x33);
    let device = open_direct(recorder.device());
    device.write_all_at(block.bytes(), 0).unwrap();
    recorder.mark("between");
    device.write_all_at(block.bytes(), 8192).unwrap();
    drop(device);
    let log = recorder.finish().unwrap();
    let mark = log.mark("between").expect("the mark is logged");
    assert!(matches!(
        log.entries()[mark - 1],
        Entry::Write { offset: 0, .. }
    ));
    assert!(matches!(
        log.entries()[mark + 1],
        Entry::Write { offset: 8192, .. }
    ));
}

#[test]
fn a_file_systems_fsync_reaches_the_recorder_and_the_log_rebuilds_the_disk() {
    let scratch = LoopFs::new(FsType::Btrfs, 512 * MIB);
    let base = scratch.path().join("base.img");
    sparse_file(&base, 64 * MIB);
    let backing = scratch.path().join("backing.img");
    qubes_storaged_powercut::crash_image::clone_file(&base, &backing).unwrap();
    for sub in ["fuse", "mnt"] {
        std::fs::create_dir(scratch.path().join(sub)).unwrap();
    }
    let mut recorder = Recorder::start(&backing, &scratch.path().join("fuse")).unwrap();
    qubes_storaged_powercut::mount::run(
        "mkfs.ext4",
        &["-q".as_ref(), recorder.device().as_os_str()],
    )
    .unwrap();
    let flushes_after_mkfs = recorder.log().summary().flushes;
    recorder.mount(&scratch.path().join("mnt")).unwrap();
    let file = File::create(scratch.path().join("mnt/data")).unwrap();
    file.write_all_at(&[0x5a; 65536], 0).unwrap();
    let before_fsync = recorder.log().summary().flushes;
    file.sync_all().unwrap();
    assert!(
        recorder.log().summary().flushes > before_fsync,
        "fsync of a file on ext4 sends at least one flush"
    );
    drop(file);
    let log = recorder.finish().unwrap();
    assert!(log.summary().flushes > flushes_after_mkfs);
    let end = *boundaries(&log).last().unwrap();
    let state = CrashState {
        boundary: end,
        extra: Vec::new(),
        phase: Phase::During,
        flush_number: 0,
    };
    let rebuilt = scratch.path().join("rebuilt.img");
    let images_dir = scratch.path().join("images");
    std::fs::create_dir(&images_dir).unwrap();
    CrashImages::new(&log, &base, &images_dir)
        .unwrap()
        .build(&state, &rebuilt)
        .unwrap();
    assert!(
        std::fs::read(&rebuilt).unwrap() == std::fs::read(&backing).unwrap(),
        "base image + every logged change == the disk"
    );
}
