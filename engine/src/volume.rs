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
//!
//! Each operation makes its name changes in the VM directory as one batch
//! ([`DirChanges`]) ordered so that every prefix is a state the volume may be in, and
//! pays one fsync of the directory for all of them (plus the fsync of new content
//! before its name: the running image at a commit, a staged copy). Files leaving the
//! committed state are discarded, deleted after the reply. On a pool with reflinks the
//! precache is made after the reply too ([`crate::precache`]); on one without, the
//! precache is a byte copy with a Job of its own and stays part of the call. The
//! argument for each barrier is in `docs/durability.md`.

use std::cell::Cell;
use std::fs::File;
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use crate::background::Background;
use crate::context::OpCtx;
use crate::copy::{self, CopyOptions};
use crate::dir::{not_regular, Access, Dir, Entry};
use crate::durable::{self, DirChanges, Staged};
use crate::error::{EngineError, IoContext, Result};
use crate::event::EventKind;
use crate::layout::VolumePaths;
use crate::loopdev;
use crate::model::{Revision, VolumeConfig, VolumeKind};
use crate::names::{ImageSize, Vid};
use crate::pool;
use crate::revision;
use crate::running::{self, Made};
use crate::sys;
use crate::writers;

/// One volume, as an operation sees it.
pub struct Volume<'a> {
    /// The pool directory, opened for this operation; `None` when it could not be
    /// opened (getters then see no files).
    root: Option<&'a Dir>,
    pub config: VolumeConfig,
    pub paths: VolumePaths,
    /// Deletes discarded files after the reply; without one (tools, tests) they are
    /// deleted at the end of the operation.
    background: Option<&'a Background>,
    /// The pool reflinks (its setup check passed) and a background worker exists: the
    /// precache is made after the reply.
    defer_precache: bool,
    /// The operation changed the committed image of a volume that keeps a precache,
    /// and left making it to after the reply ([`Self::precache_due`]).
    precache_due: Cell<bool>,
}

/// Where a commit's or a revert's new committed image comes from.
enum Incoming<'a> {
    /// The running image, by name: fsynced, then renamed.
    Running(&'a str),
    /// A revision, by name (its content is durable): renamed.
    Revision(&'a str),
    /// A complete, durable copy (an import's private copy, a clone, a pinned revision's
    /// copy) to be placed.
    Staged(Staged<'a>),
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
            background: None,
            defer_precache: false,
            precache_due: Cell::new(false),
        }
    }

    /// The volume as the engine's operations see it: discarded files are deleted by
    /// `background` after the reply, and on a pool that `reflinks` the precache is made
    /// there too.
    pub fn with_background(mut self, background: &'a Background, reflinks: bool) -> Self {
        self.background = Some(background);
        self.defer_precache = reflinks;
        self
    }

    /// Did the operation leave the precache to be made after the reply?
    pub fn precache_due(&self) -> bool {
        self.precache_due.get()
    }

    /// A batch of changes in the VM directory `dir`.
    fn changes<'d>(&self, dir: &'d Dir) -> DirChanges<'d>
    where
        'a: 'd,
    {
        DirChanges::new(dir, self.background)
    }

    /// A batch of changes in `dir` that ends without a barrier (rule 9): the other
    /// operations of the directory do not wait for it.
    fn changes_without_barrier<'d>(&self, dir: &'d Dir) -> DirChanges<'d>
    where
        'a: 'd,
    {
        DirChanges::unannounced(dir, self.background)
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

    /// Discard this volume's incomplete temp files (exact names, fix 3) and its import
    /// file (garbage: nothing needs their removal to be durable).
    fn discard_incomplete(&self, changes: &mut DirChanges<'_>) -> Result<()> {
        for name in changes.dir().names()? {
            if self.paths.is_own_temp(&name) {
                changes.discard(&name)?;
            }
        }
        changes.discard(&self.paths.import_name()).map(|_| ())
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

    /// The import file, when it holds an allocated block.
    pub fn import_holding_data(&self) -> Option<PathBuf> {
        let name = self.paths.import_name();
        let entry = self.entry(&name)?;
        (entry.is_file() && entry.allocated() > 0).then(|| self.paths.import())
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

    /// R§3.6 step 2: incomplete and discarded files, import, revisions, clean,
    /// precache, dirty — unlinked now (the directory is to be empty), durable with one
    /// fsync of the directory.
    pub fn remove_all_images(&self) -> Result<()> {
        let Some(dir) = self.vm_dir()? else {
            return Ok(());
        };
        let mut changes = self.changes(&dir);
        for name in dir.names()? {
            if self.paths.is_own_temp(&name) || self.paths.is_own_discard(&name) {
                changes.unlink(&name)?;
            }
        }
        changes.unlink(&self.paths.import_name())?;
        revision::delete_all(&mut changes, &self.paths)?;
        let paths = &self.paths;
        for name in [
            paths.clean_name(),
            paths.precache_name(),
            paths.dirty_name(),
        ] {
            changes.unlink(&name)?;
        }
        changes.commit()
    }

    /// R§3.4 (files only; the caller has checked there are no leftovers to keep): an
    /// origin gets an empty sparse committed image (and, after it, its precache).
    pub fn create(&self, ctx: &OpCtx) -> Result<()> {
        let origin = matches!(
            self.kind(),
            VolumeKind::Origin | VolumeKind::OriginSnapshotsDisabled
        );
        if !origin {
            if let Some(dir) = self.vm_dir()? {
                let mut garbage = self.changes_without_barrier(&dir);
                self.discard_incomplete(&mut garbage)?;
                garbage.end_without_barrier();
            }
            return Ok(());
        }
        let dir = self.ensure_vm_dir()?;
        let mut changes = self.changes(&dir);
        self.discard_incomplete(&mut changes)?;
        changes.discard(&self.paths.precache_name())?;
        let empty =
            self.stage_sparse(&dir, &self.paths.clean_name(), durable::Content::Metadata)?;
        changes.place(empty)?;
        changes.commit()?;
        self.precache_after(&dir, ctx);
        Ok(())
    }

    /// An empty sparse image of the nominal size, staged next to `name`: `Metadata` (its
    /// content is its size) for a committed image, `Disposable` for a volatile volume's
    /// running image, which nothing needs after a power cut (no fsync).
    fn stage_sparse<'d>(
        &self,
        dir: &'d Dir,
        name: &str,
        content: durable::Content,
    ) -> Result<Staged<'d>> {
        let size = self.config.size;
        let (staged, ()) = durable::stage_content_at(dir, name, |file| {
            file.set_len(size).io_ctx(|| {
                format!(
                    "cannot truncate {} to {size} bytes",
                    dir.join(name).display()
                )
            })?;
            Ok(((), content))
        })?;
        Ok(staged)
    }

    /// May a VM be running on the running image ([`running::in_use`])?
    fn running_image_in_use(&self) -> Result<bool> {
        Ok(match self.vm_dir()? {
            Some(dir) => running::in_use(&dir, &self.paths.dirty_name()),
            None => false,
        })
    }

    /// When the running image was made ([`running::MADE_IN_BOOT`]).
    fn running_image_made(&self) -> Made {
        match self.vm_dir() {
            Ok(Some(dir)) => running::made_at(&dir, &self.paths.dirty_name()),
            _ => Made::Unknown,
        }
    }

    /// The dirty image's entry, if the volume is started.
    fn dirty_entry(&self) -> Result<Option<Entry>> {
        match self.vm_dir()? {
            Some(dir) => dir.entry(&self.paths.dirty_name()),
            None => Ok(None),
        }
    }

    /// R§3.6: remove every file of the volume and, if empty, its VM directory.
    pub fn remove(&self) -> Result<()> {
        self.remove_all_images()?;
        match pool::open_class_dir(self.root()?, &self.paths)? {
            Some(class) => durable::remove_dir_at(&class, self.paths.vm_name()),
            None => Ok(()),
        }
    }

    /// Recreate the precache from clean (R§3.9 step 6) for the kinds that consume it:
    /// after the reply on a pool with reflinks ([`Self::precache_due`]), else now — a
    /// byte copy with its own Job. A failure only costs speed at the next start, so it
    /// is logged, not returned: the commit it follows has already happened.
    fn precache_after(&self, dir: &Dir, ctx: &OpCtx) {
        if self.kind() != VolumeKind::Origin {
            return;
        }
        if self.defer_precache {
            self.precache_due.set(true);
            return;
        }
        if let Err(err) = crate::precache::make_now(dir, &self.paths, ctx) {
            warn!(vid = %self.config.vid, error = %err, "could not prepare the precache; the next start will copy instead");
        }
    }

    /// Make the precache if it is missing or stale and the volume is a halted origin
    /// (the work left by [`Self::precache_due`], under the volume's lock). Only a
    /// reflink: where FICLONE is not possible, the next start copies.
    pub fn refresh_precache(&self) -> Result<()> {
        if self.kind() != VolumeKind::Origin {
            return Ok(());
        }
        match self.vm_dir()? {
            Some(dir) if !dir.exists(&self.paths.dirty_name()) => {
                crate::precache::reflink_if_stale(&dir, &self.paths)
            }
            _ => Ok(()),
        }
    }

    /// R§3.7. Idempotent: a started volume keeps its dirty image and its session.
    pub fn start(&mut self, source: Option<&SourceView>, ctx: &OpCtx) -> Result<PathBuf> {
        let dirty = self.paths.dirty();
        if let Some(entry) = self.dirty_entry()? {
            if !entry.is_file() {
                return Err(not_regular(&dirty, entry.file_type()));
            }
            if self.config.save_on_stop || self.running_image_in_use()? {
                info!(vid = %self.config.vid, "already started; reusing {}", dirty.display());
                return Ok(dirty);
            }
            // R§3.7 B: a snapshot or volatile volume always starts afresh. Its image
            // is left over from a session that was never stopped (a power cut, a
            // killed VM) and nobody holds it: that session's changes are discarded, as
            // the next stop would have — an AppVM's root never keeps them.
            info!(vid = %self.config.vid, path = %dirty.display(),
                "left over from a session that was never stopped, and nobody holds it: replaced by a fresh image");
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
                let mut changes = self.changes_without_barrier(&dir);
                self.discard_incomplete(&mut changes)?;
                let dirty = self.paths.dirty_name();
                changes.discard(&dirty)?;
                let empty = self.stage_sparse(&dir, &dirty, durable::Content::Disposable)?;
                changes.place(empty)?;
                // docs/durability.md rule 9: never used after a power cut.
                changes.end_without_barrier();
            }
        }
        ctx.emit_volume(EventKind::Started {
            block_device_path: dirty.display().to_string(),
        });
        Ok(dirty)
    }

    /// R§3.7 A, snapshots disabled: the committed image becomes the VM's image. Unless
    /// it may still be read through an export made while snapshots were enabled, or it
    /// has another name — a revision of an origin_snapshot volume that started from it
    /// (its committed session's predecessor is a link of this image) —: then the VM
    /// gets a copy (a reflink where possible), so that neither ever changes.
    fn start_in_place(&mut self, ctx: &OpCtx) -> Result<()> {
        let dir = self.existing_vm_dir(&self.paths.clean())?;
        let (clean, dirty) = (self.paths.clean_name(), self.paths.dirty_name());
        // From the count of names to the rename: a clone's link in between would give
        // the VM an image that is also the clone's committed one.
        let mut exclusive = Some(link_or_grow());
        let linked_elsewhere = dir.regular_entry(&clean)?.links() > 1;
        let mut changes = self.changes(&dir);
        self.discard_incomplete(&mut changes)?;
        // The copy, if one is needed, comes before anything is taken out of the
        // committed state: its cancel or failure, or a crash during it, leaves the
        // revisions and the precache as they were.
        let copy = if !self.config.committed_image_shared && !linked_elsewhere {
            None
        } else {
            exclusive.take();
            let opts = CopyOptions {
                dst_size: None,
                copy_mtime: true,
                disposable: false,
                own_image: false,
            };
            Some(copy::stage_at(&dir, &clean, &dir, &dirty, opts, ctx)?.0)
        };
        let mut revisions = revision::list_in(&dir, &self.paths)?;
        revision::prune(
            &mut changes,
            &self.paths,
            0,
            &mut revisions,
            self.pins(),
            ctx,
        )?;
        changes.discard(&self.paths.precache_name())?;
        let Some(staged) = copy else {
            changes.rename(&clean, &dirty)?;
            drop(exclusive);
            return changes.commit();
        };
        changes.place(staged)?;
        changes.discard(&clean)?;
        changes.commit()?;
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
        // docs/durability.md rule 9 (below).
        let disposable = self.kind() == VolumeKind::Snapshot;
        let mut changes = match disposable {
            true => self.changes_without_barrier(&dir),
            false => self.changes(&dir),
        };
        self.discard_incomplete(&mut changes)?;
        // A running image left over from a session never stopped (see start).
        changes.discard(&self.paths.dirty_name())?;
        // The source's committed image is linked next to this volume's, and the VM's
        // image copied from that link, before anything of this volume's committed
        // state changes: a source without an image, a failed or cancelled copy, or a
        // crash during it leave an origin_snapshot's committed session as it was.
        let source_image =
            durable::stage_link(&source_dir, &source.paths.clean_name(), &dir, &clean).map_err(
                |e| match e.kind() {
                    crate::error::ErrorKind::NotFound => EngineError::not_found(format!(
                        "cannot start: its source's committed image {} does not exist",
                        source.paths.clean().display()
                    )),
                    _ => e,
                },
            )?;
        let dirty = self.paths.dirty_name();
        // docs/durability.md rule 9: a snapshot's running image is never used after a
        // power cut (the next start makes a fresh one), so neither the copy nor the
        // names need a barrier. An origin_snapshot picks its session up: both do.
        let opts = CopyOptions {
            disposable,
            ..CopyOptions::default()
        };
        let (staged, _) = copy::stage_at(&dir, source_image.temp_name(), &dir, &dirty, opts, ctx)?;
        self.keep_committed_session(&mut changes, &source_dir, source, ctx)?;
        changes.discard(&clean)?;
        changes.place(source_image)?;
        changes.place(staged)?;
        match disposable {
            true => {
                changes.end_without_barrier();
                Ok(())
            }
            false => changes.commit(),
        }
    }

    /// An origin_snapshot volume whose own clean image is not the source's inode holds
    /// its last committed session: keep it as a revision before the start replaces it
    /// with the source (the reference lost it, R§1.4).
    fn keep_committed_session(
        &self,
        changes: &mut DirChanges<'_>,
        source_dir: &Dir,
        source: &SourceView,
        ctx: &OpCtx,
    ) -> Result<()> {
        if self.kind() != VolumeKind::OriginSnapshot {
            return Ok(());
        }
        let own = changes.dir().entry(&self.paths.clean_name())?;
        let theirs = source_dir.entry(&source.paths.clean_name())?;
        match (own, theirs) {
            (Some(own), Some(theirs)) if !own.same_inode(&theirs) => {
                let mut revisions = revision::list_in(changes.dir(), &self.paths)?;
                revision::add(changes, &self.paths, self.keep(), &mut revisions, ctx)?;
                self.prune(changes, &mut revisions, ctx).map(|_| ())
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
        let clean = self.paths.clean_name();
        let clean_entry = match dir.regular_entry(&clean) {
            Err(err) if err.kind() == crate::error::ErrorKind::NotFound => return Err(missing()),
            other => other?,
        };
        let mut changes = self.changes(&dir);
        self.discard_incomplete(&mut changes)?;
        let precache = crate::precache::take_usable(&mut changes, &self.paths, &clean_entry)?;
        let dirty = self.paths.dirty_name();
        match precache {
            Some(precache)
                if precache.shares_every_block
                    || crate::fsync_fault::skipped("start-dir", &dir.join(&precache.name)) =>
            {
                // docs/durability.md rule 8: until a metadata change after this rename
                // is durable, the precache holds the committed image, and a power cut
                // that undoes the start loses nothing.
                changes.rename(&precache.name, &dirty)?;
                debug!(vid = %self.config.vid, "started from a reflinked precache: no barrier");
                changes.end_without_barrier();
                return Ok(());
            }
            Some(precache) => changes.rename(&precache.name, &dirty)?,
            None => {
                let opts = CopyOptions::default();
                let (staged, _) = copy::stage_at(&dir, &clean, &dir, &dirty, opts, ctx)?;
                changes.place(staged)?;
            }
        }
        changes.commit()
    }

    /// Before a stop that commits (a started volume that saves on stop): wait until
    /// nobody writes its running image any more, else `Busy` ([`crate::writers`]). The
    /// engine asks this before the session's witness, so that what is written while it
    /// waits is in what the witness is asked about.
    pub fn wait_for_writers(&self) -> Result<()> {
        if !self.config.save_on_stop {
            return Ok(());
        }
        let dirty = self.paths.dirty_name();
        match self.vm_dir()? {
            Some(dir) if dir.exists(&dirty) => {
                writers::wait_until_unwritten(&dir, &dirty, writers::GRACE)
            }
            _ => Ok(()),
        }
    }

    /// R§3.8, idempotent. Returns whether anything was stopped.
    pub fn stop(&mut self, ctx: &OpCtx) -> Result<bool> {
        let dir = self.vm_dir()?;
        let dirty = self.paths.dirty_name();
        let Some(dir) = dir.filter(|d| d.exists(&dirty)) else {
            if !self.config.save_on_stop {
                // A snapshot's hardlink left behind by an interrupted stop (no barrier,
                // as the stop's own discard).
                if let Some(dir) = self.vm_dir()? {
                    let mut changes = self.changes_without_barrier(&dir);
                    changes.discard(&self.paths.clean_name())?;
                    changes.end_without_barrier();
                }
            }
            return Ok(false);
        };
        let committed = match self.kind() {
            VolumeKind::OriginSnapshotsDisabled => {
                durable::prepare_commit_at(&dir, &dirty)?;
                let mut changes = self.changes(&dir);
                changes.rename(&dirty, &self.paths.clean_name())?;
                changes.commit()?;
                true
            }
            VolumeKind::Origin | VolumeKind::OriginSnapshot => {
                self.commit(&dir, Incoming::Running(&dirty), None, ctx)?;
                true
            }
            VolumeKind::Snapshot | VolumeKind::Volatile => {
                if let Some(size) = self.volatile_size_to_keep() {
                    // Keep a manual resize of the volatile image for the next start.
                    self.config.size = size;
                }
                // No barrier (docs/durability.md, rule 9): a power cut that undoes
                // these discards leaves a running image marked with a boot before the
                // reboot, which the start-up sweep then discards as this stop did —
                // what a power cut while the VM ran leaves too. An image without the
                // mark (the reference driver's, an older release's, a filesystem
                // without user xattrs) would come back started: its stop waits for
                // the directory's barrier, as before rule 9.
                let marked = running::made_at(&dir, &dirty) != Made::Unknown
                    || crate::fsync_fault::skipped("stop-dir", &dir.join(&dirty));
                let mut changes = match marked {
                    true => self.changes_without_barrier(&dir),
                    false => self.changes(&dir),
                };
                changes.discard(&dirty)?;
                changes.discard(&self.paths.clean_name())?;
                match marked {
                    true => changes.end_without_barrier(),
                    false => {
                        info!(path = %dir.join(&dirty).display(),
                            "the running image has no boot mark: its stop waits for the directory's barrier");
                        changes.commit()?;
                    }
                }
                false
            }
        };
        ctx.emit_volume(EventKind::Stopped { committed });
        Ok(true)
    }

    /// R§3.9: make `incoming` (the running image, or a staged copy) the new clean
    /// image, keeping the previous one as a revision, in one batch: the revision is
    /// linked, the pruned revisions and the old precache discarded, the new image put
    /// in place, then one fsync of the directory; `discard` (the import file) is
    /// discarded after it. The running image's content is fsynced before anything
    /// changes.
    fn commit(
        &self,
        dir: &Dir,
        incoming: Incoming<'_>,
        discard: Option<&str>,
        ctx: &OpCtx,
    ) -> Result<()> {
        // The batch begins (and announces its barrier) before the running image's
        // fsync, so that the other volumes of the VM stopped at the same time wait for
        // this one to share their directory fsync.
        if let Incoming::Staged(staged) = &incoming {
            if self.is_committed_image(dir, staged.temp_name())? {
                // A clone of a source whose image this volume already has (cloned
                // before, unchanged since): a rename between two names of one inode
                // would do nothing, and a revision of it would be a duplicate.
                info!(path = %dir.join(&self.paths.clean_name()).display(),
                    "the committed image already is this image: nothing to commit");
                ctx.point_of_no_return();
                return Ok(());
            }
        }
        let mut changes = self.changes(dir);
        if let Incoming::Running(from) = incoming {
            if !dir.exists(from) {
                return Err(EngineError::not_found(format!(
                    "cannot commit: {} does not exist",
                    dir.join(from).display()
                )));
            }
            durable::prepare_commit_at(dir, from)?;
        }
        let clean = self.paths.clean_name();
        let mut revisions = revision::list_in(dir, &self.paths)?;
        if dir.exists(&clean) {
            revision::add(&mut changes, &self.paths, self.keep(), &mut revisions, ctx)?;
        }
        self.prune(&mut changes, &mut revisions, ctx)?;
        changes.discard(&self.paths.precache_name())?;
        match incoming {
            Incoming::Running(from) | Incoming::Revision(from) => changes.rename(from, &clean)?,
            Incoming::Staged(staged) => changes.place(staged)?,
        }
        changes.commit()?;
        ctx.point_of_no_return();
        if let Some(name) = discard {
            self.discard_after_commit(dir, name);
        }
        self.precache_after(dir, ctx);
        Ok(())
    }

    /// Prunes `revisions` down to what the volume keeps (pinned ones stay), in
    /// `changes`; returns the pruned ones.
    fn prune(
        &self,
        changes: &mut DirChanges<'_>,
        revisions: &mut Vec<Revision>,
        ctx: &OpCtx,
    ) -> Result<Vec<Revision>> {
        revision::prune(
            changes,
            &self.paths,
            self.keep(),
            revisions,
            self.pins(),
            ctx,
        )
    }

    /// Is `name` of `dir` another name of the committed image (the same inode)?
    fn is_committed_image(&self, dir: &Dir, name: &str) -> Result<bool> {
        Ok(
            match (dir.entry(name)?, dir.entry(&self.paths.clean_name())?) {
                (Some(file), Some(clean)) => clean.is_file() && file.same_inode(&clean),
                _ => false,
            },
        )
    }

    /// `name` (the import file whose private copy was committed) leaves only once the
    /// commit is durable: a commit that fails keeps it for a retry
    /// (`engine/imports.rs`). From then on it is garbage, whose removal needs no
    /// barrier (rule 4 of docs/durability.md): a power cut may leave it, and the
    /// start-up sweep deletes it; so may a failure to discard it now, which is only
    /// logged — the commit stands.
    fn discard_after_commit(&self, dir: &Dir, name: &str) {
        let mut leaving = self.changes_without_barrier(dir);
        if let Err(err) = leaving.discard(name) {
            warn!(path = %dir.join(name).display(), error = %err, "cannot discard the committed import file; the start-up sweep deletes it");
        }
        leaving.end_without_barrier();
    }

    /// R§3.13 with fixes 1 and 7: refused while started; `None` = the highest id — not
    /// counting a newest revision that already is the committed image (an earlier
    /// revert or commit kept it and failed before it replaced the image: reverting to it
    /// would change nothing).
    pub fn revert(&self, id: Option<u64>, ctx: &OpCtx) -> Result<Revision> {
        if self.is_started() {
            return Err(EngineError::busy(
                "cannot revert while the volume is started; stop it first",
            ));
        }
        let dir = self.vm_dir()?.ok_or_else(|| match id {
            None => EngineError::not_found("has no revisions"),
            Some(id) => EngineError::not_found(format!("has no revision {id}")),
        })?;
        let revisions = revision::list_in(&dir, &self.paths)?;
        let current = revision::current_in(&dir, &self.paths, &revisions)?;
        let target = match (id, current) {
            (None, Some(_)) => revision::find_in(&revisions[..revisions.len() - 1], None)
                .map_err(|_| {
                    EngineError::not_found(
                        "has no revision older than its committed image (its newest revision is that image)",
                    )
                })?,
            _ => revision::find_in(&revisions, id)?,
        };
        if Some(target) == current {
            return self.revert_to_current(&dir, target, ctx);
        }
        if self.pins().is_pinned(&target) {
            return self.revert_keeping(&dir, target, ctx);
        }
        let target_name = self.paths.revision_name(target.id, target.timestamp);
        self.revert_batch(
            &dir,
            revisions,
            Incoming::Revision(&target_name),
            target,
            ctx,
        )
    }

    /// A revert to the revision that already is the committed image: the data stays as
    /// it is and the revision is consumed, as by any revert (its name discarded; a
    /// pinned one stays).
    fn revert_to_current(&self, dir: &Dir, target: Revision, ctx: &OpCtx) -> Result<Revision> {
        if !self.pins().is_pinned(&target) {
            let mut changes = self.changes(dir);
            changes.discard(&self.paths.revision_name(target.id, target.timestamp))?;
            changes.commit()?;
        }
        ctx.point_of_no_return();
        ctx.emit_volume(EventKind::Reverted { id: target.id });
        Ok(target)
    }

    /// A revert's one batch: the current image kept as a revision, the precache
    /// discarded, `incoming` made the committed image, one fsync of the directory; then
    /// the new precache.
    fn revert_batch(
        &self,
        dir: &Dir,
        mut revisions: Vec<Revision>,
        incoming: Incoming<'_>,
        target: Revision,
        ctx: &OpCtx,
    ) -> Result<Revision> {
        let clean = self.paths.clean_name();
        let mut changes = self.changes(dir);
        if dir.exists(&clean) {
            revision::add(
                &mut changes,
                &self.paths,
                self.revert_keep(),
                &mut revisions,
                ctx,
            )?;
        }
        changes.discard(&self.paths.precache_name())?;
        match incoming {
            Incoming::Running(from) | Incoming::Revision(from) => changes.rename(from, &clean)?,
            Incoming::Staged(staged) => changes.place(staged)?,
        }
        changes.commit()?;
        ctx.point_of_no_return();
        self.precache_after(dir, ctx);
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

    /// Revert to a pinned revision, which stays ([`crate::note`]): first a staged copy
    /// of it with its mtime (a reflink where the pool can) — the one step a cancel can
    /// stop, and it replaces nothing until it is complete (a crash leaves a temp file
    /// the sweep removes) — then, in one batch, the current image is kept as a revision
    /// and the copy put in its place. A link would not do: the committed image must
    /// never share its inode with a revision, since a start with snapshots disabled
    /// hands that inode to the VM.
    fn revert_keeping(&self, dir: &Dir, target: Revision, ctx: &OpCtx) -> Result<Revision> {
        let clean = self.paths.clean_name();
        let opts = CopyOptions {
            dst_size: None,
            copy_mtime: true,
            disposable: false,
            own_image: false,
        };
        let target_name = self.paths.revision_name(target.id, target.timestamp);
        let (staged, _) = copy::stage_at(dir, &target_name, dir, &clean, opts, ctx)?;
        let revisions = revision::list_in(dir, &self.paths)?;
        self.revert_batch(dir, revisions, Incoming::Staged(staged), target, ctx)
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
        self.resize_with(size, ctx, || Ok(()))
    }

    /// [`Self::resize`], calling `recorded` — which returns once the new size is
    /// recorded — right before the image changes: after the new image of a halted
    /// volume is staged (so the record's flush and the copy overlap), before anything
    /// else. An error from it changes nothing.
    pub fn resize_with(
        &mut self,
        size: u64,
        ctx: &OpCtx,
        recorded: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let old = self.size();
        if self.is_started() {
            recorded()?;
            let dir = self.existing_vm_dir(&self.paths.dirty())?;
            durable::truncate_at(&dir, &self.paths.dirty_name(), size)?;
            loopdev::refresh_loop_devices(&self.paths.dirty())?;
        } else if matches!(
            self.kind(),
            VolumeKind::Origin | VolumeKind::OriginSnapshotsDisabled
        ) && old != size
        {
            let dir = self.existing_vm_dir(&self.paths.clean())?;
            let growth = {
                let exclusive = link_or_grow();
                self.growable_in_place(&dir, old, size)?
                    .map(|clean| (exclusive, clean))
            };
            match growth {
                Some((_exclusive, clean)) => {
                    self.grow_in_place(&dir, &clean, size, ctx, recorded)?
                }
                None => self.replace_resized(&dir, size, ctx, recorded)?,
            }
        } else {
            recorded()?;
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

    /// A halted origin's new image: a copy of the committed one at `size` (a new inode:
    /// revisions and readers of the exported image are untouched), put in place in the
    /// batch that discards the old precache.
    fn replace_resized(
        &self,
        dir: &Dir,
        size: u64,
        ctx: &OpCtx,
        recorded: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let clean = self.paths.clean_name();
        let opts = CopyOptions {
            dst_size: Some(size),
            copy_mtime: false,
            disposable: false,
            own_image: false,
        };
        let (staged, _) = copy::stage_at(dir, &clean, dir, &clean, opts, ctx)
            .map_err(|e| EngineError::with_reason(e, format!("cannot resize to {size} bytes")))?;
        recorded()?;
        ctx.point_of_no_return();
        let mut changes = self.changes(dir);
        changes.discard(&self.paths.precache_name())?;
        changes.place(staged)?;
        changes.commit()?;
        self.precache_after(dir, ctx);
        Ok(())
    }

    /// The committed image, open read-write, when a resize from `old` to `size` may
    /// grow it in place instead of copying it: a growth, the image has one name (no
    /// revision, snapshot or clone link shares its inode) and nobody else has it open
    /// (no exported fd, no loop device: [`sys::only_opener`]). An export cannot begin
    /// meanwhile: exports take the volume's lock, which the resize holds (a clone
    /// exports its source under that lock too, but links it later without it: the
    /// link waits for [`link_or_grow`], which the caller holds from this check to the
    /// growth).
    fn growable_in_place(&self, dir: &Dir, old: u64, size: u64) -> Result<Option<File>> {
        if size < old {
            return Ok(None);
        }
        let name = self.paths.clean_name();
        let clean = dir.open_file(&name, Access::ReadWrite)?;
        let path = dir.join(&name);
        let stat = sys::stat_fd(&clean).io_ctx(|| format!("cannot stat {}", path.display()))?;
        if stat.st_nlink != 1 {
            return Ok(None);
        }
        let alone = sys::only_opener(&clean)
            .io_ctx(|| format!("cannot probe who has {} open", path.display()))?;
        Ok(alone.then_some(clean))
    }

    /// A halted origin's image grown in place ([`Self::growable_in_place`]): the new
    /// size recorded, the image truncated (a hole at the end) and fsynced — old size or
    /// new after a power cut, never a torn image — and the precache, stale now,
    /// discarded without a barrier (rule 5 of docs/durability.md).
    fn grow_in_place(
        &self,
        dir: &Dir,
        clean: &File,
        size: u64,
        ctx: &OpCtx,
        recorded: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        recorded()?;
        ctx.point_of_no_return();
        durable::truncate_open(clean, &self.paths.clean(), size)?;
        let mut changes = self.changes(dir);
        changes.discard(&self.paths.precache_name())?;
        changes.end_without_barrier();
        self.precache_after(dir, ctx);
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

    /// A read-only descriptor of the import file, opened when the import begins: the
    /// kernel reports a failed write-back of the file's pages once to each open file
    /// description, so this one still tells, at the commit, that data written through
    /// the importer's descriptor never reached the disk — whoever else has been told.
    pub fn import_witness(&self) -> Result<File> {
        let dir = self.existing_vm_dir(&self.paths.import())?;
        dir.open_file(&self.paths.import_name(), Access::Read)
    }

    /// R§3.18 success, with fix 8 (without an import file nothing changes) and
    /// contract rev 2: what is committed has exactly the declared `size`, and no fd the
    /// importer still holds can ever reach committed data. When the import file has no
    /// other open file description anywhere (the importer closed its fd, and so did
    /// every process it passed it to: [`sys::only_opener`]), no other name, and belongs
    /// to the service with no access for anyone else, nobody can write it any more —
    /// not even by opening it again — so it is cut to `size`
    /// and committed itself, as a stop commits a running image (fsynced, renamed). Else
    /// a private copy of it at `size` (a reflink where the pool has them, else a
    /// hole-preserving byte copy) is committed and the import file discarded: the
    /// importer's fd keeps writing into the old inode.
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
        if self.import_let_go(&dir, &import, size)? {
            self.commit(&dir, Incoming::Running(&import), None, ctx)?;
            ctx.emit_volume(EventKind::Imported { success: true });
            return Ok(());
        }
        let opts = CopyOptions {
            dst_size: Some(size),
            copy_mtime: false,
            disposable: false,
            own_image: false,
        };
        let clean = self.paths.clean_name();
        let (staged, _) = copy::stage_at(&dir, &import, &dir, &clean, opts, ctx).map_err(|e| {
            EngineError::with_reason(
                e,
                "cannot make the private copy of the import file that is committed",
            )
        })?;
        self.commit(&dir, Incoming::Staged(staged), Some(&import), ctx)?;
        ctx.emit_volume(EventKind::Imported { success: true });
        Ok(())
    }

    /// The committed image's identity (device, inode), if it exists.
    pub fn committed_identity(&self) -> Result<Option<(u64, u64)>> {
        let Some(dir) = self.vm_dir()? else {
            return Ok(None);
        };
        Ok(dir
            .entry(&self.paths.clean_name())?
            .filter(Entry::is_file)
            .map(|e| (e.stat.st_dev, e.stat.st_ino)))
    }

    /// The newest revision, if any.
    pub fn newest_revision(&self) -> Result<Option<Revision>> {
        let Some(dir) = self.vm_dir()? else {
            return Ok(None);
        };
        Ok(revision::list_in(&dir, &self.paths)?.last().copied())
    }

    /// Ends the commit of an import whose image an earlier attempt had put in place
    /// before its directory fsync failed (`engine/imports.rs`): the revisions that
    /// attempt had pruned were given their names back, so they are pruned now, and the
    /// directory's fsync makes the whole commit durable; then what follows a commit (the
    /// import file, held by its importer, goes; the precache is made again). The
    /// revision that attempt `kept` of the image before the import is announced now:
    /// the failed call's events were not. What the importer wrote into a file it still
    /// holds after its first ImportDataEnd is not looked at again: the image committed
    /// is the copy made then.
    pub fn finish_import_commit(&self, kept: Option<Revision>, ctx: &OpCtx) -> Result<()> {
        let dir = self.existing_vm_dir(&self.paths.clean())?;
        let mut changes = self.changes(&dir);
        let mut revisions = revision::list_in(&dir, &self.paths)?;
        self.prune(&mut changes, &mut revisions, ctx)?;
        changes.require_barrier();
        changes.commit()?;
        ctx.point_of_no_return();
        if let Some(Revision { id, timestamp }) = kept {
            ctx.emit_volume(EventKind::RevisionAdded { id, timestamp });
        }
        info!(path = %dir.join(&self.paths.clean_name()).display(),
            "the import's image, put in place by an attempt whose directory fsync failed, is now durable");
        let import = self.paths.import_name();
        if dir.exists(&import) {
            self.discard_after_commit(&dir, &import);
        }
        self.precache_after(&dir, ctx);
        ctx.emit_volume(EventKind::Imported { success: true });
        Ok(())
    }

    /// ImportDataEnd(false) of an import whose image a failed commit had put in place
    /// (see [`Self::finish_import_commit`]): a revert to the revision it `kept` of the
    /// image before the import (the import's image becomes a revision, as any committed
    /// image a revert replaces). Without such a revision (`revisions_to_keep` 0) the
    /// image before the import is gone, and the import can only be committed.
    pub fn undo_placed_import(&self, kept: Option<Revision>, ctx: &OpCtx) -> Result<()> {
        let Some(kept) = kept else {
            return Err(EngineError::new(
                crate::error::ErrorKind::Failed,
                "the import's data already is the committed image (its commit failed only to be made durable) and the image before it was not kept as a revision: end the import with ImportDataEnd(true)",
            ));
        };
        info!(revision = kept.id, "the import is discarded after its image was put in place: reverting to the image from before it");
        self.revert(Some(kept.id), ctx).map(|_| ())
    }

    /// Has every fd of the import file `import` been closed, and has it no other name
    /// (see [`Self::commit_import`])? Then it is cut to the declared `size` (a holder
    /// could have changed its size).
    fn import_let_go(&self, dir: &Dir, import: &str, size: u64) -> Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let path = dir.join(import);
        let copy = |why: &str| {
            info!(path = %path.display(), "{why}: a private copy is committed");
            Ok(false)
        };
        let file = dir.open_file(import, Access::ReadWrite)?;
        match only_opener_soon(&file) {
            Ok(true) => {}
            Ok(false) => return copy("the import file is still open elsewhere"),
            Err(err) => {
                warn!(path = %path.display(), error = %err, "cannot tell whether anyone else has the import file open");
                return copy("perhaps still open elsewhere");
            }
        }
        let meta = file
            .metadata()
            .io_ctx(|| format!("cannot stat {}", path.display()))?;
        // What keeps anyone from opening it again (through /proc/<pid>/fd with an
        // O_PATH descriptor, or through a hard link where fs.protected_hardlinks
        // allows one) is that it belongs to the service and nobody else may open it.
        if meta.uid() != sys::effective_uid() || meta.mode() & 0o077 != 0 {
            return copy("the import file is not private to the service");
        }
        if meta.nlink() != 1 {
            return copy("the import file has another name");
        }
        if meta.len() != size {
            file.set_len(size)
                .io_ctx(|| format!("cannot set the size of {}", path.display()))?;
        }
        info!(path = %path.display(), "nobody holds the import file any more: it is committed itself, no copy");
        Ok(true)
    }

    /// R§3.18 failure: delete the import file (a missing one is fine).
    /// Its removal need not be durable: a stale import file is never committed, and
    /// the start-up sweep deletes it.
    pub fn discard_import(&self, ctx: &OpCtx) -> Result<()> {
        if let Some(dir) = self.vm_dir()? {
            let mut garbage = self.changes_without_barrier(&dir);
            garbage.discard(&self.paths.import_name())?;
            garbage.end_without_barrier();
        }
        ctx.emit_volume(EventKind::Imported { success: false });
        Ok(())
    }

    /// R§3.19 with fix 1: clone `src`, the committed image of `source` (any pool)
    /// exported by the caller, into this volume. A no-op for volumes that are not
    /// save_on_stop. The copy is staged next
    /// to the clean image and committed from there (no import file is involved); the
    /// point of no return is the end of the copy: a cancel after it changes nothing and
    /// the clone commits. On every failure or cancellation nothing of the copy is left
    /// (contract fix 14), also when the commit fails after the copy (a full disk).
    pub fn import_volume(&self, source: &Volume<'_>, src: &File, ctx: &OpCtx) -> Result<()> {
        if !self.takes_a_clone()? {
            return Ok(());
        }
        let dir = self.ensure_vm_dir()?;
        let cloned = self.stage_clone(source, src, &dir, ctx).and_then(|staged| {
            ctx.point_of_no_return();
            self.commit(&dir, Incoming::Staged(staged), None, ctx)
        });
        if let Err(err) = cloned {
            ctx.emit_volume(EventKind::Imported { success: false });
            return Err(err);
        }
        ctx.emit_volume(EventKind::Imported { success: true });
        Ok(())
    }

    /// Whether a clone into this volume has anything to do (R§3.19): not for a volume
    /// that is not save_on_stop (a no-op); `Busy` while started.
    pub fn takes_a_clone(&self) -> Result<bool> {
        if self.is_started() {
            return Err(EngineError::busy("cannot import into a started volume"));
        }
        if !self.config.save_on_stop {
            info!(vid = %self.config.vid, "import_volume: not save_on_stop, nothing to do");
            return Ok(false);
        }
        self.refuse_import()?;
        Ok(true)
    }

    /// The new committed image of a clone of `source`, whose exported image is `src`:
    /// a hard link of the source's committed image where it can be one (the same
    /// filesystem, and a source and a target with snapshots, whose committed images are
    /// never written: each commit renames a new inode into place, and a
    /// snapshots-disabled start or a growth in place copies an image with another name
    /// first — [`link_or_grow`] keeps a link from coming between their check and their
    /// write), otherwise a reflink or a copy of `src`. A committed image shared this way is what a snapshot
    /// volume's link and a revision already are; the reference driver copies
    /// (deliberate difference: no data and no extent bookkeeping, on ext4 no copy).
    fn stage_clone<'d>(
        &self,
        source: &Volume<'_>,
        src: &File,
        dir: &'d Dir,
        ctx: &OpCtx,
    ) -> Result<durable::Staged<'d>> {
        let clean = self.paths.clean_name();
        // A target with snapshots disabled gets its own inode: its VM writes into its
        // committed image in place, which an export of the source might still read
        // once the source has given its own names of that inode up.
        if !source.config.snapshots_disabled() && !self.config.snapshots_disabled() {
            if let Some(source_dir) = source.vm_dir_of(&source.paths)? {
                let expected = src
                    .metadata()
                    .io_ctx(|| format!("cannot stat {}", source.paths.clean().display()))?;
                let linked = {
                    let _exclusive = link_or_grow();
                    durable::stage_link_at(
                        &source_dir,
                        &source.paths.clean_name(),
                        dir,
                        &clean,
                        &expected,
                    )?
                };
                if let Some(staged) = linked {
                    return Ok(staged);
                }
            }
        }
        copy::stage_file(src, dir, &clean, CopyOptions::default(), ctx).map(|(staged, _)| staged)
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

    /// The size of a started volatile volume's image that differs from its nominal
    /// size (a manual resize, kept at stop) — unless the image was made in an earlier
    /// boot: a power cut may have left it at any size (rule 9).
    pub fn volatile_size_to_keep(&self) -> Option<u64> {
        let size = self.size();
        let keep = self.kind() == VolumeKind::Volatile
            && self.is_started()
            && size != self.config.size
            && self.running_image_made() != Made::EarlierBoot;
        keep.then_some(size)
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

/// Held from a check that a committed image has one name to the write it allows (a
/// resize's growth in place, a snapshots-disabled start's rename to the running
/// image), and over a clone's link of a committed image: a clone no longer holds its
/// source's lock when it links (only while it exports), so without it a clone could
/// link an image that the source is about to grow or hand to its VM — and the clone's
/// committed image would change with it. One per
/// process: all are short (a link; a truncate and its fsync; a few renames).
fn link_or_grow() -> std::sync::MutexGuard<'static, ()> {
    static LINK_OR_GROW: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LINK_OR_GROW.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits between the write-lease probes of [`only_opener_soon`].
const PROBE_RETRIES: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(1),
    std::time::Duration::from_millis(2),
    std::time::Duration::from_millis(4),
];

/// [`sys::only_opener`], asked again a few times over 7 ms while it says no: a process
/// of the importer that forked just before closing its descriptor holds the file until
/// its child execs (close-on-exec or not), a moment later. Any yes is final: the file
/// is then nobody else's, and nobody can open it again (the caller checks its owner
/// and mode).
fn only_opener_soon(file: &File) -> std::io::Result<bool> {
    for wait in PROBE_RETRIES {
        if sys::only_opener(file)? {
            return Ok(true);
        }
        std::thread::sleep(wait);
    }
    sys::only_opener(file)
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
