//! Real filesystems for engine tests: [`LoopFs`] makes a sparse image file in a temp
//! directory, formats it as btrfs, XFS (with reflink) or ext4, and mounts it with
//! `mount -o loop`; [`LoopDevice`] attaches a file to a loop device of its own. Both
//! undo everything in `Drop` — also when the test panics: unmount (retrying while the
//! mount is busy, then lazily), detach every loop device still backed by the image
//! (`losetup -j`), remove the image. Plus small file helpers (data patterns, allocated
//! bytes, FIEMAP through `filefrag`) that the copy and volume tests share.
//!
//! Everything here needs root; [`require_root`] fails a test with a plain sentence when
//! it runs as another user. Use it from a test crate with `mod common_fs;`.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a busy mount is retried before it is unmounted lazily.
const UNMOUNT_DEADLINE: Duration = Duration::from_secs(10);
const UNMOUNT_RETRY_PAUSE: Duration = Duration::from_millis(100);

pub const MIB: u64 = 1 << 20;

/// Fail the test unless it runs as root.
pub fn require_root() {
    if !rustix::process::geteuid().is_root() {
        panic!("these tests need root (loop mounts)");
    }
}

/// Show the engine's info lines in the test output (`cargo test -- --nocapture`).
/// `RUST_LOG` overrides the default level `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The filesystems the engine supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Btrfs,
    /// XFS made with `-m reflink=1`.
    Xfs,
    Ext4,
}

impl FsType {
    pub fn name(self) -> &'static str {
        match self {
            FsType::Btrfs => "btrfs",
            FsType::Xfs => "xfs",
            FsType::Ext4 => "ext4",
        }
    }

    /// Does FICLONE work on this filesystem?
    pub fn has_reflink(self) -> bool {
        matches!(self, FsType::Btrfs | FsType::Xfs)
    }

    /// The smallest image its mkfs accepts (XFS ≥ 5.19 refuses < 300 MiB).
    pub fn min_size(self) -> u64 {
        match self {
            FsType::Btrfs => 128 * MIB,
            FsType::Xfs => 300 * MIB,
            FsType::Ext4 => 8 * MIB,
        }
    }

    /// `-o` of the mount: `loop`, and for btrfs what `QSD_BTRFS_MOUNT_OPTIONS` adds
    /// (benchmarks: `ssd`, which btrfs picks by itself on a non-rotational disk, while
    /// a loop device on this VM's disk reports a rotational one).
    fn mount_options(self) -> String {
        match (self, std::env::var("QSD_BTRFS_MOUNT_OPTIONS")) {
            (FsType::Btrfs, Ok(extra)) if !extra.is_empty() => format!("loop,{extra}"),
            _ => "loop".to_owned(),
        }
    }

    /// The command that makes this filesystem on `target` (an image file or a device).
    pub fn mkfs(self, target: &Path) -> Command {
        let mut cmd = match self {
            FsType::Btrfs => command("mkfs.btrfs", ["-q", "-f"]),
            FsType::Xfs => command("mkfs.xfs", ["-q", "-f", "-m", "reflink=1"]),
            // No reserved blocks: root's free space is then what statvfs calls free.
            FsType::Ext4 => command("mkfs.ext4", ["-q", "-F", "-m", "0"]),
        };
        cmd.arg(target);
        cmd
    }
}

/// `program args…`, ready to run.
/// Every child process of a test binary is run holding this shared. Between its fork
/// and its exec a child holds every file of the test process, close-on-exec or not;
/// a test whose check counts a file's openers (a write-lease probe: an import file
/// nobody holds any more is committed without a copy) holds it exclusively over that
/// window ([`no_children`]), so that no test beside it forks meanwhile.
static CHILDREN: RwLock<()> = RwLock::new(());

/// Run `cmd` to its end (as [`Command::output`]) while no test holds [`no_children`].
pub fn output(cmd: &mut Command) -> std::io::Result<Output> {
    let _shared = CHILDREN.read().unwrap_or_else(|e| e.into_inner());
    cmd.output()
}

/// No test of this process starts a child process until the guard is dropped; the
/// children started before it have ended.
pub fn no_children() -> RwLockWriteGuard<'static, ()> {
    CHILDREN.write().unwrap_or_else(|e| e.into_inner())
}

pub fn command<A: AsRef<OsStr>>(program: &str, args: impl IntoIterator<Item = A>) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// A freshly made filesystem mounted from a loop device; unmounted and gone on drop.
pub struct LoopFs {
    fs_type: FsType,
    image: PathBuf,
    mount_point: PathBuf,
    mounted: bool,
    /// Holds image and mount point; `None` once it must be left behind (a mount that
    /// could not be undone must not be recursively deleted through).
    dir: Option<TempDir>,
}

impl LoopFs {
    /// Make and mount a `size`-byte filesystem (raised to the type's minimum).
    pub fn new(fs_type: FsType, size: u64) -> LoopFs {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix(&format!("qsd-{}-", fs_type.name()))
            .tempdir()
            .expect("cannot create a temp directory for the image");
        let mut fs = LoopFs {
            fs_type,
            image: dir.path().join("fs.img"),
            mount_point: dir.path().join("mnt"),
            mounted: false,
            dir: Some(dir),
        };
        fs.make_and_mount(size.max(fs_type.min_size()));
        fs
    }

    fn make_and_mount(&mut self, size: u64) {
        File::create(&self.image)
            .and_then(|f| f.set_len(size))
            .expect("cannot create the sparse image file");
        std::fs::create_dir(&self.mount_point).expect("cannot create the mount point");
        run_ok(self.fs_type.mkfs(&self.image));
        let (image, mount_point) = (self.image.as_os_str(), self.mount_point.as_os_str());
        let options = self.fs_type.mount_options();
        run_ok(command(
            "mount",
            ["-o".as_ref(), options.as_ref(), image, mount_point],
        ));
        self.mounted = true;
    }

    /// Unmount and mount again: the filesystem's cached inodes, directory entries and
    /// pages are gone (benchmarks of cold reads; nothing else on the machine is
    /// touched). Nothing may hold a file of it open.
    pub fn remount(&mut self) {
        assert!(
            self.unmount(),
            "cannot unmount {}",
            self.mount_point.display()
        );
        self.mounted = false;
        detach_loop_devices_of(&self.image);
        let (image, mount_point) = (self.image.as_os_str(), self.mount_point.as_os_str());
        let options = self.fs_type.mount_options();
        run_ok(command(
            "mount",
            ["-o".as_ref(), options.as_ref(), image, mount_point],
        ));
        self.mounted = true;
    }

    /// The mount point (the root directory of the filesystem).
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// The image file backing the loop device.
    pub fn image(&self) -> &Path {
        &self.image
    }

    pub fn fs_type(&self) -> FsType {
        self.fs_type
    }

    /// `f_bavail × f_frsize`: what an unprivileged writer could still allocate.
    pub fn free_bytes(&self) -> u64 {
        let st = rustix::fs::statvfs(&self.mount_point).expect("statvfs");
        st.f_bavail * st.f_frsize
    }

    fn unmount(&mut self) -> bool {
        let deadline = Instant::now() + UNMOUNT_DEADLINE;
        loop {
            let out = output(&mut command("umount", [&self.mount_point]));
            if out.as_ref().is_ok_and(|o| o.status.success()) {
                return true;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "LoopFs: {} stays busy: unmounting it lazily",
                    self.mount_point.display()
                );
                let lazy = output(&mut command(
                    "umount",
                    ["-l".as_ref(), self.mount_point.as_os_str()],
                ));
                return lazy.is_ok_and(|o| o.status.success());
            }
            std::thread::sleep(UNMOUNT_RETRY_PAUSE);
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let unmounted = !self.mounted || self.unmount();
        detach_loop_devices_of(&self.image);
        if !unmounted {
            eprintln!(
                "LoopFs: cannot unmount {}: leaving it in place",
                self.mount_point.display()
            );
            if let Some(dir) = self.dir.take() {
                let _ = dir.keep();
            }
        }
    }
}

/// A file attached to a loop device of its own (`losetup -f --show`), detached on drop.
pub struct LoopDevice {
    device: PathBuf,
}

impl LoopDevice {
    /// Attach `file` (which may be a symlink: losetup opens it through the link).
    pub fn attach(file: &Path) -> LoopDevice {
        require_root();
        let out = run_ok(command(
            "losetup",
            ["-f".as_ref(), "--show".as_ref(), file.as_os_str()],
        ));
        let device = String::from_utf8(out.stdout).expect("losetup output");
        LoopDevice {
            device: PathBuf::from(device.trim()),
        }
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.device
    }

    /// The size the kernel currently gives the device, from `/sys/block/loopN/size`.
    pub fn size_bytes(&self) -> u64 {
        let name = self.device.file_name().expect("device name");
        let sectors = std::fs::read_to_string(Path::new("/sys/block").join(name).join("size"))
            .expect("cannot read the loop device's size");
        sectors.trim().parse::<u64>().expect("sysfs size") * 512
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        match output(&mut command(
            "losetup",
            ["-d".as_ref(), self.device.as_os_str()],
        )) {
            Ok(out) if out.status.success() => {}
            other => eprintln!(
                "LoopDevice: cannot detach {}: {other:?}",
                self.device.display()
            ),
        }
    }
}

/// A device mounted on `dir` (its filesystem's usual options), unmounted on drop.
pub struct DeviceMount {
    dir: PathBuf,
}

impl DeviceMount {
    pub fn new(fs_type: FsType, device: &Path, dir: &Path) -> DeviceMount {
        require_root();
        let options = fs_type.mount_options().replace("loop", "defaults");
        run_ok(command(
            "mount",
            [
                "-o".as_ref(),
                options.as_ref(),
                device.as_os_str(),
                dir.as_os_str(),
            ],
        ));
        DeviceMount {
            dir: dir.to_owned(),
        }
    }
}

impl Drop for DeviceMount {
    fn drop(&mut self) {
        unmount_or_say("DeviceMount", &self.dir);
    }
}

/// `umount dir` for a guard's drop: a failure is said on stderr (a drop cannot fail).
fn unmount_or_say(guard: &str, dir: &Path) {
    match output(&mut command("umount", [dir])) {
        Ok(out) if out.status.success() => {}
        other => eprintln!("{guard}: cannot unmount {}: {other:?}", dir.display()),
    }
}

/// `dir` also reachable at `at` (a bind mount); unmounted on drop.
pub struct Bind {
    at: PathBuf,
}

impl Bind {
    pub fn new(dir: &Path, at: &Path) -> Bind {
        require_root();
        run_ok(command(
            "mount",
            ["--bind".as_ref(), dir.as_os_str(), at.as_os_str()],
        ));
        Bind { at: at.to_owned() }
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        unmount_or_say("Bind", &self.at);
    }
}

/// `dir` made read-only in place by a read-only bind mount of itself (what a state
/// directory on a read-only filesystem looks like to the engine); unmounted on drop.
pub struct ReadOnlyBind {
    dir: PathBuf,
}

impl ReadOnlyBind {
    pub fn new(dir: &Path) -> ReadOnlyBind {
        require_root();
        run_ok(command(
            "mount",
            ["--bind".as_ref(), dir.as_os_str(), dir.as_os_str()],
        ));
        let guard = ReadOnlyBind {
            dir: dir.to_owned(),
        };
        run_ok(command(
            "mount",
            ["-o".as_ref(), "remount,bind,ro".as_ref(), dir.as_os_str()],
        ));
        guard
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        unmount_or_say("ReadOnlyBind", &self.dir);
    }
}

/// The filesystem holding `dir`, frozen (`fsfreeze -f`, the FIFREEZE ioctl): from now
/// on every write to it blocks in the kernel until the guard thaws it on drop. Tests
/// freeze a pool's filesystem the moment a copy into it begins, so the copy is held
/// exactly where it is while the test acts (cancels, writes a property, signals the
/// service) — the copy cannot finish first, however fast the machine.
pub struct Frozen {
    dir: PathBuf,
}

impl Frozen {
    pub fn new(dir: &Path) -> Frozen {
        require_root();
        run_ok(command("fsfreeze", ["-f".as_ref(), dir.as_os_str()]));
        Frozen {
            dir: dir.to_owned(),
        }
    }

    /// Thaws now (also what drop does).
    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        match output(&mut command(
            "fsfreeze",
            ["-u".as_ref(), self.dir.as_os_str()],
        )) {
            Ok(out) if out.status.success() => {}
            other => eprintln!("Frozen: cannot thaw {}: {other:?}", self.dir.display()),
        }
    }
}

/// `path` with the immutable attribute (`chattr +i`: nothing in a directory can be
/// unlinked, not even by root); the attribute is cleared on drop.
pub struct Immutable {
    path: PathBuf,
}

impl Immutable {
    pub fn new(path: &Path) -> Immutable {
        run_ok(command("chattr", ["+i".as_ref(), path.as_os_str()]));
        Immutable {
            path: path.to_owned(),
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = output(&mut command(
            "chattr",
            ["-i".as_ref(), self.path.as_os_str()],
        ));
    }
}

/// Detach every loop device still backed by `image` (`losetup -j`).
pub fn detach_loop_devices_of(image: &Path) {
    let Ok(out) = output(&mut command("losetup", ["-j".as_ref(), image.as_os_str()])) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((device, _)) = line.split_once(':') {
            let _ = output(&mut command("losetup", ["-d", device]));
        }
    }
}

/// Run a command that must succeed; panic with its argv and output otherwise.
pub fn run_ok(mut cmd: Command) -> Output {
    let out = output(&mut cmd).unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

// ---- files ----

/// Deterministic, incompressible-looking bytes for `offset..offset+len` of a file made
/// with `seed` (so two files of one test differ and each block is unique).
pub fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut state = seed ^ offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A sparse file of `size` bytes with pattern data at `ranges` (offset, len), fsynced.
pub fn write_sparse_file(path: &Path, size: u64, ranges: &[(u64, u64)], seed: u64) {
    let file = File::create(path).expect("create test file");
    file.set_len(size).expect("set_len");
    for &(offset, len) in ranges {
        let mut done = 0;
        while done < len {
            let piece = (len - done).min(4 * MIB);
            let data = pattern(seed, offset + done, piece as usize);
            file.write_all_at(&data, offset + done)
                .expect("write test data");
            done += piece;
        }
    }
    file.sync_all().expect("fsync test file");
}

/// A file of `size` bytes of pattern data, fsynced.
pub fn write_full_file(path: &Path, size: u64, seed: u64) {
    write_sparse_file(path, size, &[(0, size)], seed);
}

/// Bytes allocated to `path` (`st_blocks × 512`).
pub fn allocated_bytes(path: &Path) -> u64 {
    path.metadata().expect("stat").blocks() * 512
}

/// The names in `dir`, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// One extent as `filefrag -v` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub shared: bool,
}

/// The extents of `path` (FIEMAP through `filefrag -v`; tests only, to check sharing).
pub fn extents(path: &Path) -> Vec<Extent> {
    let out = run_ok(command("filefrag", ["-v".as_ref(), path.as_os_str()]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_extent_line)
        .collect()
}

/// `   0:        0..    1023:       3328..      4351:   1024:             last,shared,eof`
fn parse_extent_line(line: &str) -> Option<Extent> {
    let fields: Vec<&str> = line.split(':').map(str::trim).collect();
    if fields.len() < 4 || fields[0].parse::<u64>().is_err() {
        return None;
    }
    let start = |range: &str| range.split("..").next()?.trim().parse::<u64>().ok();
    Some(Extent {
        logical: start(fields[1])?,
        physical: start(fields[2])?,
        length: fields[3].parse().ok()?,
        shared: fields
            .last()
            .is_some_and(|flags| flags.split(',').any(|f| f == "shared")),
    })
}
