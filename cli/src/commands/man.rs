//! `qubes-storage man`: the manual pages, generated from the clap definition in
//! `args.rs` so they never drift from the real command line. One page per command
//! (`qubes-storage.1`, `qubes-storage-volume-create.1`, …), named the way each page's
//! SUBCOMMANDS section refers to the next, so every reference resolves once the pages
//! are installed. clap_mangen renders the clap parts; this file adds the sections a
//! manual page is expected to have: EXIT STATUS, ENVIRONMENT and SEE ALSO.

use std::path::Path;

use clap::Command;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use crate::args;
use crate::error::{exit, CliError, Result};

/// One manual page: its file name and its roff source.
pub struct Page {
    pub file_name: String,
    pub roff: Vec<u8>,
}

/// The main page on stdout, or every page into `out_dir`.
pub fn print_man(out_dir: Option<&Path>) -> Result<()> {
    let pages = pages().map_err(|error| CliError::io("cannot render the man pages", error))?;
    match out_dir {
        Some(dir) => write_pages(&pages, dir),
        None => {
            use std::io::Write;
            let main = &pages[0].roff;
            std::io::stdout()
                .lock()
                .write_all(main)
                .map_err(|error| CliError::io("cannot write the man page", error))
        }
    }
}

fn write_pages(pages: &[Page], dir: &Path) -> Result<()> {
    let cannot = |error| {
        CliError::io(
            format!("cannot write man pages to {}", dir.display()),
            error,
        )
    };
    std::fs::create_dir_all(dir).map_err(cannot)?;
    for page in pages {
        std::fs::write(dir.join(&page.file_name), &page.roff).map_err(cannot)?;
    }
    Ok(())
}

/// Every page, the main one first.
pub fn pages() -> std::io::Result<Vec<Page>> {
    let mut command = args::command().disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    collect(&command, None, &mut pages)?;
    Ok(pages)
}

fn collect(command: &Command, parent: Option<&str>, pages: &mut Vec<Page>) -> std::io::Result<()> {
    pages.push(render(command, parent)?);
    let name = page_name(command);
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        collect(sub, Some(&name), pages)?;
    }
    Ok(())
}

/// `qubes-storage-volume-create`: the name clap_mangen's SUBCOMMANDS section uses.
fn page_name(command: &Command) -> String {
    command
        .get_display_name()
        .unwrap_or_else(|| command.get_name())
        .to_owned()
}

fn render(command: &Command, parent: Option<&str>) -> std::io::Result<Page> {
    let man = Man::new(command.clone());
    let mut roff = Vec::new();
    man.render_title(&mut roff)?;
    man.render_name_section(&mut roff)?;
    man.render_synopsis_section(&mut roff)?;
    man.render_description_section(&mut roff)?;
    if command.get_arguments().any(|arg| !arg.is_hide_set()) {
        man.render_options_section(&mut roff)?;
    }
    if command.get_subcommands().any(|sub| !sub.is_hide_set()) {
        man.render_subcommands_section(&mut roff)?;
    }
    let mut extra = Roff::new();
    match parent {
        None => {
            exit_status_section(&mut extra);
            environment_section(&mut extra);
        }
        Some(_) => pointer_to_main_page(&mut extra),
    }
    see_also_section(&mut extra, parent);
    extra.to_writer(&mut roff)?;
    man.render_version_section(&mut roff)?;
    Ok(Page {
        file_name: man.get_filename(),
        roff,
    })
}

fn exit_status_section(roff: &mut Roff) {
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in exit::STATUSES {
        roff.control("TP", []);
        roff.text([bold(code.to_string())]);
        roff.text([roman(meaning)]);
    }
    roff.control("PP", []);
    roff.text([roman(exit::REPORTING)]);
}

fn environment_section(roff: &mut Roff) {
    roff.control("SH", ["ENVIRONMENT"]);
    let variables = [
        (
            "QUBES_STORAGE_BUS",
            "the bus to use when --bus is not given: system, session or a D-Bus address",
        ),
        ("DBUS_SYSTEM_BUS_ADDRESS", "the address of the system bus"),
        (
            "RUST_LOG",
            "what to log on stderr (overrides -v), e.g. qubes_storage=debug",
        ),
    ];
    for (name, meaning) in variables {
        roff.control("TP", []);
        roff.text([bold(name)]);
        roff.text([roman(meaning)]);
    }
}

fn pointer_to_main_page(roff: &mut Roff) {
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(
        "0 on success; otherwise the status of the error, as listed in qubes-storage(1).",
    )]);
}

fn see_also_section(roff: &mut Roff, parent: Option<&str>) {
    let mut pages = vec!["qubes-storage(1)".to_owned()];
    if let Some(parent) = parent.filter(|parent| *parent != "qubes-storage") {
        pages.push(format!("{parent}(1)"));
    }
    if parent.is_none() {
        pages = vec![
            "qubes-storaged(8)".to_owned(),
            "busctl(1)".to_owned(),
            "polkit(8)".to_owned(),
        ];
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(pages.join(", "))]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(page: &Page) -> String {
        String::from_utf8(page.roff.clone()).unwrap()
    }

    #[test]
    fn main_page_lists_exit_statuses_under_exit_status() {
        let pages = pages().unwrap();
        let main = text(&pages[0]);
        assert_eq!(pages[0].file_name, "qubes-storage.1");
        assert!(main.contains(".SH \"EXIT STATUS\""), "{main}");
        assert!(main.contains("cannot be reached"));
        assert!(!main.contains(".SH EXTRA"), "{main}");
    }

    #[test]
    fn every_subcommand_gets_a_page() {
        let names: Vec<String> = pages().unwrap().into_iter().map(|p| p.file_name).collect();
        for page in [
            "qubes-storage-pool.1",
            "qubes-storage-volume-clone.1",
            "qubes-storage-pool-create.1",
        ] {
            assert!(names.iter().any(|name| name == page), "{page} missing");
        }
        assert!(!names.iter().any(|name| name.contains("help")), "{names:?}");
    }

    #[test]
    fn every_page_a_page_refers_to_exists() {
        let pages = pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|p| p.file_name.as_str()).collect();
        for page in &pages {
            for reference in references(&text(page)) {
                assert!(
                    names.contains(&reference.as_str()),
                    "{} refers to {reference}",
                    page.file_name
                );
            }
        }
    }

    /// `qubes-storage…(1)` references, as file names.
    fn references(roff: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut rest = roff;
        while let Some(start) = rest.find("qubes\\-storage") {
            let tail = &rest[start..];
            let end = tail
                .find("(1)")
                .filter(|end| !tail[..*end].contains([' ', '\n', ',']));
            if let Some(end) = end {
                found.push(format!("{}.1", tail[..end].replace("\\-", "-")));
            }
            rest = &tail[1..];
        }
        found
    }
}
