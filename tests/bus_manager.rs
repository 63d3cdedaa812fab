//! The Manager and Pool interfaces on a real dbus-daemon: pools come and go, their
//! properties, the error names of every documented failure.

mod common;

use common::{assert_error, opts, opts_of, FsType, Harness, MIB};
use zbus::Variant;

#[tokio::test(flavor = "multi_thread")]
async fn manager_reports_version_drivers_and_features() {
    let h = Harness::start().await;
    let manager = h.manager().await;
    assert_eq!(manager.version().await.unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(
        manager.drivers().await.unwrap(),
        vec!["file-reflink".to_owned()]
    );
    let features = manager.features().await.unwrap();
    for word in ["jobs", "fd-import", "fd-export"] {
        assert!(
            features.iter().any(|f| f == word),
            "{word} missing from {features:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn created_pool_is_listed_found_and_describes_itself() {
    let mut h = Harness::start().await;
    let path = h.pool_on("p1", FsType::Btrfs, 256 * MIB).await;
    assert_eq!(path.as_str(), "/org/qubes/Storage/pools/p1");
    let manager = h.manager().await;
    assert_eq!(manager.get_pool("p1", opts()).await.unwrap(), path);
    assert_eq!(
        manager.list_pools(opts()).await.unwrap(),
        vec![path.clone()]
    );
    let pool = h.pool(&path).await;
    assert_eq!(pool.name().await.unwrap(), "p1");
    assert_eq!(pool.driver().await.unwrap(), "file-reflink");
    assert!(pool.dir_path().await.unwrap().ends_with("/p1"));
    assert!(pool.setup_check().await.unwrap());
    assert_eq!(pool.revisions_to_keep().await.unwrap(), 1);
    assert!(!pool.ephemeral_volatile().await.unwrap());
    assert_eq!(pool.included_in().await.unwrap(), "");
    let usage = pool.usage_details().await.unwrap();
    let size = u64::try_from(&usage["data_size"]).unwrap();
    let used = u64::try_from(&usage["data_usage"]).unwrap();
    assert!(size >= 200 * MIB && used <= size, "{size} {used}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_names_with_punctuation_are_escaped_in_paths() {
    let mut h = Harness::start().await;
    let path = h.pool_on("var_lib.qubes-2", FsType::Btrfs, 256 * MIB).await;
    assert_eq!(
        path.as_str(),
        "/org/qubes/Storage/pools/var_5flib_2equbes_2d2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_inside_another_pools_directory_is_included_in_it() {
    let mut h = Harness::start().await;
    let outer = h.pool_on("outer", FsType::Btrfs, 256 * MIB).await;
    let outer_dir = h.pool(&outer).await.dir_path().await.unwrap();
    let inner_dir = format!("{outer_dir}/nested");
    let options = opts_of([("dir_path", Variant::from(inner_dir.as_str()))]);
    let inner = h
        .manager()
        .await
        .create_pool("inner", "file-reflink", options)
        .await
        .unwrap();
    assert_eq!(h.pool(&inner).await.included_in().await.unwrap(), "outer");
    assert_eq!(h.pool(&outer).await.included_in().await.unwrap(), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn create_pool_refuses_bad_options_with_invalid_argument() {
    let mut h = Harness::start().await;
    let dir = h.mount(FsType::Btrfs, 256 * MIB).join("p");
    let dir = dir.to_str().unwrap();
    let manager = h.manager().await;
    let missing = manager.create_pool("p", "file-reflink", opts()).await;
    assert!(assert_error(missing, "InvalidArgument").contains("dir_path"));
    let relative = opts_of([("dir_path", Variant::from("relative/dir"))]);
    assert_error(
        manager.create_pool("p", "file-reflink", relative).await,
        "InvalidArgument",
    );
    let typo = opts_of([
        ("dir_path", Variant::from(dir)),
        ("setup_chek", Variant::from(false)),
    ]);
    let message = assert_error(
        manager.create_pool("p", "file-reflink", typo).await,
        "InvalidArgument",
    );
    assert!(message.contains("setup_chek"), "{message}");
    let wrong_type = opts_of([
        ("dir_path", Variant::from(dir)),
        ("setup_check", Variant::from("no")),
    ]);
    assert_error(
        manager.create_pool("p", "file-reflink", wrong_type).await,
        "InvalidArgument",
    );
    let rtk = opts_of([
        ("dir_path", Variant::from(dir)),
        ("revisions_to_keep", Variant::from(-2i32)),
    ]);
    assert_error(
        manager.create_pool("p", "file-reflink", rtk).await,
        "InvalidArgument",
    );
    let name = opts_of([("dir_path", Variant::from(dir))]);
    assert_error(
        manager.create_pool("../p", "file-reflink", name).await,
        "InvalidArgument",
    );
    assert!(manager.list_pools(opts()).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn create_pool_with_unknown_driver_is_not_supported() {
    let mut h = Harness::start().await;
    let dir = h.mount(FsType::Btrfs, 256 * MIB).join("p");
    let options = opts_of([("dir_path", Variant::from(dir.to_str().unwrap()))]);
    assert_error(
        h.manager()
            .await
            .create_pool("p", "lvm_thin", options)
            .await,
        "NotSupported",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_pool_without_reflinks_is_not_supported_and_mentions_setup_check() {
    let mut h = Harness::start().await;
    let dir = h.mount(FsType::Ext4, 64 * MIB).join("p");
    let options = opts_of([("dir_path", Variant::from(dir.to_str().unwrap()))]);
    let message = assert_error(
        h.manager()
            .await
            .create_pool("p", "file-reflink", options)
            .await,
        "NotSupported",
    );
    assert!(message.contains("setup_check"), "{message}");
    assert!(!dir.exists(), "a refused pool left its directory behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn second_pool_of_the_same_name_already_exists() {
    let mut h = Harness::start().await;
    h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let dir = h.mount(FsType::Btrfs, 256 * MIB).join("p");
    let options = opts_of([("dir_path", Variant::from(dir.to_str().unwrap()))]);
    assert_error(
        h.manager()
            .await
            .create_pool("p", "file-reflink", options)
            .await,
        "AlreadyExists",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn get_pool_of_an_absent_pool_is_not_found() {
    let h = Harness::start().await;
    assert_error(h.manager().await.get_pool("nope", opts()).await, "NotFound");
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_pool_is_busy_while_it_holds_volumes_and_never_deletes_files() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let dir = h.pool(&pool).await.dir_path().await.unwrap();
    let volume = h.origin_volume(&pool, "appvms/work/private", 4 * MIB).await;
    let manager = h.manager().await;
    assert_error(manager.remove_pool("p", opts()).await, "Busy");
    h.volume(&volume).await.remove(opts()).await.unwrap();
    manager.remove_pool("p", opts()).await.unwrap();
    assert!(manager.list_pools(opts()).await.unwrap().is_empty());
    assert_error(manager.get_pool("p", opts()).await, "NotFound");
    assert!(
        std::path::Path::new(&dir).join("appvms").is_dir(),
        "RemovePool deleted files"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_pool_of_an_absent_pool_is_not_found() {
    let h = Harness::start().await;
    assert_error(
        h.manager().await.remove_pool("nope", opts()).await,
        "NotFound",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_property_writes_are_validated_and_persist() {
    let mut h = Harness::start().await;
    let path = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let pool = h.pool(&path).await;
    pool.set_revisions_to_keep(3).await.unwrap();
    pool.set_ephemeral_volatile(true).await.unwrap();
    assert_error(pool.set_revisions_to_keep(-2).await, "InvalidArgument");
    assert_eq!(pool.revisions_to_keep().await.unwrap(), 3);
    h.restart().await;
    let pool = h.pool(&path).await;
    assert_eq!(pool.revisions_to_keep().await.unwrap(), 3);
    assert!(pool.ephemeral_volatile().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_option_of_a_read_is_invalid_argument() {
    let h = Harness::start().await;
    let typo = opts_of([("verbose", Variant::from(true))]);
    let message = assert_error(h.manager().await.list_pools(typo).await, "InvalidArgument");
    assert!(message.contains("verbose"), "{message}");
}
