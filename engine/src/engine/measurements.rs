//! Measuring one volume's space on demand ([`crate::space`]): every file of the volume
//! — committed image, running image, precache, import, revisions — mapped with FIEMAP
//! under the volume's lock held shared, as bytes exclusive to the file and bytes
//! shared. The revisions' exclusive bytes are remembered (in memory only) and shown in
//! the volume's revision details until the next measurement; a restart forgets them.
//! Never on the hot path: only this call walks extents.

use std::collections::{BTreeMap, HashMap};
use std::sync::MutexGuard;

use tracing::info;

use super::Engine;
use crate::context::OpCtx;
use crate::dir::{Access, Dir, Entry};
use crate::error::{ErrorKind, Result};
use crate::extent::{self, Extent};
use crate::meter::Meter;
use crate::model::{Revision, VolumeInfo, VolumeRef};
use crate::revision;
use crate::space::{FileSpace, ImageRole, ImageSpace};
use crate::volume::Volume;

/// A walk over images of at least this many bytes (their sizes) is announced (a Job on
/// the bus).
pub const MEASURE_ANNOUNCE_FROM: u64 = 1 << 30;

/// The last measured exclusive bytes of each revision, by volume.
#[derive(Debug, Default)]
pub struct Measurements(HashMap<VolumeRef, BTreeMap<Revision, u64>>);

impl Measurements {
    fn record(&mut self, vol: &VolumeRef, images: &[ImageSpace]) {
        let revisions = images
            .iter()
            .filter_map(|i| Some((i.revision?, i.space.exclusive)))
            .collect();
        self.0.insert(vol.clone(), revisions);
    }

    fn exclusive(&self, vol: &VolumeRef, revision: &Revision) -> Option<u64> {
        self.0.get(vol)?.get(revision).copied()
    }

    /// Only the measurements of `existing` revisions of `vol`.
    pub(super) fn retain(&mut self, vol: &VolumeRef, existing: &[Revision]) {
        if let Some(measured) = self.0.get_mut(vol) {
            measured.retain(|r, _| existing.contains(r));
        }
    }

    /// Whether any revision of `vol` was measured.
    pub(super) fn holds(&self, vol: &VolumeRef) -> bool {
        self.0.get(vol).is_some_and(|m| !m.is_empty())
    }

    /// The volume is gone.
    pub(super) fn forget(&mut self, vol: &VolumeRef) {
        self.0.remove(vol);
    }
}

/// One file of a volume to measure.
struct Image {
    role: ImageRole,
    revision: Option<Revision>,
    name: String,
    entry: Entry,
}

impl Engine {
    pub(super) fn measurements(&self) -> MutexGuard<'_, Measurements> {
        self.measured.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last measured exclusive bytes of `info`'s revisions.
    pub(super) fn add_measurements(&self, vol: &VolumeRef, info: &mut VolumeInfo) {
        let measured = self.measurements();
        for details in &mut info.revision_details {
            details.exclusive = measured.exclusive(vol, &details.revision);
        }
    }

    /// The exclusive and shared bytes of each file of the volume, in the order
    /// committed, running, precache, import, revisions by id.
    pub fn measure_volume(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<Vec<ImageSpace>> {
        // What earlier operations left for after their replies (a precache to make,
        // discarded files to delete) is done first, so the files measured are the
        // volume's state, not a moment of its housekeeping. No lock is held meanwhile.
        self.settle_pool(&vol.pool);
        let images = self.with_volume_read(vol, ctx, |v| measure_files(v, ctx))?;
        self.measurements().record(vol, &images);
        let total: u64 = images.iter().map(|i| i.space.total()).sum();
        info!(pool = %vol.pool, vid = %vol.vid, files = images.len(), bytes = total, "volume space measured");
        Ok(images)
    }
}

fn measure_files(v: &Volume<'_>, ctx: &OpCtx) -> Result<Vec<ImageSpace>> {
    let Some(dir) = v.vm_dir()? else {
        return Ok(Vec::new());
    };
    let images = images_of(v, &dir)?;
    let total = images.iter().map(|i| i.entry.size()).sum();
    let mut meter = Meter::start(ctx, total, MEASURE_ANNOUNCE_FROM);
    let mut measured = Vec::with_capacity(images.len());
    for image in images {
        if let Some(space) = measure_file(&dir, &image.name, &image.entry, &mut meter)? {
            measured.push(ImageSpace {
                role: image.role,
                revision: image.revision,
                space,
            });
        }
    }
    meter.finish(true);
    Ok(measured)
}

/// The volume's files that exist, as regular files.
fn images_of(v: &Volume<'_>, dir: &Dir) -> Result<Vec<Image>> {
    let paths = &v.paths;
    let mut wanted = vec![
        (ImageRole::Committed, None, paths.clean_name()),
        (ImageRole::Running, None, paths.dirty_name()),
        (ImageRole::Precache, None, paths.precache_name()),
        (ImageRole::Import, None, paths.import_name()),
    ];
    for r in revision::list_in(dir, paths)? {
        wanted.push((
            ImageRole::Revision,
            Some(r),
            paths.revision_name(r.id, r.timestamp),
        ));
    }
    let mut images = Vec::new();
    for (role, revision, name) in wanted {
        if let Some(entry) = dir.entry(&name)?.filter(Entry::is_file) {
            images.push(Image {
                role,
                revision,
                name,
                entry,
            });
        }
    }
    Ok(images)
}

/// One file's space (`None` when it disappeared meanwhile).
pub(super) fn measure_file(
    dir: &Dir,
    name: &str,
    entry: &Entry,
    meter: &mut Meter<'_>,
) -> Result<Option<FileSpace>> {
    let Some(extents) = map_file(dir, name, entry, meter)? else {
        return Ok(None);
    };
    Ok(Some(FileSpace::of(&extents, entry.links() > 1)))
}

/// A file's extents; on a filesystem without FIEMAP, its allocated bytes as one extent
/// of unknown address. `None` when it disappeared meanwhile.
pub(super) fn map_file(
    dir: &Dir,
    name: &str,
    entry: &Entry,
    meter: &mut Meter<'_>,
) -> Result<Option<Vec<Extent>>> {
    let file = match dir.open_file(name, Access::Read) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let size = entry.size();
    let mut walked = 0;
    let path = dir.join(name);
    let mut advance = |reached: u64| {
        let reached = reached.min(size);
        let step = reached.saturating_sub(walked);
        walked = walked.max(reached);
        meter.advance(step)
    };
    let mapped = extent::map(&file, &path.display(), &mut advance)?;
    advance(size)?;
    Ok(Some(mapped.unwrap_or_else(|| {
        vec![Extent::of_unknown_address(entry.allocated())]
    })))
}
