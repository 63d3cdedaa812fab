//! Progress bars for import, export, clone and copying resizes (indicatif, on stderr).
//!
//! Bars appear only when stderr is a terminal, or with `--progress`, and never with
//! `--json` or `--no-progress`. With `--progress` on something that is not a terminal
//! (a log file, a pipe) the bar is printed as one plain line a second, without escape
//! sequences, so logs stay readable.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

const BAR_TEMPLATE: &str = "{msg} [{wide_bar}] {binary_bytes}/{binary_total_bytes} \
                            {binary_bytes_per_sec} ETA {eta}";
const LINE_TEMPLATE: &str = "{msg}: {binary_bytes}/{binary_total_bytes} ({percent}%) \
                             {binary_bytes_per_sec} ETA {eta}";
const LINE_INTERVAL: Duration = Duration::from_secs(1);

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Hidden,
    /// A redrawn bar on the terminal.
    Bar,
    /// Plain lines, for `--progress` without a terminal.
    Lines,
}

impl ProgressMode {
    pub fn choose(
        json: bool,
        forced: bool,
        suppressed: bool,
        stderr_is_terminal: bool,
    ) -> ProgressMode {
        match (json || suppressed, stderr_is_terminal, forced) {
            (true, _, _) => ProgressMode::Hidden,
            (false, true, _) => ProgressMode::Bar,
            (false, false, true) => ProgressMode::Lines,
            (false, false, false) => ProgressMode::Hidden,
        }
    }

    /// A byte-counting bar labelled `message`; `total` may be set later.
    pub fn byte_bar(self, message: &str, total: u64) -> ProgressBar {
        let (target, template) = match self {
            ProgressMode::Hidden => return ProgressBar::hidden(),
            ProgressMode::Bar => (ProgressDrawTarget::stderr(), BAR_TEMPLATE),
            ProgressMode::Lines => (
                ProgressDrawTarget::term_like(Box::new(PlainLines::default())),
                LINE_TEMPLATE,
            ),
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(message.to_owned());
        bar
    }

    /// The operation succeeded: a bar disappears; plain lines end with a summary.
    pub fn finish(self, bar: &ProgressBar) {
        if self == ProgressMode::Lines {
            let done = crate::size::format_size(bar.position());
            crate::output::say(format_args!(
                "{}: {done} done in {:.1} s",
                bar.message(),
                bar.elapsed().as_secs_f64()
            ));
        }
        bar.finish_and_clear();
    }

    /// The operation failed or was cancelled: the bar goes; the error says the rest.
    pub fn abandon(self, bar: &ProgressBar) {
        bar.finish_and_clear();
    }
}

/// A "terminal" that prints a redraw as one line on stderr, at most one a second, and
/// ignores cursor movement: indicatif writes a frame with `write_str` calls and ends
/// it with `flush`.
#[derive(Debug, Default)]
struct PlainLines {
    frame: Mutex<String>,
    last_printed: Mutex<Option<Instant>>,
}

impl PlainLines {
    fn append(&self, text: &str) {
        if let Ok(mut frame) = self.frame.lock() {
            frame.push_str(&text.replace('\r', ""));
        }
    }

    fn take_frame(&self) -> String {
        self.frame
            .lock()
            .map(|mut frame| std::mem::take(&mut *frame))
            .unwrap_or_default()
    }

    /// Whether a line may be printed now (the first always may); records it if so.
    fn due(&self) -> bool {
        let Ok(mut last) = self.last_printed.lock() else {
            return false;
        };
        let now = Instant::now();
        let due = last.is_none_or(|printed| now.duration_since(printed) >= LINE_INTERVAL);
        if due {
            *last = Some(now);
        }
        due
    }
}

impl TermLike for PlainLines {
    fn width(&self) -> u16 {
        100
    }

    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn write_line(&self, text: &str) -> std::io::Result<()> {
        self.append(text);
        self.append("\n");
        Ok(())
    }

    fn write_str(&self, text: &str) -> std::io::Result<()> {
        self.append(text);
        Ok(())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        let frame = self.take_frame();
        let lines: Vec<&str> = frame
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() || !self.due() {
            return Ok(());
        }
        let mut stderr = std::io::stderr().lock();
        writeln!(stderr, "{}", lines.join("\n"))?;
        stderr.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_no_progress_always_hide() {
        assert_eq!(
            ProgressMode::choose(true, true, false, true),
            ProgressMode::Hidden
        );
        assert_eq!(
            ProgressMode::choose(false, false, true, true),
            ProgressMode::Hidden
        );
    }

    #[test]
    fn terminal_gets_a_bar_and_forced_progress_gets_lines() {
        assert_eq!(
            ProgressMode::choose(false, false, false, true),
            ProgressMode::Bar
        );
        assert_eq!(
            ProgressMode::choose(false, true, false, false),
            ProgressMode::Lines
        );
        assert_eq!(
            ProgressMode::choose(false, false, false, false),
            ProgressMode::Hidden
        );
    }

    #[test]
    fn plain_lines_drop_carriage_returns_and_padding() {
        let term = PlainLines::default();
        term.write_str("\r").unwrap();
        term.write_str("import: 1 MiB/2 MiB").unwrap();
        term.write_str("     ").unwrap();
        assert_eq!(term.take_frame(), "import: 1 MiB/2 MiB     ");
    }

    #[test]
    fn plain_lines_print_at_most_one_line_a_second() {
        let term = PlainLines::default();
        assert!(term.due());
        assert!(!term.due());
    }
}
