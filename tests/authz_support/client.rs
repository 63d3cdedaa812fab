//! A D-Bus client that runs as any user: a small python3-dbus script (written into a
//! temp directory every user can read) takes a list of calls as JSON on stdin, makes
//! them in order over one connection and prints one JSON reply per call — the values
//! returned, or the D-Bus error name and message. Run as root directly, or as another
//! user through `setpriv --reuid --regid --init-groups`, since the bus takes a caller's
//! uid from its socket. The bus address goes through the environment.
//!
//! Arguments are JSON, converted by python3-dbus along the call's signature; a value
//! whose D-Bus type JSON cannot tell (inside a variant: `t`, `i`, `u`, `o`) is written
//! `{"@": "t", "v": 1048576}` (see [`t`], [`i`], [`u`], [`o`]). Returned fds are closed
//! and reported as `{"fd": true}`. Each call can carry the ALLOW_INTERACTIVE_AUTHORIZATION
//! header flag.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;

use qubes_storaged_testkit::users::{setpriv, Account, Groups};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

pub const SERVICE: &str = "org.qubes.Storage";
pub const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

const SCRIPT: &str = r#"
import json, os, sys
import dbus, dbus.lowlevel

TYPES = {'s': dbus.String, 'o': dbus.ObjectPath, 'b': dbus.Boolean, 'i': dbus.Int32,
         'u': dbus.UInt32, 'x': dbus.Int64, 't': dbus.UInt64, 'd': dbus.Double}

def typed(value):
    if isinstance(value, dict) and set(value) == {'@', 'v'}:
        return TYPES[value['@']](value['v'])
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return value

def plain(value):
    if isinstance(value, dbus.types.UnixFd):
        os.close(value.take())
        return {'fd': True}
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)

def call(bus, spec):
    msg = dbus.lowlevel.MethodCallMessage(spec['dest'], spec['path'], spec['iface'],
                                          spec['method'])
    if spec['signature']:
        msg.append(signature=spec['signature'], *[typed(arg) for arg in spec['args']])
    msg.set_allow_interactive_authorization(spec['interactive'])
    try:
        reply = bus.send_message_with_reply_and_block(msg, 60.0)
        return {'ok': [plain(arg) for arg in reply.get_args_list()]}
    except dbus.exceptions.DBusException as err:
        return {'error': err.get_dbus_name(), 'message': err.get_dbus_message() or ''}

bus = dbus.bus.BusConnection(os.environ['QSD_TEST_BUS_ADDRESS'])
json.dump([call(bus, spec) for spec in json.load(sys.stdin)], sys.stdout)
"#;

/// Who makes the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Root,
    User { uid: u32, gid: u32 },
}

impl From<Account> for Who {
    fn from(account: Account) -> Who {
        Who::User {
            uid: account.uid,
            gid: account.gid,
        }
    }
}

/// One method call.
#[derive(Debug, Clone, Serialize)]
pub struct DbusCall {
    pub dest: String,
    pub path: String,
    pub iface: String,
    pub method: String,
    pub signature: String,
    pub args: Vec<Value>,
    pub interactive: bool,
}

impl DbusCall {
    /// A call to the service, without the interactive flag.
    pub fn new(path: &str, iface: &str, method: &str, signature: &str, args: Vec<Value>) -> Self {
        DbusCall {
            dest: SERVICE.to_owned(),
            path: path.to_owned(),
            iface: iface.to_owned(),
            method: method.to_owned(),
            signature: signature.to_owned(),
            args,
            interactive: false,
        }
    }

    /// The same call to another destination (e.g. the bus driver).
    pub fn to(mut self, dest: &str) -> Self {
        self.dest = dest.to_owned();
        self
    }

    /// The same call with ALLOW_INTERACTIVE_AUTHORIZATION set.
    pub fn interactive(mut self) -> Self {
        self.interactive = true;
        self
    }

    /// Does the call end with the contract's `a{sv} options`?
    pub fn takes_options(&self) -> bool {
        self.signature.ends_with("a{sv}") && self.iface != PROPERTIES
    }

    /// The same call with `auth.no_user_interaction = true` added to its options.
    pub fn no_user_interaction(mut self) -> Self {
        assert!(self.takes_options(), "{} takes no options", self.describe());
        let options = self.args.last_mut().expect("options").as_object_mut();
        let options = options.expect("options are a JSON object");
        options.insert("auth.no_user_interaction".to_owned(), json!(true));
        self
    }

    /// `Iface.Method(args) on path [interactive]`, for messages.
    pub fn describe(&self) -> String {
        let flag = if self.interactive {
            " [interactive]"
        } else {
            ""
        };
        let args = serde_json::to_string(&self.args).unwrap_or_default();
        format!(
            "{}.{}{} on {}{flag}",
            self.iface, self.method, args, self.path
        )
    }
}

/// `Properties.Get(iface, name)`.
pub fn get_property(path: &str, iface: &str, name: &str) -> DbusCall {
    DbusCall::new(
        path,
        PROPERTIES,
        "Get",
        "ss",
        vec![json!(iface), json!(name)],
    )
}

/// `Properties.GetAll(iface)`.
pub fn get_all(path: &str, iface: &str) -> DbusCall {
    DbusCall::new(path, PROPERTIES, "GetAll", "s", vec![json!(iface)])
}

/// `Properties.Set(iface, name, value)`; `value` must carry its type when JSON cannot.
pub fn set_property(path: &str, iface: &str, name: &str, value: Value) -> DbusCall {
    let args = vec![json!(iface), json!(name), value];
    DbusCall::new(path, PROPERTIES, "Set", "ssv", args)
}

/// `Introspectable.Introspect()`.
pub fn introspect(path: &str) -> DbusCall {
    DbusCall::new(
        path,
        "org.freedesktop.DBus.Introspectable",
        "Introspect",
        "",
        vec![],
    )
}

/// `ObjectManager.GetManagedObjects()` on the service's root object.
pub fn get_managed_objects() -> DbusCall {
    let iface = "org.freedesktop.DBus.ObjectManager";
    DbusCall::new("/org/qubes/Storage", iface, "GetManagedObjects", "", vec![])
}

/// A `t` value.
pub fn t(value: u64) -> Value {
    json!({"@": "t", "v": value})
}

/// An `i` value.
pub fn i(value: i32) -> Value {
    json!({"@": "i", "v": value})
}

/// A `u` value.
pub fn u(value: u32) -> Value {
    json!({"@": "u", "v": value})
}

/// An `o` value.
pub fn o(path: &str) -> Value {
    json!({"@": "o", "v": path})
}

/// What one call ended with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    Ok { ok: Vec<Value> },
    Error { error: String, message: String },
}

impl Reply {
    /// The returned values; panics with `call` on an error.
    #[track_caller]
    pub fn values(&self, call: &DbusCall) -> &[Value] {
        match self {
            Reply::Ok { ok } => ok,
            Reply::Error { error, message } => {
                panic!("{} failed: {error}: {message}", call.describe())
            }
        }
    }

    /// The one returned value; panics with `call` on an error.
    #[track_caller]
    pub fn value(&self, call: &DbusCall) -> &Value {
        let values = self.values(call);
        assert_eq!(values.len(), 1, "{} returned {values:?}", call.describe());
        &values[0]
    }

    pub fn error_name(&self) -> Option<&str> {
        match self {
            Reply::Ok { .. } => None,
            Reply::Error { error, .. } => Some(error),
        }
    }
}

/// The script, in a directory every user can read.
pub struct PyClient {
    dir: TempDir,
}

impl PyClient {
    pub fn new() -> PyClient {
        let dir = tempfile::Builder::new()
            .prefix("qsd-authz-client-")
            .tempdir()
            .expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let script = dir.path().join("call.py");
        fs::write(&script, SCRIPT).expect("write the client script");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).expect("chmod");
        PyClient { dir }
    }

    fn script(&self) -> PathBuf {
        self.dir.path().join("call.py")
    }

    /// Makes `calls` in order as `who` over one connection to the bus at `address`.
    pub async fn call_all(&self, address: &str, who: Who, calls: &[DbusCall]) -> Vec<Reply> {
        let mut command = self.command(who);
        command
            .env_clear()
            .env("QSD_TEST_BUS_ADDRESS", address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start python3");
        let input = serde_json::to_vec(calls).expect("calls as JSON");
        let mut stdin = child.stdin.take().expect("python3 stdin");
        stdin.write_all(&input).await.expect("write the calls");
        drop(stdin);
        let output = child.wait_with_output().await.expect("wait for python3");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "the client failed as {who:?}: {stderr}"
        );
        let replies: Vec<Reply> = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("client output is not JSON ({err}): {stderr}"));
        assert_eq!(replies.len(), calls.len(), "one reply per call");
        replies
    }

    /// Makes one call as `who`.
    pub async fn call(&self, address: &str, who: Who, call: &DbusCall) -> Reply {
        let mut replies = self
            .call_all(address, who, std::slice::from_ref(call))
            .await;
        replies.pop().expect("one reply")
    }

    fn command(&self, who: Who) -> tokio::process::Command {
        let mut command = match who {
            Who::Root => tokio::process::Command::new("/usr/bin/python3"),
            Who::User { uid, gid } => {
                let mut setpriv = setpriv(uid, gid, Groups::Login);
                setpriv.arg("/usr/bin/python3");
                tokio::process::Command::from(setpriv)
            }
        };
        command.arg(self.script()).current_dir("/");
        command
    }
}
