//! Loop devices and mounts of this crate, each undone by its owner: attach a file to
//! a loop device of its own (`losetup -f --show`, optionally with direct I/O, which is
//! verified in sysfs because losetup silently falls back to buffered I/O), mount a
//! device, unmount (retrying while busy, then lazily), detach and wait until the
//! device has let go of its file. [`ImageMount`] is an image file mounted through a
//! loop device of its own, undone on drop — the way a crash image is looked at.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long a busy mount or a detaching loop device is waited for.
const DEADLINE: Duration = Duration::from_secs(20);
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Runs `program args…`; its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::new(format!("cannot run {program}: {e}")))?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "{program} {} failed ({}): {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A loop device of its own for `file`; `direct_io` is verified to be in effect.
pub fn attach_loop(file: &Path, direct_io: bool) -> Result<PathBuf> {
    let dio = if direct_io {
        "--direct-io=on"
    } else {
        "--direct-io=off"
    };
    let out = run(
        "losetup",
        &[
            "-f".as_ref(),
            "--show".as_ref(),
            dio.as_ref(),
            file.as_os_str(),
        ],
    )?;
    let device = PathBuf::from(out.trim());
    if direct_io && !uses_direct_io(&device) {
        let _ = detach_loop(&device);
        return Err(Error::new(format!(
            "{} does not use direct I/O on {} (the file system of the file refuses O_DIRECT)",
            device.display(),
            file.display()
        )));
    }
    Ok(device)
}

fn sysfs_loop(device: &Path, attribute: &str) -> PathBuf {
    let name = device.file_name().unwrap_or_default();
    Path::new("/sys/block")
        .join(name)
        .join("loop")
        .join(attribute)
}

fn uses_direct_io(device: &Path) -> bool {
    std::fs::read_to_string(sysfs_loop(device, "dio")).is_ok_and(|s| s.trim() == "1")
}

/// Detaches `device` and waits until it no longer holds its backing file.
pub fn detach_loop(device: &Path) -> Result<()> {
    run("losetup", &["-d".as_ref(), device.as_os_str()])?;
    let deadline = Instant::now() + DEADLINE;
    while sysfs_loop(device, "backing_file").exists() {
        if Instant::now() >= deadline {
            return Err(Error::new(format!(
                "{} still holds its backing file",
                device.display()
            )));
        }
        std::thread::sleep(RETRY_PAUSE);
    }
    Ok(())
}

/// Mounts `device` at `mount_point` with the file system's defaults (which replays its
/// journal, if it needs to).
pub fn mount_device(device: &Path, mount_point: &Path) -> Result<()> {
    run("mount", &[device.as_os_str(), mount_point.as_os_str()]).map(|_| ())
}

/// Unmounts `mount_point`, retrying while it is busy; lazily after the deadline (an
/// error then, but the mount is gone from the namespace).
pub fn unmount(mount_point: &Path) -> Result<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match run("umount", &[mount_point.as_os_str()]) {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                let _ = run("umount", &["-l".as_ref(), mount_point.as_os_str()]);
                return Err(err);
            }
            Err(_) => std::thread::sleep(RETRY_PAUSE),
        }
    }
}

/// An image file mounted at a mount point through a loop device of its own; unmounted
/// and detached on drop.
pub struct ImageMount {
    device: PathBuf,
    mount_point: PathBuf,
    mounted: bool,
}

impl ImageMount {
    /// Mounts `image` at `mount_point` (buffered loop I/O: nothing is recorded here).
    pub fn new(image: &Path, mount_point: &Path) -> Result<ImageMount> {
        let device = attach_loop(image, false)?;
        let mut mount = ImageMount {
            device,
            mount_point: mount_point.to_owned(),
            mounted: false,
        };
        mount_device(&mount.device, mount_point)?;
        mount.mounted = true;
        Ok(mount)
    }

    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Unmounts and detaches now, reporting what went wrong.
    pub fn close(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        if self.mounted {
            self.mounted = false;
            unmount(&self.mount_point)?;
        }
        if !self.device.as_os_str().is_empty() {
            let device = std::mem::take(&mut self.device);
            detach_loop(&device)?;
        }
        Ok(())
    }
}

impl Drop for ImageMount {
    fn drop(&mut self) {
        if let Err(err) = self.teardown() {
            eprintln!("ImageMount: {err}");
        }
    }
}
