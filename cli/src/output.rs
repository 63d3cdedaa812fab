//! Output for people and for scripts. People get aligned tables (`pool list`,
//! `volume list`, `volume revisions`) and `Key: value` blocks (`info`); scripts get
//! `--json`: one JSON document on stdout, sizes in bytes, timestamps as Unix seconds
//! alongside their ISO form. Tables have no trailing blanks and no colours, so they
//! survive `column`, `awk` and `grep`.

use std::io::Write;

use serde::Serialize;

use crate::error::{CliError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Writes a line for people on stderr (a message, a note); a stderr that cannot be
/// written — the terminal closed (SIGHUP), a closed pipe — is ignored, where
/// `eprintln!` would panic.
pub fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A table: a header row, then rows of cells, one alignment per column.
pub struct Table {
    headers: Vec<&'static str>,
    aligns: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            headers: columns.iter().map(|(header, _)| *header).collect(),
            aligns: columns.iter().map(|(_, align)| *align).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.headers.len());
        self.rows.push(row);
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        widths
    }

    /// The table as text, two blanks between columns, one line per row.
    pub fn render(&self) -> String {
        let widths = self.widths();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let mut text = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            text.push_str(&self.render_row(row, &widths));
            text.push('\n');
        }
        text
    }

    fn render_row(&self, row: &[String], widths: &[usize]) -> String {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .zip(&self.aligns)
            .map(|((cell, width), align)| match align {
                Align::Left => format!("{cell:<width$}"),
                Align::Right => format!("{cell:>width$}"),
            })
            .collect();
        cells.join("  ").trim_end().to_owned()
    }
}

/// `Key: value` lines with the values aligned.
pub fn render_fields(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(key, _)| key.chars().count() + 1)
        .max()
        .unwrap_or(0);
    fields
        .iter()
        .map(|(key, value)| {
            format!("{:<width$} {value}", format!("{key}:"))
                .trim_end()
                .to_owned()
                + "\n"
        })
        .collect()
}

/// Writes text to stdout; a closed pipe (`| head`) is not an error worth reporting.
pub fn print_text(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        // A terminal that hung up: the operation itself is done, only its report is lost.
        Err(error) if error.raw_os_error() == Some(nix::libc::EIO) && stdout_is_a_terminal() => {
            Ok(())
        }
        other => other.map_err(|error| CliError::io("cannot write to stdout", error)),
    }
}

/// Is stdout a character device (a terminal, also one that hung up, which `isatty` no
/// longer recognises)?
fn stdout_is_a_terminal() -> bool {
    nix::sys::stat::fstat(std::io::stdout()).is_ok_and(|st| {
        nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
            == nix::sys::stat::SFlag::S_IFCHR
    })
}

/// Writes one pretty JSON document and a newline to stdout.
pub fn print_json(value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| CliError::Protocol(format!("cannot encode JSON: {error}")))?;
    print_text(&(text + "\n"))
}

/// Unix seconds as ISO 8601 in UTC, e.g. `2024-05-01T12:00:00Z`.
pub fn iso_utc(unix_seconds: i64) -> String {
    chrono::DateTime::from_timestamp(unix_seconds, 0)
        .map(|time| time.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix_seconds.to_string())
}

/// `yes` or `no`, for boolean fields in `info`.
pub fn yes_no(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_owned()
}

/// A value or `-` when unknown.
pub fn or_dash<T>(value: Option<T>, show: impl Fn(T) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), show)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims_trailing_blanks() {
        let mut table = Table::new(&[
            ("NAME", Align::Left),
            ("SIZE", Align::Right),
            ("DIR", Align::Left),
        ]);
        table.push(vec!["a".into(), "2.0 GiB".into(), "/x".into()]);
        table.push(vec!["longname".into(), "1 B".into(), "".into()]);
        assert_eq!(
            table.render(),
            "NAME         SIZE  DIR\n\
             a         2.0 GiB  /x\n\
             longname      1 B\n"
        );
    }

    #[test]
    fn empty_table_is_just_the_header() {
        let table = Table::new(&[("ID", Align::Right), ("TIMESTAMP", Align::Left)]);
        assert_eq!(table.render(), "ID  TIMESTAMP\n");
    }

    #[test]
    fn table_width_counts_characters_not_bytes() {
        let mut table = Table::new(&[("N", Align::Left), ("X", Align::Left)]);
        table.push(vec!["é".into(), "1".into()]);
        assert_eq!(table.render(), "N  X\né  1\n");
    }

    #[test]
    fn fields_align_their_values() {
        let text = render_fields(&[
            ("Name", "p".into()),
            ("Directory", "/d".into()),
            ("Empty", "".into()),
        ]);
        assert_eq!(text, "Name:      p\nDirectory: /d\nEmpty:\n");
    }

    #[test]
    fn timestamps_print_as_iso_utc() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
