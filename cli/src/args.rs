//! The command line, declared once with clap: parsing, `--help`, the shell completions
//! and the man page all come from these types. Values the service would refuse anyway
//! are still checked here when the check is cheap and the message better (sizes,
//! `--snap-on-start` without `--source`), so typos fail before anything is called.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::{exit, CliError};
use crate::size::parse_volume_size;

/// The exit statuses, for `--help` (the man page has its own EXIT STATUS section).
pub fn exit_status_help() -> String {
    let mut help = String::from("Exit status:\n");
    for (code, meaning) in exit::STATUSES {
        help.push_str(&format!("  {code:<3} {meaning}\n"));
    }
    help.push('\n');
    help.push_str(exit::REPORTING);
    help
}

const ABOUT: &str =
    "Manage Qubes OS VM storage pools and volumes through the org.qubes.Storage service";

const LONG_ABOUT: &str = "\
Manage Qubes OS VM storage pools and volumes through the org.qubes.Storage D-Bus service.

Sizes accept units in powers of 1024: 4096, 512M, 1.5G, 2GiB, 1T. Volumes are named by
their pool and vid (appvms/<vm>/<name> or vm-templates/<vm>/<name>).

On a terminal, commands that need authorization let polkit ask for a password; use
--no-interaction to fail instead.";

#[derive(Debug, Parser)]
#[command(
    name = "qubes-storage",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = exit_status_help(),
    propagate_version = true
)]
pub struct Cli {
    /// The bus to use: system, session, or a D-Bus address (unix:path=...)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "system|session|ADDRESS",
        default_value = "system",
        env = "QUBES_STORAGE_BUS",
        value_parser = parse_bus
    )]
    pub bus: BusChoice,

    /// Print machine-readable JSON on stdout instead of tables (no progress bars);
    /// a change prints the changed pool's or volume's properties after it
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// Never ask for authentication: fail with exit status 9 instead of prompting
    #[arg(long, global = true, help_heading = "Global options")]
    pub no_interaction: bool,

    /// Show progress bars even when stderr is not a terminal (as one line a second)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        conflicts_with = "no_progress"
    )]
    pub progress: bool,

    /// Never show progress bars
    #[arg(long, global = true, help_heading = "Global options")]
    pub no_progress: bool,

    /// Log the transfers and file operations on stderr (-vv: also each D-Bus call
    /// and its details); RUST_LOG overrides
    #[arg(short, long, global = true,
        help_heading = "Global options", action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Does the command write image data to stdout (`volume export … -`)? Then stdout
    /// carries nothing else, not even a `--json` error document.
    pub fn writes_data_to_stdout(&self) -> bool {
        matches!(
            &self.command,
            Command::Volume(VolumeCommand::Export(args)) if args.output.as_os_str() == "-"
        )
    }
}

/// Which bus to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    /// The system bus; `DBUS_SYSTEM_BUS_ADDRESS` overrides its address.
    System,
    Session,
    Address(String),
}

fn parse_bus(text: &str) -> Result<BusChoice, String> {
    match text {
        "system" => Ok(BusChoice::System),
        "session" => Ok(BusChoice::Session),
        address if address.contains(':') => Ok(BusChoice::Address(address.to_owned())),
        other => Err(format!(
            "{other:?} is neither system, session nor a D-Bus address such as unix:path=/run/bus"
        )),
    }
}

/// A volume size: units, whole 512-byte sectors, more than 0 (see `size.rs`).
fn parse_size_arg(text: &str) -> Result<u64, String> {
    parse_volume_size(text)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, inspect and remove pools
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Create, list, start, stop, copy and remove volumes
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Print the service's signals as they happen, one line each
    Monitor(MonitorArgs),
    /// Show the service's version, drivers and features
    Status,
    /// Print a shell completion script. At each TAB it runs qubes-storage (found on
    /// PATH), which completes pool names and vids from the running service
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a directory
    Man {
        /// Write qubes-storage.1 and one page per subcommand into this directory
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// List pools with their directory and filesystem usage
    #[command(visible_alias = "ls")]
    List,
    /// Show one pool's properties
    Info { pool: String },
    /// Create a pool in a directory and run its setup check
    Create(PoolCreateArgs),
    /// Forget a pool (its files stay); refused while it holds volumes
    #[command(visible_alias = "rm")]
    Remove { pool: String },
    /// Change a pool property
    Set {
        /// The pool's name
        pool: String,
        /// The property to change
        #[arg(value_enum)]
        property: PoolProperty,
        /// The new value: revisions-to-keep -1 or more (-1 disables snapshots),
        /// ephemeral-volatile true or false
        #[arg(allow_negative_numbers = true)]
        value: String,
    },
    /// Show what a Remove of each volume gives back, and what it shares with others
    Space {
        /// The pool's name
        pool: String,
    },
}

#[derive(Debug, Args)]
pub struct PoolCreateArgs {
    /// Name of the new pool: a letter, then up to 63 letters, digits, `_`, `.` or `-`
    pub pool: String,
    /// Directory holding the pool's files (made absolute before it is sent)
    #[arg(long, value_name = "PATH")]
    pub dir: PathBuf,
    /// Storage driver
    #[arg(long, default_value = "file-reflink")]
    pub driver: String,
    /// Skip the check that the filesystem supports reflinks
    #[arg(long)]
    pub no_setup_check: bool,
    /// Revisions new volumes keep by default (-1 disables snapshots)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub revisions_to_keep: Option<i32>,
    /// Make volatile volumes of this pool ephemeral by default
    #[arg(long)]
    pub ephemeral_volatile: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PoolProperty {
    RevisionsToKeep,
    EphemeralVolatile,
}

/// A volume, named by its pool and vid.
#[derive(Debug, Clone, Args)]
pub struct VolumeRef {
    /// The pool holding the volume
    pub pool: String,
    /// The volume id, e.g. appvms/work/private
    pub vid: String,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List volumes of all pools, or of one
    #[command(visible_alias = "ls")]
    List {
        /// Only the volumes of this pool
        pool: Option<String>,
    },
    /// Show one volume's properties
    Info(VolumeRef),
    /// Create a volume and its files
    Create(VolumeCreateArgs),
    /// Start a volume and print the block device path for the VM
    Start(VolumeRef),
    /// Stop a volume (committing its changes when it is save-on-stop)
    Stop(StopArgs),
    /// Check that a volume's files are in place
    Verify(VolumeRef),
    /// Go back to a revision (the newest when none is given)
    Revert {
        #[command(flatten)]
        volume: VolumeRef,
        #[command(flatten)]
        revision: RevisionChoice,
    },
    /// Change a volume's size
    Resize {
        #[command(flatten)]
        volume: VolumeRef,
        /// New size, e.g. 20G (a whole number of 512-byte sectors)
        #[arg(value_parser = parse_size_arg, allow_hyphen_values = true)]
        size: u64,
        /// Allow making the volume smaller (data past the new end is lost)
        #[arg(long)]
        allow_shrink: bool,
    },
    /// Replace a volume's content with an image from a file or stdin (-)
    Import(ImportArgs),
    /// Write a volume's committed image to a file or stdout (-)
    Export(ExportArgs),
    /// Copy a volume's content into another existing volume, in any pool
    Clone(CloneArgs),
    /// List a volume's revisions with their descriptions and pins
    ///
    /// TIMESTAMP is when the revision's data was last written (as Qubes names
    /// revisions); EXCLUSIVE is the space only that revision holds, as last measured:
    /// `-` until `volume space` (or a measurement of the pool) has measured it.
    Revisions(VolumeRef),
    /// Describe a revision, the newest unless --revision (an empty TEXT removes the
    /// description)
    Describe {
        #[command(flatten)]
        volume: VolumeRef,
        /// One line, at most 256 characters
        #[arg(allow_hyphen_values = true)]
        text: String,
        /// Revision id, as listed by `volume revisions`
        #[arg(long, value_name = "ID", value_parser = parse_revision_id)]
        revision: Option<String>,
    },
    /// Pin a revision (the newest when none is given): it is never pruned and stays
    /// when reverted to
    Pin {
        #[command(flatten)]
        volume: VolumeRef,
        #[command(flatten)]
        revision: RevisionChoice,
    },
    /// Unpin a revision (the newest when none is given): it counts against
    /// revisions-to-keep again
    Unpin {
        #[command(flatten)]
        volume: VolumeRef,
        #[command(flatten)]
        revision: RevisionChoice,
    },
    /// Show the bytes each file of a volume holds alone and shares with others
    Space(VolumeRef),
    /// Show (or apply to a copy) what changed since a revision
    Delta(DeltaArgs),
    /// Change a volume property
    Set {
        #[command(flatten)]
        volume: VolumeRef,
        /// The property to change
        #[arg(value_enum)]
        property: VolumeProperty,
        /// The new value: rw and ephemeral true or false (also yes/no, on/off, 1/0),
        /// revisions-to-keep -1 or more (-1 disables snapshots)
        #[arg(allow_negative_numbers = true)]
        value: String,
    },
    /// Remove a volume and its files; refused while it is started
    #[command(visible_alias = "rm")]
    Remove(VolumeRef),
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub volume: VolumeRef,
    /// Describe the revision this stop keeps (the image as it was before the session)
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub describe: Option<String>,
    /// Pin the revision this stop keeps
    #[arg(long)]
    pub pin: bool,
}

/// A revision named after the volume (`pin POOL VID 5`) or as `--revision 5`, the way
/// `describe` takes it (its TEXT is the positional argument): either works everywhere.
#[derive(Debug, Args)]
pub struct RevisionChoice {
    /// Revision id, as listed by `volume revisions` (the newest when none is given)
    #[arg(value_name = "REVISION", value_parser = parse_revision_id)]
    id: Option<String>,
    /// The same, as an option
    #[arg(long = "revision", value_name = "ID", conflicts_with = "id", value_parser = parse_revision_id)]
    option: Option<String>,
}

/// A revision id as given: never empty. The service reads `""` as the newest
/// revision, so a script's empty variable (a lookup that found nothing) would act on
/// the newest instead of failing; leaving the argument out is how to name the newest.
fn parse_revision_id(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(
            "a revision id cannot be empty; leave it out to mean the newest revision".into(),
        );
    }
    Ok(text.to_owned())
}

impl RevisionChoice {
    /// The id given either way; `None` for the newest.
    pub fn id(&self) -> Option<String> {
        self.id.clone().or_else(|| self.option.clone())
    }
}

#[derive(Debug, Args)]
pub struct DeltaArgs {
    #[command(flatten)]
    pub volume: VolumeRef,
    /// The revision to compare with (the newest when none is given)
    #[command(flatten)]
    pub revision: RevisionChoice,
    /// Unit of the ranges, a power of two from 1 byte to 1M (default 4K)
    #[arg(long, value_name = "SIZE", value_parser = parse_granularity)]
    pub granularity: Option<u64>,
    /// Bring FILE, a copy of the revision, up to the committed image: truncate it to
    /// the image's size and write the changed ranges into it
    #[arg(long, value_name = "FILE")]
    pub apply_to: Option<PathBuf>,
}

/// A granularity: a size with units, a power of two up to 1 MiB.
fn parse_granularity(text: &str) -> Result<u64, String> {
    let bytes = crate::size::parse_size(text)?;
    if !bytes.is_power_of_two() || bytes > 1 << 20 {
        return Err(format!("{text:?} is not a power of two from 1 byte to 1M"));
    }
    Ok(bytes)
}

#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    #[command(flatten)]
    pub volume: VolumeRef,
    /// Size, e.g. 2G (a whole number of 512-byte sectors); required unless
    /// --snap-on-start (the source's size) or --adopt (the files' size)
    #[arg(
        long,
        value_parser = parse_size_arg,
        allow_hyphen_values = true,
        required_unless_present_any = ["snap_on_start", "adopt"]
    )]
    pub size: Option<u64>,
    /// Writable by the VM
    #[arg(long)]
    pub rw: bool,
    /// Start from a fresh snapshot of --source each time
    #[arg(long, requires = "source")]
    pub snap_on_start: bool,
    /// vid of the volume to snapshot, in the same pool
    #[arg(long, value_name = "VID", requires = "snap_on_start")]
    pub source: Option<String>,
    /// Keep the VM's changes when it stops
    #[arg(long)]
    pub save_on_stop: bool,
    /// Revisions to keep (the pool's default when absent; -1 disables snapshots)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub revisions_to_keep: Option<i32>,
    /// Discard the volume's content on stop
    #[arg(long)]
    pub ephemeral: bool,
    /// Register image files that already exist in the pool directory (a volume of an
    /// existing Qubes pool) instead of refusing; nothing on disk is changed
    #[arg(long)]
    pub adopt: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VolumeProperty {
    Rw,
    RevisionsToKeep,
    Ephemeral,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub volume: VolumeRef,
    /// Image file, block device, or - for stdin
    #[arg(value_name = "FILE")]
    pub input: PathBuf,
    /// Bytes to import; required for stdin, defaults to the file's size. The volume
    /// takes this size
    #[arg(long, value_parser = parse_size_arg, allow_hyphen_values = true)]
    pub size: Option<u64>,
    /// Allow an image smaller than the volume (data past its end is lost)
    #[arg(long)]
    pub allow_shrink: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub volume: VolumeRef,
    /// Output file (written sparse, under a temp name beside it, and renamed over FILE
    /// only once complete and on disk: a failed export leaves an existing FILE as it
    /// was; a new FILE gets mode 0600, private to its owner, an existing one keeps its
    /// mode), a device, or - for stdout
    #[arg(value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct CloneArgs {
    /// The pool holding the source volume
    pub src_pool: String,
    /// The source volume's id
    pub src_vid: String,
    /// The pool holding the destination volume (it must exist, and be stopped)
    pub dst_pool: String,
    /// The destination volume's id
    pub dst_vid: String,
    /// Clone even if the destination becomes smaller (it takes the source's size)
    #[arg(long)]
    pub allow_shrink: bool,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Only this pool (and its volumes)
    pub pool: Option<String>,
    /// Only this volume of the pool
    pub vid: Option<String>,
}

/// `true`/`false` and the usual spellings of them.
pub fn parse_bool(text: &str) -> Result<bool, CliError> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(CliError::Usage(format!(
            "{text:?} is not a boolean (true or false; also yes/no, on/off, 1/0)"
        ))),
    }
}

/// A value `set` could not parse, refused naming the property and `object`
/// (`p1:appvms/a/private`, `pool p1`).
pub fn refused_value(property: &impl ValueEnum, object: &str, error: CliError) -> CliError {
    let property = property
        .to_possible_value()
        .map(|value| value.get_name().to_owned())
        .unwrap_or_default();
    CliError::Usage(format!("cannot set {property} of {object}: {error}"))
}

/// A revisions-to-keep count: -1 or more.
pub fn parse_revisions(text: &str) -> Result<i32, CliError> {
    match text.parse::<i32>() {
        Ok(count) if count >= -1 => Ok(count),
        _ => Err(CliError::Usage(format!(
            "{text:?} is not a revision count (-1 or more)"
        ))),
    }
}

impl Command {
    /// Whether the command calls something polkit guards (so a password may be asked).
    pub fn needs_authorization(&self) -> bool {
        match self {
            Command::Pool(command) => !matches!(
                command,
                PoolCommand::List | PoolCommand::Info { .. } | PoolCommand::Space { .. }
            ),
            Command::Volume(command) => !matches!(
                command,
                VolumeCommand::List { .. }
                    | VolumeCommand::Info(_)
                    | VolumeCommand::Verify(_)
                    | VolumeCommand::Revisions(_)
                    | VolumeCommand::Space(_)
            ),
            Command::Monitor(_)
            | Command::Status
            | Command::Completions { .. }
            | Command::Man { .. } => false,
        }
    }
}

/// The clap command, for completions and the man page.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("qubes-storage").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn bus_defaults_to_system_and_accepts_addresses() {
        let cli = parse(&["pool", "list"]).unwrap();
        assert_eq!(cli.bus, BusChoice::System);
        let cli = parse(&["--bus", "unix:path=/tmp/bus", "pool", "list"]).unwrap();
        assert_eq!(cli.bus, BusChoice::Address("unix:path=/tmp/bus".into()));
        assert!(parse(&["--bus", "nonsense", "pool", "list"]).is_err());
    }

    #[test]
    fn create_takes_units_and_negative_revisions() {
        let cli = parse(&[
            "volume",
            "create",
            "p",
            "appvms/a/private",
            "--size",
            "1.5G",
            "--revisions-to-keep",
            "-1",
        ])
        .unwrap();
        let Command::Volume(VolumeCommand::Create(create)) = cli.command else {
            panic!()
        };
        assert_eq!(create.size, Some(3 << 29));
        assert_eq!(create.revisions_to_keep, Some(-1));
    }

    #[test]
    fn snap_on_start_needs_a_source() {
        let error =
            parse(&["volume", "create", "p", "appvms/a/root", "--snap-on-start"]).unwrap_err();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn create_needs_a_size_unless_a_snapshot_or_adopted() {
        let error = parse(&["volume", "create", "p", "appvms/a/private", "--rw"]).unwrap_err();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(error.to_string().contains("--size"), "{error}");
        parse(&["volume", "create", "p", "appvms/a/private", "--adopt"]).unwrap();
        parse(&[
            "volume",
            "create",
            "p",
            "appvms/a/root",
            "--snap-on-start",
            "--source",
            "vm-templates/t/root",
        ])
        .unwrap();
    }

    #[test]
    fn sizes_must_be_whole_sectors() {
        for size in ["0", "1", "1000"] {
            let error = parse(&["volume", "create", "p", "appvms/a/b", "--size", size]);
            let error = error.unwrap_err();
            assert_eq!(error.exit_code(), 2, "{size}");
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        }
    }

    #[test]
    fn negative_sizes_are_refused_without_suggesting_a_separator() {
        let error = parse(&["volume", "create", "p", "appvms/a/b", "--size", "-5G"]).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("a size cannot be negative"), "{text}");
        assert!(!text.contains("-- -5"), "{text}");
        let error = parse(&["volume", "resize", "p", "appvms/a/b", "-5G"]).unwrap_err();
        assert!(error.to_string().contains("cannot be negative"), "{error}");
    }

    #[test]
    fn bad_size_is_a_usage_error() {
        let error = parse(&["volume", "resize", "p", "appvms/a/b", "1.5"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = parse(&["volume", "list", "--json", "--no-interaction"]).unwrap();
        assert!(cli.json && cli.no_interaction);
    }

    #[test]
    fn booleans_accept_common_spellings() {
        assert!(parse_bool("Yes").unwrap());
        assert!(!parse_bool("off").unwrap());
        assert_eq!(parse_bool("maybe").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn revision_counts_start_at_minus_one() {
        assert_eq!(parse_revisions("-1").unwrap(), -1);
        assert_eq!(parse_revisions("3").unwrap(), 3);
        assert!(parse_revisions("-2").is_err());
        assert!(parse_revisions("x").is_err());
    }

    #[test]
    fn only_changes_need_authorization() {
        let needs = |args: &[&str]| parse(args).unwrap().command.needs_authorization();
        assert!(needs(&["volume", "start", "p", "appvms/a/b"]));
        assert!(needs(&["pool", "create", "p", "--dir", "/d"]));
        assert!(needs(&["volume", "export", "p", "appvms/a/b", "-"]));
        assert!(!needs(&["volume", "list"]));
        assert!(!needs(&["pool", "info", "p"]));
        assert!(!needs(&["monitor"]));
        assert!(!needs(&["volume", "space", "p", "appvms/a/b"]));
        assert!(!needs(&["pool", "space", "p"]));
        assert!(needs(&["volume", "pin", "p", "appvms/a/b", "3"]));
        assert!(needs(&["volume", "delta", "p", "appvms/a/b"]));
    }

    #[test]
    fn a_stop_can_describe_and_pin_what_it_keeps() {
        let cli = parse(&[
            "volume",
            "stop",
            "p",
            "appvms/a/b",
            "--describe",
            "-rc1 test",
            "--pin",
        ])
        .unwrap();
        let Command::Volume(VolumeCommand::Stop(stop)) = cli.command else {
            panic!()
        };
        assert_eq!(stop.describe.as_deref(), Some("-rc1 test"));
        assert!(stop.pin);
    }

    #[test]
    fn a_granularity_is_a_power_of_two_up_to_a_mebibyte() {
        let delta = |g: &str| parse(&["volume", "delta", "p", "appvms/a/b", "--granularity", g]);
        let Command::Volume(VolumeCommand::Delta(args)) = delta("64K").unwrap().command else {
            panic!()
        };
        assert_eq!(args.granularity, Some(64 << 10));
        for bad in ["3000", "2M", "0"] {
            assert_eq!(delta(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn exit_codes_are_in_the_long_help() {
        let help = command().render_long_help().to_string();
        assert!(help.contains("10  the bus or the storage service cannot be reached"));
    }
}
