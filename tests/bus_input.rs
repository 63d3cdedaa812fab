//! Bad input from callers, seen from the bus: every refusal is `InvalidArgument` (or the
//! D-Bus error the call's shape deserves), one sentence that names the object and the
//! reason without echoing more than a short quote of what the caller sent, and nothing
//! changes. Also: an Export is read-only, whatever the volume's kind (issue 9 item 2).

mod common;

use std::os::unix::fs::FileExt;

use common::{assert_error, opts, opts_of, FsType, Harness, MIB};
use zbus::{OwnedObjectPath, Variant};

/// Longest sentence a refusal may be, however much the caller sent.
const SENTENCE_LIMIT: usize = 400;

async fn pool(h: &mut Harness) -> OwnedObjectPath {
    h.pool_on("p", FsType::Btrfs, 256 * MIB).await
}

#[track_caller]
fn assert_short(message: &str) {
    assert!(
        message.len() < SENTENCE_LIMIT,
        "a {}-byte message: {}…",
        message.len(),
        &message[..200.min(message.len())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_size_of_2_pow_63_or_more_is_an_invalid_argument_sentence() {
    let mut h = Harness::start().await;
    let pool = pool(&mut h).await;
    for size in [1u64 << 63, u64::MAX] {
        let config = opts_of([("size", Variant::from(size)), ("rw", Variant::from(true))]);
        let result = h
            .pool(&pool)
            .await
            .create_volume("appvms/big/volatile", config, opts())
            .await;
        let message = assert_error(result, "InvalidArgument");
        assert!(message.contains("appvms/big/volatile"), "{message}");
        assert_short(&message);
    }
    let volumes = h.pool(&pool).await.list_volumes(opts()).await.unwrap();
    assert!(
        volumes.is_empty(),
        "a refused create registered {volumes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_that_are_not_whole_sectors_are_refused_by_create_resize_and_import() {
    let mut h = Harness::start().await;
    let pool = pool(&mut h).await;
    let config = opts_of([
        ("size", Variant::from(1000u64)),
        ("rw", Variant::from(true)),
    ]);
    let refused = h
        .pool(&pool)
        .await
        .create_volume("appvms/a/x", config, opts())
        .await;
    assert_error(refused, "InvalidArgument");
    let path = h.origin_volume(&pool, "appvms/a/private", MIB).await;
    let volume = h.volume(&path).await;
    assert_error(volume.resize(MIB + 1, opts()).await, "InvalidArgument");
    assert_error(
        volume.import_data(MIB + 100, opts()).await,
        "InvalidArgument",
    );
    assert_eq!(volume.size().await.unwrap(), MIB);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_name_is_refused_with_a_short_sentence() {
    let mut h = Harness::start().await;
    let pool = pool(&mut h).await;
    let vid = format!("appvms/{}/private", "v".repeat(1 << 20));
    let result = h
        .pool(&pool)
        .await
        .create_volume(&vid, opts(), opts())
        .await;
    assert_short(&assert_error(result, "InvalidArgument"));
    let key = "k".repeat(1 << 20);
    let options = opts_of([(key.as_str(), Variant::from(true))]);
    let result = h.manager().await.list_pools(options).await;
    assert_short(&assert_error(result, "InvalidArgument"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_export_is_read_only() {
    let mut h = Harness::start().await;
    let pool = pool(&mut h).await;
    let origin = h.origin_volume(&pool, "appvms/a/private", MIB).await;
    let disabled = h.origin_volume(&pool, "appvms/b/private", MIB).await;
    h.volume(&disabled)
        .await
        .set_revisions_to_keep(-1)
        .await
        .unwrap();
    for path in [origin, disabled] {
        let fd = h.volume(&path).await.export(opts()).await.expect("Export");
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
        let written = file.write_at(b"x", 0);
        assert!(written.is_err(), "{path}: the export fd is writable");
        let grown = file.set_len(2 * MIB);
        assert!(grown.is_err(), "{path}: the export fd can grow the file");
    }
}
