//! Live resize support (R§3.15): after a started volume's dirty image grew or shrank in
//! place, every loop device backed by it must re-read its size. A loop device is backed
//! by our file iff `/sys/block/loop<N>/loop/backing_file` is exactly the file's
//! realpath plus a newline (a deleted backing file reads "… (deleted)" and does not
//! match); then LOOP_SET_CAPACITY on `/dev/loop<N>` opened read-only. Devices that
//! vanish during the scan are skipped.

use std::path::Path;

use crate::error::Result;

/// Make every loop device backed by `image` re-read its size. Returns how many were
/// updated.
pub fn refresh_loop_devices(image: &Path) -> Result<usize> {
    let _ = image;
    unimplemented!("loopdev::refresh_loop_devices")
}
