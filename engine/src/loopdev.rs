//! Live resize support (R§3.15): after a started volume's dirty image grew or shrank in
//! place, every loop device backed by it must re-read its size. A loop device is backed
//! by our file iff `/sys/block/loop<N>/loop/backing_file` is exactly the file's
//! realpath plus a newline (a deleted backing file reads "… (deleted)" and does not
//! match); then LOOP_SET_CAPACITY on `/dev/loop<N>` opened read-only. Devices that
//! vanish during the scan are skipped.
//!
//! The kernel writes the backing file's path as `d_path()` of the file it opened, so a
//! device attached through a symlink shows the target's real path: resolving `image`
//! with realpath first makes a refresh through any alias find it. The `loop`
//! subdirectory exists only while a device is bound, so unbound devices read as
//! ENOENT (or ENXIO while being torn down) and are skipped like vanished ones.

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tracing::info;

use crate::error::{IoContext, Result};
use crate::sys;

const SYS_BLOCK: &str = "/sys/block";

/// Make every loop device backed by `image` re-read its size. Returns how many were
/// updated.
pub fn refresh_loop_devices(image: &Path) -> Result<usize> {
    let real =
        std::fs::canonicalize(image).io_ctx(|| format!("cannot resolve {}", image.display()))?;
    let expected = backing_file_line(&real);
    let mut updated = 0;
    for name in loop_device_names()? {
        if backing_file_of(&name)?.as_deref() != Some(expected.as_slice()) {
            continue;
        }
        if set_capacity(&name)? {
            info!(op = "loop_refresh", path = %real.display(), device = %name, "loop device re-read its size");
            updated += 1;
        }
    }
    Ok(updated)
}

/// What sysfs shows for a device backed by `real`: the path and a newline.
fn backing_file_line(real: &Path) -> Vec<u8> {
    let mut line = real.as_os_str().as_bytes().to_vec();
    line.push(b'\n');
    line
}

/// Is `name` a loop device's name: `loop` followed by decimal digits only?
fn is_loop_device_name(name: &str) -> bool {
    name.strip_prefix("loop")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The names `loop<N>` in /sys/block.
fn loop_device_names() -> Result<Vec<String>> {
    let entries = std::fs::read_dir(SYS_BLOCK).io_ctx(|| format!("cannot list {SYS_BLOCK}"))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.io_ctx(|| format!("cannot list {SYS_BLOCK}"))?;
        if let Some(name) = entry
            .file_name()
            .to_str()
            .filter(|n| is_loop_device_name(n))
        {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Did the device vanish (or is it unbound)?
fn is_gone(err: &io::Error) -> bool {
    use rustix::io::Errno;
    err.kind() == io::ErrorKind::NotFound
        || matches!(Errno::from_io_error(err), Some(Errno::NXIO | Errno::NODEV))
}

/// The raw content of `/sys/block/<name>/loop/backing_file`; `None` if unbound or gone.
fn backing_file_of(name: &str) -> Result<Option<Vec<u8>>> {
    let path: PathBuf = [SYS_BLOCK, name, "loop", "backing_file"].iter().collect();
    match std::fs::read(&path) {
        Ok(content) => Ok(Some(content)),
        Err(err) if is_gone(&err) => Ok(None),
        Err(err) => Err(err).io_ctx(|| format!("cannot read {}", path.display())),
    }
}

/// LOOP_SET_CAPACITY on `/dev/<name>`; `false` if the device vanished meanwhile.
fn set_capacity(name: &str) -> Result<bool> {
    let dev = Path::new("/dev").join(name);
    let file = match File::open(&dev) {
        Ok(file) => file,
        Err(err) if is_gone(&err) => return Ok(false),
        Err(err) => return Err(err).io_ctx(|| format!("cannot open {}", dev.display())),
    };
    match sys::loop_set_capacity(&file) {
        Ok(()) => Ok(true),
        Err(err) if is_gone(&err) => Ok(false),
        Err(err) => Err(err).io_ctx(|| format!("cannot update the size of {}", dev.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loop_and_digits_are_loop_devices() {
        for name in ["loop0", "loop7", "loop123"] {
            assert!(is_loop_device_name(name), "{name}");
        }
        for name in ["loop", "loop-control", "loop1p1", "sda", "zram0", "xloop1"] {
            assert!(!is_loop_device_name(name), "{name}");
        }
    }

    #[test]
    fn backing_file_line_is_path_and_newline() {
        assert_eq!(backing_file_line(Path::new("/a/b c.img")), b"/a/b c.img\n");
    }

    #[test]
    fn a_missing_image_is_not_found() {
        let err = refresh_loop_devices(Path::new("/nonexistent/qsd/x.img")).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::NotFound);
    }
}
