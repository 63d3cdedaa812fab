//! Authorization end to end: an unprivileged caller (`nobody`, through `setpriv` and
//! `gdbus`) against the real service and polkitd. Mutating calls and property writes
//! are refused with the two standard error names before anything changes; reads need
//! nothing; without polkit only root may change anything.

mod common;

use common::{gdbus_as_nobody, opts, FsType, Harness, MIB};
use zbus::OwnedObjectPath;

const INTERACTION_REQUIRED: &str = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired";
const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";

async fn with_volume(polkit: bool) -> (Harness, OwnedObjectPath) {
    let mut h = if polkit {
        Harness::with_polkit().await
    } else {
        Harness::start().await
    };
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let volume = h.origin_volume(&pool, "appvms/work/private", MIB).await;
    (h, volume)
}

async fn start_as_nobody(
    h: &Harness,
    volume: &OwnedObjectPath,
    extra: &[&str],
    options: &str,
) -> Result<String, String> {
    let mut args = vec![
        "--object-path",
        volume.as_str(),
        "--method",
        "org.qubes.Storage.Volume.Start",
    ];
    args.extend(extra);
    args.push(options);
    gdbus_as_nobody(&h.bus, &args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn unprivileged_start_without_interaction_needs_interactive_authorization() {
    let (h, volume) = with_volume(true).await;
    let err = start_as_nobody(&h, &volume, &[], "@a{sv} {}")
        .await
        .unwrap_err();
    assert!(err.contains(INTERACTION_REQUIRED), "{err}");
    assert!(
        !h.volume(&volume).await.started().await.unwrap(),
        "a refused Start started the volume"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unprivileged_start_allowing_interaction_without_an_agent_is_denied() {
    let (h, volume) = with_volume(true).await;
    let err = start_as_nobody(&h, &volume, &["--interactive"], "@a{sv} {}")
        .await
        .unwrap_err();
    assert!(err.contains(ACCESS_DENIED), "{err}");
    assert!(!h.volume(&volume).await.started().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_user_interaction_option_overrides_the_interactive_flag() {
    let (h, volume) = with_volume(true).await;
    let options = "{'auth.no_user_interaction': <true>}";
    let err = start_as_nobody(&h, &volume, &["--interactive"], options)
        .await
        .unwrap_err();
    assert!(err.contains(INTERACTION_REQUIRED), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unprivileged_property_write_is_refused_and_changes_nothing() {
    let (h, volume) = with_volume(true).await;
    let args = [
        "--object-path",
        volume.as_str(),
        "--method",
        "org.freedesktop.DBus.Properties.Set",
        "org.qubes.Storage.Volume",
        "Rw",
        "<false>",
    ];
    let err = gdbus_as_nobody(&h.bus, &args).await.unwrap_err();
    assert!(err.contains(INTERACTION_REQUIRED), "{err}");
    assert!(h.volume(&volume).await.rw().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn unprivileged_reads_need_no_authorization() {
    let (h, volume) = with_volume(true).await;
    let get = [
        "--object-path",
        volume.as_str(),
        "--method",
        "org.freedesktop.DBus.Properties.Get",
    ];
    let out = gdbus_as_nobody(
        &h.bus,
        &[&get[..], &["org.qubes.Storage.Volume", "Vid"]].concat(),
    )
    .await
    .unwrap();
    assert!(out.contains("appvms/work/private"), "{out}");
    let list = [
        "--object-path",
        "/org/qubes/Storage",
        "--method",
        "org.qubes.Storage.Manager.ListPools",
        "@a{sv} {}",
    ];
    assert!(gdbus_as_nobody(&h.bus, &list)
        .await
        .unwrap()
        .contains("/org/qubes/Storage/pools/p"));
    let verify = [
        "--object-path",
        volume.as_str(),
        "--method",
        "org.qubes.Storage.Volume.Verify",
        "@a{sv} {}",
    ];
    assert!(gdbus_as_nobody(&h.bus, &verify)
        .await
        .unwrap()
        .contains("true"));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_polkit_only_root_may_change_anything() {
    let (h, volume) = with_volume(false).await;
    let err = start_as_nobody(&h, &volume, &[], "@a{sv} {}")
        .await
        .unwrap_err();
    assert!(err.contains(ACCESS_DENIED), "{err}");
    h.volume(&volume)
        .await
        .start(opts())
        .await
        .expect("root may");
}

#[tokio::test(flavor = "multi_thread")]
async fn property_writes_never_prompt_even_when_the_caller_allows_it() {
    let (h, volume) = with_volume(true).await;
    let args = [
        "--interactive",
        "--object-path",
        volume.as_str(),
        "--method",
        "org.freedesktop.DBus.Properties.Set",
        "org.qubes.Storage.Volume",
        "Rw",
        "<false>",
    ];
    // The caller allowed interaction, so it is not "interaction required": the
    // service cannot prompt for a property write and says how to authenticate.
    let err = gdbus_as_nobody(&h.bus, &args).await.unwrap_err();
    assert!(err.contains(ACCESS_DENIED), "{err}");
    assert!(err.contains("authenticate through a method call"), "{err}");
}
