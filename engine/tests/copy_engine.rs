//! The copy engine, the durability primitives it sits on and the loop device refresh,
//! on real loop-mounted btrfs, XFS (reflink=1) and ext4: reflinks where the filesystem
//! can, hole-preserving byte copies where it cannot (same filesystem and across
//! filesystems), the reference's dst_size / copy_mtime cases (R§7.1 test_000…013),
//! cancellation, ENOSPC, the reflink probe and LOOP_SET_CAPACITY through a symlink.
//! Needs root.

mod common_fs;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use common_fs::{
    allocated_bytes, extents, names_in, write_full_file, write_sparse_file, FsType, LoopDevice,
    LoopFs, MIB,
};
use qubes_storage_engine::copy::{copy_path, probe_reflink, CopyMethod, CopyOptions};
use qubes_storage_engine::dir::Dir;
use qubes_storage_engine::{durable, loopdev, CancelToken, ErrorKind, OpCtx, ProgressSink};

// ---- helpers ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Started(u64),
    Advanced(u64),
    Finished(bool),
}

/// Records every progress call; optionally cancels on the first `copy_advanced`.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Progress>>,
    cancel_on_advance: Option<CancelToken>,
}

impl Recorder {
    fn calls(&self) -> Vec<Progress> {
        self.calls.lock().unwrap().clone()
    }
}

impl ProgressSink for Recorder {
    fn copy_started(&self, _operation: &str, total: u64) {
        self.calls.lock().unwrap().push(Progress::Started(total));
    }
    fn copy_advanced(&self, done: u64) {
        self.calls.lock().unwrap().push(Progress::Advanced(done));
        if let Some(token) = &self.cancel_on_advance {
            token.cancel();
        }
    }
    fn copy_finished(&self, success: bool) {
        self.calls.lock().unwrap().push(Progress::Finished(success));
    }
}

fn recording_ctx(cancel_on_advance: bool) -> (OpCtx, Arc<Recorder>) {
    let token = CancelToken::new();
    let recorder = Arc::new(Recorder {
        calls: Mutex::new(Vec::new()),
        cancel_on_advance: cancel_on_advance.then(|| token.clone()),
    });
    (OpCtx::new("CopyTest", recorder.clone(), token), recorder)
}

fn quiet() -> OpCtx {
    OpCtx::quiet("CopyTest")
}

fn copy_all(src: &Path, dst: &Path) -> CopyMethod {
    copy_path(src, dst, CopyOptions::default(), &quiet()).expect("copy")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read")
}

/// Four 1 MiB data ranges scattered over a 64 MiB file.
const SCATTERED: [(u64, u64); 4] = [(0, MIB), (10 * MIB, MIB), (33 * MIB, MIB), (63 * MIB, MIB)];

fn assert_allocation_close(dst: &Path, src: &Path) {
    let (dst_alloc, src_alloc) = (allocated_bytes(dst), allocated_bytes(src));
    assert!(
        dst_alloc.abs_diff(src_alloc) <= 256 << 10,
        "holes not kept: {dst_alloc} bytes allocated for the copy, {src_alloc} for the source"
    );
}

// ---- reflink ----

fn check_reflink_shares_extents(fs_type: FsType) {
    common_fs::init_logging();
    let fs = LoopFs::new(fs_type, 512 * MIB);
    let (src, dst) = (fs.path().join("src.img"), fs.path().join("dst.img"));
    write_full_file(&src, 8 * MIB, 1);

    assert_eq!(copy_all(&src, &dst), CopyMethod::Reflink);

    assert_ne!(src.metadata().unwrap().ino(), dst.metadata().unwrap().ino());
    assert_eq!(read(&dst), read(&src));
    let (src_extents, dst_extents) = (extents(&src), extents(&dst));
    assert!(!dst_extents.is_empty());
    assert!(
        dst_extents.iter().all(|e| e.shared),
        "not shared: {dst_extents:?}"
    );
    let physical = |list: &[common_fs::Extent]| list.iter().map(|e| e.physical).collect::<Vec<_>>();
    assert_eq!(physical(&dst_extents), physical(&src_extents));
}

#[test]
fn btrfs_copy_is_a_reflink_into_a_new_inode() {
    check_reflink_shares_extents(FsType::Btrfs);
}

#[test]
fn xfs_copy_is_a_reflink_into_a_new_inode() {
    check_reflink_shares_extents(FsType::Xfs);
}

// ---- byte copies ----

#[test]
fn ext4_copy_falls_back_to_copy_file_range_and_keeps_holes() {
    common_fs::init_logging();
    let fs = LoopFs::new(FsType::Ext4, 256 * MIB);
    let (src, dst) = (fs.path().join("src.img"), fs.path().join("dst.img"));
    write_sparse_file(&src, 64 * MIB, &SCATTERED, 2);
    let (ctx, recorder) = recording_ctx(false);

    let method = copy_path(&src, &dst, CopyOptions::default(), &ctx).unwrap();

    assert_eq!(method, CopyMethod::CopyFileRange);
    assert_eq!(dst.metadata().unwrap().len(), 64 * MIB);
    assert_allocation_close(&dst, &src);
    assert!(allocated_bytes(&dst) < 8 * MIB);
    assert_eq!(read(&dst), read(&src));
    let calls = recorder.calls();
    assert_eq!(
        calls.first(),
        Some(&Progress::Started(4 * MIB)),
        "{calls:?}"
    );
    assert_eq!(
        calls[calls.len() - 2..],
        [Progress::Advanced(4 * MIB), Progress::Finished(true)]
    );
}

#[test]
fn copy_from_btrfs_to_ext4_falls_back_to_read_write_and_keeps_holes() {
    common_fs::init_logging();
    let (from, to) = (
        LoopFs::new(FsType::Btrfs, 256 * MIB),
        LoopFs::new(FsType::Ext4, 256 * MIB),
    );
    let (src, dst) = (from.path().join("src.img"), to.path().join("dst.img"));
    write_sparse_file(&src, 64 * MIB, &SCATTERED, 3);

    assert_eq!(copy_all(&src, &dst), CopyMethod::ReadWrite);

    assert_eq!(dst.metadata().unwrap().len(), 64 * MIB);
    assert!(
        allocated_bytes(&dst) < 8 * MIB,
        "{} bytes allocated",
        allocated_bytes(&dst)
    );
    assert!(allocated_bytes(&dst) >= 4 * MIB);
    assert_eq!(read(&dst), read(&src));
}

#[test]
fn copy_of_a_file_onto_itself_with_dst_size_makes_a_new_inode() {
    common_fs::init_logging();
    let fs = LoopFs::new(FsType::Ext4, 64 * MIB);
    let path = fs.path().join("clean.img");
    write_full_file(&path, MIB, 4);
    let before = (path.metadata().unwrap().ino(), read(&path));
    let opts = CopyOptions {
        dst_size: Some(3 * MIB),
        copy_mtime: false,
        disposable: false,
        own_image: false,
    };

    copy_path(&path, &path, opts, &quiet()).unwrap();

    let meta = path.metadata().unwrap();
    assert_ne!(meta.ino(), before.0);
    assert_eq!(meta.len(), 3 * MIB);
    let content = read(&path);
    assert_eq!(content[..MIB as usize], before.1[..]);
    assert!(content[MIB as usize..].iter().all(|&b| b == 0));
    assert_eq!(names_in(fs.path()), ["clean.img", "lost+found"]);
}

// ---- the reference's copy cases (R§7.1 test_000…013) ----

struct ReferenceCase {
    id: &'static str,
    dst_size: Option<u64>,
    copy_mtime: bool,
}

const REFERENCE_CASES: [ReferenceCase; 8] = [
    ReferenceCase {
        id: "000",
        dst_size: None,
        copy_mtime: false,
    },
    ReferenceCase {
        id: "001",
        dst_size: Some(333_333),
        copy_mtime: false,
    },
    ReferenceCase {
        id: "002",
        dst_size: Some(111_111),
        copy_mtime: false,
    },
    ReferenceCase {
        id: "003",
        dst_size: Some(0),
        copy_mtime: false,
    },
    ReferenceCase {
        id: "010",
        dst_size: None,
        copy_mtime: true,
    },
    ReferenceCase {
        id: "011",
        dst_size: Some(333_333),
        copy_mtime: true,
    },
    ReferenceCase {
        id: "012",
        dst_size: Some(111_111),
        copy_mtime: true,
    },
    ReferenceCase {
        id: "013",
        dst_size: Some(0),
        copy_mtime: true,
    },
];

const SRC_LEN: u64 = 222_222;
/// 2020-09-13T12:26:40.123456789Z: far from "now", with nanoseconds.
const SRC_MTIME: (i64, i64) = (1_600_000_000, 123_456_789);

fn make_reference_source(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir(dir).unwrap();
    let src = dir.join("src.img");
    std::fs::write(&src, common_fs::pattern(5, 0, SRC_LEN as usize)).unwrap();
    let time = rustix::fs::Timespec {
        tv_sec: SRC_MTIME.0,
        tv_nsec: SRC_MTIME.1 as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::futimens(std::fs::File::open(&src).unwrap(), &times).unwrap();
    src
}

fn expected_content(src: &[u8], dst_size: Option<u64>) -> Vec<u8> {
    let mut content = src.to_vec();
    if let Some(size) = dst_size {
        content.resize(size as usize, 0);
    }
    content
}

fn check_reference_case(fs: &LoopFs, src: &Path, case: &ReferenceCase) {
    let id = case.id;
    let dst_dir = fs.path().join(format!("case_{id}"));
    let dst = dst_dir.join("dst.img");
    let src_before = (read(src), src.metadata().unwrap());
    let opts = CopyOptions {
        dst_size: case.dst_size,
        copy_mtime: case.copy_mtime,
        disposable: false,
        own_image: false,
    };

    let method = copy_path(src, &dst, opts, &quiet()).unwrap();

    let expected_method = match (case.dst_size, fs.fs_type().has_reflink()) {
        (Some(0), _) => CopyMethod::Nothing,
        (_, true) => CopyMethod::Reflink,
        (_, false) => CopyMethod::CopyFileRange,
    };
    assert_eq!(method, expected_method, "test_{id}");
    assert!(
        dst_dir.is_dir(),
        "test_{id}: destination directory not created"
    );
    let (dst_meta, src_meta) = (dst.metadata().unwrap(), src.metadata().unwrap());
    assert_ne!(dst_meta.ino(), src_meta.ino(), "test_{id}");
    assert_eq!(dst_meta.permissions().mode() & 0o7777, 0o600, "test_{id}");
    assert_eq!(read(src), src_before.0, "test_{id}: source changed");
    assert_eq!(
        src_meta.mtime_nsec(),
        src_before.1.mtime_nsec(),
        "test_{id}: source mtime"
    );
    assert_eq!(
        read(&dst),
        expected_content(&src_before.0, case.dst_size),
        "test_{id}"
    );
    let same_mtime = (dst_meta.mtime(), dst_meta.mtime_nsec()) == SRC_MTIME;
    assert_eq!(
        same_mtime,
        case.copy_mtime,
        "test_{id}: mtime {:?}",
        dst_meta.mtime()
    );
    assert_eq!(
        names_in(&dst_dir),
        ["dst.img"],
        "test_{id}: temp left behind"
    );
}

fn check_reference_cases(fs_type: FsType) {
    common_fs::init_logging();
    let fs = LoopFs::new(fs_type, 256 * MIB);
    let src = make_reference_source(&fs.path().join("src"));
    for case in &REFERENCE_CASES {
        check_reference_case(&fs, &src, case);
    }
}

#[test]
fn reference_copy_cases_000_to_013_on_btrfs() {
    check_reference_cases(FsType::Btrfs);
}

#[test]
fn reference_copy_cases_000_to_013_on_xfs() {
    check_reference_cases(FsType::Xfs);
}

#[test]
fn reference_copy_cases_000_to_013_on_ext4() {
    check_reference_cases(FsType::Ext4);
}

// ---- cancellation and errors ----

#[test]
fn cancel_mid_copy_leaves_no_temp_and_no_dst() {
    common_fs::init_logging();
    let fs = LoopFs::new(FsType::Ext4, 256 * MIB);
    let src = fs.path().join("src.img");
    write_full_file(&src, 64 * MIB, 6);
    let out = fs.path().join("out");
    let (ctx, recorder) = recording_ctx(true);

    let err = copy_path(&src, &out.join("dst.img"), CopyOptions::default(), &ctx).unwrap_err();

    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(
        names_in(&out).is_empty(),
        "left behind: {:?}",
        names_in(&out)
    );
    assert_eq!(
        recorder.calls(),
        [
            Progress::Started(64 * MIB),
            Progress::Advanced(16 * MIB),
            Progress::Finished(false)
        ]
    );
}

/// Leave only `keep` bytes free on `fs` by allocating a filler file.
fn fill_up(fs: &LoopFs, keep: u64) {
    let filler = std::fs::File::create(fs.path().join("filler")).unwrap();
    let len = fs
        .free_bytes()
        .checked_sub(keep)
        .expect("filesystem already too full");
    rustix::fs::fallocate(&filler, rustix::fs::FallocateFlags::empty(), 0, len).unwrap();
    filler.sync_all().unwrap();
}

fn check_enospc_keeps_old_dst(src: &Path, fs: &LoopFs) {
    let vm = fs.path().join("vm");
    std::fs::create_dir(&vm).unwrap();
    let dst = vm.join("dst.img");
    std::fs::write(&dst, b"old content").unwrap();
    let ino = dst.metadata().unwrap().ino();
    fill_up(fs, 8 * MIB);

    let err = copy_path(src, &dst, CopyOptions::default(), &quiet()).unwrap_err();

    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err}");
    assert_eq!(names_in(&vm), ["dst.img"], "temp left behind");
    assert_eq!(read(&dst), b"old content");
    assert_eq!(dst.metadata().unwrap().ino(), ino);
}

#[test]
fn enospc_in_a_copy_file_range_copy_is_no_space_and_keeps_the_old_dst() {
    common_fs::init_logging();
    let fs = LoopFs::new(FsType::Ext4, 64 * MIB);
    let src = fs.path().join("src.img");
    write_full_file(&src, 24 * MIB, 7);
    check_enospc_keeps_old_dst(&src, &fs);
}

#[test]
fn enospc_in_a_read_write_copy_is_no_space_and_keeps_the_old_dst() {
    common_fs::init_logging();
    let (from, to) = (
        LoopFs::new(FsType::Btrfs, 256 * MIB),
        LoopFs::new(FsType::Ext4, 64 * MIB),
    );
    let src = from.path().join("src.img");
    write_full_file(&src, 24 * MIB, 8);
    check_enospc_keeps_old_dst(&src, &to);
}

// ---- reflink probe ----

fn check_probe(fs_type: FsType) {
    common_fs::init_logging();
    let fs = LoopFs::new(fs_type, 512 * MIB);
    let before = names_in(fs.path());

    let supported = probe_reflink(fs.path()).unwrap();

    assert_eq!(supported, fs_type.has_reflink(), "{}", fs_type.name());
    assert_eq!(names_in(fs.path()), before, "the probe left a file behind");
}

#[test]
fn probe_reflink_is_true_on_btrfs() {
    check_probe(FsType::Btrfs);
}

#[test]
fn probe_reflink_is_true_on_xfs() {
    check_probe(FsType::Xfs);
}

#[test]
fn probe_reflink_is_false_on_ext4() {
    check_probe(FsType::Ext4);
}

#[test]
fn probe_reflink_of_a_missing_directory_is_an_error() {
    let err = probe_reflink(Path::new("/nonexistent/qsd-probe")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

// ---- loop devices (R§7.1 test_100) ----

#[test]
fn refresh_loop_devices_through_a_symlink_updates_every_device_of_the_file() {
    common_fs::init_logging();
    common_fs::require_root();
    let dir = tempfile::tempdir().unwrap();
    let (image, link, other) = (
        dir.path().join("dirty.img"),
        dir.path().join("link.img"),
        dir.path().join("other.img"),
    );
    let handle = Dir::open_path(dir.path()).unwrap();
    durable::create_sparse_at(&handle, "dirty.img", 111 * MIB).unwrap();
    durable::create_sparse_at(&handle, "other.img", MIB).unwrap();
    std::os::unix::fs::symlink(&image, &link).unwrap();
    assert_eq!(allocated_bytes(&image), 0);
    let devices = [LoopDevice::attach(&image), LoopDevice::attach(&link)];
    let sizes = |devices: &[LoopDevice]| devices.iter().map(|d| d.size_bytes()).collect::<Vec<_>>();
    assert_eq!(sizes(&devices), [111 * MIB, 111 * MIB]);

    durable::truncate_at(&handle, "dirty.img", 222 * MIB).unwrap();
    assert_eq!(allocated_bytes(&image), 0);
    assert_eq!(loopdev::refresh_loop_devices(&other).unwrap(), 0);
    assert_eq!(sizes(&devices), [111 * MIB, 111 * MIB]);

    assert_eq!(loopdev::refresh_loop_devices(&link).unwrap(), 2);
    assert_eq!(sizes(&devices), [222 * MIB, 222 * MIB]);
}

/// The durability rules depend on the filesystem's kind (`sys::fs_kind`), which is
/// kept per mount so that hot paths need no `fstatfs`. One loop device carries btrfs,
/// then XFS, then ext4, each mounted on the same directory: the path and (for XFS and
/// ext4) the device number stay the same, and the kind must follow the filesystem (a
/// cache keyed by either would answer XFS for the ext4).
#[test]
fn the_filesystem_kind_follows_each_mount_of_one_device() {
    use qubes_storage_engine::sys::{fs_kind, FsKind};
    let scratch = tempfile::tempdir().expect("tempdir");
    let image = scratch.path().join("disk.img");
    let file = std::fs::File::create(&image).expect("image");
    file.set_len(FsType::Xfs.min_size().max(FsType::Btrfs.min_size()))
        .expect("size the image");
    drop(file);
    let mount_point = scratch.path().join("mnt");
    std::fs::create_dir(&mount_point).expect("mount point");
    let device = LoopDevice::attach(&image);
    let mut devices = Vec::new();
    for (fs_type, kind) in [
        (FsType::Btrfs, FsKind::Btrfs),
        (FsType::Xfs, FsKind::Xfs { log_inside: true }),
        (FsType::Ext4, FsKind::Other),
    ] {
        common_fs::run_ok(fs_type.mkfs(device.path()));
        let _mounted = common_fs::DeviceMount::new(fs_type, device.path(), &mount_point);
        let dir = std::fs::File::open(&mount_point).expect("open the mount point");
        devices.push(dir.metadata().expect("stat").dev());
        assert_eq!(fs_kind(&dir), kind, "{}", fs_type.name());
        assert_eq!(fs_kind(&dir), kind, "{}, asked again", fs_type.name());
    }
    // btrfs gives its files an anonymous device number; XFS and ext4 that of the loop
    // device, so these two were told apart by the mount, not by the number.
    assert_eq!(
        devices[1], devices[2],
        "XFS and ext4 on one device: {devices:?}"
    );
}
