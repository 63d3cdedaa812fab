//! A terminal a test can type into, read, and close: a tmux server of the test's own
//! on a private socket, running one program in one window. Shell completion is tested
//! by typing and pressing TAB in it; the demo's cleanup by closing it (SIGHUP), as a
//! user closes a terminal window.
//!
//! The server runs in the foreground (`tmux -D`) as a child of the test, kept in a
//! [`Guard`]: PID 1 on the test machines does not reap orphans, so a daemonized server
//! would be left as a zombie. The server reaps the program it runs. Closing kills the
//! session (tmux hangs up the program's terminal: SIGHUP) and waits for the program to
//! be gone; dropping the terminal closes it if needed and ends the server.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use tempfile::TempDir;

use crate::process::{Guard, DEADLINE, POLL};

const SESSION: &str = "t";
const COLUMNS: &str = "200";
const ROWS: &str = "40";

pub struct Terminal {
    socket: PathBuf,
    /// The environment of the server and of every client command (tmux gives a new
    /// window some variables, such as PATH, from the client that asks for it).
    env: Vec<(String, String)>,
    program_pid: u32,
    closed: bool,
    server: Option<Guard>,
    _dir: TempDir,
}

impl Terminal {
    /// Runs `program` (with its arguments) in a new terminal whose environment is
    /// exactly `env`.
    pub fn start(env: &[(&str, &str)], program: &[&str]) -> Terminal {
        let dir = tempfile::Builder::new()
            .prefix("qsd-terminal-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("tmux.sock");
        let server = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["-f", "/dev/null", "-D"])
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tmux is installed");
        let mut terminal = Terminal {
            socket,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            program_pid: 0,
            closed: false,
            server: Some(Guard::new("tmux", server)),
            _dir: dir,
        };
        terminal.wait_until("the tmux server listens", |t| t.socket.exists());
        let mut new_session = vec![
            "new-session",
            "-d",
            "-s",
            SESSION,
            "-x",
            COLUMNS,
            "-y",
            ROWS,
        ];
        new_session.extend_from_slice(program);
        terminal
            .tmux(&new_session)
            .expect("tmux new-session failed");
        let pid = terminal
            .tmux(&["display-message", "-p", "-t", SESSION, "#{pane_pid}"])
            .expect("tmux display-message failed");
        terminal.program_pid = pid.trim().parse().expect("a pane pid");
        terminal
    }

    /// The PID of the program the terminal runs.
    pub fn program_pid(&self) -> u32 {
        self.program_pid
    }

    /// Types `text` literally.
    pub fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", SESSION, "-l", text])
            .expect("tmux send-keys failed");
    }

    /// Presses one key, in tmux's key names (`Tab`, `Enter`, `C-c`).
    pub fn press(&self, key: &str) {
        self.tmux(&["send-keys", "-t", SESSION, key])
            .expect("tmux send-keys failed");
    }

    /// Everything the terminal showed (its scrollback too), without trailing blank
    /// lines.
    pub fn screen(&self) -> String {
        let screen = self
            .tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", SESSION])
            .unwrap_or_default();
        screen.trim_end().to_owned()
    }

    /// Waits until a line of the screen, without its trailing blanks, is `line`.
    #[track_caller]
    pub fn wait_for_line(&self, line: &str) {
        self.wait_until(&format!("the terminal shows {line:?}"), |terminal| {
            terminal
                .screen()
                .lines()
                .any(|shown| shown.trim_end() == line)
        });
    }

    /// Waits until the screen holds `text` anywhere; returns the screen.
    #[track_caller]
    pub fn wait_for_text(&self, text: &str) -> String {
        self.wait_until(&format!("the terminal shows {text:?}"), |terminal| {
            terminal.screen().contains(text)
        });
        self.screen()
    }

    /// Closes the terminal as a user closes its window (the program gets SIGHUP), and
    /// waits until the program has exited and been reaped.
    #[track_caller]
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let _ = self.tmux(&["kill-session", "-t", SESSION]);
        let pid = self.program_pid;
        self.wait_until("the terminal's program is gone", |_| !process_exists(pid));
    }

    /// Polls `condition` until it holds; panics with the screen after the deadline.
    #[track_caller]
    fn wait_until(&self, what: &str, mut condition: impl FnMut(&Terminal) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !condition(self) {
            if Instant::now() >= deadline {
                panic!(
                    "timed out waiting until {what}; the screen:\n{}",
                    self.screen()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs a tmux client command on this terminal's server; its stdout on success.
    fn tmux(&self, args: &[&str]) -> Option<String> {
        let output: Output = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .ok()?;
        match output.status.success() {
            true => Some(String::from_utf8_lossy(&output.stdout).into_owned()),
            false => None,
        }
    }
}

/// Whether a process with this PID exists (a zombie counts until it is reaped).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if !self.closed {
            self.closed = true;
            let _ = self.tmux(&["kill-session", "-t", SESSION]);
            let deadline = Instant::now() + DEADLINE;
            while process_exists(self.program_pid) && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
        let _ = self.tmux(&["kill-server"]);
        drop(self.server.take());
    }
}
