//! `Authorizer::check` against a real dbus-daemon (with the project's bus policy) and a
//! real polkitd (with the project's actions): root callers, unprivileged callers with
//! and without interaction, polkit missing, rules on the `pool`/`vid` details, the uid
//! cache, and what the root fast path saves. Fixtures: `tests/auth_support`.

mod auth_support;

use auth_support::*;
use zbus::Connection;
use zbus_polkit::policykit1::{AuthorityProxy, ImplicitAuthorization};

const OTHER_VID: &str = "appvms/other/private";
const INTERACTION_REQUIRED: &str = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired";
const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";

/// Everything one test needs. Fields drop in order: callers, service, polkitd, bus.
struct World {
    root: Connection,
    service: GuardedService,
    _polkitd: Option<Polkitd>,
    bus: Bus,
    _machine: MachineFixtures,
}

impl World {
    async fn with_polkit() -> World {
        World::start(true).await
    }

    async fn without_polkit() -> World {
        World::start(false).await
    }

    async fn start(polkit: bool) -> World {
        let machine = MachineFixtures::hold();
        let bus = policy_bus();
        let root = bus.connect().await;
        let polkitd = match polkit {
            true => Some(Polkitd::start(&bus, &root).await),
            false => None,
        };
        let service = GuardedService::start(&bus).await;
        World {
            root,
            service,
            _polkitd: polkitd,
            bus,
            _machine: machine,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_caller_is_authorized() {
    let world = World::with_polkit().await;
    call_as_root(&world.root, OTHER_VID, false).await.unwrap();
    call_as_root(&world.root, OTHER_VID, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_caller_is_authorized_when_polkit_is_unreachable() {
    let world = World::without_polkit().await;
    call_as_root(&world.root, OTHER_VID, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_caller_without_interaction_gets_interaction_required() {
    let world = World::with_polkit().await;
    let error = manage_volume_as_user(&world.bus, OTHER_VID, false)
        .await
        .unwrap_err();
    assert!(error.contains(INTERACTION_REQUIRED), "{error}");
    assert!(
        error.contains("manage volumes for volume appvms/other/private in pool testpool"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_caller_allowing_interaction_without_agent_is_denied() {
    let world = World::with_polkit().await;
    let error = manage_volume_as_user(&world.bus, OTHER_VID, true)
        .await
        .unwrap_err();
    assert!(error.contains(ACCESS_DENIED), "{error}");
    assert!(error.contains("no authentication agent"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_caller_is_denied_when_polkit_is_unreachable() {
    let world = World::without_polkit().await;
    for interactive in [false, true] {
        let error = manage_volume_as_user(&world.bus, OTHER_VID, interactive)
            .await
            .unwrap_err();
        assert!(error.contains(ACCESS_DENIED), "{error}");
        assert!(error.contains("polkit cannot be reached"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polkit_rules_see_the_pool_and_vid_details() {
    let world = World::with_polkit().await;
    manage_volume_as_user(&world.bus, RULED_VID, false)
        .await
        .expect("the test rule allows this vid in this pool");
    let error = manage_volume_as_user(&world.bus, OTHER_VID, false)
        .await
        .unwrap_err();
    assert!(error.contains(INTERACTION_REQUIRED), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_uid_is_forgotten_when_the_caller_disconnects() {
    let world = World::with_polkit().await;
    call_as_root(&world.root, OTHER_VID, false).await.unwrap();
    let before = world.service.authorizer.cached_callers();
    assert_eq!(before, 1, "the root client is remembered");
    manage_volume_as_user(&world.bus, RULED_VID, false)
        .await
        .unwrap();
    let authorizer = &world.service.authorizer;
    assert!(
        eventually(|| authorizer.cached_callers() == before).await,
        "the departed caller is still cached: {}",
        authorizer.cached_callers()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_fast_path_is_cheaper_than_a_polkit_check() {
    const CALLS: usize = 60;
    let world = World::with_polkit().await;
    repeat_as_user(&world.bus, RULED_VID, CALLS).await.unwrap();
    let polkit_times = world.service.take_check_times();
    for _ in 0..CALLS {
        call_as_root(&world.root, RULED_VID, false).await.unwrap();
    }
    let root_times = world.service.take_check_times();
    assert_eq!((polkit_times.len(), root_times.len()), (CALLS, CALLS));
    let (polkit, root) = (median(polkit_times), median(root_times));
    eprintln!("median check: polkit {polkit:?}, root fast path {root:?}");
    assert!(root * 5 < polkit, "polkit {polkit:?} vs root {root:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polkitd_declares_the_contract_actions_and_defaults() {
    use ImplicitAuthorization::{AdministratorAuthenticationRequired as Admin, *};
    let world = World::with_polkit().await;
    let authority = AuthorityProxy::new(&world.root).await.unwrap();
    let actions = authority.enumerate_actions("").await.unwrap();
    let expected = [
        (
            "org.qubes.storage.manage-pools",
            AdministratorAuthenticationRequiredRetained,
        ),
        (
            "org.qubes.storage.manage-volumes",
            AdministratorAuthenticationRequiredRetained,
        ),
        (
            "org.qubes.storage.run-volumes",
            AdministratorAuthenticationRequiredRetained,
        ),
        ("org.qubes.storage.import", Admin),
        ("org.qubes.storage.export", Admin),
    ];
    for (id, active) in &expected {
        let action = actions
            .iter()
            .find(|a| a.action_id == *id)
            .unwrap_or_else(|| panic!("polkitd does not know {id}"));
        assert_eq!(action.implicit_any, Admin, "{id}");
        assert_eq!(action.implicit_inactive, Admin, "{id}");
        assert_eq!(&action.implicit_active, active, "{id}");
        assert!(!action.description.is_empty() && !action.message.is_empty());
    }
    let ours = actions
        .iter()
        .filter(|a| a.action_id.starts_with("org.qubes.storage."));
    assert_eq!(ours.count(), expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_policy_lets_only_root_own_the_service_name() {
    let world = World::without_polkit().await;
    let error = gdbus_as_user(
        &world.bus,
        &[
            "--dest",
            "org.freedesktop.DBus",
            "--object-path",
            "/org/freedesktop/DBus",
            "--method",
            "org.freedesktop.DBus.RequestName",
            "'org.qubes.Storage'",
            "4",
        ],
    )
    .await
    .unwrap_err();
    assert!(error.contains(ACCESS_DENIED), "{error}");
    // Root owns it already: the service started, which asserts so.
    let owner = zbus::fdo::DBusProxy::new(&world.root)
        .await
        .unwrap()
        .get_name_owner(SERVICE.try_into().unwrap())
        .await
        .unwrap();
    assert_eq!(
        owner.as_str(),
        world.service.conn.unique_name().unwrap().as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_policy_lets_anyone_call_the_service() {
    let world = World::without_polkit().await;
    let introspection = gdbus_as_user(
        &world.bus,
        &[
            "--dest",
            SERVICE,
            "--object-path",
            TEST_PATH,
            "--method",
            "org.freedesktop.DBus.Introspectable.Introspect",
        ],
    )
    .await
    .expect("an unprivileged caller may call org.qubes.Storage");
    assert!(introspection.contains(TEST_INTERFACE));
}
