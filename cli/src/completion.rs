//! Shell completion that asks the running service: pool names and vids complete from
//! what the service holds, subcommands and flags at every depth from the clap
//! definition.
//!
//! It uses clap_complete's dynamic engine (`CompleteEnv`) rather than its generated
//! scripts, whose bash flavour breaks below the first subcommand for a binary name with
//! a hyphen. The scripts `qubes-storage completions SHELL` prints only register a hook:
//! on every TAB the shell runs `QUBES_STORAGE_COMPLETE=<shell> qubes-storage -- <words>`
//! and this module answers with the candidates (the program is found on `PATH`).
//!
//! A candidate for a value may depend on the words before it (the vids of the pool
//! typed earlier, the bus given with `--bus` or `QUBES_STORAGE_BUS`): the words before
//! the cursor are parsed once, with errors ignored, before clap's engine runs. The
//! service is asked with NO_AUTO_START (completing never starts it) and a deadline;
//! when it cannot answer, those values simply have no candidates.
//!
//! Known limit: bash splits words at `:` and `=`, so `--bus unix:path=…` is not seen
//! while completing in bash; `QUBES_STORAGE_BUS` or `DBUS_SYSTEM_BUS_ADDRESS` are.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgMatches, Command};
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};
use clap_complete::env::{CompleteEnv, Shells};
use zbus::proxy::MethodFlags;
use zbus::Proxy;

use crate::args::{self, BusChoice};
use crate::client::{Client, Interaction, ManagedObjects};
use crate::error::{CliError, Result};
use crate::model::{PoolInfo, VolumeInfo};
use crate::paths::{OBJECT_MANAGER_IFACE, POOL_IFACE, ROOT_PATH, SERVICE, VOLUME_IFACE};

/// The variable a registration script sets when it asks for candidates.
const VAR: &str = "QUBES_STORAGE_COMPLETE";
/// The program the scripts complete, and run to get candidates.
const BIN: &str = "qubes-storage";
/// How long a TAB may wait for the service.
const QUERY_DEADLINE: Duration = Duration::from_secs(2);

/// zsh loads a completion file from `$fpath` as the body of the function `_BIN`: run
/// the completer then too, not only register it (else the first TAB shows nothing).
const ZSH_AUTOLOAD: &str = r#"
if [ "${funcstack[1]}" = "_qubes-storage" ]; then
    _clap_dynamic_completer_qubes_storage "$@"
fi
"#;

/// The pool argument that names the pool of each vid argument.
const VID_POOLS: [(&str, &str); 4] = [
    ("vid", "pool"),
    ("source", "pool"),
    ("src_vid", "src_pool"),
    ("dst_vid", "dst_pool"),
];
const POOL_ARGS: [&str; 3] = ["pool", "src_pool", "dst_pool"];

/// Answers a completion request and exits, when this run is one; returns otherwise.
pub fn answer_if_asked() {
    if std::env::var_os(VAR).is_none() {
        return;
    }
    let typed = Arc::new(Typed::parse(&words_before_cursor()));
    CompleteEnv::with_factory(move || with_completers(args::command(), &typed))
        .var(VAR)
        .completer(BIN)
        .complete();
}

/// `qubes-storage completions SHELL`: the script that registers the hook.
pub fn print_registration(shell: clap_complete::Shell) -> Result<()> {
    let name = shell.to_string();
    let shells = Shells::builtins();
    let completer = shells
        .completer(&name)
        .ok_or_else(|| CliError::Usage(format!("no completion support for {name}")))?;
    let mut script = Vec::new();
    let written = completer.write_registration(VAR, BIN, BIN, BIN, &mut script);
    written.map_err(|error| CliError::io("cannot write the completion script", error))?;
    if shell == clap_complete::Shell::Zsh {
        script.extend_from_slice(ZSH_AUTOLOAD.as_bytes());
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script)
        .map_err(|error| CliError::io("cannot write the completion script", error))
}

/// The words of the request before the one being completed (the program name first).
/// The request is `qubes-storage -- WORDS…`; bash and zsh say which word is current in
/// `_CLAP_COMPLETE_INDEX`, fish sends the words up to the cursor.
fn words_before_cursor() -> Vec<OsString> {
    let mut words: Vec<OsString> = std::env::args_os()
        .skip_while(|word| word != "--")
        .skip(1)
        .collect();
    let current = std::env::var("_CLAP_COMPLETE_INDEX")
        .ok()
        .and_then(|index| index.parse().ok())
        .unwrap_or(words.len().saturating_sub(1));
    words.truncate(current);
    words
}

/// What the words before the cursor say: the bus, and the pools typed so far.
#[derive(Debug, Default)]
struct Typed {
    bus: Option<BusChoice>,
    pools: HashMap<&'static str, String>,
}

impl Typed {
    fn parse(words: &[OsString]) -> Typed {
        let matches = args::command()
            .ignore_errors(true)
            .try_get_matches_from(words);
        let Ok(matches) = matches else {
            return Typed::default();
        };
        let deepest = deepest(&matches);
        let pools = POOL_ARGS
            .iter()
            .filter_map(|&id| Some((id, string_of(deepest, id)?)))
            .collect();
        let bus = deepest.try_get_one::<BusChoice>("bus").ok().flatten();
        Typed {
            bus: bus.cloned(),
            pools,
        }
    }
}

fn deepest(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => deepest(sub),
        None => matches,
    }
}

fn string_of(matches: &ArgMatches, id: &str) -> Option<String> {
    matches.try_get_one::<String>(id).ok().flatten().cloned()
}

/// The command with a completer on every pool and vid argument, at every depth.
fn with_completers(command: Command, typed: &Arc<Typed>) -> Command {
    let mut command = command.mut_args(|arg| match completer_for(arg.get_id().as_str(), typed) {
        Some(completer) => arg.add(completer),
        None => arg,
    });
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        command = command.mut_subcommand(name, |sub| with_completers(sub, typed));
    }
    command
}

fn completer_for(id: &str, typed: &Arc<Typed>) -> Option<ArgValueCompleter> {
    let typed = Arc::clone(typed);
    if POOL_ARGS.contains(&id) {
        return Some(ArgValueCompleter::new(move |current: &OsStr| {
            candidates(current, pool_names(&typed))
        }));
    }
    let (_, pool_id) = VID_POOLS.iter().find(|(vid_id, _)| *vid_id == id)?;
    Some(ArgValueCompleter::new(move |current: &OsStr| {
        let pool = typed.pools.get(pool_id).map(String::as_str);
        candidates(current, vids(&typed, pool))
    }))
}

/// The values that start with what was typed, sorted.
fn candidates(current: &OsStr, mut values: Vec<String>) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    values.retain(|value| value.starts_with(prefix.as_ref()));
    values.sort();
    values.into_iter().map(CompletionCandidate::new).collect()
}

fn pool_names(typed: &Typed) -> Vec<String> {
    let objects = service_objects(typed);
    objects
        .iter()
        .filter_map(|(path, interfaces)| {
            let properties = interfaces.get(POOL_IFACE)?;
            Some(PoolInfo::from_properties(path.as_str(), properties).name)
        })
        .collect()
}

/// The vids of `pool` (of every pool when none was typed).
fn vids(typed: &Typed, pool: Option<&str>) -> Vec<String> {
    let objects = service_objects(typed);
    let volumes = objects.iter().filter_map(|(path, interfaces)| {
        let properties = interfaces.get(VOLUME_IFACE)?;
        Some(VolumeInfo::from_properties(path.as_str(), properties))
    });
    volumes
        .filter(|volume| pool.is_none_or(|pool| volume.pool == pool))
        .map(|volume| volume.vid)
        .collect()
}

/// Everything the service exports, or nothing when it cannot answer in time.
fn service_objects(typed: &Typed) -> ManagedObjects {
    let bus = typed.bus.clone().unwrap_or(BusChoice::System);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        return ManagedObjects::new();
    };
    let query = async { tokio::time::timeout(QUERY_DEADLINE, managed_objects(&bus)).await };
    runtime.block_on(query).ok().flatten().unwrap_or_default()
}

async fn managed_objects(bus: &BusChoice) -> Option<ManagedObjects> {
    let client = Client::connect(bus, Interaction::Unavailable).await.ok()?;
    let proxy = Proxy::new(
        client.connection(),
        SERVICE,
        ROOT_PATH,
        OBJECT_MANAGER_IFACE,
    )
    .await
    .ok()?;
    let reply = proxy.call_with_flags("GetManagedObjects", MethodFlags::NO_AUTO_START, &());
    reply.await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(words: &[&str]) -> Typed {
        let words: Vec<OsString> = words.iter().map(OsString::from).collect();
        Typed::parse(&words)
    }

    #[test]
    fn the_pool_typed_before_a_vid_is_known() {
        let typed = typed(&["qubes-storage", "volume", "start", "demo"]);
        assert_eq!(typed.pools.get("pool").map(String::as_str), Some("demo"));
    }

    #[test]
    fn both_pools_of_a_clone_are_known() {
        let words = [
            "qubes-storage",
            "volume",
            "clone",
            "a",
            "appvms/x/root",
            "b",
        ];
        let typed = typed(&words);
        assert_eq!(typed.pools.get("src_pool").map(String::as_str), Some("a"));
        assert_eq!(typed.pools.get("dst_pool").map(String::as_str), Some("b"));
    }

    #[test]
    fn the_bus_option_is_known_wherever_it_was_typed() {
        let words = ["qubes-storage", "volume", "--bus", "unix:path=/b", "start"];
        let typed = typed(&words);
        assert_eq!(typed.bus, Some(BusChoice::Address("unix:path=/b".into())));
    }

    #[test]
    fn candidates_start_with_what_was_typed_and_are_sorted() {
        let values = vec!["p2".into(), "other".into(), "p1".into()];
        let found: Vec<String> = candidates(OsStr::new("p"), values)
            .iter()
            .map(|c| c.get_value().to_string_lossy().into_owned())
            .collect();
        assert_eq!(found, ["p1", "p2"]);
    }

    #[test]
    fn every_pool_and_vid_argument_gets_a_completer() {
        let command = with_completers(args::command(), &Arc::new(Typed::default()));
        command.clone().debug_assert();
        let start = command
            .find_subcommand("volume")
            .and_then(|volume| volume.find_subcommand("start"))
            .unwrap();
        for id in ["pool", "vid"] {
            let arg = start.get_arguments().find(|a| a.get_id() == id).unwrap();
            assert!(arg.get::<ArgValueCompleter>().is_some(), "{id}");
        }
    }

    #[test]
    fn zsh_script_completes_when_loaded_from_fpath() {
        let mut script = Vec::new();
        let shells = Shells::builtins();
        let zsh = shells.completer("zsh").unwrap();
        zsh.write_registration(VAR, BIN, BIN, BIN, &mut script)
            .unwrap();
        let script = String::from_utf8(script).unwrap();
        assert!(script.starts_with("#compdef qubes-storage"), "{script}");
        assert!(script.contains("_clap_dynamic_completer_qubes_storage"));
    }
}
