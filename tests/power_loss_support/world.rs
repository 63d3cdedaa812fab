//! The world on the recorded disk: two pools and a state directory on one file
//! system, the volumes of every case, the state each volume is expected in, and the
//! history (built with the engine before the recording starts) that every case begins
//! from:
//!
//! | volume                         | pool | before any operation                        |
//! |--------------------------------|------|---------------------------------------------|
//! | `appvms/work/private` (WORK)   | `p`  | clean C, revisions 2:A 3:B, keeps 2          |
//! | `appvms/other/private` (OTHER) | `p`  | clean H, revision 1:E — a bystander          |
//! | `vm-templates/tpl/root` (TPL)  | `q`  | clean G, revision 1:E — the clone's source   |
//! | `appvms/new/private` (NEW)     | `p`  | not registered, no files — the create's      |
//! | `appvms/work/root` (WORK_ROOT) | `p`  | a snapshot of OTHER, halted                   |
//! | `appvms/work/volatile` (WORK_VOLATILE) | `p` | a volatile volume, halted             |
//! | `appvms/new/root`, `appvms/new/volatile` (NEW_ROOT, NEW_VOLATILE) | `p` | not registered — the VM create's |
//!
//! A snapshot volume's committed image is a hard link to its source's, not data of its
//! own, so its state is only whether it is registered and its running image
//! ([`Vol::is_snapshot`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use qubes_storage_engine::layout::VolumePaths;
use qubes_storage_engine::{
    Engine, OpCtx, PoolName, PoolSpec, RevisionsToKeep, Vid, VolumeRef, VolumeSpec,
};

use super::content::{write_label, Content, IMAGE};

pub const KEEP: i64 = 2;

/// One volume of the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vol {
    pub pool: &'static str,
    pub vid: &'static str,
}

pub const WORK: Vol = Vol {
    pool: "p",
    vid: "appvms/work/private",
};
pub const OTHER: Vol = Vol {
    pool: "p",
    vid: "appvms/other/private",
};
pub const TPL: Vol = Vol {
    pool: "q",
    vid: "vm-templates/tpl/root",
};
pub const NEW: Vol = Vol {
    pool: "p",
    vid: "appvms/new/private",
};
/// WORK's VM's root: a snapshot of OTHER.
pub const WORK_ROOT: Vol = Vol {
    pool: "p",
    vid: "appvms/work/root",
};
pub const WORK_VOLATILE: Vol = Vol {
    pool: "p",
    vid: "appvms/work/volatile",
};
pub const NEW_ROOT: Vol = Vol {
    pool: "p",
    vid: "appvms/new/root",
};
pub const NEW_VOLATILE: Vol = Vol {
    pool: "p",
    vid: "appvms/new/volatile",
};
pub const ALL: [Vol; 8] = [
    WORK,
    OTHER,
    TPL,
    NEW,
    WORK_ROOT,
    WORK_VOLATILE,
    NEW_ROOT,
    NEW_VOLATILE,
];
/// The pool the create-pool case makes.
pub const NEW_POOL: &str = "r";
/// Every pool a case may have.
pub const POOLS: [&str; 3] = ["p", "q", NEW_POOL];

impl Vol {
    /// A snapshot volume (its committed image is its source's, not its own).
    pub fn is_snapshot(self) -> bool {
        self == WORK_ROOT || self == NEW_ROOT
    }

    pub fn vref(self) -> VolumeRef {
        VolumeRef {
            pool: PoolName::parse(self.pool).unwrap(),
            vid: Vid::parse(self.vid).unwrap(),
        }
    }
}

impl fmt::Display for Vol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.pool, self.vid)
    }
}

/// What a volume is: registered or not, its committed image, its running image and
/// its revisions by id. The precache is not part of it (any complete state will do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolState {
    pub registered: bool,
    pub clean: Option<Content>,
    pub dirty: Option<Content>,
    pub revisions: BTreeMap<u64, Content>,
}

impl VolState {
    /// A registered, stopped volume.
    pub fn stopped(clean: Content, revisions: &[(u64, char)]) -> VolState {
        VolState {
            registered: true,
            clean: Some(clean),
            dirty: None,
            revisions: revisions
                .iter()
                .map(|&(id, l)| (id, Content::of(l)))
                .collect(),
        }
    }

    pub fn started(mut self, dirty: Content) -> VolState {
        self.dirty = Some(dirty);
        self
    }

    pub fn absent() -> VolState {
        VolState::default()
    }

    /// A registered volume without any image (a halted snapshot or volatile volume).
    pub fn halted() -> VolState {
        VolState {
            registered: true,
            ..VolState::default()
        }
    }
}

impl fmt::Display for VolState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |c: Option<Content>| c.map_or("-".to_owned(), |c| c.to_string());
        let revisions: Vec<String> = self
            .revisions
            .iter()
            .map(|(id, c)| format!("{id}:{c}"))
            .collect();
        write!(
            f,
            "{}registered, clean {}, dirty {}, revisions [{}]",
            if self.registered { "" } else { "not " },
            show(self.clean),
            show(self.dirty),
            revisions.join(" ")
        )
    }
}

/// The expected state of every volume.
pub type WorldState = BTreeMap<Vol, VolState>;

/// Every case's starting point (the table in the module comment).
pub fn history() -> WorldState {
    BTreeMap::from([
        (
            WORK,
            VolState::stopped(Content::of('C'), &[(2, 'A'), (3, 'B')]),
        ),
        (OTHER, VolState::stopped(Content::of('H'), &[(1, 'E')])),
        (TPL, VolState::stopped(Content::of('G'), &[(1, 'E')])),
        (NEW, VolState::absent()),
        (WORK_ROOT, VolState::halted()),
        (WORK_VOLATILE, VolState::halted()),
        (NEW_ROOT, VolState::absent()),
        (NEW_VOLATILE, VolState::absent()),
    ])
}

/// The disk's layout below its mount point (which is the same for the recording and
/// every replay: the pools' directories are absolute paths in the state).
#[derive(Debug, Clone)]
pub struct Disk {
    pub mount_point: PathBuf,
}

impl Disk {
    pub fn state_dir(&self) -> PathBuf {
        self.mount_point.join("state")
    }

    pub fn pool_dir(&self, pool: &str) -> PathBuf {
        self.mount_point.join(format!("pool-{pool}"))
    }

    pub fn paths(&self, vol: Vol) -> VolumePaths {
        VolumePaths::new(&self.pool_dir(vol.pool), &Vid::parse(vol.vid).unwrap())
    }

    /// The VM directories of every pool.
    pub fn vm_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for pool in POOLS {
            for class in ["appvms", "vm-templates"] {
                let Ok(entries) = std::fs::read_dir(self.pool_dir(pool).join(class)) else {
                    continue;
                };
                dirs.extend(entries.map(|e| e.unwrap().path()));
            }
        }
        dirs.sort();
        dirs
    }
}

fn ctx() -> OpCtx {
    OpCtx::quiet("power-loss-history")
}

fn origin(size: u64) -> VolumeSpec {
    VolumeSpec {
        size,
        rw: true,
        save_on_stop: true,
        revisions_to_keep: Some(RevisionsToKeep::new(KEEP).unwrap()),
        ..Default::default()
    }
}

/// One VM session: start, write `label` (fsynced), stop (commit).
pub fn session(engine: &Engine, vol: Vol, label: char) {
    let dirty = engine.start(&vol.vref(), &ctx()).expect("start");
    write_fsynced(&dirty, label);
    engine.stop(&vol.vref(), &ctx()).expect("stop");
}

pub fn write_fsynced(path: &Path, label: char) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image");
    write_label(&file, label);
    file.sync_all().expect("fsync image");
}

/// Builds [`history`] on the mounted, freshly made file system of `disk`.
pub fn build_history(disk: &Disk, reflinks: bool) -> Engine {
    let engine = Engine::open(&disk.state_dir()).expect("open the state directory");
    for pool in ["p", "q"] {
        let spec = PoolSpec {
            name: PoolName::parse(pool).unwrap(),
            dir_path: disk.pool_dir(pool),
            setup_check: reflinks,
            revisions_to_keep: RevisionsToKeep::new(KEEP).unwrap(),
            ephemeral_volatile: false,
        };
        engine.create_pool(spec).expect("create pool");
    }
    for (vol, labels) in [(WORK, "ABC"), (OTHER, "H"), (TPL, "G")] {
        engine
            .create_volume(&vol.vref(), origin(IMAGE), &ctx())
            .expect("create volume");
        for label in labels.chars() {
            session(&engine, vol, label);
        }
    }
    for (vol, spec) in [(WORK_ROOT, snapshot_of(OTHER)), (WORK_VOLATILE, volatile())] {
        engine
            .create_volume(&vol.vref(), spec, &ctx())
            .expect("create volume");
    }
    engine.settle();
    engine
}

/// A snapshot volume of `source` (same pool).
pub fn snapshot_of(source: Vol) -> VolumeSpec {
    VolumeSpec {
        size: IMAGE,
        rw: true,
        snap_on_start: true,
        source: Some(Vid::parse(source.vid).unwrap()),
        ..Default::default()
    }
}

/// A volatile volume of [`IMAGE`] bytes.
pub fn volatile() -> VolumeSpec {
    VolumeSpec {
        size: IMAGE,
        rw: true,
        ..Default::default()
    }
}

/// The spec of the volume the create case makes.
pub fn new_volume_config() -> [(&'static str, zbus::Variant<'static>); 4] {
    [
        ("size", zbus::Variant::from(IMAGE)),
        ("rw", zbus::Variant::from(true)),
        ("save_on_stop", zbus::Variant::from(true)),
        ("revisions_to_keep", zbus::Variant::from(KEEP as i32)),
    ]
}
