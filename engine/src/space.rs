//! Honest space: where a pool's bytes really are, when reflinks share them. `Usage`
//! (st_blocks) counts a shared extent in full in every file that references it, so
//! an origin with two revisions seems to take three times its size. Here each byte is
//! counted by who references it, from the files' extents ([`crate::extent`]):
//!
//! * **one file** ([`FileSpace::of`]): its extents flagged FIEMAP_EXTENT_SHARED are
//!   *shared*, the others *exclusive* — exactly what deleting the file gives back, and
//!   what `btrfs filesystem du` reports as Total − Exclusive and Exclusive. A file with
//!   other names (a snapshot volume's link to its source's image) has nothing
//!   exclusive: deleting one name frees nothing. On ext4 (no reflinks) everything is
//!   exclusive.
//! * **a set of files** — a volume's images and revisions ([`account`]): the physical
//!   ranges of every file of the pool are laid side by side. A range only the volume's
//!   files reference, with nothing outside the pool referencing it, is *exclusive* to
//!   the volume: what its Remove gives back. Everything else it references is
//!   *shared*. Each physical byte counts once per volume, however many of its files
//!   share it. Something outside the pool is seen when FIEMAP calls a range shared that
//!   only one file offset of the pool references, and when an inode has more links
//!   than the pool's names of it.
//!
//! Limits, said where the numbers are shown: references from outside the pool to a
//! range that two of the volume's own files share are not seen (an open export's
//! private copy, a `cp --reflink` elsewhere on the filesystem), so the volume's
//! exclusive bytes are then an upper bound; btrfs frees an extent only when no part of
//! it is referenced, so after partial overwrites it may give back less; compressed
//! extents are counted by their uncompressed length, as `btrfs filesystem du` does.

use crate::extent::Extent;
use crate::model::Revision;

/// Bytes of one file or one volume: exclusive (only it references them: deleting it
/// gives them back) and shared (something else references them too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileSpace {
    pub exclusive: u64,
    pub shared: u64,
}

impl FileSpace {
    /// One file from its extents; `other_names`: its inode has more than this one name.
    pub fn of(extents: &[Extent], other_names: bool) -> FileSpace {
        let mut space = FileSpace::default();
        for e in extents.iter().filter(|e| e.takes_space()) {
            if e.is_shared() || other_names {
                space.shared += e.length;
            } else {
                space.exclusive += e.length;
            }
        }
        space
    }

    /// Every byte it references.
    pub fn total(&self) -> u64 {
        self.exclusive + self.shared
    }
}

/// Which file of a volume an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageRole {
    /// `<name>.img`, the committed image.
    Committed,
    /// `<name>-dirty.img`, the image the VM writes while started.
    Running,
    /// `<name>-precache.img`, the copy a start renames.
    Precache,
    /// `<name>-import.img`, an import in progress.
    Import,
    /// `<name>.img.<id>@<timestamp>Z`.
    Revision,
}

impl ImageRole {
    /// The word the bus and the CLI use: `committed`, `running`, `precache`, `import`,
    /// `revision`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageRole::Committed => "committed",
            ImageRole::Running => "running",
            ImageRole::Precache => "precache",
            ImageRole::Import => "import",
            ImageRole::Revision => "revision",
        }
    }
}

/// The space of one file of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSpace {
    pub role: ImageRole,
    /// The revision, for [`ImageRole::Revision`].
    pub revision: Option<Revision>,
    pub space: FileSpace,
}

/// The space of one volume of a pool, as a set of files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpace {
    pub vid: crate::names::Vid,
    /// `exclusive`: what a Remove of the volume gives back; `shared`: the bytes it
    /// references that something else references too.
    pub space: FileSpace,
}

/// One inode of a pool: who holds it and its extents.
#[derive(Debug, Clone, Default)]
pub struct Holding {
    /// The volumes (indices) whose files are names of this inode.
    pub owners: Vec<usize>,
    /// Something else holds it too: a name of no measured volume, or more links than
    /// the names found.
    pub others: bool,
    pub extents: Vec<Extent>,
}

/// One physical range of one extent of a holding.
#[derive(Debug, Clone, Copy)]
struct Piece {
    start: u64,
    end: u64,
    holding: usize,
    shared: bool,
}

/// The space of each of `volumes` owners, from every holding of the pool (see the
/// module doc).
pub fn account(holdings: &[Holding], volumes: usize) -> Vec<FileSpace> {
    let mut totals = vec![FileSpace::default(); volumes];
    let mut pieces = Vec::new();
    for (index, holding) in holdings.iter().enumerate() {
        for e in holding.extents.iter().filter(|e| e.takes_space()) {
            if e.has_address() {
                pieces.push(Piece {
                    start: e.physical,
                    end: e.physical.saturating_add(e.length),
                    holding: index,
                    shared: e.is_shared(),
                });
            } else {
                // No address to compare: it counts for this inode's holders alone.
                let only = single_owner(&holding.owners, holding.others || e.is_shared());
                add(&mut totals, &holding.owners, only, e.length);
            }
        }
    }
    sweep(&pieces, holdings, &mut totals);
    totals
}

/// The one volume holding something, if nothing else does.
fn single_owner(owners: &[usize], others: bool) -> Option<usize> {
    match owners {
        [one] if !others => Some(*one),
        _ => None,
    }
}

/// `bytes` exclusive to `only`, or shared by every owner.
fn add(totals: &mut [FileSpace], owners: &[usize], only: Option<usize>, bytes: u64) {
    match only {
        Some(owner) => totals[owner].exclusive += bytes,
        None => owners.iter().for_each(|o| totals[*o].shared += bytes),
    }
}

/// Walk the physical address space from boundary to boundary; between two, the pieces
/// that cover it say who references those bytes.
fn sweep(pieces: &[Piece], holdings: &[Holding], totals: &mut [FileSpace]) {
    let mut bounds: Vec<(u64, bool, usize)> = Vec::with_capacity(pieces.len() * 2);
    for (i, p) in pieces.iter().enumerate() {
        bounds.push((p.start, true, i));
        bounds.push((p.end, false, i));
    }
    // At one address, ends before starts: touching ranges do not overlap.
    bounds.sort_unstable_by_key(|&(at, starts, i)| (at, starts, i));
    let mut active: Vec<usize> = Vec::new();
    let mut from = 0;
    for (at, starts, i) in bounds {
        if at > from && !active.is_empty() {
            classify(&active, pieces, holdings, at - from, totals);
        }
        from = at;
        if starts {
            active.push(i);
        } else if let Some(pos) = active.iter().position(|&a| a == i) {
            active.swap_remove(pos);
        }
    }
}

/// Count `bytes` referenced by the `active` pieces.
fn classify(
    active: &[usize],
    pieces: &[Piece],
    holdings: &[Holding],
    bytes: u64,
    totals: &mut [FileSpace],
) {
    let mut owners: Vec<usize> = Vec::new();
    let mut others = active.len() == 1 && pieces[active[0]].shared;
    for &i in active {
        let holding = &holdings[pieces[i].holding];
        others |= holding.others;
        owners.extend(&holding.owners);
    }
    owners.sort_unstable();
    owners.dedup();
    let only = single_owner(&owners, others);
    add(totals, &owners, only, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::{FIEMAP_EXTENT_DATA_INLINE, FIEMAP_EXTENT_SHARED};

    fn at(physical: u64, length: u64, shared: bool) -> Extent {
        Extent {
            logical: 0,
            physical,
            length,
            flags: if shared { FIEMAP_EXTENT_SHARED } else { 0 },
        }
    }

    fn holding(owners: &[usize], extents: Vec<Extent>) -> Holding {
        Holding {
            owners: owners.to_vec(),
            others: false,
            extents,
        }
    }

    fn space(exclusive: u64, shared: u64) -> FileSpace {
        FileSpace { exclusive, shared }
    }

    #[test]
    fn a_file_counts_shared_extents_as_shared_and_inline_ones_not_at_all() {
        let mut inline = at(0, 100, false);
        inline.flags = FIEMAP_EXTENT_DATA_INLINE;
        let extents = [at(0, 4096, true), at(8192, 8192, false), inline];
        assert_eq!(FileSpace::of(&extents, false), space(8192, 4096));
        assert_eq!(FileSpace::of(&extents, true), space(0, 12288));
    }

    #[test]
    fn an_origin_and_its_revision_sharing_a_range_own_it_together() {
        // Volume 0: the committed image and a revision share 0..4096; each has 4096 of
        // its own. Nothing else references anything.
        let holdings = [
            holding(&[0], vec![at(0, 4096, true), at(4096, 4096, false)]),
            holding(&[0], vec![at(0, 4096, true), at(8192, 4096, false)]),
        ];
        assert_eq!(account(&holdings, 1), [space(12288, 0)]);
    }

    #[test]
    fn a_range_another_volume_references_is_shared_by_both() {
        // A template (0) and a snapshot volume's running image (1) cloned from it; the
        // snapshot overwrote the second half. XFS splits the template's extent where
        // its sharing ends.
        let holdings = [
            holding(&[0], vec![at(0, 4096, true), at(4096, 4096, false)]),
            holding(&[1], vec![at(0, 4096, true), at(65536, 4096, false)]),
        ];
        assert_eq!(
            account(&holdings, 2),
            [space(4096, 4096), space(4096, 4096)]
        );
    }

    #[test]
    fn a_btrfs_extent_shared_in_part_is_shared_throughout() {
        // btrfs flags the template's whole extent shared and frees none of it while the
        // snapshot references half of it: nothing of it is given back by a Remove.
        let holdings = [
            holding(&[0], vec![at(0, 8192, true)]),
            holding(&[1], vec![at(0, 4096, true)]),
        ];
        assert_eq!(account(&holdings, 2), [space(0, 8192), space(0, 4096)]);
    }

    #[test]
    fn a_shared_range_referenced_once_in_the_pool_is_held_outside_it() {
        let holdings = [holding(
            &[0],
            vec![at(0, 4096, true), at(4096, 4096, false)],
        )];
        assert_eq!(account(&holdings, 1), [space(4096, 4096)]);
    }

    #[test]
    fn a_hardlinked_image_belongs_to_every_volume_that_names_it() {
        let holdings = [holding(&[0, 1], vec![at(0, 4096, false)])];
        assert_eq!(account(&holdings, 2), [space(0, 4096), space(0, 4096)]);
    }

    #[test]
    fn files_of_no_volume_and_extra_links_count_as_others() {
        let mut stray = holding(&[], vec![at(0, 4096, true)]);
        stray.others = true;
        let mut linked = holding(&[1], vec![at(1 << 20, 4096, false)]);
        linked.others = true;
        let template = holding(&[0], vec![at(0, 4096, true), at(4096, 4096, false)]);
        let holdings = [template, stray, linked];
        assert_eq!(account(&holdings, 2), [space(4096, 4096), space(0, 4096)]);
    }

    #[test]
    fn ranges_are_split_where_pieces_of_one_volume_overlap() {
        // Two revisions of one volume overlapping in the middle, nothing else around.
        let holdings = [
            holding(&[0], vec![at(0, 8192, false)]),
            holding(&[0], vec![at(4096, 8192, false)]),
        ];
        assert_eq!(account(&holdings, 1), [space(12288, 0)]);
    }
}
