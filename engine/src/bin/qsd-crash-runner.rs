//! Crash-test runner (built only with the `failpoints` feature): opens an [`Engine`] on
//! a state directory, performs exactly ONE named volume operation and exits. The crash
//! tests (`engine/tests/crash_points.rs`) run it with `QSD_CRASH_AFTER_STEP=k`, so the
//! process aborts right after the k-th durable step (see `failpoint.rs`), as a power
//! loss would stop the daemon; without the variable it runs to the end and reports how
//! many steps the operation took.
//!
//! Usage: `qsd-crash-runner <state dir> <pool> <vid> <operation> [args]` with
//!
//! | operation                        | engine calls                                         |
//! |----------------------------------|------------------------------------------------------|
//! | `start`                          | `start`                                              |
//! | `stop`                           | `stop` (commits an origin volume)                    |
//! | `revert [id]`                    | `revert` (highest revision without id)               |
//! | `resize <bytes>`                 | `resize` (shrinking allowed)                         |
//! | `import <content file>`          | `import_data(size)` (shrinking allowed), write the file, fdatasync, `import_data_end(true)` |
//! | `import-volume <pool> <vid>`     | `import_volume` from that volume                     |
//! | `create <bytes>`                 | `create_volume` of an origin (save_on_stop, rw)      |
//! | `remove`                         | `remove_volume`                                      |
//! | `compact`                        | `compact_state` of the pool (the vid is not used)    |
//!
//! Output: one line `steps=<n>` on stdout (the durable steps the operation completed),
//! exit status 0 on success, 1 with the error on stderr on failure, 2 on bad usage. A
//! crash is an abort (SIGABRT); core dumps are switched off first so hundreds of
//! crashes cost nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use qubes_storage_engine::{
    failpoint, Engine, EngineError, OpCtx, PoolName, Vid, VolumeRef, VolumeSpec,
};

/// One parsed command line.
struct Invocation {
    state_dir: PathBuf,
    volume: VolumeRef,
    operation: Operation,
}

enum Operation {
    Start,
    Stop,
    Revert(Option<u64>),
    Resize(u64),
    Import(PathBuf),
    ImportVolume(VolumeRef),
    CreateOrigin(u64),
    Remove,
    Compact,
}

const USAGE: &str = "usage: qsd-crash-runner <state dir> <pool> <vid> \
    start | stop | revert [id] | resize <bytes> | import <content file> | import-volume <pool> <vid> \
    | create <bytes> | remove | compact";

fn volume_ref(pool: &str, vid: &str) -> Result<VolumeRef, String> {
    let pool = PoolName::parse(pool).map_err(|e| format!("bad pool name {pool:?}: {e}"))?;
    let vid = Vid::parse(vid).map_err(|e| format!("bad vid {vid:?}: {e}"))?;
    Ok(VolumeRef { pool, vid })
}

fn number(text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| format!("not a number: {text:?}"))
}

fn parse_operation(args: &[String]) -> Result<Operation, String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["start"] => Ok(Operation::Start),
        ["stop"] => Ok(Operation::Stop),
        ["revert"] => Ok(Operation::Revert(None)),
        ["revert", id] => Ok(Operation::Revert(Some(number(id)?))),
        ["resize", size] => Ok(Operation::Resize(number(size)?)),
        ["import", file] => Ok(Operation::Import(PathBuf::from(file))),
        ["import-volume", pool, vid] => Ok(Operation::ImportVolume(volume_ref(pool, vid)?)),
        ["create", size] => Ok(Operation::CreateOrigin(number(size)?)),
        ["remove"] => Ok(Operation::Remove),
        ["compact"] => Ok(Operation::Compact),
        _ => Err(USAGE.to_owned()),
    }
}

fn parse_args(args: &[String]) -> Result<Invocation, String> {
    let [state_dir, pool, vid, rest @ ..] = args else {
        return Err(USAGE.to_owned());
    };
    Ok(Invocation {
        state_dir: PathBuf::from(state_dir),
        volume: volume_ref(pool, vid)?,
        operation: parse_operation(rest)?,
    })
}

/// R§3.17 + R§3.18 as the Admin API import script drives them: a sparse import file of
/// the content's size, the content written into it and flushed, then the commit.
fn import(
    engine: &Engine,
    vol: &VolumeRef,
    content_file: &Path,
    ctx: &OpCtx,
) -> Result<(), String> {
    let content = std::fs::read(content_file)
        .map_err(|e| format!("cannot read {}: {e}", content_file.display()))?;
    let mut file = engine
        .import_data(vol, content.len() as u64, true, ctx)
        .map_err(|e| e.to_string())?;
    file.write_all(&content)
        .map_err(|e| format!("cannot write the import file: {e}"))?;
    file.sync_data()
        .map_err(|e| format!("cannot fdatasync the import file: {e}"))?;
    drop(file);
    engine
        .import_data_end(vol, true, ctx)
        .map_err(|e| e.to_string())
}

fn origin_spec(size: u64) -> VolumeSpec {
    VolumeSpec {
        size,
        rw: true,
        save_on_stop: true,
        ..Default::default()
    }
}

fn engine_result<T>(result: Result<T, EngineError>) -> Result<(), String> {
    result.map(|_| ()).map_err(|e| e.to_string())
}

fn run(invocation: &Invocation) -> Result<(), String> {
    let engine = Engine::open(&invocation.state_dir).map_err(|e| e.to_string())?;
    let vol = &invocation.volume;
    let ctx = OpCtx::quiet("crash-runner");
    match &invocation.operation {
        Operation::Start => engine_result(engine.start(vol, &ctx)),
        Operation::Stop => engine_result(engine.stop(vol, &ctx)),
        Operation::Revert(id) => engine_result(engine.revert(vol, *id, &ctx)),
        Operation::Resize(size) => engine_result(engine.resize(vol, *size, true, &ctx)),
        Operation::Import(content) => import(&engine, vol, content, &ctx),
        Operation::ImportVolume(source) => engine_result(engine.import_volume(vol, source, &ctx)),
        Operation::CreateOrigin(size) => {
            engine_result(engine.create_volume(vol, origin_spec(*size), &ctx))
        }
        Operation::Remove => engine_result(engine.remove_volume(vol, &ctx)),
        Operation::Compact => engine_result(engine.compact_state(&vol.pool)),
    }
}

fn main() -> ExitCode {
    // A crash must not write a core file per step.
    qubes_storage_engine::sys::disable_core_dumps();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invocation = match parse_args(&args) {
        Ok(invocation) => invocation,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let outcome = run(&invocation);
    println!("steps={}", failpoint::steps());
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("qsd-crash-runner: {err}");
            ExitCode::FAILURE
        }
    }
}
