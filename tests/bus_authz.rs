//! The contract's Authorization table, proven on the real daemon (`tests/common`'s
//! private bus, polkitd with the project's actions, `qubes-storaged`, a pool on a real
//! btrfs) with real unprivileged callers (system users made for the test, calling
//! through python3-dbus under `setpriv`):
//!
//! - root may call every mutating method and write every writable property;
//! - a user polkit knows nothing about is refused every one of them, with
//!   `InteractiveAuthorizationRequired` when the call does not allow interaction (no
//!   header flag, or `auth.no_user_interaction`) and `AccessDenied` when it does (there
//!   is no authentication agent), in one sentence naming the object — and nothing
//!   changes: not a file below the pool's filesystem (names, sizes, inodes, mtimes,
//!   ctimes, bytes), not the state directory, not a property;
//! - the same user may make every read, MeasureSpace included;
//! - a polkit rule granting one group one action (`run-volumes`) lets a member start
//!   and stop volumes and nothing else, and leaves everyone else refused.
//!
//! Fixtures: `tests/authz_support` (client, users, rule, tree snapshots).

mod authz_support;
mod common;

use std::path::{Path, PathBuf};

use authz_support::accounts::{Accounts, RunnersRule};
use authz_support::client::{
    get_all, get_managed_objects, get_property, i, introspect, o, set_property, t, DbusCall,
    PyClient, Reply, Who,
};
use authz_support::snapshot::Tree;
use authz_support::{ACCESS_DENIED, INTERACTION_REQUIRED};
use common::{opts, opts_of, FsType, Harness, MIB};
use serde_json::{json, Value};
use zbus::{OwnedObjectPath, Variant};

const MANAGER_PATH: &str = "/org/qubes/Storage";
const MANAGER: &str = "org.qubes.Storage.Manager";
const POOL: &str = "org.qubes.Storage.Pool";
const VOLUME: &str = "org.qubes.Storage.Volume";

/// The volumes of the fixture, all in pool `tank`.
const WORK: &str = "appvms/work/private";
const RUN: &str = "appvms/run/private";
const IDLE: &str = "appvms/idle/private";
const IMPORTING: &str = "appvms/imp/private";
const DOOMED: &str = "appvms/gone/private";
const VOLATILE: &str = "appvms/vol/volatile";
/// What CreateVolume would make.
const NEW: &str = "appvms/new/private";

/// The fixture's objects, by role.
struct Objects {
    tank: String,
    spare: String,
    /// Stopped, one revision: the target of most volume methods.
    work: String,
    /// Started: what Stop would change.
    run: String,
    /// Stopped: what Start would change, and ImportVolume's source.
    idle: String,
    /// An import in progress: what ImportDataEnd would commit.
    importing: String,
    /// Stopped: what Remove would remove.
    doomed: String,
    /// A volatile volume (rw, neither snap_on_start nor save_on_stop), which may be
    /// made ephemeral.
    volatile: String,
}

/// Everything one test needs. Fields drop in order: the service stops (and its
/// filesystem is unmounted) before the users and the rule go.
struct World {
    h: Harness,
    objects: Objects,
    mount: PathBuf,
    client: PyClient,
    accounts: Accounts,
    _rule: Option<RunnersRule>,
}

/// A mutating call and the object its refusal must name.
struct Mutation {
    call: DbusCall,
    object: String,
}

/// Everything a refused call must not change.
#[derive(Debug, PartialEq)]
struct State {
    pool_fs: Tree,
    state_dir: Tree,
    objects: Value,
}

impl World {
    async fn start() -> World {
        World::start_with(false).await
    }

    async fn with_runners_rule() -> World {
        World::start_with(true).await
    }

    async fn start_with(rule: bool) -> World {
        let accounts = Accounts::hold();
        // Before polkitd starts, so that it reads the rule at once.
        let rule = rule.then(RunnersRule::hold);
        let mut h = Harness::with_polkit().await;
        let mount = h.mount(FsType::Btrfs, FsType::Btrfs.min_size());
        let objects = make_objects(&h, &mount).await;
        World {
            h,
            objects,
            mount,
            client: PyClient::new(),
            accounts,
            _rule: rule,
        }
    }

    fn address(&self) -> &str {
        self.h.bus.address()
    }

    async fn call_all(&self, who: Who, calls: &[DbusCall]) -> Vec<Reply> {
        self.client.call_all(self.address(), who, calls).await
    }

    async fn call(&self, who: Who, call: &DbusCall) -> Reply {
        self.client.call(self.address(), who, call).await
    }

    fn plain(&self) -> Who {
        Who::from(self.accounts.plain)
    }

    fn runner(&self) -> Who {
        Who::from(self.accounts.runner)
    }

    /// The files and the properties, as root sees them, once the daemon's work after
    /// its replies is done (precaches made, discarded files deleted).
    async fn state(&self) -> State {
        self.h.settled().await;
        let objects = self.call(Who::Root, &get_managed_objects()).await;
        State {
            pool_fs: Tree::of(&self.mount),
            state_dir: Tree::of(&self.h.state_dir()),
            objects: without_live_values(objects.value(&get_managed_objects()).clone()),
        }
    }

    async fn started(&self, volume: &str) -> bool {
        let path = OwnedObjectPath::try_from(volume).unwrap();
        self.h.volume(&path).await.started().await.expect("Started")
    }
}

/// Pools `tank` and `spare` (empty) on one btrfs, and the volumes of [`Objects`].
async fn make_objects(h: &Harness, mount: &Path) -> Objects {
    let tank = create_pool(h, "tank", &mount.join("tank")).await;
    let spare = create_pool(h, "spare", &mount.join("spare")).await;
    let volume = |vid| h.origin_volume(&tank, vid, MIB);
    let work = volume(WORK).await;
    let run = volume(RUN).await;
    let idle = volume(IDLE).await;
    let importing = volume(IMPORTING).await;
    let doomed = volume(DOOMED).await;
    let config = opts_of([("size", Variant::from(MIB)), ("rw", Variant::from(true))]);
    let volatile = h.create_volume(&tank, VOLATILE, config).await;
    let work_proxy = h.volume(&work).await;
    work_proxy.start(opts()).await.expect("Start work");
    work_proxy.stop(opts()).await.expect("Stop work");
    assert_eq!(work_proxy.revisions().await.unwrap().len(), 1, "a revision");
    h.volume(&run).await.start(opts()).await.expect("Start run");
    let import = h.volume(&importing).await.import_data(MIB, opts()).await;
    drop(import.expect("ImportData"));
    let text = |path: OwnedObjectPath| path.as_str().to_owned();
    Objects {
        tank: text(tank),
        spare: text(spare),
        work: text(work),
        run: text(run),
        idle: text(idle),
        importing: text(importing),
        doomed: text(doomed),
        volatile: text(volatile),
    }
}

async fn create_pool(h: &Harness, name: &str, dir: &Path) -> OwnedObjectPath {
    let options = opts_of([("dir_path", Variant::from(dir.to_str().unwrap()))]);
    let manager = h.manager().await;
    manager
        .create_pool(name, "file-reflink", options)
        .await
        .unwrap_or_else(|err| panic!("CreatePool {name}: {err}"))
}

/// GetManagedObjects without the values that move by themselves (`UsageDetails` is a
/// live statvfs of the filesystem).
fn without_live_values(mut value: Value) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.remove("UsageDetails");
        for item in map.values_mut() {
            *item = without_live_values(item.take());
        }
    }
    value
}

// ---- the calls ----

/// Every mutating method and property write of the contract, on the fixture, in an
/// order root can run them in one after the other.
fn mutations(objects: &Objects, mount: &Path) -> Vec<Mutation> {
    let mut all = manager_mutations(mount);
    all.extend(pool_mutations(objects));
    all.extend(volume_mutations(objects));
    all
}

fn mutation(call: DbusCall, object: &str) -> Mutation {
    Mutation {
        call,
        object: object.to_owned(),
    }
}

fn manager_mutations(mount: &Path) -> Vec<Mutation> {
    let fresh_dir = mount.join("fresh").to_str().unwrap().to_owned();
    let create = json!({"dir_path": fresh_dir, "setup_check": false});
    let args = vec![json!("fresh"), json!("file-reflink"), create];
    let create = DbusCall::new(MANAGER_PATH, MANAGER, "CreatePool", "ssa{sv}", args);
    let args = vec![json!("spare"), json!({})];
    let remove = DbusCall::new(MANAGER_PATH, MANAGER, "RemovePool", "sa{sv}", args);
    vec![
        mutation(create, "pool fresh"),
        mutation(remove, "pool spare"),
    ]
}

fn pool_mutations(objects: &Objects) -> Vec<Mutation> {
    let tank = &objects.tank;
    let args = vec![json!(NEW), json!({"size": t(MIB)}), json!({})];
    let create = DbusCall::new(tank, POOL, "CreateVolume", "sa{sv}a{sv}", args);
    vec![
        mutation(
            set_property(tank, POOL, "RevisionsToKeep", i(2)),
            "pool tank",
        ),
        mutation(
            set_property(tank, POOL, "EphemeralVolatile", json!(true)),
            "pool tank",
        ),
        mutation(create, &format!("volume {NEW} in pool tank")),
    ]
}

fn volume_mutations(objects: &Objects) -> Vec<Mutation> {
    let on = |path: &str, vid: &str, method: &str, signature: &str, args: Vec<Value>| {
        let call = DbusCall::new(path, VOLUME, method, signature, args);
        mutation(call, &format!("volume {vid} in pool tank"))
    };
    let write = |path: &str, vid: &str, property: &str, value: Value| {
        let call = set_property(path, VOLUME, property, value);
        mutation(call, &format!("volume {vid} in pool tank"))
    };
    let none = || json!({});
    let (work, importing) = (&objects.work, &objects.importing);
    vec![
        on(work, WORK, "Resize", "ta{sv}", vec![t(2 * MIB), none()]),
        on(work, WORK, "Revert", "sa{sv}", vec![json!(""), none()]),
        on(
            work,
            WORK,
            "SetRevisionDetails",
            "sa{sv}a{sv}",
            vec![
                json!(""),
                json!({"description": "kept", "pinned": true}),
                none(),
            ],
        ),
        on(work, WORK, "Export", "a{sv}", vec![none()]),
        on(work, WORK, "ExportDelta", "sa{sv}", vec![json!(""), none()]),
        on(
            work,
            WORK,
            "ImportVolume",
            "oa{sv}",
            vec![o(&objects.idle), none()],
        ),
        on(work, WORK, "ImportData", "ta{sv}", vec![t(MIB), none()]),
        on(
            importing,
            IMPORTING,
            "ImportDataEnd",
            "ba{sv}",
            vec![json!(true), none()],
        ),
        write(work, WORK, "Rw", json!(false)),
        write(work, WORK, "RevisionsToKeep", i(3)),
        write(&objects.volatile, VOLATILE, "Ephemeral", json!(true)),
        on(&objects.idle, IDLE, "Start", "a{sv}", vec![none()]),
        on(&objects.run, RUN, "Stop", "a{sv}", vec![none()]),
        on(&objects.doomed, DOOMED, "Remove", "a{sv}", vec![none()]),
    ]
}

/// Each way of making `call` and the refusal the contract gives a caller without
/// rights: interaction not allowed → InteractiveAuthorizationRequired; allowed (flag,
/// and the option not set) but no agent → AccessDenied. (Property writes never prompt,
/// `Service::authorize_property_write`, but with the flag they too are AccessDenied.)
fn denial_variants(call: &DbusCall) -> Vec<(DbusCall, &'static str)> {
    let mut variants = vec![
        (call.clone(), INTERACTION_REQUIRED),
        (call.clone().interactive(), ACCESS_DENIED),
    ];
    if call.takes_options() {
        variants.push((call.clone().no_user_interaction(), INTERACTION_REQUIRED));
        let both = call.clone().interactive().no_user_interaction();
        variants.push((both, INTERACTION_REQUIRED));
    }
    variants
}

/// Every read of the contract on every object, named from root's GetManagedObjects.
async fn reads(world: &World) -> Vec<DbusCall> {
    let managed = world.state().await.objects;
    let mut calls = method_reads(&world.objects);
    let manager_properties = ["Version", "Drivers", "Features"];
    calls.extend(property_reads(MANAGER_PATH, MANAGER, &manager_properties));
    for (path, interfaces) in managed.as_object().expect("a{oa{sa{sv}}}") {
        calls.extend(object_reads(path, interfaces));
    }
    calls
}

/// The read methods of the Manager and the Pools, and introspection of the roots.
fn method_reads(roles: &Objects) -> Vec<DbusCall> {
    let manager = |method: &str, signature: &str, args: Vec<Value>| {
        DbusCall::new(MANAGER_PATH, MANAGER, method, signature, args)
    };
    let pool = |path: &str, method: &str, signature: &str, args: Vec<Value>| {
        DbusCall::new(path, POOL, method, signature, args)
    };
    let none = || json!({});
    vec![
        get_managed_objects(),
        manager("ListPools", "a{sv}", vec![none()]),
        manager("GetPool", "sa{sv}", vec![json!("tank"), none()]),
        manager("GetPool", "sa{sv}", vec![json!("spare"), none()]),
        pool(&roles.tank, "ListVolumes", "a{sv}", vec![none()]),
        pool(&roles.spare, "ListVolumes", "a{sv}", vec![none()]),
        pool(
            &roles.tank,
            "GetVolume",
            "sa{sv}",
            vec![json!(WORK), none()],
        ),
        introspect("/"),
        introspect(MANAGER_PATH),
    ]
}

/// Introspection, every property of every interface, and Verify of a volume.
fn object_reads(path: &str, interfaces: &Value) -> Vec<DbusCall> {
    let mut calls = vec![introspect(path)];
    for (iface, properties) in interfaces.as_object().expect("a{sa{sv}}") {
        let properties = properties.as_object().expect("a{sv}");
        let names: Vec<&str> = properties.keys().map(String::as_str).collect();
        calls.extend(property_reads(path, iface, &names));
    }
    if interfaces.get(VOLUME).is_some() {
        calls.push(DbusCall::new(
            path,
            VOLUME,
            "Verify",
            "a{sv}",
            vec![json!({})],
        ));
    }
    calls
}

/// GetAll, then Get of each property (and of UsageDetails, left out of the objects).
fn property_reads(path: &str, iface: &str, names: &[&str]) -> Vec<DbusCall> {
    let mut calls = vec![get_all(path, iface)];
    calls.extend(names.iter().map(|name| get_property(path, iface, name)));
    if iface == POOL {
        calls.push(get_property(path, iface, "UsageDetails"));
    }
    calls
}

/// Whether two callers must see the same reply: live values and introspection XML
/// (whose child order is not fixed) are left out.
fn comparable(call: &DbusCall) -> bool {
    let live = call.method == "Get" && call.args.get(1) == Some(&json!("UsageDetails"));
    !live && call.method != "Introspect"
}

// ---- checks ----

/// A call and the refusal it must get.
struct Refused {
    call: DbusCall,
    error: &'static str,
    /// What the message must name, e.g. "volume appvms/work/private in pool tank".
    object: String,
}

impl Mutation {
    /// Every way of making this call, with the refusal for a caller without rights.
    fn refusals(&self) -> Vec<Refused> {
        denial_variants(&self.call)
            .into_iter()
            .map(|(call, error)| self.refused(call, error))
            .collect()
    }

    fn refused(&self, call: DbusCall, error: &'static str) -> Refused {
        Refused {
            call,
            error,
            object: self.object.clone(),
        }
    }
}

/// Makes the calls of `expected` as `who`; a line for each reply that is not the
/// expected error with a message naming the object.
async fn refusal_mismatches(world: &World, who: Who, expected: &[Refused]) -> Vec<String> {
    let calls: Vec<DbusCall> = expected.iter().map(|r| r.call.clone()).collect();
    let replies = world.call_all(who, &calls).await;
    let mut mismatches = Vec::new();
    for (refused, reply) in expected.iter().zip(&replies) {
        let right = matches!(reply, Reply::Error { error, message }
            if error == refused.error && message.contains(&refused.object));
        if !right {
            let wanted = format!("{} naming \"{}\"", refused.error, refused.object);
            let call = refused.call.describe();
            mismatches.push(format!("{call}: wanted {wanted}, got {reply:?}"));
        }
    }
    mismatches
}

#[track_caller]
fn assert_no_mismatches(mismatches: &[String]) {
    let count = mismatches.len();
    assert!(
        count == 0,
        "{count} wrong replies:\n{}",
        mismatches.join("\n")
    );
}

#[track_caller]
fn assert_same_state(before: &State, after: &State, context: &str) {
    before.pool_fs.assert_same(&after.pool_fs, context);
    before.state_dir.assert_same(&after.state_dir, context);
    let same_objects = before.objects == after.objects;
    assert!(same_objects, "{context}: properties changed");
}

/// `method(a{sv} {})` on a volume.
fn volume_method(path: &str, method: &str) -> DbusCall {
    DbusCall::new(path, VOLUME, method, "a{sv}", vec![json!({})])
}

// ---- the tests ----

#[tokio::test(flavor = "multi_thread")]
async fn root_may_call_every_mutating_method_and_write_every_property() {
    let world = World::start().await;
    let before = world.state().await;
    let mutations = mutations(&world.objects, &world.mount);
    let calls: Vec<DbusCall> = mutations.iter().map(|m| m.call.clone()).collect();
    let replies = world.call_all(Who::Root, &calls).await;
    let failures: Vec<String> = calls
        .iter()
        .zip(&replies)
        .filter(|(_, reply)| reply.error_name().is_some())
        .map(|(call, reply)| format!("{}: {reply:?}", call.describe()))
        .collect();
    assert_no_mismatches(&failures);
    assert_root_changes_happened(&world, &before).await;
}

/// Each of root's calls left its mark.
async fn assert_root_changes_happened(world: &World, before: &State) {
    let after = world.state().await;
    let managed = after.objects.as_object().expect("a{oa{sa{sv}}}");
    let value = |path: &str, iface: &str, name: &str| managed[path][iface][name].clone();
    let roles = &world.objects;
    let fresh = format!("{MANAGER_PATH}/pools/fresh");
    assert!(after.pool_fs.contains("fresh"), "CreatePool: no directory");
    assert!(managed.contains_key(&fresh), "CreatePool: no object");
    assert!(!managed.contains_key(&roles.spare), "RemovePool");
    assert_eq!(value(&roles.tank, POOL, "RevisionsToKeep"), json!(2));
    assert_eq!(value(&roles.tank, POOL, "EphemeralVolatile"), json!(true));
    let new_volume = format!("{}/volumes/appvms_2fnew_2fprivate", roles.tank);
    assert!(managed.contains_key(&new_volume), "CreateVolume");
    assert_eq!(value(&roles.work, VOLUME, "Rw"), json!(false));
    let details = value(&roles.work, VOLUME, "RevisionDetails");
    assert_eq!(
        details[0][3],
        json!("kept"),
        "SetRevisionDetails: {details}"
    );
    assert_eq!(value(&roles.work, VOLUME, "RevisionsToKeep"), json!(3));
    assert_eq!(value(&roles.volatile, VOLUME, "Ephemeral"), json!(true));
    assert_eq!(value(&roles.idle, VOLUME, "Started"), json!(true));
    assert_eq!(value(&roles.run, VOLUME, "Started"), json!(false));
    assert!(!managed.contains_key(&roles.doomed), "Remove");
    assert_ne!(
        before.state_dir, after.state_dir,
        "the state dir is unchanged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unprivileged_user_is_refused_every_mutation_and_nothing_changes() {
    let world = World::start().await;
    let before = world.state().await;
    let mutations = mutations(&world.objects, &world.mount);
    let expected: Vec<Refused> = mutations.iter().flat_map(Mutation::refusals).collect();
    let mismatches = refusal_mismatches(&world, world.plain(), &expected).await;
    let after = world.state().await;
    assert_no_mismatches(&mismatches);
    assert_same_state(&before, &after, "after refused calls");
}

#[tokio::test(flavor = "multi_thread")]
async fn unprivileged_user_may_make_every_read() {
    let world = World::start().await;
    let before = world.state().await;
    let calls = reads(&world).await;
    let as_user = world.call_all(world.plain(), &calls).await;
    let as_root = world.call_all(Who::Root, &calls).await;
    let mut wrong = Vec::new();
    for ((call, user), root) in calls.iter().zip(&as_user).zip(&as_root) {
        let differs = comparable(call) && without_live(user) != without_live(root);
        if user.error_name().is_some() || differs {
            let call = call.describe();
            wrong.push(format!("{call}: user got {user:?}, root got {root:?}"));
        }
    }
    assert_no_mismatches(&wrong);
    assert_same_state(&before, &world.state().await, "after reads");
}

/// MeasureSpace is a read: anyone may measure a volume or a pool, and sees what root
/// sees. (It records the revisions' measured bytes, so it is not among the reads that
/// must leave every property as it was.)
#[tokio::test(flavor = "multi_thread")]
async fn unprivileged_user_may_measure_space() {
    let world = World::start().await;
    let calls = [
        volume_method(&world.objects.work, "MeasureSpace"),
        DbusCall::new(
            &world.objects.tank,
            POOL,
            "MeasureSpace",
            "a{sv}",
            vec![json!({})],
        ),
    ];
    let as_user = world.call_all(world.plain(), &calls).await;
    let as_root = world.call_all(Who::Root, &calls).await;
    for ((call, user), root) in calls.iter().zip(&as_user).zip(&as_root) {
        assert!(user.error_name().is_none(), "{}: {user:?}", call.describe());
        assert_eq!(user, root, "{}", call.describe());
    }
}

fn without_live(reply: &Reply) -> Reply {
    match reply {
        Reply::Ok { ok } => Reply::Ok {
            ok: ok.iter().cloned().map(without_live_values).collect(),
        },
        error => error.clone(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runners_rule_lets_its_group_start_and_stop_and_nothing_else() {
    let world = World::with_runners_rule().await;
    runner_is_refused_all_but_start_and_stop(&world).await;
    outsider_is_refused_start_and_stop(&world).await;
    runner_starts_and_stops(&world).await;
}

/// Every other mutation, as a member of the group, changes nothing — nor does a Stop
/// that would describe or pin the revision it keeps.
async fn runner_is_refused_all_but_start_and_stop(world: &World) {
    let before = world.state().await;
    let mutations = mutations(&world.objects, &world.mount);
    let mut expected: Vec<Refused> = mutations
        .iter()
        .filter(|m| !matches!(m.call.method.as_str(), "Start" | "Stop"))
        .map(|m| m.refused(m.call.clone(), INTERACTION_REQUIRED))
        .collect();
    // A Stop that describes or pins the revision it keeps makes the change
    // SetRevisionDetails makes: it needs manage-volumes too (a pin is never pruned).
    for note in [
        json!({"revision_pinned": true}),
        json!({"revision_description": "mine"}),
    ] {
        expected.push(Refused {
            call: DbusCall::new(&world.objects.run, VOLUME, "Stop", "a{sv}", vec![note]),
            error: INTERACTION_REQUIRED,
            object: format!("volume {RUN} in pool tank"),
        });
    }
    let mismatches = refusal_mismatches(world, world.runner(), &expected).await;
    assert_no_mismatches(&mismatches);
    assert_same_state(&before, &world.state().await, "runner's other calls");
}

/// Start and Stop, as a user outside the group, change nothing.
async fn outsider_is_refused_start_and_stop(world: &World) {
    let before = world.state().await;
    let roles = &world.objects;
    let start = volume_method(&roles.idle, "Start");
    let stop = volume_method(&roles.run, "Stop");
    let refused = |call: &DbusCall, error, vid: &str| Refused {
        call: call.clone(),
        error,
        object: format!("volume {vid} in pool tank"),
    };
    let expected = [
        refused(&start, INTERACTION_REQUIRED, IDLE),
        refused(&stop, INTERACTION_REQUIRED, RUN),
        refused(&start.clone().interactive(), ACCESS_DENIED, IDLE),
        refused(&stop.clone().interactive(), ACCESS_DENIED, RUN),
    ];
    let mismatches = refusal_mismatches(world, world.plain(), &expected).await;
    assert_no_mismatches(&mismatches);
    assert_same_state(&before, &world.state().await, "outsider's Start/Stop");
}

/// A member of the group starts a stopped volume and stops it and a running one.
async fn runner_starts_and_stops(world: &World) {
    let roles = &world.objects;
    let start = volume_method(&roles.idle, "Start");
    let device = world.call(world.runner(), &start).await;
    let device = device.value(&start).as_str().unwrap_or_default().to_owned();
    assert!(device.ends_with("-dirty.img"), "Start returned {device:?}");
    assert!(world.started(&roles.idle).await, "the runner's Start");
    for path in [&roles.idle, &roles.run] {
        let stop = volume_method(path, "Stop");
        world.call(world.runner(), &stop).await.values(&stop);
        assert!(!world.started(path).await, "the runner's Stop of {path}");
    }
}
