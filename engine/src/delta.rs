//! Changed blocks between two states of a volume (`ExportDelta`): the byte ranges where
//! the committed image differs from a revision (the base), so a backup tool copies
//! only those — the role of ZFS's `send -i` for images kept by reflinks.
//!
//! How the ranges are found, cheapest proof first:
//!
//! 1. **Where data is**: SEEK_DATA/SEEK_HOLE of both files ([`sys::data_ranges`]), the
//!    base read as zeros past its end. Hole against hole is equal.
//! 2. **Physical extents** ([`crate::extent`]): where both files map an offset to the
//!    same physical address, they share that extent (a reflink) and hold the same
//!    bytes — unchanged, nothing read. This is the common case: a revision and the
//!    committed image after it share every extent the session did not write.
//! 3. **Bytes**, only where the extents differ: both sides read (a hole side is
//!    zeros, not read) and compared. A different address proves nothing — a file can
//!    be rewritten with the same bytes, and ext4 shares nothing — so differing extents
//!    are compared, never assumed changed.
//!
//! FIEMAP only ever proves equality here; it never decides where data is (GNU cp's
//! lesson). The result is at a [`Granularity`]: every aligned granule holding a
//! differing byte, merged into maximal ranges and cut at the image's size (granularity
//! 1 gives exactly the differing bytes). Applying it — the base truncated to `size`,
//! then each range copied from the committed image — reproduces the committed image.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::context::OpCtx;
use crate::error::{EngineError, IoContext, Result};
use crate::extent::{self, Extent};
use crate::meter::Meter;
use crate::sys;

/// A comparison of at least this many bytes is announced (a Job on the bus).
pub const COMPARE_ANNOUNCE_FROM: u64 = 64 << 20;
/// Bytes read per file between two polls of the cancel token.
const READ_CHUNK: usize = 1 << 20;
/// Compared as one slice before finer granules are looked at.
const BLOCK: u64 = 4096;

/// The unit of the ranges: a power of two from 1 byte to 1 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granularity(u64);

impl Granularity {
    /// Whole 4 KiB blocks: what a backup tool writes anyway.
    pub const DEFAULT: Granularity = Granularity(4096);
    pub const MAX: u64 = 1 << 20;

    pub fn new(bytes: u64) -> Result<Granularity> {
        if !bytes.is_power_of_two() || bytes > Self::MAX {
            return Err(EngineError::invalid(format!(
                "the granularity must be a power of two from 1 to {} bytes, not {bytes}",
                Self::MAX
            )));
        }
        Ok(Granularity(bytes))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// The ranges where the committed image differs from the base.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// The committed image's size: the base is truncated to it before the ranges are
    /// applied.
    pub size: u64,
    /// `(offset, length)`, ordered, neither overlapping nor touching.
    pub ranges: Vec<(u64, u64)>,
    /// Bytes compared (where the extents differed), and bytes read to do it.
    pub bytes_compared: u64,
    pub bytes_read: u64,
}

impl Delta {
    /// The bytes the ranges cover.
    pub fn changed_bytes(&self) -> u64 {
        self.ranges.iter().map(|(_, len)| len).sum()
    }
}

/// What a stretch of one file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Hole,
    /// Data, with the physical address of the stretch's first byte when an extent's
    /// address names it.
    Data(Option<u64>),
}

/// `[start, end)` of one file with one kind of content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stretch {
    start: u64,
    end: u64,
    content: Content,
}

impl Stretch {
    /// The content at `offset` (an address moves with the offset).
    fn at(&self, offset: u64) -> Content {
        match self.content {
            Content::Data(Some(address)) => Content::Data(Some(address + (offset - self.start))),
            other => other,
        }
    }
}

/// A range whose bytes must be compared, and which sides hold data there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    start: u64,
    end: u64,
    base_data: bool,
    target_data: bool,
}

/// The ranges where `target` (the committed image) differs from `base` (a revision).
/// Both must be files nobody writes (committed images and revisions never change).
pub fn changed_ranges(
    base: &File,
    base_what: &str,
    target: &File,
    target_what: &str,
    granularity: Granularity,
    ctx: &OpCtx,
) -> Result<Delta> {
    let size = file_size(target, target_what)?;
    let base_size = file_size(base, base_what)?.min(size);
    let base_layout = layout_of(base, base_what, base_size, size, ctx)?;
    let target_layout = layout_of(target, target_what, size, size, ctx)?;
    let regions = plan(&base_layout, &target_layout, size);
    let compared: u64 = regions.iter().map(|r| r.end - r.start).sum();
    let mut meter = Meter::start(ctx, compared, COMPARE_ANNOUNCE_FROM);
    let files = Pair {
        base,
        base_what,
        target,
        target_what,
    };
    let (ranges, bytes_read) = files.compare(&regions, granularity.get(), size, &mut meter)?;
    meter.finish(true);
    Ok(Delta {
        size,
        ranges,
        bytes_compared: compared,
        bytes_read,
    })
}

fn file_size(file: &File, what: &str) -> Result<u64> {
    let stat = sys::stat_fd(file).io_ctx(|| format!("cannot stat {what}"))?;
    Ok(stat.st_size as u64)
}

/// The stretches of `file` over `[0, size)`, its data found up to `data_len`.
fn layout_of(
    file: &File,
    what: &str,
    data_len: u64,
    size: u64,
    ctx: &OpCtx,
) -> Result<Vec<Stretch>> {
    let data =
        sys::data_ranges(file, data_len).io_ctx(|| format!("cannot find the data of {what}"))?;
    let mut polled = |_| match ctx.is_cancelled() {
        true => Err(EngineError::cancelled()),
        false => Ok(()),
    };
    let extents = extent::map(file, &what, &mut polled)?.unwrap_or_default();
    Ok(layout(&data, &extents, size))
}

/// Holes between the data ranges; data split where extents begin and end, each piece
/// with its address when its extent has one.
fn layout(data: &[(u64, u64)], extents: &[Extent], size: u64) -> Vec<Stretch> {
    let mut out = Vec::new();
    let mut pos = 0;
    for &(offset, len) in data {
        let (start, end) = (offset.min(size), offset.saturating_add(len).min(size));
        if start >= end {
            continue;
        }
        if start > pos {
            out.push(hole(pos, start));
        }
        data_stretches(start, end, extents, &mut out);
        pos = end;
    }
    if pos < size {
        out.push(hole(pos, size));
    }
    out
}

fn hole(start: u64, end: u64) -> Stretch {
    Stretch {
        start,
        end,
        content: Content::Hole,
    }
}

/// `[start, end)` of data, split at the boundaries of the (ordered) extents.
fn data_stretches(start: u64, end: u64, extents: &[Extent], out: &mut Vec<Stretch>) {
    let mut cursor = start;
    let first = extents.partition_point(|e| e.end() <= start);
    for e in extents[first..].iter().take_while(|e| e.logical < end) {
        if e.end() <= cursor {
            continue;
        }
        if e.logical > cursor {
            out.push(data(cursor, e.logical, None));
        }
        let (from, to) = (cursor.max(e.logical), end.min(e.end()));
        let address = e.has_address().then(|| e.address_of(from));
        out.push(data(from, to, address));
        cursor = to;
    }
    if cursor < end {
        out.push(data(cursor, end, None));
    }
}

fn data(start: u64, end: u64, address: Option<u64>) -> Stretch {
    Stretch {
        start,
        end,
        content: Content::Data(address),
    }
}

/// The regions to compare: wherever the two layouts are not provably equal (both
/// holes, or data at the same address).
fn plan(base: &[Stretch], target: &[Stretch], size: u64) -> Vec<Region> {
    let mut regions: Vec<Region> = Vec::new();
    let (mut i, mut j, mut pos) = (0, 0, 0);
    while pos < size {
        while base[i].end <= pos {
            i += 1;
        }
        while target[j].end <= pos {
            j += 1;
        }
        let end = base[i].end.min(target[j].end);
        let (b, t) = (base[i].at(pos), target[j].at(pos));
        let equal = match (b, t) {
            (Content::Hole, Content::Hole) => true,
            (Content::Data(Some(x)), Content::Data(Some(y))) => x == y,
            _ => false,
        };
        if !equal {
            let region = Region {
                start: pos,
                end,
                base_data: b != Content::Hole,
                target_data: t != Content::Hole,
            };
            match regions.last_mut() {
                Some(last)
                    if last.end == pos
                        && (last.base_data, last.target_data)
                            == (region.base_data, region.target_data) =>
                {
                    last.end = end;
                }
                _ => regions.push(region),
            }
        }
        pos = end;
    }
    regions
}

/// The two files being compared.
struct Pair<'a> {
    base: &'a File,
    base_what: &'a str,
    target: &'a File,
    target_what: &'a str,
}

impl Pair<'_> {
    /// Compare every region chunk by chunk; returns the differing granules as ranges
    /// and the bytes read.
    fn compare(
        &self,
        regions: &[Region],
        granularity: u64,
        size: u64,
        meter: &mut Meter<'_>,
    ) -> Result<(Vec<(u64, u64)>, u64)> {
        let mut ranges = Ranges::new(granularity, size);
        let mut base_buf = vec![0u8; READ_CHUNK];
        let mut target_buf = vec![0u8; READ_CHUNK];
        let zeros = vec![0u8; READ_CHUNK];
        let mut read = 0;
        for region in regions {
            let mut at = region.start;
            while at < region.end {
                let len = (region.end - at).min(READ_CHUNK as u64) as usize;
                let b = match region.base_data {
                    true => read_at(self.base, self.base_what, &mut base_buf[..len], at)?,
                    false => &zeros[..len],
                };
                let t = match region.target_data {
                    true => read_at(self.target, self.target_what, &mut target_buf[..len], at)?,
                    false => &zeros[..len],
                };
                read += len as u64 * (u64::from(region.base_data) + u64::from(region.target_data));
                ranges.add_differences(b, t, at);
                meter.advance(len as u64)?;
                at += len as u64;
            }
        }
        Ok((ranges.into_ranges(), read))
    }
}

fn read_at<'b>(file: &File, what: &str, buf: &'b mut [u8], at: u64) -> Result<&'b [u8]> {
    file.read_exact_at(buf, at)
        .io_ctx(|| format!("cannot read {} bytes at {at} of {what}", buf.len()))?;
    Ok(buf)
}

/// Differing granules, gathered in increasing order into maximal ranges.
struct Ranges {
    granularity: u64,
    size: u64,
    ranges: Vec<(u64, u64)>,
}

impl Ranges {
    fn new(granularity: u64, size: u64) -> Ranges {
        Ranges {
            granularity,
            size,
            ranges: Vec::new(),
        }
    }

    /// Add the granules of `[at, at + a.len())` where `a` and `b` differ: blocks are
    /// compared whole, granules inside a differing block one by one.
    fn add_differences(&mut self, a: &[u8], b: &[u8], at: u64) {
        let block = self.granularity.max(BLOCK);
        let mut i = 0;
        while i < a.len() {
            let n = cell_len(at + i as u64, block, a.len() - i);
            if a[i..i + n] != b[i..i + n] {
                self.add_granules(&a[i..i + n], &b[i..i + n], at + i as u64);
            }
            i += n;
        }
    }

    /// The granules of one differing block.
    fn add_granules(&mut self, a: &[u8], b: &[u8], at: u64) {
        let mut i = 0;
        while i < a.len() {
            let n = cell_len(at + i as u64, self.granularity, a.len() - i);
            if a[i..i + n] != b[i..i + n] {
                self.add_granule(at + i as u64);
            }
            i += n;
        }
    }

    /// The granule holding byte `offset`.
    fn add_granule(&mut self, offset: u64) {
        let start = offset - offset % self.granularity;
        let end = (start + self.granularity).min(self.size);
        match self.ranges.last_mut() {
            Some(last) if last.1 >= start => last.1 = last.1.max(end),
            _ => self.ranges.push((start, end)),
        }
    }

    fn into_ranges(self) -> Vec<(u64, u64)> {
        self.ranges.into_iter().map(|(s, e)| (s, e - s)).collect()
    }
}

/// The bytes from `offset` to the next multiple of `cell`, at most `left`.
fn cell_len(offset: u64, cell: u64, left: usize) -> usize {
    let to_boundary = cell - offset % cell;
    (to_boundary as usize).min(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::{FIEMAP_EXTENT_ENCODED, FIEMAP_EXTENT_SHARED};

    fn ext(logical: u64, physical: u64, length: u64) -> Extent {
        Extent {
            logical,
            physical,
            length,
            flags: FIEMAP_EXTENT_SHARED,
        }
    }

    fn region(start: u64, end: u64, base_data: bool, target_data: bool) -> Region {
        Region {
            start,
            end,
            base_data,
            target_data,
        }
    }

    #[test]
    fn data_is_split_at_extent_boundaries_with_addresses() {
        let extents = [ext(0, 1000, 4096), ext(8192, 5000, 4096)];
        let got = layout(&[(0, 12288)], &extents, 16384);
        assert_eq!(
            got,
            [
                data(0, 4096, Some(1000)),
                data(4096, 8192, None),
                data(8192, 12288, Some(5000)),
                hole(12288, 16384)
            ]
        );
    }

    #[test]
    fn an_extent_without_a_usable_address_proves_nothing() {
        let mut compressed = ext(0, 1000, 4096);
        compressed.flags |= FIEMAP_EXTENT_ENCODED;
        assert_eq!(
            layout(&[(0, 4096)], &[compressed], 4096),
            [data(0, 4096, None)]
        );
    }

    #[test]
    fn shared_extents_and_common_holes_are_not_compared() {
        let base = layout(&[(0, 8192)], &[ext(0, 100, 8192)], 16384);
        let target = layout(
            &[(0, 8192), (12288, 4096)],
            &[
                ext(0, 100, 4096),
                ext(4096, 900, 4096),
                ext(12288, 50, 4096),
            ],
            16384,
        );
        assert_eq!(
            plan(&base, &target, 16384),
            [
                region(4096, 8192, true, true),
                region(12288, 16384, false, true)
            ]
        );
    }

    #[test]
    fn a_base_shorter_than_the_image_reads_as_holes_past_its_end() {
        let base = layout(&[(0, 4096)], &[ext(0, 100, 4096)], 4096 * 2);
        let target = layout(&[(0, 8192)], &[ext(0, 100, 8192)], 8192);
        assert_eq!(
            plan(&base, &target, 8192),
            [region(4096, 8192, false, true)]
        );
    }

    #[test]
    fn differences_are_whole_granules_merged_and_cut_at_the_size() {
        let mut ranges = Ranges::new(4096, 10_000);
        let a = vec![0u8; 10_000];
        let mut b = a.clone();
        b[5] = 1;
        b[4096 + 7] = 1;
        b[9_999] = 1;
        ranges.add_differences(&a, &b, 0);
        assert_eq!(ranges.into_ranges(), [(0, 10_000)]);

        let mut ranges = Ranges::new(1, 100);
        let mut b = vec![0u8; 100];
        b[3] = 1;
        b[4] = 2;
        b[90] = 3;
        ranges.add_differences(&[0u8; 100], &b, 0);
        assert_eq!(ranges.into_ranges(), [(3, 2), (90, 1)]);
    }

    #[test]
    fn granules_align_to_the_file_not_to_the_chunk() {
        let mut ranges = Ranges::new(4096, 1 << 20);
        let a = vec![0u8; 100];
        let mut b = a.clone();
        b[0] = 1;
        ranges.add_differences(&a, &b, 4096 + 50);
        assert_eq!(ranges.into_ranges(), [(4096, 4096)]);
    }

    #[test]
    fn granularity_is_a_power_of_two_up_to_a_mebibyte() {
        for ok in [1, 512, 4096, 1 << 20] {
            assert_eq!(Granularity::new(ok).unwrap().get(), ok);
        }
        for bad in [0, 3, 4097, 2 << 20] {
            assert!(Granularity::new(bad).is_err(), "{bad}");
        }
    }
}
