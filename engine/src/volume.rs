//! The volume state machine: what each operation does to a volume's files (R§3.4–3.21),
//! for every kind (origin, origin with snapshots disabled, snapshot, volatile,
//! origin_snapshot). The caller ([`crate::engine`]) holds the volume's lock and
//! records a change of `config` (the nominal size) in the order the operation needs.
//!
//! State lives in the filesystem: the dirty image exists ⇔ the volume is started;
//! revisions are the revision files; the size is the image's size. Every change goes
//! through [`crate::durable`] or [`crate::copy`], so a crash leaves the old or the new
//! committed state, never a mix. Files are reached through the VM directory opened
//! beneath the pool directory's fd ([`crate::pool::open_vm_dir`]), never by path, and
//! every file that is renamed, linked, opened or handed out must be a regular file.

use std::fs::File;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::context::OpCtx;
use crate::copy::{self, CopyOptions};
use crate::dir::{not_regular, Access, Dir, Entry};
use crate::durable;
use crate::error::{EngineError, Result};
use crate::event::EventKind;
use crate::layout::VolumePaths;
use crate::loopdev;
use crate::model::{Revision, VolumeConfig, VolumeKind};
use crate::names::{ImageSize, Vid};
use crate::pool;
use crate::revision;

/// One volume, as an operation sees it.
pub struct Volume<'a> {
    /// The pool directory, opened for this operation; `None` when it could not be
    /// opened (getters then see no files).
    root: Option<&'a Dir>,
    pub config: VolumeConfig,
    pub paths: VolumePaths,
}

/// What an operation needs to know about the snapshot source (same pool).
pub struct SourceView {
    pub paths: VolumePaths,
    pub config: VolumeConfig,
}

/// Refuse an import below the current size without `allow_shrink` (contract rev 2,
/// like Resize); the size itself is an [`ImageSize`] (whole sectors below 2^63).
pub fn check_import_size(size: ImageSize, current: u64, allow_shrink: bool) -> Result<()> {
    let size = size.get();
    if size < current && !allow_shrink {
        return Err(EngineError::invalid(format!(
            "importing {size} bytes would shrink the volume from {current} bytes and can destroy data; pass allow_shrink=true to do it anyway"
        )));
    }
    Ok(())
}

impl<'a> Volume<'a> {
    /// The volume in the pool directory `root`.
    pub fn new(root: &'a Dir, config: VolumeConfig) -> Self {
        Self::at(root.path(), Some(root), config)
    }

    /// The volume in the pool at `pool_dir`, whose directory `root` may not be open
    /// (a getter on a pool whose directory is missing sees no files).
    pub fn at(pool_dir: &Path, root: Option<&'a Dir>, config: VolumeConfig) -> Self {
        let paths = VolumePaths::new(pool_dir, &config.vid);
        Volume {
            root,
            config,
            paths,
        }
    }

    /// The pool directory this view was opened with.
    pub fn root_dir(&self) -> Option<&'a Dir> {
        self.root
    }

    fn root(&self) -> Result<&'a Dir> {
        self.root.ok_or_else(|| {
            EngineError::not_found(format!(
                "the pool directory {} cannot be opened",
                self.paths.pool_dir().display()
            ))
        })
    }

    pub fn source_paths(&self, source: &Vid) -> VolumePaths {
        VolumePaths::new(self.paths.pool_dir(), source)
    }

    fn kind(&self) -> VolumeKind {
        self.config.kind()
    }

    fn keep(&self) -> usize {
        self.config.revisions_to_keep.keep()
    }

    /// The revisions that pruning leaves alone ([`crate::note`]).
    fn pins(&self) -> &crate::note::RevisionNotes {
        &self.config.revision_notes
    }

    /// The VM directory, if it exists (never through a symlink).
    pub fn vm_dir(&self) -> Result<Option<Dir>> {
        match self.root {
            Some(root) => pool::open_vm_dir(root, &self.paths),
            None => Ok(None),
        }
    }

    /// The VM directory of another volume of the pool.
    fn vm_dir_of(&self, paths: &VolumePaths) -> Result<Option<Dir>> {
        match self.root {
            Some(root) => pool::open_vm_dir(root, paths),
            None => Ok(None),
        }
    }

    /// The VM directory, which must exist because `what` is in it.
    fn existing_vm_dir(&self, what: &Path) -> Result<Dir> {
        self.vm_dir()?
            .ok_or_else(|| EngineError::not_found(format!("{} does not exist", what.display())))
    }

    fn ensure_vm_dir(&self) -> Result<Dir> {
        pool::ensure_vm_dir(self.root()?, &self.paths)
    }

    /// The entry `name` of the VM directory (`None` when it, or the directory, is
    /// missing or unreadable): for getters.
    fn entry(&self, name: &str) -> Option<Entry> {
        self.vm_dir().ok().flatten()?.entry(name).ok().flatten()
    }

    pub fn is_started(&self) -> bool {
        self.entry(&self.paths.dirty_name()).is_some()
    }

    /// R§3.14: save_on_stop and the dirty image exists.
    pub fn is_dirty(&self) -> bool {
        self.config.save_on_stop && self.is_started()
    }

    /// Refuse a volume whose class or VM directory is a symlink or not a directory, or
    /// whose pool or class directory is not private to the service: names from callers
    /// never escape the pool directory, and nobody else can swap what the operation
    /// then opens beneath it.
    pub fn check_dirs(&self) -> Result<()> {
        pool::check_private(self.root()?, &self.paths)?;
        self.vm_dir().map(|_| ())
    }

    /// Delete this volume's incomplete temp files (exact names, fix 3) and its import
    /// file.
    fn remove_incomplete(&self, dir: &Dir) -> Result<()> {
        for name in dir.names()? {
            if self.paths.is_own_temp(&name) {
                durable::remove_at(dir, &name)?;
            }
        }
        durable::remove_at(dir, &self.paths.import_name()).map(|_| ())
    }

    /// Files that hold committed or running data of this volume.
    pub fn existing_images(&self) -> Result<Vec<PathBuf>> {
        let Some(dir) = self.vm_dir()? else {
            return Ok(Vec::new());
        };
        let paths = &self.paths;
        let mut names = vec![
            paths.clean_name(),
            paths.dirty_name(),
            paths.precache_name(),
        ];
        names.retain(|name| dir.exists(name));
        for r in revision::list_in(&dir, paths)? {
            names.push(paths.revision_name(r.id, r.timestamp));
        }
        Ok(names.iter().map(|name| dir.join(name)).collect())
    }

    /// The image files among `paths` that hold no allocated block and are not
    /// revisions: what a create interrupted by a crash leaves.
    pub fn holds_no_data(&self, leftovers: &[PathBuf]) -> bool {
        let images = [
            self.paths.clean(),
            self.paths.dirty(),
            self.paths.precache(),
        ];
        leftovers.iter().all(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            images.contains(path) && self.entry(name).is_some_and(|e| e.allocated() == 0)
        })
    }

    /// Committed data exists: the clean image or a revision.
    pub fn has_committed_data(&self) -> Result<bool> {
        let Some(dir) = self.vm_dir()? else {
            return Ok(false);
        };
        Ok(dir.exists(&self.paths.clean_name())
            || !revision::list_in(&dir, &self.paths)?.is_empty())
    }

    /// R§3.6 step 2: incomplete files, import, revisions, clean, precache, dirty.
    pub fn remove_all_images(&self, ctx: &OpCtx) -> Result<()> {
        let Some(dir) = self.vm_dir()? else {
            return Ok(());
        };
        self.remove_incomplete(&dir)?;
        revision::remove_all(&dir, &self.paths, ctx)?;
        let paths = &self.paths;
        for name in [
            paths.clean_name(),
            paths.precache_name(),
            paths.dirty_name(),
        ] {
            durable::remove_at(&dir, &name)?;
        }
        Ok(())
    }

    /// R§3.4 (files only; the caller has checked there are no leftovers to keep).
    pub fn create(&self, ctx: &OpCtx) -> Result<()> {
        if let Some(dir) = self.vm_dir()? {
            self.remove_incomplete(&dir)?;
        }
        if self.kind() == VolumeKind::Origin || self.kind() == VolumeKind::OriginSnapshotsDisabled {
            let dir = self.ensure_vm_dir()?;
            durable::remove_at(&dir, &self.paths.precache_name())?;
            durable::create_sparse_at(&dir, &self.paths.clean_name(), self.config.size)?;
            self.refresh_precache(&dir, ctx);
        }
        Ok(())
    }

    /// The dirty image's entry, if the volume is started.
    fn dirty_entry(&self) -> Result<Option<Entry>> {
        match self.vm_dir()? {
            Some(dir) => dir.entry(&self.paths.dirty_name()),
            None => Ok(None),
        }
    }

    /// R§3.6: remove every file of the volume and, if empty, its VM directory.
    pub fn remove(&self, ctx: &OpCtx) -> Result<()> {
        self.remove_all_images(ctx)?;
        match pool::open_class_dir(self.root()?, &self.paths)? {
            Some(class) => durable::remove_dir_at(&class, self.paths.vm_name()),
            None => Ok(()),
        }
    }

    /// Recreate the precache from clean (R§3.9 step 6) for the kinds that consume it.
    /// A failure only costs speed at the next start, so it is logged, not returned:
    /// the commit it follows has already happened.
    fn refresh_precache(&self, dir: &Dir, ctx: &OpCtx) {
        if self.kind() != VolumeKind::Origin {
            return;
        }
        let opts = CopyOptions {
            dst_size: None,
            copy_mtime: true,
        };
        let (clean, precache) = (self.paths.clean_name(), self.paths.precache_name());
        if let Err(err) = copy::copy_at(dir, &clean, dir, &precache, opts, ctx) {
            warn!(vid = %self.config.vid, error = %err, "could not prepare the precache; the next start will copy instead");
            let _ = durable::remove_at(dir, &precache);
        }
    }

    /// R§3.7. Idempotent: a started volume keeps its dirty image and its session.
    pub fn start(&mut self, source: Option<&SourceView>, ctx: &OpCtx) -> Result<PathBuf> {
        let dirty = self.paths.dirty();
        if let Some(entry) = self.dirty_entry()? {
            if !entry.is_file() {
                return Err(not_regular(&dirty, entry.file_type()));
            }
            info!(vid = %self.config.vid, "already started; reusing {}", dirty.display());
            return Ok(dirty);
        }
        if let Some(dir) = self.vm_dir()? {
            self.remove_incomplete(&dir)?;
        }
        match self.kind() {
            VolumeKind::OriginSnapshotsDisabled => self.start_in_place(ctx)?,
            VolumeKind::Snapshot | VolumeKind::OriginSnapshot => {
                let source = source.ok_or_else(|| EngineError::invalid("has no source volume"))?;
                self.start_snapshot(source, ctx)?;
            }
            VolumeKind::Origin => self.start_origin(ctx)?,
            VolumeKind::Volatile => {
                let dir = self.ensure_vm_dir()?;
                durable::create_sparse_at(&dir, &self.paths.dirty_name(), self.config.size)?;
            }
        }
        ctx.emit_volume(EventKind::Started {
            block_device_path: dirty.display().to_string(),
        });
        Ok(dirty)
    }

    /// R§3.7 A, snapshots disabled: the committed image becomes the VM's image. Unless
    /// it may still be read through an export made while snapshots were enabled: then
    /// the VM gets a copy (a reflink where possible), so that export never changes.
    fn start_in_place(&mut self, ctx: &OpCtx) -> Result<()> {
        let dir = self.existing_vm_dir(&self.paths.clean())?;
        let (clean, dirty) = (self.paths.clean_name(), self.paths.dirty_name());
        revision::prune(&dir, &self.paths, 0, self.pins(), ctx)?;
        durable::remove_at(&dir, &self.paths.precache_name())?;
        if !self.config.committed_image_shared {
            return durable::rename_at(&dir, &clean, &dir, &dirty);
        }
        let opts = CopyOptions {
            dst_size: None,
            copy_mtime: true,
        };
        copy::copy_at(&dir, &clean, &dir, &dirty, opts, ctx)?;
        durable::remove_at(&dir, &clean)?;
        self.config.committed_image_shared = false;
        Ok(())
    }

    /// R§3.7 C, snapshot and origin_snapshot: a hardlink of the source's committed
    /// image, copied into the VM's image.
    fn start_snapshot(&self, source: &SourceView, ctx: &OpCtx) -> Result<()> {
        let source_dir = self.vm_dir_of(&source.paths)?;
        let source_dirty = source_dir
            .as_ref()
            .is_some_and(|d| d.exists(&source.paths.dirty_name()));
        if source.config.snapshots_disabled() && source_dirty {
            return Err(EngineError::busy(format!(
                "cannot start: its source {} is started with snapshots disabled",
                source.config.vid
            )));
        }
        let source_dir = source_dir.ok_or_else(|| {
            EngineError::not_found(format!("{} does not exist", source.paths.clean().display()))
        })?;
        let dir = self.ensure_vm_dir()?;
        let clean = self.paths.clean_name();
        self.keep_committed_session(&dir, &source_dir, source, ctx)?;
        durable::remove_at(&dir, &clean)?;
        durable::hardlink_at(&source_dir, &source.paths.clean_name(), &dir, &clean)?;
        copy::copy_at(
            &dir,
            &clean,
            &dir,
            &self.paths.dirty_name(),
            CopyOptions::default(),
            ctx,
        )?;
        Ok(())
    }

    /// An origin_snapshot volume whose own clean image is not the source's inode holds
    /// its last committed session: keep it as a revision before the start replaces it
    /// with the source (the reference lost it, R§1.4).
    fn keep_committed_session(
        &self,
        dir: &Dir,
        source_dir: &Dir,
        source: &SourceView,
        ctx: &OpCtx,
    ) -> Result<()> {
        if self.kind() != VolumeKind::OriginSnapshot {
            return Ok(());
        }
        let own = dir.entry(&self.paths.clean_name())?;
        let theirs = source_dir.entry(&source.paths.clean_name())?;
        match (own, theirs) {
            (Some(own), Some(theirs)) if !own.same_inode(&theirs) => {
                revision::add(dir, &self.paths, self.keep(), ctx)?;
                revision::prune(dir, &self.paths, self.keep(), self.pins(), ctx).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    /// R§3.7 B, origin: use the precache if it matches clean, else copy clean.
    fn start_origin(&self, ctx: &OpCtx) -> Result<()> {
        let clean_path = self.paths.clean();
        let missing = || {
            EngineError::not_found(format!(
                "cannot start: the committed image {} is missing",
                clean_path.display()
            ))
        };
        let dir = self.vm_dir()?.ok_or_else(missing)?;
        let (clean, precache) = (self.paths.clean_name(), self.paths.precache_name());
        let clean_entry = match dir.regular_entry(&clean) {
            Err(err) if err.kind() == crate::error::ErrorKind::NotFound => return Err(missing()),
            other => other?,
        };
        if let Some(pre) = dir.entry(&precache)? {
            let stale = !pre.is_file()
                || (pre.mtime(), pre.size()) != (clean_entry.mtime(), clean_entry.size());
            if stale {
                warn!(file = %dir.join(&precache).display(), "removing a stale precache that does not match the committed image");
                durable::remove_at(&dir, &precache)?;
            }
        }
        let dirty = self.paths.dirty_name();
        if dir.exists(&precache) {
            durable::rename_at(&dir, &precache, &dir, &dirty)
        } else {
            copy::copy_at(&dir, &clean, &dir, &dirty, CopyOptions::default(), ctx).map(|_| ())
        }
    }

    /// R§3.8, idempotent. Returns whether anything was stopped.
    pub fn stop(&mut self, ctx: &OpCtx) -> Result<bool> {
        let dir = self.vm_dir()?;
        let dirty = self.paths.dirty_name();
        let Some(dir) = dir.filter(|d| d.exists(&dirty)) else {
            if !self.config.save_on_stop {
                // A snapshot's hardlink left behind by an interrupted stop.
                if let Some(dir) = self.vm_dir()? {
                    durable::remove_at(&dir, &self.paths.clean_name())?;
                }
            }
            return Ok(false);
        };
        let committed = match self.kind() {
            VolumeKind::OriginSnapshotsDisabled => {
                durable::fsync_at(&dir, &dirty)?;
                durable::rename_at(&dir, &dirty, &dir, &self.paths.clean_name())?;
                true
            }
            VolumeKind::Origin | VolumeKind::OriginSnapshot => {
                self.commit(&dir, &dirty, ctx)?;
                true
            }
            VolumeKind::Snapshot | VolumeKind::Volatile => {
                if self.kind() == VolumeKind::Volatile {
                    // Keep a manual resize of the volatile image for the next start.
                    self.config.size = self.size();
                }
                durable::remove_at(&dir, &dirty)?;
                durable::remove_at(&dir, &self.paths.clean_name())?;
                false
            }
        };
        ctx.emit_volume(EventKind::Stopped { committed });
        Ok(true)
    }

    /// R§3.9: make `from` (dirty or import) the new clean image, keeping the previous
    /// one as a revision.
    fn commit(&self, dir: &Dir, from: &str, ctx: &OpCtx) -> Result<()> {
        if !dir.exists(from) {
            return Err(EngineError::not_found(format!(
                "cannot commit: {} does not exist",
                dir.join(from).display()
            )));
        }
        let clean = self.paths.clean_name();
        if dir.exists(&clean) {
            revision::add(dir, &self.paths, self.keep(), ctx)?;
        }
        revision::prune(dir, &self.paths, self.keep(), self.pins(), ctx)?;
        durable::fsync_at(dir, from)?;
        durable::remove_at(dir, &self.paths.precache_name())?;
        durable::rename_at(dir, from, dir, &clean)?;
        ctx.point_of_no_return();
        self.refresh_precache(dir, ctx);
        Ok(())
    }

    /// R§3.13 with fixes 1 and 7: refused while started; `None` = the highest id.
    pub fn revert(&self, id: Option<u64>, ctx: &OpCtx) -> Result<Revision> {
        if self.is_started() {
            return Err(EngineError::busy(
                "cannot revert while the volume is started",
            ));
        }
        let dir = self.vm_dir()?.ok_or_else(|| match id {
            None => EngineError::not_found("has no revisions"),
            Some(id) => EngineError::not_found(format!("has no revision {id}")),
        })?;
        let target = revision::find(&dir, &self.paths, id)?;
        if self.pins().is_pinned(&target) {
            return self.revert_keeping(&dir, target, ctx);
        }
        let target_name = self.paths.revision_name(target.id, target.timestamp);
        let clean = self.paths.clean_name();
        if dir.exists(&clean) {
            revision::add(&dir, &self.paths, self.revert_keep(), ctx)?;
        }
        durable::remove_at(&dir, &self.paths.precache_name())?;
        durable::rename_at(&dir, &target_name, &dir, &clean)?;
        ctx.point_of_no_return();
        self.refresh_precache(&dir, ctx);
        ctx.emit_volume(EventKind::Reverted { id: target.id });
        Ok(target)
    }

    /// What a revert keeps of the current state: as in the reference, it survives as a
    /// revision unless revisions_to_keep is 0 — also with snapshots disabled (-1).
    fn revert_keep(&self) -> usize {
        if self.config.revisions_to_keep.get() == 0 {
            0
        } else {
            self.keep().max(1)
        }
    }

    /// Revert to a pinned revision, which stays ([`crate::note`]): first a copy of it
    /// with its mtime under the precache's name — the one step a cancel can stop, and
    /// it replaces nothing until it is complete (a crash after it leaves a precache
    /// whose mtime does not match the committed image, which the next start discards)
    /// — then the current image is kept as a revision and the copy renamed over it.
    fn revert_keeping(&self, dir: &Dir, target: Revision, ctx: &OpCtx) -> Result<Revision> {
        let (clean, precache) = (self.paths.clean_name(), self.paths.precache_name());
        let opts = CopyOptions {
            dst_size: None,
            copy_mtime: true,
        };
        let target_name = self.paths.revision_name(target.id, target.timestamp);
        copy::copy_at(dir, &target_name, dir, &precache, opts, ctx)?;
        ctx.point_of_no_return();
        if dir.exists(&clean) {
            revision::add(dir, &self.paths, self.revert_keep(), ctx)?;
        }
        durable::rename_at(dir, &precache, dir, &clean)?;
        self.refresh_precache(dir, ctx);
        ctx.emit_volume(EventKind::Reverted { id: target.id });
        Ok(target)
    }

    /// R§3.15 with fix 10: what makes a resize impossible, checked before anything
    /// changes (shrinking needs `allow_shrink`).
    pub fn check_resize(&self, size: u64, allow_shrink: bool) -> Result<()> {
        if !self.config.rw {
            return Err(EngineError::invalid("cannot resize a read-only volume"));
        }
        let old = self.size();
        if size < old && !allow_shrink {
            return Err(EngineError::invalid(format!(
                "shrinking from {old} to {size} bytes can destroy data; pass allow_shrink=true to do it anyway"
            )));
        }
        Ok(())
    }

    /// R§3.15, the files (after [`Self::check_resize`]): the running image in place, or
    /// a halted origin's committed image as a new inode.
    pub fn resize(&mut self, size: u64, ctx: &OpCtx) -> Result<()> {
        let old = self.size();
        if self.is_started() {
            let dir = self.existing_vm_dir(&self.paths.dirty())?;
            durable::truncate_at(&dir, &self.paths.dirty_name(), size)?;
            loopdev::refresh_loop_devices(&self.paths.dirty())?;
        } else if matches!(
            self.kind(),
            VolumeKind::Origin | VolumeKind::OriginSnapshotsDisabled
        ) && old != size
        {
            // A new inode: revisions and readers of the exported image are untouched.
            // The precache stays until the new image exists (a crash in between leaves
            // a precache whose size and mtime no longer match: start discards it).
            let dir = self.existing_vm_dir(&self.paths.clean())?;
            let clean = self.paths.clean_name();
            let opts = CopyOptions {
                dst_size: Some(size),
                copy_mtime: false,
            };
            copy::copy_at(&dir, &clean, &dir, &clean, opts, ctx).map_err(|e| {
                EngineError::with_reason(e, format!("cannot resize to {size} bytes"))
            })?;
            ctx.point_of_no_return();
            self.refresh_precache(&dir, ctx);
        }
        self.config.size = size;
        if old != size {
            ctx.emit_volume(EventKind::Resized {
                old_size: old,
                new_size: size,
            });
        }
        Ok(())
    }

    /// The committed image, opened read-only (R§3.16). What it reads never changes:
    /// commits, resizes and reverts replace the clean image by a new inode; a volume
    /// with snapshots disabled (whose clean inode becomes the VM's image at the next
    /// start) exports a private read-only copy instead.
    pub fn export(&self, ctx: &OpCtx) -> Result<File> {
        if !self.config.save_on_stop {
            return Err(EngineError::not_supported(
                "cannot export: the volume is not save_on_stop",
            ));
        }
        if self.config.snapshots_disabled() && self.is_started() {
            return Err(EngineError::busy(
                "cannot export: the volume is started with snapshots disabled, so it has no committed image",
            ));
        }
        let dir = self.existing_vm_dir(&self.paths.clean())?;
        let clean = dir.open_file(&self.paths.clean_name(), Access::Read)?;
        if self.config.snapshots_disabled() {
            return copy::private_copy(&clean, &dir, &self.paths.clean_name(), ctx);
        }
        Ok(clean)
    }

    fn refuse_import(&self) -> Result<()> {
        if !self.config.save_on_stop {
            return Err(EngineError::not_supported(
                "cannot import: the volume is not save_on_stop",
            ));
        }
        if self.is_started() {
            return Err(EngineError::busy("cannot import into a started volume"));
        }
        Ok(())
    }

    /// R§3.17 with fix 1 and contract rev 2 (whole sectors; shrinking needs
    /// `allow_shrink`): a fresh sparse import file, opened write-only.
    pub fn import_data(&self, size: ImageSize, allow_shrink: bool) -> Result<File> {
        self.refuse_import()?;
        check_import_size(size, self.size(), allow_shrink)?;
        let dir = self.ensure_vm_dir()?;
        let import = self.paths.import_name();
        durable::create_sparse_at(&dir, &import, size.get())?;
        dir.open_file(&import, Access::Write)
    }

    /// R§3.18 success, with fix 8 (without an import file nothing changes) and
    /// contract rev 2: the import file is first replaced by a private copy of itself at
    /// exactly the declared `size` (a reflink where the pool has them, else a
    /// hole-preserving byte copy), so that the importer's fd, which keeps writing into
    /// the old inode, can never reach committed data; then the copy is committed.
    pub fn commit_import(&self, size: u64, ctx: &OpCtx) -> Result<()> {
        let import = self.paths.import_name();
        let dir = self
            .vm_dir()?
            .filter(|d| d.exists(&import))
            .ok_or_else(|| {
                EngineError::not_found("no import is in progress (the import file does not exist)")
            })?;
        if self.is_started() {
            return Err(EngineError::busy(
                "cannot commit an import into a started volume",
            ));
        }
        let opts = CopyOptions {
            dst_size: Some(size),
            copy_mtime: false,
        };
        copy::copy_at(&dir, &import, &dir, &import, opts, ctx).map_err(|e| {
            EngineError::with_reason(
                e,
                "cannot make the private copy of the import file that is committed",
            )
        })?;
        self.commit(&dir, &import, ctx)?;
        ctx.emit_volume(EventKind::Imported { success: true });
        Ok(())
    }

    /// R§3.18 failure: delete the import file (a missing one is fine).
    pub fn discard_import(&self, ctx: &OpCtx) -> Result<()> {
        if let Some(dir) = self.vm_dir()? {
            durable::remove_at(&dir, &self.paths.import_name())?;
        }
        ctx.emit_volume(EventKind::Imported { success: false });
        Ok(())
    }

    /// R§3.19 with fix 1: clone the committed image of `source` (any pool) into this
    /// volume. A no-op for volumes that are not save_on_stop. The point of no return is
    /// the end of the copy: a cancel after it changes nothing and the clone commits. On
    /// every failure or cancellation the import file is deleted (contract fix 14), also
    /// when the commit fails after the copy (a full disk).
    pub fn import_volume(&self, source: &Volume<'_>, ctx: &OpCtx) -> Result<()> {
        if self.is_started() {
            return Err(EngineError::busy("cannot import into a started volume"));
        }
        if !self.config.save_on_stop {
            info!(vid = %self.config.vid, "import_volume: not save_on_stop, nothing to do");
            return Ok(());
        }
        self.refuse_import()?;
        let src = source
            .export(ctx)
            .map_err(|e| e.on(format!("source volume {}", source.config.vid)))?;
        let dir = self.ensure_vm_dir()?;
        let import = self.paths.import_name();
        let cloned =
            copy::copy_file(&src, &dir, &import, CopyOptions::default(), ctx).and_then(|_| {
                ctx.point_of_no_return();
                self.commit(&dir, &import, ctx)
            });
        if let Err(err) = cloned {
            if let Err(cleanup) = durable::remove_at(&dir, &import) {
                warn!(file = %dir.join(&import).display(), error = %cleanup, "cannot delete the import file of a failed clone");
            }
            ctx.emit_volume(EventKind::Imported { success: false });
            return Err(err);
        }
        ctx.emit_volume(EventKind::Imported { success: true });
        Ok(())
    }

    /// R§3.5: the image the next start needs exists (and is a regular file).
    pub fn verify(&self, source: Option<&SourceView>) -> Result<()> {
        let (paths, name) = if self.config.snap_on_start {
            match source {
                Some(s) => (&s.paths, s.paths.clean_name()),
                None => {
                    return Err(EngineError::not_found(
                        "its source volume is not registered",
                    ))
                }
            }
        } else if self.config.save_on_stop {
            if self.config.snapshots_disabled() && self.is_started() {
                (&self.paths, self.paths.dirty_name())
            } else {
                (&self.paths, self.paths.clean_name())
            }
        } else {
            return Ok(());
        };
        let path = paths.dir().join(&name);
        match self
            .vm_dir_of(paths)
            .ok()
            .flatten()
            .and_then(|d| d.entry(&name).ok().flatten())
        {
            Some(entry) if entry.is_file() => Ok(()),
            Some(entry) => Err(not_regular(&path, entry.file_type())),
            None => Err(EngineError::not_found(format!(
                "missing image file {}",
                path.display()
            ))),
        }
    }

    /// The entry of `source`'s committed image (for getters).
    fn source_clean(&self, source: &SourceView) -> Option<Entry> {
        self.vm_dir_of(&source.paths)
            .ok()
            .flatten()?
            .entry(&source.paths.clean_name())
            .ok()
            .flatten()
    }

    /// R§3.20: the source has committed since this snapshot volume started.
    pub fn is_outdated(&self, source: Option<&SourceView>) -> bool {
        let (true, Some(source)) = (self.config.snap_on_start, source) else {
            return false;
        };
        match (
            self.source_clean(source),
            self.entry(&self.paths.clean_name()),
        ) {
            (Some(a), Some(b)) => !a.same_inode(&b),
            _ => false,
        }
    }

    fn current_image(&self) -> Option<Entry> {
        self.entry(&self.paths.dirty_name())
            .or_else(|| self.entry(&self.paths.clean_name()))
    }

    /// R§3.21: size of dirty, else clean, else the nominal size.
    pub fn size(&self) -> u64 {
        self.current_image().map_or(self.config.size, |e| e.size())
    }

    /// The size as callers see it: [`Self::size`], except that a halted snapshot
    /// volume reports its source's image size — what its next start will produce (the
    /// reference reported a nominal size that start ignores, R§9.1 item 6).
    pub fn visible_size(&self, source: Option<&SourceView>) -> u64 {
        let snapshot_halted = self.config.snap_on_start && self.current_image().is_none();
        match source.filter(|_| snapshot_halted) {
            Some(s) => self.source_clean(s).map_or(self.config.size, |e| e.size()),
            None => self.size(),
        }
    }

    /// R§3.21: allocated bytes of dirty, else clean, else 0.
    pub fn usage(&self) -> u64 {
        self.current_image().map_or(0, |e| e.allocated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn size(bytes: u64) -> ImageSize {
        ImageSize::new(bytes).unwrap()
    }

    #[test]
    fn an_import_below_the_current_size_needs_allow_shrink() {
        let err = check_import_size(size(512), 1024, false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("allow_shrink"), "{err}");
        check_import_size(size(512), 1024, true).unwrap();
        check_import_size(size(1024), 1024, false).unwrap();
        check_import_size(size(4096), 512, false).unwrap();
    }
}
