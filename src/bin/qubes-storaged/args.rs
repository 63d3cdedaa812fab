//! The daemon's command line, declared with clap like the CLI's: parsing, `--help`,
//! `--version` and the manual page `qubes-storaged(8)` (printed by the hidden `--man`,
//! which `make` installs) all come from here.

use std::path::PathBuf;

use clap::Parser;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

/// Where the configuration lives when neither `--state-dir` nor systemd says.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/qubes-storaged";

const ABOUT: &str = "The org.qubes.Storage D-Bus service: Qubes OS-style VM storage pools";

const LONG_ABOUT: &str = "\
Serves org.qubes.Storage on the system bus: pools of VM disk images in plain directories, \
with snapshots, revisions and clones made by reflink on btrfs or XFS (a hole-preserving \
copy elsewhere). Every change is authorized through polkit. The service runs in the \
foreground, logs on stderr (for journald) and ends cleanly on SIGTERM or SIGINT, after \
the running operations are cancelled and undone.

It is normally started by systemd (qubes-storaged.service) or by D-Bus activation; \
qubes-storage(1) is its command-line client.";

#[derive(Debug, Parser)]
#[command(name = "qubes-storaged", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Args {
    /// Where pool and volume configuration is kept (default: the first entry of
    /// $STATE_DIRECTORY, which systemd's StateDirectory= sets, else
    /// /var/lib/qubes-storaged)
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Serve on this bus instead of the system bus (DBUS_SYSTEM_BUS_ADDRESS is
    /// honoured)
    #[arg(long, value_name = "ADDRESS")]
    pub bus_address: Option<String>,

    /// The bus's largest message (dbus-daemon's max_message_size); larger replies are
    /// refused with org.freedesktop.DBus.Error.LimitsExceeded
    #[arg(long, value_name = "BYTES", default_value_t = qubes_storaged::bus::reply::BUS_MESSAGE_LIMIT)]
    pub max_message_size: usize,

    /// How long to wait for polkit's answer when nobody is asked for a password; a
    /// question still unanswered then is cancelled and the call refused (with a
    /// password dialog the wait is 5 minutes)
    #[arg(long, value_name = "SECONDS", default_value_t = qubes_storaged::auth::POLKIT_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub polkit_timeout: u64,

    /// Print the manual page (roff) and exit
    #[arg(long, hide = true)]
    pub man: bool,
}

impl Args {
    /// The state directory: `--state-dir`, else systemd's, else the default.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| default_state_dir(std::env::var("STATE_DIRECTORY").ok()))
    }
}

/// systemd passes StateDirectory= as `$STATE_DIRECTORY` (colon-separated when several),
/// so the unit and the daemon can never disagree on it.
pub fn default_state_dir(from_systemd: Option<String>) -> PathBuf {
    from_systemd
        .as_deref()
        .and_then(|dirs| dirs.split(':').next())
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), PathBuf::from)
}

/// `qubes-storaged(8)`.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let man = Man::new(<Args as clap::CommandFactory>::command()).section("8");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let mut sections = Roff::new();
    described_section(&mut sections, "SIGNALS", &SIGNALS);
    described_section(&mut sections, "ENVIRONMENT", &ENVIRONMENT);
    described_section(&mut sections, "FILES", &FILES);
    described_section(&mut sections, "EXIT STATUS", &EXIT_STATUS);
    sections.control("SH", ["SEE ALSO"]);
    sections.text([roman(
        "qubes-storage(1), polkit(8), dbus-daemon(1), systemd.exec(5)",
    )]);
    sections.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

const SIGNALS: [(&str, &str); 1] = [(
    "SIGTERM, SIGINT",
    "stop accepting calls, cancel the running copies (each undoes itself), wait for them, \
     release the bus name and exit with status 0",
)];

const ENVIRONMENT: [(&str, &str); 3] = [
    (
        "DBUS_SYSTEM_BUS_ADDRESS",
        "the system bus to serve on (unless --bus-address)",
    ),
    (
        "STATE_DIRECTORY",
        "set by systemd's StateDirectory=: the default state directory",
    ),
    (
        "RUST_LOG",
        "what to log, e.g. info (the default) or qubes_storage_engine=debug",
    ),
];

const FILES: [(&str, &str); 1] = [(
    "/var/lib/qubes-storaged/pools/<pool>.json",
    "the configuration of each pool and its volumes; the pool directories hold everything else",
)];

const EXIT_STATUS: [(&str, &str); 3] = [
    ("0", "stopped by SIGTERM or SIGINT"),
    (
        "1",
        "could not start or serve: no bus, the name is taken, an unreadable state \
         directory, or the bus went away",
    ),
    ("2", "usage error"),
];

fn described_section(roff: &mut Roff, title: &str, items: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (term, meaning) in items {
        roff.control("TP", []);
        roff.text([bold(*term)]);
        roff.text([roman(*meaning)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("qubes-storaged").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        <Args as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn state_dir_comes_from_systemd_when_it_sets_one() {
        assert_eq!(default_state_dir(None), PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(
            default_state_dir(Some(String::new())),
            PathBuf::from(DEFAULT_STATE_DIR)
        );
        assert_eq!(
            default_state_dir(Some("/var/lib/qubes-storaged:/var/lib/other".into())),
            PathBuf::from("/var/lib/qubes-storaged")
        );
    }

    #[test]
    fn options_take_a_value_separately_or_after_an_equals_sign() {
        let args = parse(&["--state-dir", "/s", "--bus-address=unix:path=/b"]).unwrap();
        assert_eq!(args.state_dir(), PathBuf::from("/s"));
        assert_eq!(args.bus_address.as_deref(), Some("unix:path=/b"));
    }

    #[test]
    fn unknown_arguments_are_usage_errors() {
        let error = parse(&["--stat-dir", "/s"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn man_page_is_section_8_with_exit_status_and_files() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(page.contains("\n.TH qubes-storaged 8 "), "{page}");
        for section in ["\"EXIT STATUS\"", "FILES", "SIGNALS", "\"SEE ALSO\""] {
            assert!(
                page.contains(&format!(".SH {section}")),
                "{section}: {page}"
            );
        }
    }
}
