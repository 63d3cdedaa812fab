//! The operations whose durability is proved, each as the service's caller performs
//! it over the bus, with what it changes: the world before (the [`history`] plus the
//! case's own preparation) and the world once it is acknowledged. Every other volume
//! must stay exactly as it was.
//!
//! | operation | on    | before                          | after                              |
//! |-----------|-------|---------------------------------|------------------------------------|
//! | start     | WORK  | stopped                         | started, dirty C                   |
//! | stop      | WORK  | started, dirty D                | clean D, revisions 3:B 4:C (2:A pruned) |
//! | revert    | WORK  | clean C                         | clean B, revisions 2:A 4:C         |
//! | resize    | WORK  | clean C (4 MiB)                 | clean C grown to 6 MiB             |
//! | import    | WORK  | clean C                         | clean F (ImportData + ImportDataEnd), revisions 3:B 4:C |
//! | clone     | WORK  | clean C                         | clean G (ImportVolume of TPL, another pool), revisions 3:B 4:C |
//! | create    | NEW   | absent                          | registered, clean E                |
//! | remove    | WORK  | registered                      | absent, no file left               |
//! | create-pool | pool `r` | an empty file system (no state directory) | pool `r` registered, its directories made |

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;

use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath, Variant};

use super::content::{write_label, Content, IMAGE, RESIZED};
use super::world::{
    history, new_volume_config, write_fsynced, Disk, Vol, VolState, WorldState, ALL, KEEP, NEW,
    NEW_POOL, TPL, WORK,
};
use crate::common::{opts, opts_of, ManagerProxy, PoolProxy, VolumeProxy};

/// One operation of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Start,
    Stop,
    Revert,
    Resize,
    Import,
    Clone,
    Create,
    Remove,
    /// CreatePool on a disk without any state: the daemon's first start creates the
    /// state directory, then the pool is created.
    CreatePool,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::Start,
        Op::Stop,
        Op::Revert,
        Op::Resize,
        Op::Import,
        Op::Clone,
        Op::Create,
        Op::Remove,
        Op::CreatePool,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Revert => "revert",
            Op::Resize => "resize",
            Op::Import => "import",
            Op::Clone => "clone",
            Op::Create => "create",
            Op::Remove => "remove",
            Op::CreatePool => "create-pool",
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

    /// The volume the operation changes.
    pub fn subject(self) -> Vol {
        match self {
            Op::Create => NEW,
            _ => WORK,
        }
    }

    /// The case's own history on top of [`history`], done with the engine before the
    /// recording (the stop case needs a running session that wrote D).
    pub fn prepare(self, engine: &qubes_storage_engine::Engine) {
        if self == Op::Stop {
            let ctx = qubes_storage_engine::OpCtx::quiet("power-loss-history");
            let dirty = engine.start(&WORK.vref(), &ctx).expect("start");
            write_fsynced(&dirty, 'D');
        }
    }

    /// The world when the operation begins.
    pub fn before(self) -> WorldState {
        if !self.has_history() {
            return ALL.iter().map(|&v| (v, VolState::absent())).collect();
        }
        let mut world = history();
        if self == Op::Stop {
            let work = world[&WORK].clone().started(Content::of('D'));
            world.insert(WORK, work);
        }
        world
    }

    /// The world once the operation was acknowledged.
    pub fn after(self) -> WorldState {
        let mut world = self.before();
        let committed = |clean: char| VolState::stopped(Content::of(clean), &[(3, 'B'), (4, 'C')]);
        let work = match self {
            Op::Start => world[&WORK].clone().started(Content::of('C')),
            Op::Stop => committed('D'),
            Op::Revert => VolState::stopped(Content::of('B'), &[(2, 'A'), (4, 'C')]),
            Op::Resize => VolState::stopped(Content::resized('C'), &[(2, 'A'), (3, 'B')]),
            Op::Import => committed('F'),
            Op::Clone => committed('G'),
            Op::Create => {
                world.insert(NEW, VolState::stopped(Content::of('E'), &[]));
                return world;
            }
            Op::Remove => VolState::absent(),
            Op::CreatePool => return world,
        };
        world.insert(WORK, work);
        world
    }

    /// Performs the operation as a caller of the service does.
    pub async fn perform(self, conn: &Connection, disk: &Disk, reflinks: bool) -> zbus::Result<()> {
        let work = || volume(conn, WORK);
        match self {
            Op::Start => work().await?.start(opts()).await.map(|_| ()),
            Op::Stop => work().await?.stop(opts()).await,
            Op::Revert => work().await?.revert("", opts()).await,
            Op::Resize => work().await?.resize(RESIZED, opts()).await,
            Op::Import => import(&work().await?, 'F').await,
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
        }
    }
}

/// ImportData of an image, `label` written through the fd without fsync (the commit
/// must make it durable), ImportDataEnd(true).
async fn import(volume: &VolumeProxy<'_>, label: char) -> zbus::Result<()> {
    let fd = volume.import_data(IMAGE, opts()).await?;
    let file = std::fs::File::from(OwnedFd::from(fd));
    write_label(&file, label);
    drop(file);
    volume.import_data_end(true, opts()).await
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

async fn volume(conn: &Connection, vol: Vol) -> zbus::Result<VolumeProxy<'static>> {
    let path = volume_path(conn, vol).await?;
    VolumeProxy::builder(conn)
        .path(path)
        .cache_properties(CacheProperties::No)
        .build()
        .await
}
