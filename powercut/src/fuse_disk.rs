//! The FUSE file system under the recorded loop device: a root directory holding one
//! regular file, [`DISK_NAME`], whose content is a backing file of the test's. Every
//! WRITE is applied to the backing file and appended to the [`WriteLog`] *before* it
//! is answered, every FSYNC is logged as a flush before it is answered, and a
//! FALLOCATE that punches or zeroes a range (the loop driver's discard and
//! write-zeroes) is logged as a zeroed range. Reads are served from the backing file.
//!
//! The session runs on one thread (fuser's default), so the log order is the order in
//! which the kernel handed the requests over, and a request the kernel waited for is
//! logged before anything it issued afterwards. No writeback cache is negotiated
//! (fuser does not ask for `FUSE_WRITEBACK_CACHE`): every write reaches this code
//! before the writer is told it completed. The thread marks itself an I/O flusher
//! (`PR_SET_IO_FLUSHER`) where it may, as a FUSE server beneath a loop device should,
//! so memory reclaim never waits on writeback that needs this very thread.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};
use rustix::fs::FallocateFlags;

use crate::write_log::WriteLog;

/// The one file of the file system.
pub const DISK_NAME: &str = "disk";
const ROOT: INodeNo = INodeNo::ROOT;
const DISK: INodeNo = INodeNo(2);
/// Attributes never change (the size is fixed), so the kernel may cache them.
const TTL: Duration = Duration::from_secs(3600);

/// The file system: the backing file and the shared log.
pub struct FuseDisk {
    backing: File,
    size: u64,
    log: Arc<Mutex<WriteLog>>,
}

impl FuseDisk {
    pub fn new(backing: File, size: u64, log: Arc<Mutex<WriteLog>>) -> FuseDisk {
        FuseDisk { backing, size, log }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, WriteLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn attr(&self, ino: INodeNo) -> FileAttr {
        let (kind, perm, size) = if ino == ROOT {
            (FileType::Directory, 0o755, 0)
        } else {
            (FileType::RegularFile, 0o600, self.size)
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: if ino == ROOT { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Punch `len` bytes at `offset` out of the backing file (they read as zeros).
    fn zero(&self, offset: u64, len: u64) -> Result<(), Errno> {
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        rustix::fs::fallocate(&self.backing, flags, offset, len)
            .map_err(|e| Errno::from_i32(e.raw_os_error()))
    }
}

/// `FALLOC_FL_PUNCH_HOLE`, `FALLOC_FL_ZERO_RANGE` and `FALLOC_FL_WRITE_ZEROES`: the
/// modes by which the loop driver turns discards and write-zeroes into fallocate.
/// Anything else (a plain allocation) leaves the content as it is.
const ZEROING_MODES: i32 = 0x02 | 0x10 | 0x80;

impl Filesystem for FuseDisk {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> std::io::Result<()> {
        // Needs CAP_SYS_RESOURCE, which containers often drop: then the risk stays
        // theoretical (the disks recorded here are small and memory is plenty).
        if let Err(errno) = rustix::process::configure_io_flusher_behavior(true) {
            tracing::debug!(%errno, "cannot mark the FUSE thread an I/O flusher");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == ROOT && name == DISK_NAME {
            reply.entry(&TTL, &self.attr(DISK), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == ROOT || ino == DISK {
            reply.attr(&TTL, &self.attr(ino));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut buf = vec![0; size as usize];
        match self.backing.read_at(&mut buf, offset) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(e.into()),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if offset + data.len() as u64 > self.size {
            return reply.error(Errno::ENOSPC);
        }
        let mut log = self.log();
        match self.backing.write_all_at(data, offset) {
            Ok(()) => {
                log.record_write(offset, data);
                drop(log);
                reply.written(data.len() as u32);
            }
            Err(e) => reply.error(e.into()),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.log().record_flush();
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // FLUSH is a close(2) of one file descriptor, not a cache flush.
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode & ZEROING_MODES == 0 {
            return reply.ok();
        }
        let mut log = self.log();
        match self.zero(offset, length) {
            Ok(()) => {
                log.record_zero(offset, length);
                drop(log);
                reply.ok();
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        if offset == 0 {
            let _ = reply.add(DISK, 1, FileType::RegularFile, DISK_NAME);
        }
        reply.ok();
    }
}
