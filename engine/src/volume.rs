//! The volume state machine: what each operation does to a volume's files (R§3.4–3.21),
//! for every kind (origin, origin with snapshots disabled, snapshot, volatile,
//! origin_snapshot). The caller ([`crate::engine`]) holds the volume's lock and
//! records a change of `config` (the nominal size) in the order the operation needs.
//!
//! State lives in the filesystem: the dirty image exists ⇔ the volume is started;
//! revisions are the revision files; the size is the image's size. Every change goes
//! through [`crate::durable`] or [`crate::copy`], so a crash leaves the old or the new
//! committed state, never a mix.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::context::OpCtx;
use crate::copy::{self, CopyOptions};
use crate::durable;
use crate::error::{EngineError, IoContext, Result};
use crate::event::EventKind;
use crate::layout::VolumePaths;
use crate::loopdev;
use crate::model::{Revision, VolumeConfig, VolumeKind};
use crate::names::Vid;
use crate::revision;
use crate::sys;

/// One volume, as an operation sees it.
pub struct Volume<'a> {
    pub pool_dir: &'a Path,
    pub config: VolumeConfig,
    pub paths: VolumePaths,
}

/// What an operation needs to know about the snapshot source (same pool).
pub struct SourceView {
    pub paths: VolumePaths,
    pub config: VolumeConfig,
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

impl<'a> Volume<'a> {
    pub fn new(pool_dir: &'a Path, config: VolumeConfig) -> Self {
        let paths = VolumePaths::new(pool_dir, &config.vid);
        Volume {
            pool_dir,
            config,
            paths,
        }
    }

    pub fn source_paths(&self, source: &Vid) -> VolumePaths {
        VolumePaths::new(self.pool_dir, source)
    }

    fn kind(&self) -> VolumeKind {
        self.config.kind()
    }

    fn keep(&self) -> usize {
        self.config.revisions_to_keep.keep()
    }

    pub fn is_started(&self) -> bool {
        exists(&self.paths.dirty())
    }

    /// R§3.14: save_on_stop and the dirty image exists.
    pub fn is_dirty(&self) -> bool {
        self.config.save_on_stop && self.is_started()
    }

    /// Refuse a volume whose class or VM directory is a symlink or not a directory:
    /// names from callers never escape the pool directory, and neither does a symlink
    /// planted where a directory should be.
    pub fn check_dirs(&self) -> Result<()> {
        let class_dir = self.pool_dir.join(self.config.vid.class().dir_name());
        for dir in [class_dir.as_path(), self.paths.dir()] {
            match std::fs::symlink_metadata(dir) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(EngineError::invalid(format!(
                        "{} is not a directory (a symlink or another file is in its place); refusing to use it",
                        dir.display()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::io(format!("cannot inspect {}", dir.display()), e)),
            }
        }
        Ok(())
    }

    fn ensure_vm_dir(&self) -> Result<()> {
        durable::ensure_dir(self.paths.dir()).map(|_| ())
    }

    /// Delete this volume's incomplete temp files (exact names, fix 3) and its import
    /// file.
    pub fn remove_incomplete(&self) -> Result<()> {
        let dir = self.paths.dir();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(EngineError::io(format!("cannot list {}", dir.display()), e)),
        };
        for entry in entries {
            let entry = entry.io_ctx(|| format!("cannot list {}", dir.display()))?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| self.paths.is_own_temp(n))
            {
                durable::remove(&entry.path())?;
            }
        }
        durable::remove(&self.paths.import())?;
        Ok(())
    }

    /// Files that hold committed or running data of this volume.
    pub fn existing_images(&self) -> Result<Vec<PathBuf>> {
        let mut found: Vec<PathBuf> = [
            self.paths.clean(),
            self.paths.dirty(),
            self.paths.precache(),
        ]
        .into_iter()
        .filter(|p| exists(p))
        .collect();
        for r in revision::list(&self.paths)? {
            found.push(self.paths.revision(r.id, r.timestamp));
        }
        Ok(found)
    }

    /// R§3.6 step 2: incomplete files, import, revisions, clean, precache, dirty.
    pub fn remove_all_images(&self, ctx: &OpCtx) -> Result<()> {
        self.remove_incomplete()?;
        revision::prune(&self.paths, 0, ctx)?;
        for path in [
            self.paths.clean(),
            self.paths.precache(),
            self.paths.dirty(),
        ] {
            durable::remove(&path)?;
        }
        Ok(())
    }

    /// R§3.4 (files only; the caller has checked there are no leftovers to keep).
    pub fn create(&self, ctx: &OpCtx) -> Result<()> {
        self.remove_incomplete()?;
        if self.kind() == VolumeKind::Origin || self.kind() == VolumeKind::OriginSnapshotsDisabled {
            self.ensure_vm_dir()?;
            durable::remove(&self.paths.precache())?;
            durable::create_sparse(&self.paths.clean(), self.config.size)?;
            self.refresh_precache(ctx);
        }
        Ok(())
    }

    /// R§3.6: remove every file of the volume and, if empty, its VM directory.
    pub fn remove(&self, ctx: &OpCtx) -> Result<()> {
        self.remove_all_images(ctx)?;
        durable::remove_dir_if_empty(self.paths.dir())
    }

    /// Recreate the precache from clean (R§3.9 step 6) for the kinds that consume it.
    /// A failure only costs speed at the next start, so it is logged, not returned:
    /// the commit it follows has already happened.
    fn refresh_precache(&self, ctx: &OpCtx) {
        if self.kind() != VolumeKind::Origin {
            return;
        }
        let opts = CopyOptions {
            dst_size: None,
            copy_mtime: true,
        };
        if let Err(err) = copy::copy_path(&self.paths.clean(), &self.paths.precache(), opts, ctx) {
            warn!(vid = %self.config.vid, error = %err, "could not prepare the precache; the next start will copy instead");
            let _ = durable::remove(&self.paths.precache());
        }
    }

    /// R§3.7. Idempotent: a started volume keeps its dirty image and its session.
    pub fn start(&self, source: Option<&SourceView>, ctx: &OpCtx) -> Result<PathBuf> {
        let dirty = self.paths.dirty();
        if self.is_started() {
            info!(vid = %self.config.vid, "already started; reusing {}", dirty.display());
            return Ok(dirty);
        }
        self.remove_incomplete()?;
        match self.kind() {
            VolumeKind::OriginSnapshotsDisabled => {
                revision::prune(&self.paths, 0, ctx)?;
                durable::remove(&self.paths.precache())?;
                durable::rename(&self.paths.clean(), &dirty)?;
            }
            VolumeKind::Snapshot | VolumeKind::OriginSnapshot => {
                let source = source.ok_or_else(|| EngineError::invalid("has no source volume"))?;
                if source.config.snapshots_disabled() && exists(&source.paths.dirty()) {
                    return Err(EngineError::busy(format!(
                        "cannot start: its source {} is started with snapshots disabled",
                        source.config.vid
                    )));
                }
                self.ensure_vm_dir()?;
                self.keep_committed_session(source, ctx)?;
                durable::remove(&self.paths.clean())?;
                durable::hardlink(&source.paths.clean(), &self.paths.clean())?;
                copy::copy_path(&self.paths.clean(), &dirty, CopyOptions::default(), ctx)?;
            }
            VolumeKind::Origin => self.start_origin(ctx)?,
            VolumeKind::Volatile => {
                self.ensure_vm_dir()?;
                durable::create_sparse(&dirty, self.config.size)?;
            }
        }
        ctx.emit_volume(EventKind::Started {
            block_device_path: dirty.display().to_string(),
        });
        Ok(dirty)
    }

    /// An origin_snapshot volume whose own clean image is not the source's inode holds
    /// its last committed session: keep it as a revision before the start replaces it
    /// with the source (the reference lost it, R§1.4).
    fn keep_committed_session(&self, source: &SourceView, ctx: &OpCtx) -> Result<()> {
        if self.kind() != VolumeKind::OriginSnapshot {
            return Ok(());
        }
        let own = std::fs::symlink_metadata(self.paths.clean());
        let theirs = std::fs::symlink_metadata(source.paths.clean());
        match (own, theirs) {
            (Ok(own), Ok(theirs)) if !sys::same_inode(&own, &theirs) => {
                revision::add(&self.paths, self.keep(), ctx)?;
                revision::prune(&self.paths, self.keep(), ctx).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    /// R§3.7 B, origin: use the precache if it matches clean, else copy clean.
    fn start_origin(&self, ctx: &OpCtx) -> Result<()> {
        let clean = self.paths.clean();
        let precache = self.paths.precache();
        let clean_meta = std::fs::symlink_metadata(&clean).io_ctx(|| {
            format!(
                "cannot start: the committed image {} is missing",
                clean.display()
            )
        })?;
        if let Ok(pre) = std::fs::symlink_metadata(&precache) {
            let stale = (pre.mtime(), pre.mtime_nsec(), pre.size())
                != (
                    clean_meta.mtime(),
                    clean_meta.mtime_nsec(),
                    clean_meta.size(),
                );
            if stale {
                warn!(file = %precache.display(), "removing a stale precache that does not match the committed image");
                durable::remove(&precache)?;
            }
        }
        if exists(&precache) {
            durable::rename(&precache, &self.paths.dirty())
        } else {
            copy::copy_path(&clean, &self.paths.dirty(), CopyOptions::default(), ctx).map(|_| ())
        }
    }

    /// R§3.8, idempotent. Returns whether anything was stopped.
    pub fn stop(&mut self, ctx: &OpCtx) -> Result<bool> {
        let dirty = self.paths.dirty();
        if !self.is_started() {
            if !self.config.save_on_stop {
                // A snapshot's hardlink left behind by an interrupted stop.
                durable::remove(&self.paths.clean())?;
            }
            return Ok(false);
        }
        let committed = match self.kind() {
            VolumeKind::OriginSnapshotsDisabled => {
                durable::fsync_file(&dirty)?;
                durable::rename(&dirty, &self.paths.clean())?;
                true
            }
            VolumeKind::Origin | VolumeKind::OriginSnapshot => {
                self.commit(&dirty, ctx)?;
                true
            }
            VolumeKind::Snapshot | VolumeKind::Volatile => {
                if self.kind() == VolumeKind::Volatile {
                    // Keep a manual resize of the volatile image for the next start.
                    self.config.size = self.size();
                }
                durable::remove(&dirty)?;
                durable::remove(&self.paths.clean())?;
                false
            }
        };
        ctx.emit_volume(EventKind::Stopped { committed });
        Ok(true)
    }

    /// R§3.9: make `from` (dirty or import) the new clean image, keeping the previous
    /// one as a revision.
    fn commit(&self, from: &Path, ctx: &OpCtx) -> Result<()> {
        if !exists(from) {
            return Err(EngineError::not_found(format!(
                "cannot commit: {} does not exist",
                from.display()
            )));
        }
        if exists(&self.paths.clean()) {
            revision::add(&self.paths, self.keep(), ctx)?;
        }
        revision::prune(&self.paths, self.keep(), ctx)?;
        durable::fsync_file(from)?;
        durable::remove(&self.paths.precache())?;
        durable::rename(from, &self.paths.clean())?;
        ctx.point_of_no_return();
        self.refresh_precache(ctx);
        Ok(())
    }

    /// R§3.13 with fixes 1 and 7: refused while started; `None` = the highest id.
    pub fn revert(&self, id: Option<u64>, ctx: &OpCtx) -> Result<Revision> {
        if self.is_started() {
            return Err(EngineError::busy(
                "cannot revert while the volume is started",
            ));
        }
        let target = revision::find(&self.paths, id)?;
        let target_path = self.paths.revision(target.id, target.timestamp);
        if exists(&self.paths.clean()) {
            // As in the reference, the current state survives as a revision unless
            // revisions_to_keep is 0 — also with snapshots disabled (-1).
            let keep = if self.config.revisions_to_keep.get() == 0 {
                0
            } else {
                self.keep().max(1)
            };
            revision::add(&self.paths, keep, ctx)?;
        }
        durable::remove(&self.paths.precache())?;
        durable::rename(&target_path, &self.paths.clean())?;
        ctx.point_of_no_return();
        self.refresh_precache(ctx);
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
        let dirty = self.paths.dirty();
        if self.is_started() {
            durable::truncate_in_place(&dirty, size)?;
            loopdev::refresh_loop_devices(&dirty)?;
        } else if matches!(
            self.kind(),
            VolumeKind::Origin | VolumeKind::OriginSnapshotsDisabled
        ) && old != size
        {
            // A new inode: revisions and readers of the exported image are untouched.
            // The precache stays until the new image exists (a crash in between leaves
            // a precache whose size and mtime no longer match: start discards it).
            let clean = self.paths.clean();
            let opts = CopyOptions {
                dst_size: Some(size),
                copy_mtime: false,
            };
            copy::copy_path(&clean, &clean, opts, ctx).map_err(|e| {
                EngineError::with_reason(e, format!("cannot resize to {size} bytes"))
            })?;
            ctx.point_of_no_return();
            self.refresh_precache(ctx);
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

    /// The committed image, opened read-only (R§3.16).
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
        let clean = durable::open_read(&self.paths.clean())?;
        if self.config.snapshots_disabled() {
            // The next start renames this very inode into the VM's image, which the VM
            // then writes in place: export a private snapshot of it instead.
            return copy::copy_to_anonymous(&clean, self.paths.dir(), ctx);
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

    /// R§3.17 with fix 1: a fresh sparse import file, opened write-only.
    pub fn import_data(&self, size: u64) -> Result<File> {
        self.refuse_import()?;
        self.ensure_vm_dir()?;
        durable::create_sparse(&self.paths.import(), size)?;
        durable::open_write(&self.paths.import())
    }

    /// R§3.18 with fix 8: without an import file nothing changes.
    pub fn import_data_end(&self, success: bool, ctx: &OpCtx) -> Result<()> {
        let import = self.paths.import();
        if success {
            if !exists(&import) {
                return Err(EngineError::not_found(
                    "no import is in progress (the import file does not exist)",
                ));
            }
            if self.is_started() {
                return Err(EngineError::busy(
                    "cannot commit an import into a started volume",
                ));
            }
            self.commit(&import, ctx)?;
        } else {
            durable::remove(&import)?;
        }
        ctx.emit_volume(EventKind::Imported { success });
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
        self.ensure_vm_dir()?;
        let import = self.paths.import();
        let cloned = copy::copy_file(&src, &import, CopyOptions::default(), ctx).and_then(|_| {
            ctx.point_of_no_return();
            self.commit(&import, ctx)
        });
        if let Err(err) = cloned {
            if let Err(cleanup) = durable::remove(&import) {
                warn!(file = %import.display(), error = %cleanup, "cannot delete the import file of a failed clone");
            }
            ctx.emit_volume(EventKind::Imported { success: false });
            return Err(err);
        }
        ctx.emit_volume(EventKind::Imported { success: true });
        Ok(())
    }

    /// R§3.5: the image the next start needs exists.
    pub fn verify(&self, source: Option<&SourceView>) -> Result<()> {
        let needed = if self.config.snap_on_start {
            match source {
                Some(s) => s.paths.clean(),
                None => {
                    return Err(EngineError::not_found(
                        "its source volume is not registered",
                    ))
                }
            }
        } else if self.config.save_on_stop {
            if self.config.snapshots_disabled() && self.is_started() {
                self.paths.dirty()
            } else {
                self.paths.clean()
            }
        } else {
            return Ok(());
        };
        if exists(&needed) {
            Ok(())
        } else {
            Err(EngineError::not_found(format!(
                "missing image file {}",
                needed.display()
            )))
        }
    }

    /// R§3.20: the source has committed since this snapshot volume started.
    pub fn is_outdated(&self, source: Option<&SourceView>) -> bool {
        let (true, Some(source)) = (self.config.snap_on_start, source) else {
            return false;
        };
        match (
            std::fs::symlink_metadata(source.paths.clean()),
            std::fs::symlink_metadata(self.paths.clean()),
        ) {
            (Ok(a), Ok(b)) => !sys::same_inode(&a, &b),
            _ => false,
        }
    }

    fn current_image(&self) -> Option<std::fs::Metadata> {
        std::fs::symlink_metadata(self.paths.dirty())
            .or_else(|_| std::fs::symlink_metadata(self.paths.clean()))
            .ok()
    }

    /// R§3.21: size of dirty, else clean, else the nominal size.
    pub fn size(&self) -> u64 {
        self.current_image().map_or(self.config.size, |m| m.size())
    }

    /// The size as callers see it: [`Self::size`], except that a halted snapshot
    /// volume reports its source's image size — what its next start will produce (the
    /// reference reported a nominal size that start ignores, R§9.1 item 6).
    pub fn visible_size(&self, source: Option<&SourceView>) -> u64 {
        let snapshot_halted = self.config.snap_on_start && self.current_image().is_none();
        match source.filter(|_| snapshot_halted) {
            Some(s) => {
                std::fs::symlink_metadata(s.paths.clean()).map_or(self.config.size, |m| m.size())
            }
            None => self.size(),
        }
    }

    /// R§3.21: allocated bytes of dirty, else clean, else 0.
    pub fn usage(&self) -> u64 {
        self.current_image().map_or(0, |m| m.blocks() * 512)
    }
}
