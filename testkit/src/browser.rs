//! Headless Chromium for the browser tests, driven over the Chrome DevTools Protocol
//! on a pipe (`--remote-debugging-pipe`): the browser reads commands from its fd 3 and
//! writes replies and events to its fd 4, each message one JSON text ended by a NUL
//! byte. No port, no WebSocket client: two pipes made here and put at fds 3 and 4 of
//! the child.
//!
//! One [`Browser`] has one page (a target attached with `flatten`, so commands carry
//! its session id). What a test needs: [`Browser::navigate`], [`Browser::eval`] (a JS
//! expression, awaited, its value as JSON), [`Browser::wait_until`] (a JS predicate
//! re-checked in the page until it holds or a deadline passes — a condition with a
//! deadline, never a sleep), [`Browser::screenshot`] (a PNG file), and what the page
//! logged as an error or threw ([`Browser::page_errors`]), for failure messages.
//!
//! Chromium runs as root, so it needs `--no-sandbox`; it gets a fresh profile in a
//! temp dir and no D-Bus (it would otherwise talk to the test's private system bus).
//! Dropping the browser closes it (`Browser.close`, then SIGTERM by PID through the
//! [`Guard`]); its own helper processes end with it.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::process::{Guard, DEADLINE};

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The page's viewport: what screenshots show.
pub const VIEWPORT: (u32, u32) = (1400, 1000);

/// The flags the machine's notes give for Chromium as root in a container, plus the
/// pipe.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
];

/// A running Chromium with one page.
pub struct Browser {
    commands: File,
    messages: Receiver<Value>,
    next_id: u64,
    session: String,
    /// Errors and exceptions the page reported, as lines.
    errors: Vec<String>,
    reader: Option<JoinHandle<()>>,
    child: Option<Guard>,
    _profile: TempDir,
}

/// A pipe whose two ends are above fd 9 (so that putting them at 3 and 4 in the child
/// cannot overwrite one with the other) and close on exec.
fn high_pipe() -> (OwnedFd, OwnedFd) {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
    let lift = |fd: OwnedFd| -> OwnedFd {
        let raw = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(10)).expect("F_DUPFD_CLOEXEC");
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) just returned this new descriptor; nothing
        // else owns it.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
    };
    (lift(read), lift(write))
}

impl Browser {
    /// Starts Chromium, opens a page of [`VIEWPORT`] and returns once it answers.
    pub fn start() -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("qsd-chromium-")
            .tempdir()
            .expect("temp dir");
        let (child_reads, commands) = high_pipe();
        let (replies, child_writes) = high_pipe();
        let log = File::create(profile.path().join("chromium.log")).expect("chromium log");
        let mut command = Command::new(CHROMIUM);
        command
            .args(FLAGS)
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ))
            .arg("about:blank")
            .env("DBUS_SESSION_BUS_ADDRESS", "disabled:")
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let (read_fd, write_fd) = (child_reads.as_raw_fd(), child_writes.as_raw_fd());
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // dup2, which is async-signal-safe; both sources are open descriptors above 9
        // (high_pipe), so neither is overwritten by the other's target.
        unsafe {
            command.pre_exec(move || {
                for (from, to) in [(read_fd, 3), (write_fd, 4)] {
                    if nix::libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("cannot start chromium");
        // The child has its copies; ours would keep the reply pipe from ending.
        drop((child_reads, child_writes));
        let (sender, messages) = mpsc::channel();
        let reader = std::thread::spawn(move || read_messages(File::from(replies), sender));
        let mut browser = Browser {
            commands: File::from(commands),
            messages,
            next_id: 0,
            session: String::new(),
            errors: Vec::new(),
            reader: Some(reader),
            child: Some(Guard::new("chromium", child)),
            _profile: profile,
        };
        browser.open_page();
        browser
    }

    fn open_page(&mut self) {
        let target = self.call_browser("Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = self.call_browser(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        self.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        for method in ["Page.enable", "Runtime.enable", "Log.enable"] {
            self.call(method, json!({}));
        }
        let (width, height) = VIEWPORT;
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
    }

    /// A command to the page; its result, or a panic naming the error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.send_within(method, params, session, DEADLINE)
    }

    /// Sends a command and waits up to `timeout` for its reply.
    fn send_within(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
        timeout: Duration,
    ) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("encode a CDP message");
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .unwrap_or_else(|err| panic!("chromium does not take commands: {err}"));
        self.reply_to(id, method, timeout)
    }

    fn reply_to(&mut self, id: u64, method: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.messages.recv_timeout(left) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => panic!("chromium did not answer {method}"),
                Err(RecvTimeoutError::Disconnected) => panic!("chromium exited during {method}"),
            };
            if message["id"].as_u64() == Some(id) {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
            self.note_event(&message);
        }
    }

    /// Keeps what the page reported as an error, for [`Browser::page_errors`].
    fn note_event(&mut self, message: &Value) {
        let params = &message["params"];
        match message["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                let text = details["exception"]["description"]
                    .as_str()
                    .or(details["text"].as_str())
                    .unwrap_or("exception");
                self.errors.push(format!("exception: {text}"));
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        a["value"]
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| a["description"].to_string())
                    })
                    .collect();
                self.errors
                    .push(format!("console.error: {}", args.join(" ")));
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                let entry = &params["entry"];
                self.errors.push(format!(
                    "log: {} {}",
                    entry["text"].as_str().unwrap_or(""),
                    entry["url"].as_str().unwrap_or("")
                ));
            }
            _ => {}
        }
    }

    /// Errors and exceptions the page reported so far.
    pub fn page_errors(&mut self) -> Vec<String> {
        while let Ok(message) = self.messages.try_recv() {
            self.note_event(&message);
        }
        self.errors.clone()
    }

    /// Loads `url` in the page (returns when the navigation is committed; wait for
    /// what the test needs with [`Browser::wait_until`]).
    pub fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({ "url": url }));
        if let Some(error) = result.get("errorText") {
            panic!("cannot load {url}: {error}");
        }
    }

    /// Evaluates the JS `expression` in the page (awaiting a promise); its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        self.eval_within(expression, DEADLINE)
    }

    /// [`Browser::eval`] of an expression that may take up to `timeout` to settle.
    fn eval_within(&mut self, expression: &str, timeout: Duration) -> Value {
        let session = self.session.clone();
        let result = self.send_within(
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            Some(&session),
            timeout,
        );
        if let Some(details) = result.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .unwrap_or_else(|| details["text"].as_str().unwrap_or("exception"));
            panic!("JS failed: {text}\nin: {expression}");
        }
        result["result"]["value"].clone()
    }

    /// Re-checks the JS expression `predicate` in the page every 20 ms until it is
    /// truthy (returns its value as JSON, `true` for what JSON cannot carry, such as an
    /// element) or `timeout` passes (returns None).
    pub fn wait_until(&mut self, predicate: &str, timeout: Duration) -> Option<Value> {
        let script = format!(
            r#"(async () => {{
                const check = () => {{ try {{ return ({predicate}); }} catch (e) {{ return undefined; }} }};
                // What JSON can carry of the value (an element becomes true).
                const plain = v => {{ try {{ return JSON.parse(JSON.stringify(v)) ?? true; }} catch (e) {{ return true; }} }};
                const deadline = Date.now() + {ms};
                for (;;) {{
                    const value = check();
                    if (value) return {{ ok: true, value: plain(value) }};
                    if (Date.now() >= deadline) return {{ ok: false }};
                    await new Promise(resolve => setTimeout(resolve, 20));
                }}
            }})()"#,
            ms = timeout.as_millis()
        );
        // The page gives up at `timeout`; its answer then takes a moment to arrive.
        let outcome = self.eval_within(&script, timeout + Duration::from_secs(10));
        (outcome["ok"] == true).then(|| outcome["value"].clone())
    }

    /// Like [`Browser::wait_until`], panicking with `what` and the page's errors after
    /// [`DEADLINE`].
    #[track_caller]
    pub fn expect(&mut self, predicate: &str, what: &str) -> Value {
        match self.wait_until(predicate, DEADLINE) {
            Some(value) => value,
            None => {
                let errors = self.page_errors();
                panic!("{what}: not so after {DEADLINE:?}; page errors: {errors:#?}")
            }
        }
    }

    /// Puts the files at `paths` into the file input the JS `expression` evaluates to
    /// (as if the user chose them; the page sees a `change` event).
    pub fn set_files(&mut self, expression: &str, paths: &[&Path]) {
        let found = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": false }),
        );
        let object = found["result"]["objectId"]
            .as_str()
            .unwrap_or_else(|| panic!("no element for {expression}: {found}"))
            .to_owned();
        let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        self.call(
            "DOM.setFileInputFiles",
            json!({ "files": files, "objectId": object }),
        );
    }

    /// Lets downloads go to `dir`, under the names the server gives.
    pub fn allow_downloads(&mut self, dir: &Path) {
        self.call_browser(
            "Browser.setDownloadBehavior",
            json!({ "behavior": "allow", "downloadPath": dir.display().to_string() }),
        );
    }

    /// Saves the page as a PNG file at `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let data = decode_base64(shot["data"].as_str().expect("screenshot data"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, data).expect("write a screenshot");
        tracing::info!(op = "write", path = %path.display(), "screenshot");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Guard::pid)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask first; SIGTERM (and SIGKILL after the deadline) if it does not go.
        let _ = self
            .commands
            .write_all(b"{\"id\":0,\"method\":\"Browser.close\",\"params\":{}}\0");
        if let Some(mut child) = self.child.take() {
            if child.wait_for_exit(Duration::from_secs(5)).is_none() {
                child.terminate();
            }
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Splits what the browser writes at NUL bytes and passes each message on, until the
/// pipe ends (the browser exited) or nobody listens.
fn read_messages(pipe: File, sender: mpsc::Sender<Value>) {
    let mut reader = BufReader::new(pipe);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(0, &mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buffer.last() == Some(&0) {
            buffer.pop();
        }
        let Ok(message) = serde_json::from_slice::<Value>(&buffer) else {
            continue;
        };
        if sender.send(message).is_err() {
            return;
        }
    }
}

/// Standard base64 (what CDP uses for binary data) to bytes.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {:?}", other as char),
        }
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | value(c) << (18 - 6 * i));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn base64_decodes_every_padding() {
        assert_eq!(decode_base64("TWFu"), b"Man");
        assert_eq!(decode_base64("TWE="), b"Ma");
        assert_eq!(decode_base64("TQ=="), b"M");
        assert_eq!(decode_base64(""), b"");
        assert_eq!(decode_base64("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    }
}
