//! `qubes-storage completions SHELL` and `qubes-storage man`: generated from the clap
//! definition in `args.rs`, so they never drift from the real command line.

use std::path::Path;

use crate::args;
use crate::error::{CliError, Result};

pub fn print_completions(shell: clap_complete::Shell) -> Result<()> {
    let mut command = args::command();
    let mut stdout = std::io::stdout().lock();
    clap_complete::generate(shell, &mut command, "qubes-storage", &mut stdout);
    Ok(())
}

/// The main page on stdout, or every page (one per subcommand) into `out_dir`.
pub fn print_man(out_dir: Option<&Path>) -> Result<()> {
    let command = args::command();
    match out_dir {
        Some(dir) => clap_mangen::generate_to(command, dir).map_err(|error| {
            CliError::io(
                format!("cannot write man pages to {}", dir.display()),
                error,
            )
        }),
        None => {
            let mut stdout = std::io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut stdout)
                .map_err(|error| CliError::io("cannot write the man page", error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_documents_exit_statuses() {
        let mut roff = Vec::new();
        clap_mangen::Man::new(args::command())
            .render(&mut roff)
            .unwrap();
        let roff = String::from_utf8(roff).unwrap();
        assert!(roff.contains(".TH qubes-storage"));
        assert!(roff.contains("cannot be reached"));
    }

    #[test]
    fn every_subcommand_gets_a_page() {
        let dir = tempfile::tempdir().unwrap();
        print_man(Some(dir.path())).unwrap();
        for page in [
            "qubes-storage.1",
            "qubes-storage-volume-clone.1",
            "qubes-storage-pool-create.1",
        ] {
            assert!(dir.path().join(page).is_file(), "{page} missing");
        }
    }

    #[test]
    fn bash_completion_knows_the_subcommands() {
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut args::command(),
            "qubes-storage",
            &mut script,
        );
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("revisions") && script.contains("monitor"));
    }
}
