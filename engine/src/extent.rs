//! The physical extents of a file, walked with FIEMAP ([`crate::sys::fiemap`], with
//! FIEMAP_FLAG_SYNC so delayed allocations are on disk first): what the space
//! accounting ([`crate::space`]) and the changed-block comparison ([`crate::delta`])
//! read. Nothing here decides what data a file holds — GNU cp dropped FIEMAP for that
//! after years of corrupt copies, and so does this engine (SEEK_DATA/SEEK_HOLE says
//! where data is). FIEMAP is used for two things only:
//!
//! * **space**: which extents a file references, how long they are and whether the
//!   filesystem says another file (or another offset) references them too
//!   (FIEMAP_EXTENT_SHARED: btrfs and XFS; ext4 never shares);
//! * **proof of equality**: two files whose extents sit at the same physical address
//!   hold the same bytes there (a reflink). A different address proves nothing, and
//!   the bytes are then compared.
//!
//! Flags (`<linux/fiemap.h>`) and what they mean here: extents that are inline,
//! delayed or of unknown location take no data space of their own (`btrfs filesystem
//! du` skips them the same way); an address is trusted to name the data only for an
//! extent that is written, not encoded (compressed), not inline or a tail, not
//! unaligned, of known location and not delayed.

use std::fs::File;

use crate::error::{IoContext, Result};
use crate::sys::{self, FiemapExtent};

pub const FIEMAP_EXTENT_LAST: u32 = 0x0000_0001;
pub const FIEMAP_EXTENT_UNKNOWN: u32 = 0x0000_0002;
pub const FIEMAP_EXTENT_DELALLOC: u32 = 0x0000_0004;
pub const FIEMAP_EXTENT_ENCODED: u32 = 0x0000_0008;
pub const FIEMAP_EXTENT_NOT_ALIGNED: u32 = 0x0000_0100;
pub const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x0000_0200;
pub const FIEMAP_EXTENT_DATA_TAIL: u32 = 0x0000_0400;
pub const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x0000_0800;
pub const FIEMAP_EXTENT_SHARED: u32 = 0x0000_2000;

/// Extents that take no data space of their own (as `btrfs filesystem du` counts).
const NO_SPACE: u32 = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_DATA_INLINE;
/// Extents whose physical address does not name their bytes.
const NO_ADDRESS: u32 = NO_SPACE
    | FIEMAP_EXTENT_ENCODED
    | FIEMAP_EXTENT_NOT_ALIGNED
    | FIEMAP_EXTENT_DATA_TAIL
    | FIEMAP_EXTENT_UNWRITTEN;

/// One extent of a file, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: u32,
}

impl Extent {
    /// The allocated bytes of a file on a filesystem without FIEMAP: space without an
    /// address (never proves equality, never shared).
    pub fn of_unknown_address(length: u64) -> Extent {
        Extent {
            logical: 0,
            physical: 0,
            length,
            flags: FIEMAP_EXTENT_NOT_ALIGNED,
        }
    }

    pub fn end(&self) -> u64 {
        self.logical.saturating_add(self.length)
    }

    /// The filesystem says something else references these bytes too.
    pub fn is_shared(&self) -> bool {
        self.flags & FIEMAP_EXTENT_SHARED != 0
    }

    /// It takes data space of its own.
    pub fn takes_space(&self) -> bool {
        self.flags & NO_SPACE == 0 && self.length > 0
    }

    /// Its physical address names its bytes: another extent at the same address holds
    /// the same bytes.
    pub fn has_address(&self) -> bool {
        self.flags & NO_ADDRESS == 0 && self.length > 0
    }

    /// The physical address of logical byte `offset` (inside the extent).
    pub fn address_of(&self, offset: u64) -> u64 {
        self.physical + (offset - self.logical)
    }
}

impl From<FiemapExtent> for Extent {
    fn from(e: FiemapExtent) -> Extent {
        Extent {
            logical: e.fe_logical,
            physical: e.fe_physical,
            length: e.fe_length,
            flags: e.fe_flags,
        }
    }
}

/// Every extent of `file` in logical order, or `None` on a filesystem without FIEMAP.
/// `walked` hears the logical offset reached after each batch of
/// [`sys::FIEMAP_BATCH`] extents and may stop the walk with an error (a cancel).
pub fn map(
    file: &File,
    what: &dyn std::fmt::Display,
    walked: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Option<Vec<Extent>>> {
    let mut extents: Vec<Extent> = Vec::new();
    let mut start = 0;
    loop {
        let Some(batch) =
            sys::fiemap(file, start).io_ctx(|| format!("cannot map the extents of {what}"))?
        else {
            return Ok(None);
        };
        let Some(last) = batch.last().copied().map(Extent::from) else {
            break;
        };
        extents.extend(batch.into_iter().map(Extent::from));
        if last.flags & FIEMAP_EXTENT_LAST != 0 || last.end() <= start {
            break;
        }
        start = last.end();
        walked(start)?;
    }
    Ok(Some(extents))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extent(flags: u32) -> Extent {
        Extent {
            logical: 4096,
            physical: 1 << 20,
            length: 8192,
            flags,
        }
    }

    #[test]
    fn inline_delayed_and_unknown_extents_take_no_space() {
        assert!(extent(0).takes_space());
        assert!(extent(FIEMAP_EXTENT_SHARED | FIEMAP_EXTENT_LAST).takes_space());
        assert!(extent(FIEMAP_EXTENT_UNWRITTEN).takes_space());
        for flags in [
            FIEMAP_EXTENT_DATA_INLINE,
            FIEMAP_EXTENT_DELALLOC,
            FIEMAP_EXTENT_UNKNOWN,
        ] {
            assert!(!extent(flags).takes_space(), "{flags:#x}");
        }
    }

    #[test]
    fn only_plain_written_extents_have_an_address_that_names_their_bytes() {
        assert!(extent(FIEMAP_EXTENT_SHARED).has_address());
        for flags in [
            FIEMAP_EXTENT_ENCODED,
            FIEMAP_EXTENT_UNWRITTEN,
            FIEMAP_EXTENT_DATA_INLINE,
            FIEMAP_EXTENT_DATA_TAIL,
            FIEMAP_EXTENT_NOT_ALIGNED,
            FIEMAP_EXTENT_DELALLOC,
        ] {
            assert!(!extent(flags).has_address(), "{flags:#x}");
        }
    }

    #[test]
    fn addresses_follow_the_logical_offset() {
        let e = extent(0);
        assert_eq!(e.address_of(4096), 1 << 20);
        assert_eq!(e.address_of(4096 + 100), (1 << 20) + 100);
        assert_eq!(e.end(), 4096 + 8192);
    }

    #[test]
    fn a_file_is_mapped_to_its_end() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        file.write_all(&vec![7u8; 64 << 10]).unwrap();
        let file = File::open(&path).unwrap();
        let mut batches = 0;
        let mapped = map(&file, &"f", &mut |_| {
            batches += 1;
            Ok(())
        })
        .unwrap();
        // A filesystem without FIEMAP (tmpfs) has no map; any other maps all 64 KiB.
        if let Some(extents) = mapped {
            let bytes: u64 = extents.iter().map(|e| e.length).sum();
            assert!(bytes >= 64 << 10, "{extents:?}");
        }
        assert_eq!(batches, 0, "one batch holds a small file");
    }
}
