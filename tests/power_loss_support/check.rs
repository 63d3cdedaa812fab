//! The invariants a crash disk must hold once the service started on it:
//!
//! * **old or new** — the volume under test is in its state before the operation or
//!   in its state after it; in between only what the operation may pass through (the
//!   old committed image with revisions between the old and the new set; the new
//!   committed image with exactly the new revisions; for create, unregistered with
//!   complete leftover files; for remove, unregistered only with no file left, since
//!   the daemon finishes an interrupted removal at start-up, before it serves). Before
//!   the operation began only the old
//!   state is acceptable, once it was acknowledged only the new one ([`Phase`]);
//! * **nothing else changed** — every other volume is exactly as before;
//! * **no short file** — every file under a final name holds a complete known state;
//! * **a usable precache is the committed image** — a precache that a start would
//!   take (its mtime and size are the committed image's) holds the committed content;
//! * **leftovers swept** — no temp file (`…~XXXXXXXX`) in the pools or the state
//!   directory, and no import file of a registered volume;
//! * **the daemon serves** — it started, and its view (registration, Started, Size,
//!   Revisions) agrees with the files.
//!
//! Registration is what the daemon serves (GetManagedObjects); files are read from the
//! mounted crash disk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use qubes_storage_engine::revision;
use qubes_storaged_powercut::Phase;
use zbus::{Connection, OwnedVariant};

use super::content::{identify, Content, Seen};
use super::world::{Disk, Vol, VolState, WorldState, ALL, POOLS};
use crate::common::SERVICE;

/// One volume as the daemon serves it.
#[derive(Debug, Clone)]
pub struct Served {
    pub started: bool,
    pub size: u64,
    pub revisions: BTreeSet<u64>,
}

/// The service's volumes by (pool, vid), from GetManagedObjects.
pub async fn served_volumes(
    conn: &Connection,
) -> Result<BTreeMap<(String, String), Served>, String> {
    let manager = zbus::fdo::ObjectManagerProxy::builder(conn)
        .destination(SERVICE)
        .path("/org/qubes/Storage")
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let objects = manager
        .get_managed_objects()
        .await
        .map_err(|e| format!("GetManagedObjects failed: {e}"))?;
    let mut volumes = BTreeMap::new();
    for ifaces in objects.values() {
        let Some(props) = ifaces
            .iter()
            .find(|(i, _)| i.as_str() == "org.qubes.Storage.Volume")
            .map(|(_, p)| p)
        else {
            continue;
        };
        let get = |name: &str| {
            props
                .get(name)
                .ok_or_else(|| format!("a volume without {name}"))
        };
        let vid = String::try_from(get("Vid")?.try_clone().unwrap()).map_err(|e| e.to_string())?;
        let pool_path = zbus::OwnedObjectPath::try_from(get("Pool")?.try_clone().unwrap())
            .map_err(|e| e.to_string())?;
        let pool = pool_path
            .as_str()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let revisions: Vec<(String, i64)> = value(get("Revisions")?)?;
        let served = Served {
            started: value(get("Started")?)?,
            size: value(get("Size")?)?,
            revisions: revisions
                .iter()
                .filter_map(|(id, _)| id.parse().ok())
                .collect(),
        };
        volumes.insert((pool, vid), served);
    }
    Ok(volumes)
}

type Objects = std::collections::HashMap<
    zbus::OwnedObjectPath,
    std::collections::HashMap<
        zbus::names::OwnedInterfaceName,
        std::collections::HashMap<String, OwnedVariant>,
    >,
>;

async fn managed_objects(conn: &Connection) -> Result<Objects, String> {
    let manager = zbus::fdo::ObjectManagerProxy::builder(conn)
        .destination(SERVICE)
        .path("/org/qubes/Storage")
        .build()
        .await
        .map_err(|e| e.to_string())?;
    manager
        .get_managed_objects()
        .await
        .map_err(|e| format!("GetManagedObjects failed: {e}"))
}

fn value<T: TryFrom<OwnedVariant>>(v: &OwnedVariant) -> Result<T, String>
where
    T::Error: std::fmt::Display,
{
    T::try_from(v.try_clone().map_err(|e| e.to_string())?).map_err(|e| e.to_string())
}

/// The names of the pools the service serves, from GetManagedObjects.
pub async fn served_pools(conn: &Connection) -> Result<BTreeSet<String>, String> {
    let objects = managed_objects(conn).await?;
    let mut pools = BTreeSet::new();
    for ifaces in objects.values() {
        if let Some((_, props)) = ifaces
            .iter()
            .find(|(i, _)| i.as_str() == "org.qubes.Storage.Pool")
        {
            let name = props.get("Name").ok_or("a pool without Name")?;
            pools.insert(value::<String>(name)?);
        }
    }
    Ok(pools)
}

/// The pools: registered as the phase requires, and a registered pool has its
/// directory with `appvms/` and `vm-templates/` (what CreatePool made durable).
pub fn judge_pools(
    before: &BTreeSet<&str>,
    after: &BTreeSet<&str>,
    served: &BTreeSet<String>,
    disk: &Disk,
    phase: Phase,
) -> Vec<String> {
    let served: BTreeSet<&str> = served.iter().map(String::as_str).collect();
    let fine = match phase {
        Phase::Before => served == *before,
        Phase::Acknowledged => served == *after,
        Phase::During => served == *before || served == *after,
    };
    let mut problems = Vec::new();
    if !fine {
        problems.push(format!(
            "pools: expected {before:?} before or {after:?} after ({phase:?}); served {served:?}"
        ));
    }
    for pool in served {
        for class in ["appvms", "vm-templates"] {
            let dir = disk.pool_dir(pool).join(class);
            if !dir.is_dir() {
                problems.push(format!(
                    "pool {pool} is registered but {} is missing",
                    dir.display()
                ));
            }
        }
    }
    problems
}

/// A file's content as a model state; an unknown content shows as label `?`.
fn content_of(path: &Path) -> Option<Content> {
    identify(path).map(|seen| match seen {
        Seen::Known(content) => content,
        Seen::Unknown { size } => Content { label: '?', size },
    })
}

/// Every volume of the world as the disk and the daemon show it (a snapshot volume's
/// committed image is its source's link, not part of its state).
pub fn observe(disk: &Disk, served: &BTreeMap<(String, String), Served>) -> WorldState {
    ALL.iter()
        .map(|&vol| {
            let paths = disk.paths(vol);
            let listed = revision::list(&paths).expect("list revisions");
            let state = VolState {
                registered: served.contains_key(&(vol.pool.to_owned(), vol.vid.to_owned())),
                clean: (!vol.is_snapshot())
                    .then(|| content_of(&paths.clean()))
                    .flatten(),
                dirty: content_of(&paths.dirty()),
                revisions: listed
                    .iter()
                    .map(|r| {
                        (
                            r.id,
                            content_of(&paths.revision(r.id, r.timestamp)).unwrap(),
                        )
                    })
                    .collect(),
            };
            (vol, state)
        })
        .collect()
}

/// The problems of the volumes: the subjects against old/new by phase, everyone else
/// against the old world. The running image of `unflushed` (a session the VM did not
/// flush) may hold anything until the operation is acknowledged: the old content, the
/// new writes or a mix of them. The running images of `disposable` volumes (rule 9)
/// may be anything or missing in every phase: they are not compared.
#[allow(clippy::too_many_arguments)]
pub fn judge(
    before: &WorldState,
    after: &WorldState,
    subjects: &[Vol],
    unflushed: Option<Vol>,
    disposable: &[Vol],
    undoable: bool,
    seen: &WorldState,
    phase: Phase,
) -> Vec<String> {
    let mut problems = Vec::new();
    for vol in ALL {
        let (mut old, mut new) = (before[&vol].clone(), after[&vol].clone());
        let mut now = seen[&vol].clone();
        if unflushed == Some(vol) && phase != Phase::Acknowledged && now.dirty.is_some() {
            now.dirty = old.dirty;
        }
        if disposable.contains(&vol) {
            (old.dirty, new.dirty, now.dirty) = (None, None, None);
        }
        let (old, new, now) = (&old, &new, &now);
        let subject = subjects.contains(&vol);
        let fine = match (subject, phase) {
            (false, _) | (true, Phase::Before) => now == old,
            (true, Phase::Acknowledged) => now == new || (undoable && now == old),
            (true, Phase::During) => now == old || now == new || in_between(old, new, now),
        };
        if !fine {
            let expected = match (subject, phase) {
                (false, _) => format!("unchanged: {old}"),
                (true, Phase::Before) => {
                    format!("the old state (the operation had not begun): {old}")
                }
                (true, Phase::Acknowledged) => {
                    format!("the new state (the operation was acknowledged): {new}")
                }
                (true, Phase::During) => format!("the old state {old} or the new state {new}"),
            };
            problems.push(format!("{vol}: expected {expected}; found {now}"));
        }
    }
    problems
}

/// Every precache that a start would use — its mtime (ns) and size are the committed
/// image's — holds what the committed image holds: otherwise a start would hand a VM
/// something that was never committed.
pub fn usable_precaches_hold_the_committed_image(disk: &Disk) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let stamp = |m: &std::fs::Metadata| (m.mtime(), m.mtime_nsec(), m.len());
    let mut problems = Vec::new();
    for vol in ALL.iter().filter(|v| !v.is_snapshot()) {
        let paths = disk.paths(*vol);
        let (Ok(pre), Ok(clean)) = (
            std::fs::metadata(paths.precache()),
            std::fs::metadata(paths.clean()),
        ) else {
            continue;
        };
        if stamp(&pre) != stamp(&clean) {
            continue; // stale: a start discards it
        }
        let (pre, clean) = (identify(&paths.precache()), identify(&paths.clean()));
        if pre != clean {
            problems.push(format!(
                "{vol}: the precache a start would use holds {} but the committed image {}",
                pre.map_or("nothing".into(), |s| s.to_string()),
                clean.map_or("nothing".into(), |s| s.to_string()),
            ));
        }
    }
    problems
}

/// A state an interrupted operation may leave (see the module comment).
fn in_between(old: &VolState, new: &VolState, now: &VolState) -> bool {
    if !now.registered {
        // A removal whose unregistration is on disk is finished at start-up; a create
        // that did not register may leave files (CreateVolume clears or names them).
        return if old.registered {
            !new.registered && now == new
        } else {
            true
        };
    }
    if !old.registered || !new.registered {
        return false;
    }
    let pair = |v: &VolState| (v.clean, v.dirty);
    if pair(now) == pair(new) && pair(old) != pair(new) {
        return now.revisions == new.revisions;
    }
    pair(now) == pair(old) && revisions_between(&old.revisions, &new.revisions, &now.revisions)
}

/// Every revision is one of the old or the new ones, and those in both are there.
fn revisions_between(
    old: &BTreeMap<u64, Content>,
    new: &BTreeMap<u64, Content>,
    now: &BTreeMap<u64, Content>,
) -> bool {
    let known = now
        .iter()
        .all(|(id, c)| old.get(id) == Some(c) || new.get(id) == Some(c));
    let kept = old
        .iter()
        .filter(|(id, c)| new.get(id) == Some(*c))
        .all(|(id, c)| now.get(id) == Some(c));
    known && kept
}

/// Files that must not be there any more, and files under a final name that do not
/// hold a complete state.
/// `may_be_torn`: the running image of a session the VM did not flush, before the
/// stop that flushes it was acknowledged.
pub fn leftovers_and_short_files(
    disk: &Disk,
    seen: &WorldState,
    may_be_torn: &[std::path::PathBuf],
) -> Vec<String> {
    let mut problems = Vec::new();
    for dir in disk.vm_dirs() {
        for entry in std::fs::read_dir(&dir).expect("list a VM directory") {
            let path = entry.expect("entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if is_temp_name(&name) {
                problems.push(format!("leftover temp file {} (not swept)", path.display()));
            } else if may_be_torn.contains(&path) {
                continue;
            } else if let Some(Seen::Unknown { size }) = identify(&path) {
                problems.push(format!(
                    "{} is short or torn ({size} bytes of no known state)",
                    path.display()
                ));
            }
        }
    }
    for pool in POOLS {
        problems.extend(temps_below(&disk.pool_dir(pool), false));
    }
    problems.extend(temps_below(&disk.state_dir(), true));
    for (vol, state) in seen {
        let import = disk.paths(*vol).import();
        if state.registered && import.exists() {
            problems.push(format!(
                "stale import file {} (not swept)",
                import.display()
            ));
        }
    }
    problems
}

/// `<name>~` and 8 characters of `[a-z0-9_]`.
fn is_temp_name(name: &str) -> bool {
    name.rsplit_once('~').is_some_and(|(_, random)| {
        random.len() == 8
            && random
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// Temp files directly in `dir`, or anywhere below it with `recursive`.
fn temps_below(dir: &Path, recursive: bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.map(|e| e.expect("entry")) {
        let path = entry.path();
        if entry.file_type().expect("file type").is_dir() {
            if recursive {
                found.extend(temps_below(&path, true));
            }
        } else if is_temp_name(&entry.file_name().to_string_lossy()) {
            found.push(format!("leftover temp file {} (not swept)", path.display()));
        }
    }
    found
}

/// The daemon's view of each registered volume agrees with its files.
pub fn served_matches_files(
    disk: &Disk,
    served: &BTreeMap<(String, String), Served>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for vol in ALL {
        let Some(view) = served.get(&(vol.pool.to_owned(), vol.vid.to_owned())) else {
            continue;
        };
        let paths = disk.paths(vol);
        let dirty = std::fs::metadata(paths.dirty()).ok();
        let image = dirty
            .clone()
            .or_else(|| std::fs::metadata(paths.clean()).ok());
        let files: BTreeSet<u64> = revision::list(&paths)
            .expect("list revisions")
            .iter()
            .map(|r| r.id)
            .collect();
        if view.started != dirty.is_some() {
            problems.push(format!(
                "{vol}: served Started={} but the dirty image {}",
                view.started,
                if dirty.is_some() {
                    "exists"
                } else {
                    "does not exist"
                }
            ));
        }
        if let Some(image) = image.filter(|m| m.len() != view.size) {
            problems.push(format!(
                "{vol}: served Size={} but the image has {} bytes",
                view.size,
                image.len()
            ));
        }
        if view.revisions != files {
            problems.push(format!(
                "{vol}: served revisions {:?} but the files are {:?}",
                view.revisions, files
            ));
        }
    }
    problems
}
