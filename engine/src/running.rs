//! A snapshot's or a volatile volume's running image: the boot that made it, and
//! whether a VM may be running on it. Such an image has no barrier
//! (docs/durability.md rule 9): after a power cut it may be anything, and a start makes
//! it afresh unless a VM may still be using it — which one made in an earlier boot
//! never is. Each is marked with the kernel's boot id when it is made.

use std::fs::File;
use std::path::Path;

use tracing::{info, warn};

use crate::dir::{Access, Dir};
use crate::sys;

/// Extended attribute of such a running image: the id of the boot it was made in
/// ([`sys::boot_id`]).
pub const MADE_IN_BOOT: &str = "user.qubes-storaged.boot";

/// When a running image was made, as far as its mark tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    ThisBoot,
    EarlierBoot,
    /// No mark (an older release made it, or the filesystem keeps no user xattrs).
    Unknown,
}

/// Mark a running image being made (`file`, at `path` for the log) with this boot.
/// Without the mark (no boot id, no user xattrs here) it is treated as an older
/// release's image: [`Made::Unknown`]. Every staged file whose content is
/// [`crate::durable::Content::Disposable`] is such an image and gets it there.
pub fn mark_this_boot(file: &File, path: &Path) {
    let marked =
        sys::boot_id().and_then(|boot| sys::set_xattr(file, MADE_IN_BOOT, boot.as_bytes()));
    if let Err(err) = marked {
        warn!(path = %path.display(), error = %err, "cannot mark the running image with this boot");
    }
}

/// When the open running image `file` was made, by its mark.
pub fn made(file: &File) -> Made {
    match (sys::get_xattr(file, MADE_IN_BOOT), sys::boot_id()) {
        (Ok(Some(mark)), Ok(boot)) if mark == boot.as_bytes() => Made::ThisBoot,
        (Ok(Some(_)), Ok(_)) => Made::EarlierBoot,
        _ => Made::Unknown,
    }
}

/// When the running image `name` of `dir` was made; `Unknown` if it cannot be opened.
pub fn made_at(dir: &Dir, name: &str) -> Made {
    dir.open_file(name, Access::Read)
        .map_or(Made::Unknown, |file| made(&file))
}

/// May a VM be running on the running image `name` of `dir`? Not if it was made in an
/// earlier boot; else if anyone besides this operation holds it open — a loop device
/// attached to it, a process (the service keeps no snapshot's or volatile volume's
/// running image open across a start — only those of volumes that commit at stop,
/// whose starts never ask this: `engine/sessions.rs`; a write lease is the probe,
/// [`sys::only_opener`]). What cannot be told counts as in use.
pub fn in_use(dir: &Dir, name: &str) -> bool {
    let path = dir.join(name);
    let file = match dir.open_file(name, Access::ReadWrite) {
        Ok(file) => file,
        Err(err) => {
            warn!(path = %path.display(), error = %err, "cannot open the running image to tell whether it is in use; it is kept");
            return true;
        }
    };
    if made(&file) == Made::EarlierBoot {
        info!(path = %path.display(), "made in an earlier boot: nobody is running on it");
        return false;
    }
    match sys::only_opener(&file) {
        Ok(only) => !only,
        Err(err) => {
            warn!(path = %path.display(), error = %err,
                "cannot tell whether anyone holds the running image; it is kept");
            true
        }
    }
}
