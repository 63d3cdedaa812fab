//! polkit rules scoped by the details the service passes (contract rev 2). A rule lets
//! alice manage, run, import into and export only volumes whose vid starts with
//! `appvms/alice-`, and create pools only below one directory. Then:
//!
//! - reading another volume's data through one of hers is refused: CreateVolume with a
//!   `source` she may not export, and ImportVolume from it, are also checked against
//!   `org.qubes.storage.export` for the source — and nothing is created or changed;
//! - from her own volumes she may;
//! - CreatePool passes the detail `dir_path`, resolved: the same rule lets her create a
//!   pool in her directory and nowhere else, however the path is spelled.

mod authz_support;
mod common;

use std::path::PathBuf;

use authz_support::client::{o, DbusCall, PyClient, Reply, Who};
use authz_support::ACCESS_DENIED;
use common::{opts, FsType, Harness, MIB};
use qubes_storaged_testkit::polkit::RuleFile;
use qubes_storaged_testkit::users::{UserSpec, Users};
use serde_json::json;
use zbus::OwnedObjectPath;

const ALICE: &str = "qsd-scope-alice";
const RULE_PATH: &str = "/etc/polkit-1/rules.d/49-qubes-storaged-bus-authz-scope.rules";
const VAULT: &str = "appvms/vault/private";
const HERS: &str = "appvms/alice-home/private";
/// Where alice may create pools (a directory below the test's mount).
const HER_DIR: &str = "alice-pools";

fn rule_text() -> String {
    format!(
        r#"// Installed by qubes-storaged's tests/bus_authz_scope.rs while it runs; safe to delete.
polkit.addRule(function(action, subject) {{
    if (subject.user != "{ALICE}")
        return polkit.Result.NOT_HANDLED;
    var volumes = ["org.qubes.storage.manage-volumes", "org.qubes.storage.run-volumes",
                   "org.qubes.storage.import", "org.qubes.storage.export"];
    var vid = action.lookup("vid");
    if (volumes.indexOf(action.id) >= 0 && vid && vid.indexOf("appvms/alice-") == 0)
        return polkit.Result.YES;
    var dir = action.lookup("dir_path");
    if (action.id == "org.qubes.storage.manage-pools" && dir &&
        dir.indexOf("/{HER_DIR}/") > 0)
        return polkit.Result.YES;
    return polkit.Result.NO;
}});
"#
    )
}

struct World {
    h: Harness,
    client: PyClient,
    alice: Who,
    pool: OwnedObjectPath,
    vault: OwnedObjectPath,
    hers: OwnedObjectPath,
    mount: PathBuf,
    _rule: RuleFile,
    _users: Users,
}

impl World {
    async fn start() -> World {
        let users = Users::hold(
            "qubes-storaged-bus-authz-scope-users",
            &[],
            &[UserSpec {
                name: ALICE,
                groups: &[],
            }],
        );
        let alice = Who::from(users.account(ALICE));
        let rule = RuleFile::hold(
            "qubes-storaged-bus-authz-scope-rule",
            RULE_PATH,
            rule_text(),
        );
        let mut h = Harness::with_polkit().await;
        let mount = h.mount(FsType::Btrfs, FsType::Btrfs.min_size());
        let tank = mount.join("tank");
        let options = common::opts_of([("dir_path", zbus::Variant::from(tank.to_str().unwrap()))]);
        let pool = h
            .manager()
            .await
            .create_pool("tank", "file-reflink", options)
            .await
            .expect("CreatePool");
        let vault = h.origin_volume(&pool, VAULT, MIB).await;
        let hers = h.origin_volume(&pool, HERS, MIB).await;
        World {
            h,
            client: PyClient::new(),
            alice,
            pool,
            vault,
            hers,
            mount,
            _rule: rule,
            _users: users,
        }
    }

    async fn as_alice(&self, call: &DbusCall) -> Reply {
        self.client
            .call(self.h.bus.address(), self.alice, call)
            .await
    }

    async fn vids(&self) -> Vec<String> {
        let paths = self.h.pool(&self.pool).await.list_volumes(opts()).await;
        let mut vids = Vec::new();
        for path in paths.unwrap() {
            vids.push(self.h.volume(&path).await.vid().await.unwrap());
        }
        vids
    }
}

fn create_volume(pool: &OwnedObjectPath, vid: &str, source: Option<&str>) -> DbusCall {
    let mut config = json!({"size": {"@": "t", "v": MIB}, "rw": true});
    if let Some(source) = source {
        config["snap_on_start"] = json!(true);
        config["source"] = json!(source);
        config.as_object_mut().unwrap().remove("size");
    }
    DbusCall::new(
        pool.as_str(),
        "org.qubes.Storage.Pool",
        "CreateVolume",
        "sa{sv}a{sv}",
        vec![json!(vid), config, json!({})],
    )
}

fn import_volume(target: &OwnedObjectPath, source: &OwnedObjectPath) -> DbusCall {
    DbusCall::new(
        target.as_str(),
        "org.qubes.Storage.Volume",
        "ImportVolume",
        "oa{sv}",
        vec![o(source.as_str()), json!({})],
    )
}

fn create_pool(name: &str, dir: &std::path::Path) -> DbusCall {
    DbusCall::new(
        "/org/qubes/Storage",
        "org.qubes.Storage.Manager",
        "CreatePool",
        "ssa{sv}",
        vec![
            json!(name),
            json!("file-reflink"),
            json!({"dir_path": dir.to_str().unwrap()}),
        ],
    )
}

#[track_caller]
fn assert_denied(reply: &Reply, naming: &str) {
    assert_eq!(reply.error_name(), Some(ACCESS_DENIED), "{reply:?}");
    let Reply::Error { message, .. } = reply else {
        unreachable!()
    };
    assert!(message.contains(naming), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_of_a_volume_she_may_not_export_is_refused_and_nothing_is_created() {
    let w = World::start().await;
    let before = w.vids().await;
    let reply = w
        .as_alice(&create_volume(&w.pool, "appvms/alice-x/root", Some(VAULT)))
        .await;
    assert_denied(&reply, VAULT);
    assert_eq!(w.vids().await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_of_her_own_volume_is_allowed() {
    let w = World::start().await;
    let reply = w
        .as_alice(&create_volume(&w.pool, "appvms/alice-x/root", Some(HERS)))
        .await;
    assert!(reply.error_name().is_none(), "{reply:?}");
    assert!(w.vids().await.contains(&"appvms/alice-x/root".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clone_from_a_volume_she_may_not_export_is_refused_and_changes_nothing() {
    let w = World::start().await;
    let before = w.h.volume(&w.hers).await.revisions().await.unwrap();
    let reply = w.as_alice(&import_volume(&w.hers, &w.vault)).await;
    assert_denied(&reply, VAULT);
    assert_eq!(w.h.volume(&w.hers).await.revisions().await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clone_between_her_own_volumes_is_allowed() {
    let w = World::start().await;
    let other =
        w.h.origin_volume(&w.pool, "appvms/alice-two/private", MIB)
            .await;
    let reply = w.as_alice(&import_volume(&other, &w.hers)).await;
    assert!(reply.error_name().is_none(), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn create_pool_passes_the_directory_to_rules() {
    let w = World::start().await;
    let mine = w.mount.join(HER_DIR).join("p");
    std::fs::create_dir_all(mine.parent().unwrap()).unwrap();
    let reply = w.as_alice(&create_pool("mine", &mine)).await;
    assert!(reply.error_name().is_none(), "{reply:?}");
    let elsewhere = w.mount.join("other");
    let reply = w.as_alice(&create_pool("theirs", &elsewhere)).await;
    assert_denied(&reply, "theirs");
    assert!(
        !elsewhere.exists(),
        "a refused CreatePool created its directory"
    );
    // The rule sees where the directory is, not how it is spelled: through `..` or a
    // symlink out of her directory, it is elsewhere.
    let dotdot = w.mount.join(HER_DIR).join("..").join("sneaky");
    let reply = w.as_alice(&create_pool("sneaky", &dotdot)).await;
    assert_denied(&reply, "sneaky");
    assert!(!w.mount.join("sneaky").exists(), "created through ..");
    let outside = w.mount.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, w.mount.join(HER_DIR).join("link")).unwrap();
    let linked = w.mount.join(HER_DIR).join("link").join("p");
    let reply = w.as_alice(&create_pool("linked", &linked)).await;
    assert_denied(&reply, "linked");
    assert!(!outside.join("p").exists(), "created through a symlink");
}

fn import_data_end(target: &OwnedObjectPath, success: bool) -> DbusCall {
    DbusCall::new(
        target.as_str(),
        "org.qubes.Storage.Volume",
        "ImportDataEnd",
        "ba{sv}",
        vec![json!(success), json!({})],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_allowed_to_import_cannot_end_another_callers_import() {
    let w = World::start().await;
    let volume = w.h.volume(&w.hers).await;
    let fd = volume
        .import_data(MIB, opts())
        .await
        .expect("root's ImportData");
    let reply = w.as_alice(&import_data_end(&w.hers, true)).await;
    assert_eq!(
        reply.error_name(),
        Some("org.qubes.Storage.Error.Busy"),
        "{reply:?}"
    );
    drop(fd);
    volume
        .import_data_end(false, opts())
        .await
        .expect("the owner ends its import");
}
