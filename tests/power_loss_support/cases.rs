//! The operations whose durability is proved, each as the service's caller performs
//! it over the bus, with what it changes: the world before (the [`history`] plus the
//! case's own preparation) and the world once it is acknowledged. Every other volume
//! must stay exactly as it was.
//!
//! | operation | on    | before                          | after                              |
//! |-----------|-------|---------------------------------|------------------------------------|
//! | start     | WORK  | stopped                         | started, dirty C                   |
//! | start-session | WORK | stopped                        | started, dirty D (Start, then the VM writes D and flushes) |
//! | stop      | WORK  | started, dirty D                | clean D, revisions 3:B 4:C (2:A pruned) |
//! | revert    | WORK  | clean C                         | clean B, revisions 2:A 4:C         |
//! | resize    | WORK  | clean C (4 MiB)                 | clean C grown to 6 MiB             |
//! | import    | WORK  | clean C                         | clean F (ImportData + ImportDataEnd), revisions 3:B 4:C |
//! | import-held | WORK | clean C                        | as import, but the importer keeps its fd open over ImportDataEnd (a private copy is committed) |
//! | clone     | WORK  | clean C                         | clean G (ImportVolume of TPL, another pool), revisions 3:B 4:C |
//! | create    | NEW   | absent                          | registered, clean E                |
//! | remove    | WORK  | registered                      | absent, no file left               |
//! | create-pool | pool `r` | an empty file system (no state directory) | pool `r` registered, its directories made |
//! | stop-unflushed | WORK | started, dirty C; the operation writes D into it without a flush, then stops it | clean D, revisions 3:B 4:C (2:A pruned) |
//! | stop-vm   | WORK, WORK_ROOT, WORK_VOLATILE | all three started (dirty D, H, E) | all three stopped at once: WORK as after stop, the others halted without files |
//! | stop-vm-unmarked | WORK, WORK_ROOT, WORK_VOLATILE | as stop-vm, the dirty H and E without a boot mark | as stop-vm |
//! | stop-disposables-unmarked | WORK_ROOT, WORK_VOLATILE | started (dirty H, E) without a boot mark | both stopped at once, halted without files |
//! | create-vm | NEW, NEW_ROOT, NEW_VOLATILE | absent | all three created at once: NEW clean E, the others registered without files |
//! | start-vm  | WORK, WORK_ROOT, WORK_VOLATILE | all three halted | all three started at once (dirty C, H, E) |
//!
//! In stop-unflushed the running image holds whatever of the session reached the disk
//! until the commit's fsync of it: any content is accepted there before the stop is
//! acknowledged ([`Op::unflushed_session`]); the committed image must be exactly D.
//!
//! A start from a reflinked precache waits for no barrier on btrfs and XFS
//! (docs/durability.md rule 8): a power cut may undo it even once it was acknowledged
//! ([`Op::may_be_undone`]), but never after a write of the VM is durable — start-session
//! is that proof: its VM's flush (an fsync of the running image) must leave the volume
//! started with D, and before it a precache that a start would use must still hold the
//! committed image (checked on every crash disk of every case).
//!
//! A snapshot's and a volatile volume's start and stop wait for no barrier at all (rule
//! 9): their running images are never used after a power cut — the next start makes
//! fresh ones — so on a crash disk they may be missing, torn or anything
//! ([`Op::disposable`]); what must hold is that the daemon, after the reboot, serves
//! them stopped (its start-up sweep removes what the crash left) and that a Start on
//! the crash disk gives the source's committed image and an empty one (checked after
//! start-vm and stop-vm).
//!
//! stop-vm, stop-vm-unmarked, create-vm and start-vm run their three calls concurrently
//! over the bus, so that they share barriers: the VM directory's fsyncs and syncfs
//! rounds (stop-vm), the state journal's fdatasync (create-vm); stop-vm also discards
//! the two stopped images, which are deleted after the replies. stop-vm-unmarked is
//! stop-vm with the root's and the volatile volume's running images unmarked (as the
//! reference driver or an older release made them), whose stops keep their barrier;
//! stop-disposables-unmarked stops those two alone, so that no other fsync in the VM
//! directory can make their changes durable for them: the fault tests skip their
//! barrier there, where skipping it is always seen.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::OwnedFd;

use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath, Variant};

use super::content::{write_label, Content, IMAGE, RESIZED};
use super::world::{
    history, new_volume_config, write_fsynced, Disk, Vol, VolState, WorldState, ALL, KEEP, NEW,
    NEW_POOL, NEW_ROOT, NEW_VOLATILE, OTHER, TPL, WORK, WORK_ROOT, WORK_VOLATILE,
};
use crate::common::{opts, opts_of, ManagerProxy, PoolProxy, VolumeProxy};

/// One operation of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Start,
    /// Start, then the VM writes D into the running image and flushes it.
    StartSession,
    Stop,
    Revert,
    Resize,
    Import,
    /// Import whose importer still holds its fd at ImportDataEnd.
    ImportHeld,
    Clone,
    Create,
    Remove,
    /// CreatePool on a disk without any state: the daemon's first start creates the
    /// state directory, then the pool is created.
    CreatePool,
    /// Stop of a session written just before, not flushed by the VM.
    StopUnflushed,
    /// Stop of a VM's three volumes at once.
    StopVm,
    /// Stop of a VM's three volumes at once, the root's and the volatile volume's
    /// running images unmarked (as the reference driver or an older release made
    /// them): their stops need the barrier the marked ones skip.
    StopVmUnmarked,
    /// Stop of the root and the volatile volume alone (at once), their running images
    /// unmarked: nothing else in the VM directory is made durable meanwhile.
    StopDisposablesUnmarked,
    /// CreateVolume of a VM's three volumes at once.
    CreateVm,
    /// Start of a VM's three volumes at once.
    StartVm,
}

impl Op {
    pub const ALL: [Op; 17] = [
        Op::Start,
        Op::StartSession,
        Op::Stop,
        Op::Revert,
        Op::Resize,
        Op::Import,
        Op::ImportHeld,
        Op::Clone,
        Op::Create,
        Op::Remove,
        Op::CreatePool,
        Op::StopUnflushed,
        Op::StopVm,
        Op::StopVmUnmarked,
        Op::StopDisposablesUnmarked,
        Op::CreateVm,
        Op::StartVm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::StartSession => "start-session",
            Op::Stop => "stop",
            Op::Revert => "revert",
            Op::Resize => "resize",
            Op::Import => "import",
            Op::ImportHeld => "import-held",
            Op::Clone => "clone",
            Op::Create => "create",
            Op::Remove => "remove",
            Op::CreatePool => "create-pool",
            Op::StopUnflushed => "stop-unflushed",
            Op::StopVm => "stop-vm",
            Op::StopVmUnmarked => "stop-vm-unmarked",
            Op::StopDisposablesUnmarked => "stop-disposables-unmarked",
            Op::CreateVm => "create-vm",
            Op::StartVm => "start-vm",
        }
    }

    /// Does the case begin from [`history`] (else from an empty file system)?
    pub fn has_history(self) -> bool {
        self != Op::CreatePool
    }

    /// The pools registered before the operation.
    pub fn pools_before(self) -> BTreeSet<&'static str> {
        match self {
            Op::CreatePool => BTreeSet::new(),
            _ => BTreeSet::from(["p", "q"]),
        }
    }

    /// The pools registered once the operation was acknowledged.
    pub fn pools_after(self) -> BTreeSet<&'static str> {
        match self {
            Op::CreatePool => BTreeSet::from([NEW_POOL]),
            _ => self.pools_before(),
        }
    }

    /// The volume whose running image may hold anything until the operation is
    /// acknowledged: a session the VM did not flush.
    pub fn unflushed_session(self) -> Option<Vol> {
        matches!(self, Op::StopUnflushed | Op::StartSession).then_some(WORK)
    }

    /// May a power cut after the acknowledgement still leave the old state? Only a
    /// start from a reflinked precache on btrfs or XFS (`reflinks`), which has no
    /// barrier: until something later is durable, undoing it loses nothing.
    pub fn may_be_undone(self, reflinks: bool) -> bool {
        matches!(self, Op::Start | Op::StartVm) && reflinks
    }

    /// The volumes whose running image nothing needs after a power cut (rule 9: a
    /// snapshot's, a volatile volume's): a crash disk may hold any running image of
    /// theirs or none, which the daemon must not serve after the reboot (its start-up
    /// sweep stops them), and a start there must make afresh — in every phase, also
    /// before a stop-vm began (their VM died with the power) and after it was
    /// acknowledged (their stop waits for no barrier).
    pub fn disposable(self) -> &'static [Vol] {
        match self {
            Op::StartVm | Op::StopVm | Op::StopVmUnmarked | Op::StopDisposablesUnmarked => {
                &[WORK_ROOT, WORK_VOLATILE]
            }
            _ => &[],
        }
    }

    /// Must the disposable volumes' stops hold once acknowledged? Those of running
    /// images without a boot mark, which the start-up sweep would keep started.
    pub fn disposables_stop_durably(self) -> bool {
        matches!(self, Op::StopVmUnmarked | Op::StopDisposablesUnmarked)
    }

    /// The volumes the operation changes.
    pub fn subjects(self) -> &'static [Vol] {
        match self {
            Op::Create => &[NEW],
            Op::StopVm | Op::StopVmUnmarked | Op::StartVm => &[WORK, WORK_ROOT, WORK_VOLATILE],
            Op::StopDisposablesUnmarked => &[WORK_ROOT, WORK_VOLATILE],
            Op::CreateVm => &[NEW, NEW_ROOT, NEW_VOLATILE],
            _ => &[WORK],
        }
    }

    /// The case's own history on top of [`history`], done with the engine before the
    /// recording (the stop case needs a running session that wrote D).
    pub fn prepare(self, engine: &qubes_storage_engine::Engine) {
        let ctx = qubes_storage_engine::OpCtx::quiet("power-loss-history");
        if matches!(self, Op::Stop | Op::StopVm | Op::StopVmUnmarked) {
            let dirty = engine.start(&WORK.vref(), &ctx).expect("start");
            write_fsynced(&dirty, 'D');
        }
        if self == Op::StopUnflushed {
            engine.start(&WORK.vref(), &ctx).expect("start");
        }
        if matches!(
            self,
            Op::StopVm | Op::StopVmUnmarked | Op::StopDisposablesUnmarked
        ) {
            for vol in [WORK_ROOT, WORK_VOLATILE] {
                let dirty = engine.start(&vol.vref(), &ctx).expect("start");
                if self.disposables_stop_durably() {
                    let file = std::fs::File::open(&dirty).expect("the running image");
                    qubes_storage_engine::sys::remove_xattr(
                        &file,
                        qubes_storage_engine::running::MADE_IN_BOOT,
                    )
                    .expect("unmark the running image");
                    file.sync_all().expect("fsync the running image");
                }
            }
        }
        engine.settle();
    }

    /// The world when the operation begins.
    pub fn before(self) -> WorldState {
        if !self.has_history() {
            return ALL.iter().map(|&v| (v, VolState::absent())).collect();
        }
        let mut world = history();
        if matches!(self, Op::Stop | Op::StopVm | Op::StopVmUnmarked) {
            let work = world[&WORK].clone().started(Content::of('D'));
            world.insert(WORK, work);
        }
        if self == Op::StopUnflushed {
            let work = world[&WORK].clone().started(Content::of('C'));
            world.insert(WORK, work);
        }
        if matches!(
            self,
            Op::StopVm | Op::StopVmUnmarked | Op::StopDisposablesUnmarked
        ) {
            let root = VolState::halted().started(Content::of('H'));
            world.insert(WORK_ROOT, root);
            let volatile = VolState::halted().started(Content::of('E'));
            world.insert(WORK_VOLATILE, volatile);
        }
        world
    }

    /// The world once the operation was acknowledged.
    pub fn after(self) -> WorldState {
        let mut world = self.before();
        let committed = |clean: char| VolState::stopped(Content::of(clean), &[(3, 'B'), (4, 'C')]);
        let work = match self {
            Op::Start => world[&WORK].clone().started(Content::of('C')),
            Op::StartSession => world[&WORK].clone().started(Content::of('D')),
            Op::Stop | Op::StopUnflushed => committed('D'),
            Op::Revert => VolState::stopped(Content::of('B'), &[(2, 'A'), (4, 'C')]),
            Op::Resize => VolState::stopped(Content::resized('C'), &[(2, 'A'), (3, 'B')]),
            Op::Import | Op::ImportHeld => committed('F'),
            Op::Clone => committed('G'),
            Op::Create => {
                world.insert(NEW, VolState::stopped(Content::of('E'), &[]));
                return world;
            }
            Op::Remove => VolState::absent(),
            Op::CreatePool => return world,
            Op::StopDisposablesUnmarked => {
                world.insert(WORK_ROOT, VolState::halted());
                world.insert(WORK_VOLATILE, VolState::halted());
                return world;
            }
            Op::StopVm | Op::StopVmUnmarked => {
                world.insert(WORK_ROOT, VolState::halted());
                world.insert(WORK_VOLATILE, VolState::halted());
                committed('D')
            }
            Op::StartVm => {
                let root = VolState::halted().started(Content::of('H'));
                world.insert(WORK_ROOT, root);
                let volatile = VolState::halted().started(Content::of('E'));
                world.insert(WORK_VOLATILE, volatile);
                world[&WORK].clone().started(Content::of('C'))
            }
            Op::CreateVm => {
                world.insert(NEW, VolState::stopped(Content::of('E'), &[]));
                world.insert(NEW_ROOT, VolState::halted());
                world.insert(NEW_VOLATILE, VolState::halted());
                return world;
            }
        };
        world.insert(WORK, work);
        world
    }

    /// Performs the operation as a caller of the service does.
    pub async fn perform(self, conn: &Connection, disk: &Disk, reflinks: bool) -> zbus::Result<()> {
        let work = || volume(conn, WORK);
        match self {
            Op::Start => work().await?.start(opts()).await.map(|_| ()),
            Op::StartSession => {
                work().await?.start(opts()).await?;
                let dirty = disk.paths(WORK).dirty();
                let file = std::fs::OpenOptions::new().write(true).open(&dirty)?;
                write_label(&file, 'D');
                file.sync_all()?; // the VM's flush
                Ok(())
            }
            Op::Stop => work().await?.stop(opts()).await,
            Op::Revert => work().await?.revert("", opts()).await,
            Op::Resize => work().await?.resize(RESIZED, opts()).await,
            Op::Import => import(&work().await?, 'F', false).await,
            Op::ImportHeld => import(&work().await?, 'F', true).await,
            Op::Clone => {
                let source = volume_path(conn, TPL).await?;
                work().await?.import_volume(&source, opts()).await
            }
            Op::Create => {
                let config = new_volume_config().into_iter().collect();
                let p = pool(conn, NEW.pool).await?;
                p.create_volume(NEW.vid, config, opts()).await.map(|_| ())
            }
            Op::Remove => work().await?.remove(opts()).await,
            Op::CreatePool => create_pool(conn, disk, reflinks).await,
            Op::StopUnflushed => {
                let work = work().await?;
                let dirty = disk.paths(WORK).dirty();
                let file = std::fs::OpenOptions::new().write(true).open(&dirty)?;
                write_label(&file, 'D');
                drop(file);
                work.stop(opts()).await
            }
            Op::StopVm | Op::StopVmUnmarked => {
                stop_at_once(conn, &[WORK, WORK_ROOT, WORK_VOLATILE]).await
            }
            Op::StopDisposablesUnmarked => stop_at_once(conn, &[WORK_ROOT, WORK_VOLATILE]).await,
            Op::CreateVm => create_vm(conn).await,
            Op::StartVm => start_vm(conn).await,
        }
    }
}

/// Stop `vols` at once; the first failure, if any.
async fn stop_at_once(conn: &Connection, vols: &[Vol]) -> zbus::Result<()> {
    let mut volumes = Vec::new();
    for &vol in vols {
        volumes.push(volume(conn, vol).await?);
    }
    let stops = volumes.iter().map(|v| v.stop(opts()));
    futures_util::future::join_all(stops)
        .await
        .into_iter()
        .collect()
}

/// Start WORK's VM's three volumes at once; the first failure, if any.
async fn start_vm(conn: &Connection) -> zbus::Result<()> {
    let mut volumes = Vec::new();
    for vol in [WORK, WORK_ROOT, WORK_VOLATILE] {
        volumes.push(volume(conn, vol).await?);
    }
    let starts = volumes.iter().map(|v| v.start(opts()));
    let started: zbus::Result<Vec<String>> = futures_util::future::join_all(starts)
        .await
        .into_iter()
        .collect();
    started.map(|_| ())
}

/// Create NEW's VM's three volumes at once (the root a snapshot of OTHER).
async fn create_vm(conn: &Connection) -> zbus::Result<()> {
    let p = pool(conn, NEW.pool).await?;
    let private: HashMap<&str, Variant> = new_volume_config().into_iter().collect();
    let root: HashMap<&str, Variant> = [
        ("size", Variant::from(IMAGE)),
        ("rw", Variant::from(true)),
        ("snap_on_start", Variant::from(true)),
        ("source", Variant::from(OTHER.vid)),
    ]
    .into_iter()
    .collect();
    let volatile: HashMap<&str, Variant> =
        [("size", Variant::from(IMAGE)), ("rw", Variant::from(true))]
            .into_iter()
            .collect();
    let creates = [(NEW, private), (NEW_ROOT, root), (NEW_VOLATILE, volatile)]
        .into_iter()
        .map(|(vol, config)| {
            let p = &p;
            async move { p.create_volume(vol.vid, config, opts()).await.map(|_| ()) }
        });
    futures_util::future::join_all(creates)
        .await
        .into_iter()
        .collect()
}

/// ImportData of an image, `label` written through the fd without fsync (the commit
/// must make it durable), ImportDataEnd(true) — with the fd closed first (the import
/// file is committed itself) or, `held`, still open (a private copy is committed).
async fn import(volume: &VolumeProxy<'_>, label: char, held: bool) -> zbus::Result<()> {
    let fd = volume.import_data(IMAGE, opts()).await?;
    let file = std::fs::File::from(OwnedFd::from(fd));
    write_label(&file, label);
    let still_open = match held {
        true => Some(file),
        false => {
            drop(file);
            None
        }
    };
    let ended = volume.import_data_end(true, opts()).await;
    drop(still_open);
    ended
}

/// CreatePool of [`NEW_POOL`] on the disk (setup_check where reflinks work).
async fn create_pool(conn: &Connection, disk: &Disk, reflinks: bool) -> zbus::Result<()> {
    let dir = disk.pool_dir(NEW_POOL);
    let options = opts_of([
        ("dir_path", Variant::from(dir.to_str().unwrap())),
        ("setup_check", Variant::from(reflinks)),
        ("revisions_to_keep", Variant::from(KEEP as i32)),
    ]);
    let manager = ManagerProxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    manager
        .create_pool(NEW_POOL, "file-reflink", options)
        .await
        .map(|_| ())
}

async fn pool(conn: &Connection, name: &str) -> zbus::Result<PoolProxy<'static>> {
    PoolProxy::builder(conn)
        .path(format!("/org/qubes/Storage/pools/{name}"))
        .cache_properties(CacheProperties::No)
        .build()
        .await
}

async fn volume_path(conn: &Connection, vol: Vol) -> zbus::Result<OwnedObjectPath> {
    pool(conn, vol.pool)
        .await?
        .get_volume(vol.vid, opts())
        .await
}

pub async fn volume(conn: &Connection, vol: Vol) -> zbus::Result<VolumeProxy<'static>> {
    let path = volume_path(conn, vol).await?;
    VolumeProxy::builder(conn)
        .path(path)
        .cache_properties(CacheProperties::No)
        .build()
        .await
}
