//! A seeded fuzzer of everything that turns outside text into engine values (issue 9):
//! the parsers of vids, pool names, image sizes and revisions_to_keep, the rules of a
//! volume configuration (`registry::check_volume`), and the state-directory loader. It
//! runs in `cargo test` (and so in `scripts/test`) in seconds, with fixed seeds; set
//! `QSD_FUZZ_SEED=<n>` to run one other seed, `QSD_FUZZ_ROUNDS=<n>` for longer runs.
//! Every failure message carries the seed and the round.
//!
//! Properties checked:
//! * nothing panics;
//! * each parser accepts exactly what an independent statement of the contract's rule
//!   (the oracles below) accepts, and an accepted value prints back to its input and
//!   parses to itself (also through serde, as the state files store it);
//! * a refusal is `InvalidArgument` with a message of bounded length, however long the
//!   input (a megabyte-long name included);
//! * revision notes (descriptions and pins) are accepted exactly when ordered by id,
//!   each saying something with a description of one line of at most 256 characters;
//! * the loader, fed valid state directories with random damage (flipped bytes, cut
//!   files, values swapped for hostile ones, well-checksummed journal lines of random
//!   changes, renamed files), either refuses with an error naming a state file, or
//!   loads only what the parsers and rules accept — and what it loads survives a
//!   compaction and a reload unchanged.
//!
//! Needs no root: the state directories are temp directories (the loader reads only
//! them; the pools' directories named in them do not exist).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qubes_storage_engine::journal::frame;
use qubes_storage_engine::registry::{check_pool, check_volume};
use qubes_storage_engine::{
    Engine, ErrorKind, ImageSize, PoolName, RevisionNotes, RevisionsToKeep, Vid, VolumeConfig,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: [u64; 4] = [1, 2, 0x5eed, 0xdead_beef];
/// Errors quote at most ~100 characters of input; the rest is fixed text and paths.
const MESSAGE_MAX: usize = 600;

fn seeds() -> Vec<u64> {
    match std::env::var("QSD_FUZZ_SEED") {
        Ok(seed) => vec![seed.parse().expect("QSD_FUZZ_SEED is a number")],
        Err(_) => SEEDS.to_vec(),
    }
}

fn rounds(default: usize) -> usize {
    std::env::var("QSD_FUZZ_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

// ---- generators ----

const NAME_CHARS: &[u8] = b"abcXYZ019_.-";
const HOSTILE: &[&str] = &[
    "",
    ".",
    "..",
    "/",
    "//",
    "\0",
    " ",
    "ä",
    "\u{202e}",
    "\n",
    "~",
    "*",
    "%2f",
    "-dirty",
    "-precache",
    "-import",
    "-cow",
    ".img",
    "\\",
    "\"",
    "{}",
    "null",
];

/// A name part: mostly valid, often near the rule's edges, sometimes hostile.
fn part(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0 => HOSTILE[rng.random_range(0..HOSTILE.len())].to_owned(),
        1 => format!("{}{}", rng.random_range(0..10), word(rng, 5)),
        2 => {
            let len = 64 + rng.random_range(0..3);
            word(rng, len)
        }
        3 => format!(
            "{}{}",
            word(rng, 4),
            HOSTILE[rng.random_range(0..HOSTILE.len())]
        ),
        _ => {
            let len = rng.random_range(1..=64);
            word(rng, len)
        }
    }
}

/// A letter, then `len - 1` characters of the name alphabet.
fn word(rng: &mut StdRng, len: usize) -> String {
    let mut s = String::from(char::from(b'a' + rng.random_range(0..26)));
    for _ in 1..len {
        s.push(char::from(
            NAME_CHARS[rng.random_range(0..NAME_CHARS.len())],
        ));
    }
    s
}

fn any_text(rng: &mut StdRng) -> String {
    let len = match rng.random_range(0..50) {
        0..=5 => rng.random_range(100..2000),
        _ => rng.random_range(0..40),
    };
    (0..len)
        .map(|_| match rng.random_range(0..8) {
            0 => char::from_u32(rng.random_range(0..0x11_0000)).unwrap_or('?'),
            1 => '/',
            _ => char::from(rng.random_range(0x20u8..0x7f)),
        })
        .collect()
}

/// A megabyte of input, cheaply: a long run of one valid or hostile piece.
fn huge(rng: &mut StdRng) -> String {
    let piece = ["a", "/", "appvms/", "ä", "\0", "x-"][rng.random_range(0..6)];
    let text = piece.repeat((1 << 20) / piece.len());
    match rng.random_range(0..3) {
        0 => format!("appvms/{text}/private"),
        1 => format!("vm-templates/t/{text}"),
        _ => text,
    }
}

/// Every this many rounds, the input is [`huge`].
const HUGE_EVERY: usize = 1000;

fn vid_text(rng: &mut StdRng) -> String {
    let prefix = [
        "appvms",
        "vm-templates",
        "appvms",
        "vm-templates",
        "appvm",
        "/appvms",
        "",
    ];
    match rng.random_range(0..12) {
        0 => any_text(rng),
        1 => format!(
            "{}/{}",
            prefix[rng.random_range(0..prefix.len())],
            part(rng)
        ),
        2 => format!("appvms/{}/{}/{}", part(rng), part(rng), part(rng)),
        _ => format!(
            "{}/{}/{}",
            prefix[rng.random_range(0..prefix.len())],
            part(rng),
            part(rng)
        ),
    }
}

fn size(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..6) {
        0 => rng.random(),
        1 => (1 << 63) + rng.random_range(0..2048) - 1024,
        2 => rng.random_range(0..4096),
        3 => rng.random_range(0..1 << 40) * 512,
        4 => u64::MAX - rng.random_range(0..1024),
        _ => rng.random_range(0..1 << 40),
    }
}

// ---- oracles: the contract's rules, stated independently ----

fn oracle_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

fn oracle_vid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 3
        && ["appvms", "vm-templates"].contains(&parts[0])
        && oracle_part(parts[1])
        && oracle_part(parts[2])
        && !["-dirty", "-precache", "-import", "-cow"]
            .iter()
            .any(|suffix| parts[2].ends_with(suffix))
}

fn oracle_size(n: u64) -> bool {
    n < 1 << 63 && n % 512 == 0
}

#[track_caller]
fn assert_refusal(err: &qubes_storage_engine::EngineError, at: &str) {
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{at}: {err}");
    let len = err.to_string().len();
    assert!(len <= MESSAGE_MAX, "{at}: a {len}-byte message");
}

// ---- the parsers ----

#[test]
fn vid_parsing_accepts_exactly_the_contracts_vids_and_round_trips() {
    for seed in seeds() {
        let mut rng = StdRng::seed_from_u64(seed);
        for round in 0..rounds(5_000) {
            let text = if round % HUGE_EVERY == 0 {
                huge(&mut rng)
            } else {
                vid_text(&mut rng)
            };
            let at = format!(
                "seed {seed} round {round} vid {}",
                qubes_storage_engine::quote(&text)
            );
            let parsed = Vid::parse(&text);
            assert_eq!(parsed.is_ok(), oracle_vid(&text), "{at}");
            let from_json = serde_json::from_str::<Vid>(&serde_json::to_string(&text).unwrap());
            assert_eq!(from_json.is_ok(), parsed.is_ok(), "{at}: serde agrees");
            match parsed {
                Ok(vid) => {
                    assert_eq!(vid.to_string(), text, "{at}");
                    assert_eq!(Vid::parse(&vid.to_string()).unwrap(), vid, "{at}");
                    assert_eq!(from_json.unwrap(), vid, "{at}");
                }
                Err(err) => assert_refusal(&err, &at),
            }
        }
    }
}

#[test]
fn pool_name_parsing_accepts_exactly_the_contracts_names_and_round_trips() {
    for seed in seeds() {
        let mut rng = StdRng::seed_from_u64(seed);
        for round in 0..rounds(5_000) {
            let text = match round % HUGE_EVERY {
                0 => huge(&mut rng),
                _ if rng.random_bool(0.2) => any_text(&mut rng),
                _ => part(&mut rng),
            };
            let at = format!(
                "seed {seed} round {round} name {}",
                qubes_storage_engine::quote(&text)
            );
            match PoolName::parse(&text) {
                Ok(name) => {
                    assert!(oracle_part(&text), "{at}: accepted");
                    assert_eq!(name.as_str(), text, "{at}");
                    assert_eq!(PoolName::parse(name.as_str()).unwrap(), name, "{at}");
                }
                Err(err) => {
                    assert!(!oracle_part(&text), "{at}: refused");
                    assert_refusal(&err, &at);
                }
            }
        }
    }
}

#[test]
fn sizes_and_revision_counts_accept_exactly_the_contracts_values() {
    for seed in seeds() {
        let mut rng = StdRng::seed_from_u64(seed);
        for round in 0..rounds(20_000) {
            let n = size(&mut rng);
            let at = format!("seed {seed} round {round} size {n}");
            match ImageSize::new(n) {
                Ok(s) => assert!(oracle_size(n) && s.get() == n, "{at}"),
                Err(err) => {
                    assert!(!oracle_size(n), "{at}");
                    assert_refusal(&err, &at);
                }
            }
            let k: i64 = match rng.random_range(0..3) {
                0 => rng.random(),
                1 => rng.random_range(-3..3),
                _ => i64::from(i32::MAX) + rng.random_range(-2..2),
            };
            let ok = (-1..=i64::from(i32::MAX)).contains(&k);
            match RevisionsToKeep::new(k) {
                Ok(r) => assert!(
                    ok && i64::from(r.get()) == k,
                    "seed {seed} round {round} rtk {k}"
                ),
                Err(err) => {
                    assert!(!ok, "seed {seed} round {round} rtk {k}");
                    assert_refusal(&err, &format!("rtk {k}"));
                }
            }
        }
    }
}

/// A random volume configuration (valid vids; the combination is what is fuzzed).
fn config(rng: &mut StdRng, vids: &[Vid]) -> VolumeConfig {
    let vid = vids[rng.random_range(0..vids.len())].clone();
    let source = rng
        .random_bool(0.5)
        .then(|| vids[rng.random_range(0..vids.len())].clone());
    VolumeConfig {
        vid,
        size: size(rng),
        rw: rng.random(),
        snap_on_start: rng.random(),
        save_on_stop: rng.random(),
        source,
        revisions_to_keep: RevisionsToKeep::new(rng.random_range(-1..4)).unwrap(),
        ephemeral: [None, Some(false), Some(true)][rng.random_range(0..3)],
        committed_image_shared: rng.random(),
        revision_notes: notes(rng),
    }
}

/// Random revision notes as a state file could hold them: ids in any order (repeats
/// too), descriptions fine, too long or with control characters, notes saying nothing.
fn notes(rng: &mut StdRng) -> RevisionNotes {
    let descriptions = ["", "known good", "a\nb", "\u{7}", "é"];
    let entries: Vec<serde_json::Value> = (0..rng.random_range(0..4))
        .map(|_| {
            let description = match rng.random_range(0..6) {
                5 => "x".repeat(257),
                i => descriptions[i].to_owned(),
            };
            serde_json::json!({
                "id": rng.random_range(1..5u64),
                "timestamp": rng.random_range(0..3i64),
                "description": description,
                "pinned": rng.random_bool(0.5),
            })
        })
        .collect();
    serde_json::from_value(serde_json::Value::Array(entries)).unwrap()
}

fn oracle_notes(notes: &RevisionNotes) -> bool {
    let ids: Vec<u64> = notes.iter().map(|n| n.id).collect();
    ids.windows(2).all(|w| w[0] < w[1])
        && notes.iter().all(|n| {
            (n.pinned || !n.description.is_empty())
                && n.description.chars().count() <= 256
                && !n.description.chars().any(char::is_control)
        })
}

fn oracle_config(c: &VolumeConfig) -> bool {
    c.snap_on_start == c.source.is_some()
        && c.source.as_ref() != Some(&c.vid)
        && c.size < 1 << 63
        && (c.ephemeral != Some(true) || (!c.snap_on_start && !c.save_on_stop && c.rw))
        && oracle_notes(&c.revision_notes)
}

fn some_vids() -> Vec<Vid> {
    [
        "appvms/a/private",
        "appvms/a/root",
        "vm-templates/t/root",
        "appvms/b/volatile",
    ]
    .iter()
    .map(|v| Vid::parse(v).unwrap())
    .collect()
}

#[test]
fn volume_configurations_are_accepted_exactly_by_the_rules() {
    let vids = some_vids();
    for seed in seeds() {
        let mut rng = StdRng::seed_from_u64(seed);
        for round in 0..rounds(10_000) {
            let c = config(&mut rng, &vids);
            let at = format!("seed {seed} round {round} {c:?}");
            match check_volume(&c) {
                Ok(()) => assert!(oracle_config(&c), "{at}: accepted"),
                Err(err) => {
                    assert!(!oracle_config(&c), "{at}: refused");
                    assert_refusal(&err, &at);
                }
            }
        }
    }
}

// ---- the loader ----

/// A valid state directory: pools with random volumes, through the engine's own store
/// (no pool directory exists; nothing reads one).
fn valid_state_dir(rng: &mut StdRng) -> tempfile::TempDir {
    use qubes_storage_engine::registry::{Pool, PoolState};
    use qubes_storage_engine::store::{Change, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for p in 0..rng.random_range(1..3) {
        let config = qubes_storage_engine::PoolConfig {
            name: PoolName::parse(&format!("pool{p}")).unwrap(),
            dir_path: format!("/nonexistent/qsd-fuzz/pool{p}").into(),
            setup_check: rng.random(),
            revisions_to_keep: RevisionsToKeep::new(rng.random_range(-1..4)).unwrap(),
            ephemeral_volatile: rng.random(),
        };
        let pool = Pool::new(
            PoolState::new(config.clone()),
            store.create(&config).unwrap(),
        );
        let vids = some_vids();
        for vid in &vids {
            let mut c = config_for(rng, vid);
            if vid.name() == "root" && vid.class() == qubes_storage_engine::VmClass::AppVm {
                (c.snap_on_start, c.save_on_stop, c.rw) = (true, false, false);
                c.source = Some(vids[2].clone());
                c.ephemeral = None;
            }
            pool.change(Change::Put(c)).unwrap();
        }
        if rng.random_bool(0.5) {
            pool.change(Change::Unregister(vids[3].clone())).unwrap();
        }
        if rng.random_bool(0.3) {
            pool.compact().unwrap();
        }
    }
    dir
}

fn config_for(rng: &mut StdRng, vid: &Vid) -> VolumeConfig {
    VolumeConfig {
        vid: vid.clone(),
        size: rng.random_range(0..1 << 30) * 512,
        rw: true,
        snap_on_start: false,
        save_on_stop: rng.random(),
        source: None,
        revisions_to_keep: RevisionsToKeep::new(rng.random_range(-1..4)).unwrap(),
        ephemeral: None,
        committed_image_shared: false,
        revision_notes: Default::default(),
    }
}

const HOSTILE_VALUES: &[&str] = &[
    "\"relative/dir\"",
    "\"/\"",
    "\"appvms/../../etc/passwd\"",
    "\"appvms/x/private-dirty\"",
    "\"vm-templates/t\"",
    "-1",
    "-2",
    "18446744073709551615",
    "9223372036854775808",
    "1e400",
    "null",
    "true",
    "{}",
    "[]",
    "\"pool1\"",
    "\"Pool0\"",
    "\"vm-templates/t/root\"",
    "\"appvms/a/private\"",
];

/// One random damage to the files of `dir/pools`.
fn damage(rng: &mut StdRng, dir: &Path) -> String {
    let pools = dir.join("pools");
    let files: Vec<PathBuf> = std::fs::read_dir(&pools)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let file = &files[rng.random_range(0..files.len())];
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = std::fs::read(file).unwrap();
    let what = match rng.random_range(0..6) {
        0 if !bytes.is_empty() => {
            let at = rng.random_range(0..bytes.len());
            bytes[at] ^= 1 << rng.random_range(0..8);
            format!("flipped a bit at {at} of {name}")
        }
        1 => {
            let at = rng.random_range(0..=bytes.len());
            bytes.truncate(at);
            format!("cut {name} at {at}")
        }
        2 => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let values: Vec<usize> = text.match_indices(": ").map(|(i, _)| i + 2).collect();
            let Some(&at) = values.get(rng.random_range(0..values.len().max(1))) else {
                return "nothing to swap".into();
            };
            let end = text[at..]
                .find([',', '}', '\n'])
                .map_or(text.len(), |e| at + e);
            let value = HOSTILE_VALUES[rng.random_range(0..HOSTILE_VALUES.len())];
            bytes = format!("{}{value}{}", &text[..at], &text[end..]).into_bytes();
            format!("swapped a value of {name} for {value}")
        }
        3 => {
            let journal = pools.join("pool0.journal");
            let mut text = std::fs::read_to_string(&journal).unwrap_or_default();
            let line = random_journal_line(rng, text.lines().count() as u64);
            text.push_str(&frame(&line));
            std::fs::write(&journal, text).unwrap();
            return format!("appended {line}");
        }
        4 => {
            let to = pools.join(format!("{}.json", part(rng)));
            let _ = std::fs::rename(file, &to);
            return format!("renamed {name} to {}", to.display());
        }
        _ => {
            bytes.extend_from_slice(any_text(rng).as_bytes());
            format!("appended garbage to {name}")
        }
    };
    std::fs::write(file, bytes).unwrap();
    what
}

fn random_journal_line(rng: &mut StdRng, seq_hint: u64) -> String {
    let seq = seq_hint + rng.random_range(0..3);
    let vid = serde_json::to_string(&vid_text(rng)).unwrap();
    let vids = some_vids();
    match rng.random_range(0..5) {
        0 => format!(r#"{{"seq":{seq},"unregister":{vid}}}"#),
        1 => format!(r#"{{"seq":{seq},"forget":{vid}}}"#),
        2 => {
            let c = serde_json::to_string(&config(rng, &vids)).unwrap();
            format!(r#"{{"seq":{seq},"put":{c}}}"#)
        }
        3 => {
            let v = HOSTILE_VALUES[rng.random_range(0..HOSTILE_VALUES.len())];
            format!(
                r#"{{"seq":{seq},"pool":{{"name":"pool0","dir_path":{v},"setup_check":true,"revisions_to_keep":1,"ephemeral_volatile":false}}}}"#
            )
        }
        _ => format!(r#"{{"seq":{seq},"put":null,"forget":{vid}}}"#),
    }
}

type Loaded = BTreeMap<
    String,
    (
        qubes_storage_engine::PoolConfig,
        BTreeMap<String, VolumeConfig>,
    ),
>;

/// Everything the engine loaded, each value re-checked by the parsers and rules.
fn loaded(engine: &Engine, dir: &Path, at: &str) -> Loaded {
    let mut all = BTreeMap::new();
    for name in engine.pool_names() {
        assert_eq!(
            PoolName::parse(name.as_str()).ok().as_ref(),
            Some(&name),
            "{at}"
        );
        let pool = engine.pool_config(&name).unwrap();
        assert_eq!(pool.name, name, "{at}");
        assert!(check_pool(&pool).is_ok(), "{at}: loaded pool {pool:?}");
        let file = dir.join("pools").join(format!("{name}.json"));
        assert!(file.exists(), "{at}: pool {name} comes from its own file");
        let vids = engine.volume_vids(&name).unwrap();
        // The pools' directories do not exist: read as the daemon's start-up does
        // (a single volume's live view refuses a pool whose directory is missing).
        let mut configs: BTreeMap<String, _> = engine
            .volume_infos(&name)
            .unwrap()
            .into_iter()
            .map(|info| {
                let c = info.unwrap().config;
                (c.vid.to_string(), c)
            })
            .collect();
        let mut volumes = BTreeMap::new();
        for vid in &vids {
            assert_eq!(
                Vid::parse(&vid.to_string()).ok().as_ref(),
                Some(vid),
                "{at}"
            );
            let c = configs
                .remove(&vid.to_string())
                .unwrap_or_else(|| panic!("{at}: {vid} has a view"));
            assert!(
                oracle_config(&c) && check_volume(&c).is_ok(),
                "{at}: loaded {c:?}"
            );
            assert_eq!(&c.vid, vid, "{at}");
            if let Some(source) = &c.source {
                assert!(vids.contains(source), "{at}: source {source} is registered");
            }
            volumes.insert(vid.to_string(), c);
        }
        all.insert(name.to_string(), (pool, volumes));
    }
    all
}

#[test]
fn the_loader_refuses_damage_clearly_or_loads_only_valid_state() {
    for seed in seeds() {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut refused, mut accepted) = (0, 0);
        for round in 0..rounds(150) {
            let dir = valid_state_dir(&mut rng);
            loaded(&Engine::open(dir.path()).unwrap(), dir.path(), "undamaged");
            let damages: Vec<String> = (0..rng.random_range(1..4))
                .map(|_| damage(&mut rng, dir.path()))
                .collect();
            let at = format!("seed {seed} round {round} after {damages:?}");
            match Engine::open(dir.path()) {
                Err(err) => {
                    refused += 1;
                    let message = err.to_string();
                    assert!(
                        message.contains(&dir.path().join("pools").display().to_string()),
                        "{at}: names the file: {message}"
                    );
                    assert!(
                        message.len() <= MESSAGE_MAX + 200,
                        "{at}: {} bytes",
                        message.len()
                    );
                }
                Ok(engine) => {
                    accepted += 1;
                    let got = loaded(&engine, dir.path(), &at);
                    for name in engine.pool_names() {
                        engine.compact_state(&name).unwrap();
                    }
                    let again = Engine::open(dir.path()).unwrap_or_else(|e| panic!("{at}: {e}"));
                    assert_eq!(
                        loaded(&again, dir.path(), &at),
                        got,
                        "{at}: a reload after compaction"
                    );
                }
            }
        }
        assert!(
            refused > 0 && accepted > 0,
            "seed {seed}: {refused} refused, {accepted} accepted"
        );
    }
}
