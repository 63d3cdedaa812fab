//! The state directory: what the engine remembers between runs — each pool's options
//! and its volumes' configurations (the pool directory stays the source of truth for
//! started state, revisions and sizes). Per pool, in `<state dir>/pools/`:
//!
//! | file              | holds                                                           |
//! |-------------------|-----------------------------------------------------------------|
//! | `<pool>.json`     | the snapshot: the pool, `seq` (the last change it includes), the volumes being removed, and the volumes, one per line; replaced atomically |
//! | `<pool>.journal`  | the changes after the snapshot, one checksummed JSON line each (`{"seq":7,"put":{…}}`, see [`crate::journal`]) |
//!
//! A change — a volume registered or changed (`put`), unregistered at the start of its
//! removal (`unregister`), its files deleted (`forget`), the pool's options (`pool`) —
//! is one journal append plus fdatasync, whatever the size of the pool; changes of one
//! pool recorded at the same time share their fdatasync (group commit: a change is
//! [written](PoolFiles::write), then [synced](crate::journal::Syncer::sync) without the
//! pool's lock, then applied in order by whoever holds the lock next,
//! [`PoolFiles::take_durable`]). When the
//! journal holds as many records as the pool has volumes (at least [`COMPACT_MIN`]),
//! the snapshot is rewritten and the journal emptied (compaction: amortised O(1) per
//! change, and loading reads at most about twice the pool). Snapshot first, then the
//! empty journal: a crash between leaves records the snapshot already includes, which
//! loading skips by their `seq`.
//!
//! A state directory of earlier versions — one `<pool>.json` holding the pool and its
//! volumes, no journal — is a snapshot with `seq` 0: it loads as it is, and the first
//! compaction rewrites it atomically, so there is no separate migration to interrupt.
//!
//! Loading accepts only what CreatePool and CreateVolume accept (the rules are in
//! [`crate::pool_state`]): anything else is an `InvalidArgument` naming the file, and the
//! daemon does not start rather than silently forget or misread a pool. Messages quote
//! at most a few hundred characters of the file.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::durable::{self, ReplaceSites};
use crate::error::{EngineError, IoContext, Result};
use crate::journal::{Journal, Syncer, Ticket};
use crate::model::{PoolConfig, VolumeConfig};
use crate::names::{PoolName, Vid};
pub use crate::pool_state::Change;
use crate::pool_state::PoolState;

/// Compaction waits for at least this many journal records.
pub const COMPACT_MIN: u64 = 1024;
/// At most this much of a parser's message is quoted in a load error.
const PARSER_TEXT_MAX: usize = 200;

/// A journal line: `seq` and exactly one change.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    put: Option<VolumeConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unregister: Option<Vid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forget: Option<Vid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pool: Option<PoolConfig>,
}

impl Line {
    fn of(seq: u64, change: &Change) -> Line {
        let mut line = Line {
            seq,
            ..Line::default()
        };
        match change.clone() {
            Change::Put(config) => line.put = Some(config),
            Change::Unregister(vid) => line.unregister = Some(vid),
            Change::Forget(vid) => line.forget = Some(vid),
            Change::Pool(config) => line.pool = Some(config),
        }
        line
    }

    fn into_change(self) -> Option<Change> {
        match (self.put, self.unregister, self.forget, self.pool) {
            (Some(config), None, None, None) => Some(Change::Put(config)),
            (None, Some(vid), None, None) => Some(Change::Unregister(vid)),
            (None, None, Some(vid), None) => Some(Change::Forget(vid)),
            (None, None, None, Some(config)) => Some(Change::Pool(config)),
            _ => None,
        }
    }
}

/// The snapshot file as read (the format of earlier versions is the same without
/// `seq` and `removing`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    pool: PoolConfig,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    removing: BTreeSet<Vid>,
    #[serde(default)]
    volumes: BTreeMap<Vid, VolumeConfig>,
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("state records serialise (string keys, no floats)")
}

/// The snapshot text: valid JSON, one volume per line.
fn snapshot_text(state: &PoolState, seq: u64) -> String {
    let mut text = format!(
        "{{\"pool\": {},\n\"seq\": {seq},\n\"removing\": {},\n\"volumes\": {{",
        json(state.config()),
        json(&state.removing().collect::<Vec<_>>())
    );
    for (i, config) in state.volumes().enumerate() {
        text.push_str(if i == 0 { "\n" } else { ",\n" });
        text.push_str(&json(&config.vid));
        text.push_str(": ");
        text.push_str(&json(config));
    }
    text.push_str("\n}}\n");
    text
}

/// A parser's message, cut short (it may quote a huge value of the file).
fn parser_text(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.char_indices().nth(PARSER_TEXT_MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

fn invalid_file(path: &Path, why: impl std::fmt::Display) -> EngineError {
    EngineError::invalid(format!("state file {} is not valid: {why}", path.display()))
}

/// The files of one pool and the number of the last change they hold.
#[derive(Debug)]
pub struct PoolFiles {
    snapshot: PathBuf,
    journal: Journal,
    /// The last change written (durable or not).
    seq: u64,
    /// Changes written whose records may not be durable yet, in order, not yet applied
    /// to the state in memory.
    pending: VecDeque<Pending>,
    /// The last change taken to be applied (durable).
    applied: u64,
    /// The pool was removed: no change is recorded any more.
    removed: bool,
}

/// A change written to the journal, waiting to be durable and applied.
#[derive(Debug)]
struct Pending {
    seq: u64,
    ticket: Ticket,
    change: Change,
}

/// A written change: what its writer waits on ([`Syncer::sync`]) before it counts.
pub struct Written {
    pub ticket: Ticket,
    pub syncer: Arc<Syncer>,
}

impl PoolFiles {
    /// Write `change` to the journal, not yet durable: the caller syncs the ticket
    /// (without this pool's lock), then calls [`Self::finish`] and applies what
    /// [`Self::take_durable`] returns.
    pub fn write(&mut self, change: Change) -> Result<Written> {
        if self.removed {
            return Err(EngineError::not_found("the pool was removed"));
        }
        // Records a failed fdatasync left are cut (and their changes forgotten) before
        // anything is written behind them.
        self.drop_failed();
        let seq = self.seq + 1;
        let ticket = self.journal.write(&json(&Line::of(seq, &change)))?;
        self.seq = seq;
        self.pending.push_back(Pending {
            seq,
            ticket,
            change,
        });
        Ok(Written {
            ticket,
            syncer: self.journal.syncer(),
        })
    }

    /// The end of a sync of `ticket`: logged as recorded, or — when it failed — every
    /// change not known durable is cut from the journal and forgotten (their writers
    /// all get the error) before it is returned.
    pub fn finish(&mut self, ticket: Ticket, outcome: Result<()>) -> Result<()> {
        match outcome {
            Ok(()) => {
                self.journal.recorded(ticket);
                Ok(())
            }
            Err(err) => {
                self.drop_failed();
                Err(err)
            }
        }
    }

    /// The changes now durable and not yet applied, in order: the caller applies them
    /// (whoever holds the pool's lock first applies everyone's).
    pub fn take_durable(&mut self) -> Vec<Change> {
        let synced = self.journal.syncer().synced();
        let mut durable = Vec::new();
        while let Some(front) = self.pending.front() {
            if front.ticket.end() > synced {
                break;
            }
            let front = self.pending.pop_front().expect("a front");
            self.applied = front.seq;
            durable.push(front.change);
        }
        durable
    }

    /// Cut the records that did not become durable and forget their changes — once
    /// per failed fdatasync: the changes written after the cut are not touched.
    fn drop_failed(&mut self) {
        if !self.journal.syncer().cut_due() {
            return;
        }
        let synced = self.journal.syncer().synced();
        self.pending.retain(|p| p.ticket.end() <= synced);
        self.seq = self.pending.back().map_or(self.applied, |p| p.seq);
        if let Err(err) = self.journal.cut_failed() {
            tracing::warn!(error = %err, "cannot cut failed records off the state journal yet; the next append will");
        }
    }

    /// No change is written and not yet applied.
    pub fn is_settled(&self) -> bool {
        self.pending.is_empty()
    }

    /// Make every written change durable now (this caller syncs) and return them all
    /// to be applied, e.g. before a compaction.
    pub fn settle(&mut self) -> Result<Vec<Change>> {
        if let Some(last) = self.pending.back() {
            let ticket = last.ticket;
            let outcome = self.journal.syncer().sync(ticket);
            self.finish(ticket, outcome)?;
        }
        Ok(self.take_durable())
    }

    /// Whether the journal has grown enough to be folded into the snapshot.
    pub fn should_compact(&self, volumes: usize) -> bool {
        self.is_settled() && self.journal.records() >= COMPACT_MIN.max(volumes as u64)
    }

    /// Rewrite the snapshot from `state` (which holds every recorded change: no change
    /// may be pending), then empty the journal. Two `replace` steps.
    pub fn compact(&mut self, state: &PoolState) -> Result<()> {
        if self.removed {
            return Err(EngineError::not_found("the pool was removed"));
        }
        if !self.is_settled() {
            return Err(EngineError::busy(
                "changes of the pool are being recorded; compact again",
            ));
        }
        let text = snapshot_text(state, self.seq);
        write_file(&self.snapshot, &text)?;
        self.journal = Journal::create_empty(self.journal.path())?;
        info!(pool = %state.config().name, seq = self.seq, volumes = state.len(), "state compacted");
        Ok(())
    }

    /// Forget the pool: the snapshot goes first (the pool is gone), then the journal (a
    /// journal without a snapshot is a leftover that [`Store::open`] removes).
    pub fn delete(&mut self) -> Result<()> {
        durable::remove(&self.snapshot)?;
        self.removed = true;
        durable::remove(self.journal.path())?;
        Ok(())
    }
}

/// The fsync sites of a snapshot's replace ([`crate::fsync_fault`]).
const SNAPSHOT: ReplaceSites = ReplaceSites {
    file: "snapshot-file",
    dir: "snapshot-dir",
};

fn write_file(path: &Path, text: &str) -> Result<()> {
    durable::replace_with(path, SNAPSHOT, |file| {
        use std::io::Write;
        let mut file = file;
        file.write_all(text.as_bytes())
            .io_ctx(|| format!("cannot write {}", path.display()))
    })
}

/// The state directory's `pools/`.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Open (creating if needed, each new directory made durable in its parent)
    /// `<state_dir>/pools`, dropping temp files a crash left and the journals of
    /// removed pools.
    pub fn open(state_dir: &Path) -> Result<Store> {
        make_dirs(state_dir)?;
        let dir = state_dir.join("pools");
        make_dirs(&dir)?;
        let store = Store { dir };
        for name in store.names()? {
            let leftover = name.contains(".json~")
                || name.contains(".journal~")
                || name
                    .strip_suffix(".journal")
                    .is_some_and(|pool| !store.dir.join(format!("{pool}.json")).exists());
            if leftover {
                info!(file = %store.dir.join(&name).display(), "removing an incomplete or orphaned state file");
                durable::remove(&store.dir.join(&name))?;
            }
        }
        Ok(store)
    }

    fn names(&self) -> Result<Vec<String>> {
        let list = std::fs::read_dir(&self.dir)
            .io_ctx(|| format!("cannot list {}", self.dir.display()))?;
        let mut names = Vec::new();
        for entry in list {
            let entry = entry.io_ctx(|| format!("cannot list {}", self.dir.display()))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn snapshot_path(&self, pool: &PoolName) -> PathBuf {
        self.dir.join(format!("{pool}.json"))
    }

    fn journal_path(&self, pool: &PoolName) -> PathBuf {
        self.dir.join(format!("{pool}.journal"))
    }

    /// Every persisted pool, in name order, with its files.
    pub fn load(&self) -> Result<Vec<(PoolState, PoolFiles)>> {
        let mut pools = Vec::new();
        for name in self.names()? {
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            pools.push(self.load_pool(stem)?);
        }
        Ok(pools)
    }

    fn load_pool(&self, stem: &str) -> Result<(PoolState, PoolFiles)> {
        let path = self.dir.join(format!("{stem}.json"));
        let pool = PoolName::parse(stem).map_err(|e| invalid_file(&path, e.reason()))?;
        let snapshot = read_snapshot(&path)?;
        if snapshot.pool.name != pool {
            return Err(invalid_file(
                &path,
                format!("it holds pool {}, not {pool}", snapshot.pool.name),
            ));
        }
        let mut seq = snapshot.seq;
        let mut state =
            PoolState::from_snapshot(snapshot.pool, snapshot.volumes, snapshot.removing)
                .map_err(|e| invalid_file(&path, e.reason()))?;
        let journal_path = self.journal_path(&pool);
        let (journal, lines) = Journal::open(&journal_path)?;
        for (i, text) in lines.iter().enumerate() {
            let at = |why: String| invalid_file(&journal_path, format!("record {}: {why}", i + 1));
            let line: Line = serde_json::from_str(text).map_err(|e| at(parser_text(&e)))?;
            if line.seq <= snapshot.seq {
                continue; // already in the snapshot (a compaction was interrupted)
            }
            if line.seq != seq + 1 {
                return Err(at(format!("seq {} does not follow {seq}", line.seq)));
            }
            seq = line.seq;
            let change = line
                .into_change()
                .ok_or_else(|| at("it must hold exactly one change".into()))?;
            state
                .apply_checked(change)
                .map_err(|e| at(e.reason().to_owned()))?;
        }
        state
            .check_sources()
            .map_err(|e| invalid_file(&journal_path, e.reason()))?;
        let files = PoolFiles {
            snapshot: path,
            journal,
            seq,
            pending: VecDeque::new(),
            applied: seq,
            removed: false,
        };
        Ok((state, files))
    }

    /// Persist a new pool: an empty journal, then its snapshot (no volumes). The
    /// snapshot's rename is the pool's registration, its directory's fsync the last
    /// one (a crash before it leaves a journal without a snapshot, which
    /// [`Store::open`] removes).
    pub fn create(&self, config: &PoolConfig) -> Result<PoolFiles> {
        let journal_path = self.journal_path(&config.name);
        let journal = Journal::create_empty(&journal_path)?;
        let snapshot = self.snapshot_path(&config.name);
        let state = PoolState::new(config.clone());
        write_file(&snapshot, &snapshot_text(&state, 0))?;
        Ok(PoolFiles {
            snapshot,
            journal,
            seq: 0,
            pending: VecDeque::new(),
            applied: 0,
            removed: false,
        })
    }
}

fn read_snapshot(path: &Path) -> Result<Snapshot> {
    let bytes = std::fs::read(path).io_ctx(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid_file(path, parser_text(&e)))
}

/// `mkdir -p` of a state directory where every directory made now is fsynced in its
/// parent (fsync site `state-mkdir-parent`).
pub fn make_dirs(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(EngineError::invalid(format!(
                "{} is not a directory",
                dir.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(EngineError::io(format!("cannot stat {}", dir.display()), e)),
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        make_dirs(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => {
            return Err(EngineError::io(
                format!("cannot create the state directory {}", dir.display()),
                e,
            ))
        }
    }
    durable::sync_dir_path(parent.unwrap_or(Path::new(".")), "state-mkdir-parent")?;
    info!(op = "mkdir", path = %dir.display(), "state directory created");
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::names::RevisionsToKeep;
    use crate::registry::Pool;
    use std::os::unix::fs::MetadataExt;

    pub(crate) fn pool_config(name: &str) -> PoolConfig {
        PoolConfig {
            name: PoolName::parse(name).unwrap(),
            dir_path: "/srv/pool".into(),
            setup_check: true,
            revisions_to_keep: RevisionsToKeep::DEFAULT,
            ephemeral_volatile: false,
        }
    }

    pub(crate) fn volume(vid: &str) -> VolumeConfig {
        VolumeConfig {
            vid: Vid::parse(vid).unwrap(),
            size: 1 << 20,
            rw: true,
            snap_on_start: false,
            save_on_stop: true,
            source: None,
            revisions_to_keep: RevisionsToKeep::DEFAULT,
            ephemeral: None,
            committed_image_shared: false,
            revision_notes: Default::default(),
        }
    }

    /// A state directory with pool `p` and the given volumes (through the store).
    fn state_dir_with(vids: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let files = store.create(&pool_config("p")).unwrap();
        let pool = Pool::new(PoolState::new(pool_config("p")), files);
        for vid in vids {
            pool.change(Change::Put(volume(vid))).unwrap();
        }
        dir
    }

    fn load(dir: &Path) -> Result<Vec<(PoolState, PoolFiles)>> {
        Store::open(dir)?.load()
    }

    fn vids(state: &PoolState) -> Vec<String> {
        state.volumes().map(|c| c.vid.to_string()).collect()
    }

    fn pools_file(dir: &Path, name: &str) -> PathBuf {
        dir.join("pools").join(name)
    }

    #[track_caller]
    fn assert_refused(dir: &Path, file: &str, words: &str) {
        let err = load(dir).expect_err("the state must be refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        let message = err.to_string();
        assert!(message.contains(file), "names {file}: {message}");
        assert!(message.contains(words), "says {words:?}: {message}");
        assert!(message.len() < 1000, "bounded: {} bytes", message.len());
    }

    #[test]
    fn a_volume_change_appends_one_line_and_leaves_the_snapshot_alone() {
        let dir = state_dir_with(&["appvms/a/private"]);
        let snapshot = pools_file(dir.path(), "p.json");
        let before = std::fs::metadata(&snapshot).unwrap();
        let (state, files) = load(dir.path()).unwrap().pop().unwrap();
        let pool = Pool::new(state, files);
        pool.change(Change::Put(volume("appvms/b/private")))
            .unwrap();
        let after = std::fs::metadata(&snapshot).unwrap();
        assert_eq!((before.ino(), before.len()), (after.ino(), after.len()));
        let journal = std::fs::read_to_string(pools_file(dir.path(), "p.journal")).unwrap();
        assert_eq!(journal.lines().count(), 2, "{journal}");
        assert!(journal
            .lines()
            .last()
            .unwrap()
            .contains(r#""seq":2,"put":{"vid":"appvms/b/private""#));
        let (state, _) = load(dir.path()).unwrap().pop().unwrap();
        assert_eq!(vids(&state), ["appvms/a/private", "appvms/b/private"]);
    }

    #[test]
    fn committed_image_shared_is_written_only_when_set_and_loads_again() {
        let dir = state_dir_with(&["appvms/a/private"]);
        let (state, files) = load(dir.path()).unwrap().pop().unwrap();
        let pool = Pool::new(state, files);
        let shared = VolumeConfig {
            committed_image_shared: true,
            ..volume("appvms/b/private")
        };
        pool.change(Change::Put(shared.clone())).unwrap();
        let journal = std::fs::read_to_string(pools_file(dir.path(), "p.journal")).unwrap();
        let lines: Vec<&str> = journal.lines().collect();
        assert!(!lines[0].contains("committed_image_shared"), "{journal}");
        assert!(
            lines[1].contains(r#""committed_image_shared":true"#),
            "{journal}"
        );
        let (state, files) = load(dir.path()).unwrap().pop().unwrap();
        assert_eq!(state.get(&shared.vid), Some(&shared));
        Pool::new(state, files).compact().unwrap();
        let text = std::fs::read_to_string(pools_file(dir.path(), "p.json")).unwrap();
        assert_eq!(text.matches("committed_image_shared").count(), 1, "{text}");
        let (state, _) = load(dir.path()).unwrap().pop().unwrap();
        assert_eq!(state.get(&shared.vid), Some(&shared));
        assert!(
            !state
                .get(&volume("appvms/a/private").vid)
                .unwrap()
                .committed_image_shared
        );
    }

    #[test]
    fn a_state_directory_of_earlier_versions_loads_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pools")).unwrap();
        let old = r#"{
  "pool": {"name": "old", "dir_path": "/var/lib/qubes", "setup_check": true,
           "revisions_to_keep": 2, "ephemeral_volatile": false},
  "volumes": {
    "appvms/work/private": {"vid": "appvms/work/private", "size": 2147483648, "rw": true,
      "snap_on_start": false, "save_on_stop": true, "source": null,
      "revisions_to_keep": 2, "ephemeral": null},
    "appvms/work/root": {"vid": "appvms/work/root", "size": 0, "rw": false,
      "snap_on_start": true, "save_on_stop": false, "source": "appvms/work/private",
      "revisions_to_keep": 2, "ephemeral": null}
  }
}"#;
        std::fs::write(pools_file(dir.path(), "old.json"), old).unwrap();
        let (state, files) = load(dir.path()).unwrap().pop().unwrap();
        assert_eq!(vids(&state), ["appvms/work/private", "appvms/work/root"]);
        assert_eq!(state.config().revisions_to_keep.get(), 2);
        let pool = Pool::new(state, files);
        pool.change(Change::Put(volume("appvms/new/private")))
            .unwrap();
        pool.compact().unwrap();
        let text = std::fs::read_to_string(pools_file(dir.path(), "old.json")).unwrap();
        assert!(text.contains("\"seq\": 1,"), "{text}");
        let (state, _) = load(dir.path()).unwrap().pop().unwrap();
        assert_eq!(state.len(), 3);
        let root = state.get(&Vid::parse("appvms/work/root").unwrap()).unwrap();
        assert_eq!(
            root.source.as_ref().unwrap().to_string(),
            "appvms/work/private"
        );
    }

    #[test]
    fn records_an_interrupted_compaction_already_holds_are_skipped() {
        let dir = state_dir_with(&["appvms/a/private", "appvms/b/private"]);
        let journal = pools_file(dir.path(), "p.journal");
        let before = std::fs::read(&journal).unwrap();
        let (state, files) = load(dir.path()).unwrap().pop().unwrap();
        Pool::new(state, files).compact().unwrap();
        // The crash came after the snapshot, before the journal was emptied.
        std::fs::write(&journal, before).unwrap();
        let (state, files) = load(dir.path()).unwrap().pop().unwrap();
        assert_eq!(vids(&state), ["appvms/a/private", "appvms/b/private"]);
        Pool::new(state, files)
            .change(Change::Unregister(Vid::parse("appvms/a/private").unwrap()))
            .unwrap();
        let (state, _) = load(dir.path()).unwrap().pop().unwrap();
        assert_eq!(vids(&state), ["appvms/b/private"]);
    }

    #[test]
    fn the_journal_is_compacted_once_it_is_as_large_as_the_pool() {
        let dir = state_dir_with(&[]);
        let (state, files) = load(dir.path()).unwrap().pop().unwrap();
        let pool = Pool::new(state, files);
        for i in 0..COMPACT_MIN {
            pool.change(Change::Put(volume(&format!("appvms/v{i}/private"))))
                .unwrap();
        }
        let journal = std::fs::read(pools_file(dir.path(), "p.journal")).unwrap();
        assert!(journal.is_empty(), "compacted at {COMPACT_MIN} records");
        let (state, _) = load(dir.path()).unwrap().pop().unwrap();
        assert_eq!(state.len() as u64, COMPACT_MIN);
    }

    #[test]
    fn a_pool_file_naming_another_pool_is_refused() {
        let dir = state_dir_with(&[]);
        std::fs::rename(
            pools_file(dir.path(), "p.json"),
            pools_file(dir.path(), "q.json"),
        )
        .unwrap();
        assert_refused(dir.path(), "q.json", "holds pool p, not q");
    }

    #[test]
    fn a_relative_dir_path_is_refused() {
        let dir = state_dir_with(&[]);
        let path = pools_file(dir.path(), "p.json");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"/srv/pool\"", "\"srv/pool\"")).unwrap();
        assert_refused(dir.path(), "p.json", "not absolute");
    }

    #[test]
    fn a_dir_path_createpool_refuses_as_written_is_refused() {
        for (dir_path, says) in [("/", "/ or inside it"), ("/etc/qubes", "/etc or inside it")] {
            let dir = state_dir_with(&[]);
            let path = pools_file(dir.path(), "p.json");
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.replace("\"/srv/pool\"", &format!("\"{dir_path}\""));
            std::fs::write(&path, text).unwrap();
            assert_refused(dir.path(), "p.json", says);
        }
    }

    #[test]
    fn an_invalid_vid_is_refused_and_quoted_briefly() {
        let dir = state_dir_with(&[]);
        let path = pools_file(dir.path(), "p.json");
        let bad = format!("appvms/../{}", "x".repeat(100_000));
        let entry = serde_json::to_string(&bad).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("\"volumes\": {", &format!("\"volumes\": {{{entry}: {{}}"));
        std::fs::write(&path, text).unwrap();
        assert_refused(dir.path(), "p.json", "invalid volume id");
    }

    #[test]
    fn a_snapshot_whose_source_is_missing_is_refused() {
        let dir = state_dir_with(&[]);
        let path = pools_file(dir.path(), "p.json");
        let mut orphan = volume("appvms/a/root");
        (orphan.snap_on_start, orphan.save_on_stop) = (true, false);
        orphan.source = Some(Vid::parse("vm-templates/t/root").unwrap());
        let entry = format!("\"appvms/a/root\": {}", json(&orphan));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("\"volumes\": {", &format!("\"volumes\": {{{entry}")),
        )
        .unwrap();
        assert_refused(dir.path(), "p.journal", "vm-templates/t/root");
    }

    #[test]
    fn a_journal_that_skips_a_change_is_refused() {
        let dir = state_dir_with(&["appvms/a/private"]);
        let line = crate::journal::frame(&json(&Line::of(
            3,
            &Change::Put(volume("appvms/b/private")),
        )));
        let path = pools_file(dir.path(), "p.journal");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&line);
        std::fs::write(&path, text).unwrap();
        assert_refused(dir.path(), "p.journal", "seq 3 does not follow 1");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let dir = state_dir_with(&[]);
        let path = pools_file(dir.path(), "p.json");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"seq\"", "\"sneaky\": 1, \"seq\"")).unwrap();
        assert_refused(dir.path(), "p.json", "sneaky");
    }

    #[test]
    fn temps_and_the_journals_of_removed_pools_are_dropped_at_open() {
        let dir = state_dir_with(&["appvms/a/private"]);
        std::fs::write(pools_file(dir.path(), "p.json~abcdefgh"), "x").unwrap();
        std::fs::write(pools_file(dir.path(), "gone.journal"), "x").unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.len(), 1);
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("pools"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["p.journal", "p.json"]);
    }

    #[test]
    fn changes_recorded_at_once_are_all_applied_and_reload_in_order() {
        let dir = state_dir_with(&[]);
        let (state, files) = load(dir.path()).unwrap().pop().unwrap();
        let pool = std::sync::Arc::new(Pool::new(state, files));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    pool.change(Change::Put(volume(&format!("appvms/v{i}/private"))))
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
        assert_eq!(pool.read().len(), 8, "every change applied in memory");
        let (reloaded, _) = load(dir.path()).unwrap().pop().unwrap();
        assert_eq!(reloaded.len(), 8, "and recorded");
    }

    #[test]
    fn a_deleted_pool_records_nothing_more() {
        let dir = state_dir_with(&[]);
        let (state, files) = load(dir.path()).unwrap().pop().unwrap();
        let pool = Pool::new(state, files);
        pool.delete_if_empty().unwrap();
        let err = pool
            .change(Change::Put(volume("appvms/a/private")))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(load(dir.path()).unwrap().is_empty());
        assert!(!pools_file(dir.path(), "p.journal").exists());
    }
}
