//! Sizes from callers (issue 9 item 10, contract rev 2): a size of 2^63 bytes or more,
//! or one that is not a whole number of 512-byte sectors, is `InvalidArgument` naming
//! the volume and the reason — for CreateVolume, Resize and ImportData — and changes
//! nothing. On loop-mounted btrfs, XFS and ext4.

mod common_fs;
mod scenario_support;

use common_fs::{FsType, MIB};
use qubes_storage_engine::{EngineError, ErrorKind, OpCtx};
use scenario_support::{exists, files_in, on_every_fs, origin_spec, read_at, Fixture};

const VID: &str = "appvms/work/private";
const BAD_SIZES: [u64; 5] = [1 << 63, u64::MAX, (1 << 63) + 512, 1000, 4 * MIB + 1];

#[track_caller]
fn assert_refused_size<T: std::fmt::Debug>(result: Result<T, EngineError>, size: u64) {
    let err = result.expect_err("a bad size is refused");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{size}: {err}");
    let message = err.to_string();
    assert!(message.contains(VID), "names the volume: {message}");
    assert!(
        message.contains(&format!("size {size} ")),
        "quotes the size: {message}"
    );
    assert!(
        message.contains("sector") || message.contains("2^63"),
        "says why: {message}"
    );
}

fn create_with_a_bad_size_is_invalid_and_registers_nothing(t: FsType) {
    let f = Fixture::new(t);
    let v = f.vref(VID);
    for size in BAD_SIZES {
        let result = f
            .engine
            .create_volume(&v, origin_spec(size, 1), &OpCtx::quiet("Create"));
        assert_refused_size(result, size);
        assert!(!exists(f.paths(VID).dir()), "{size}: no file");
        assert_eq!(
            f.engine.volume_info(&v).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
}

fn resize_to_a_bad_size_is_invalid_and_keeps_the_image(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin(VID, 4 * MIB, 1);
    f.session(&v, 0, b"data");
    let before = files_in(f.paths(VID).dir());
    for size in BAD_SIZES {
        let result = f.engine.resize(&v, size, true, &OpCtx::quiet("Resize"));
        assert_refused_size(result, size);
    }
    assert_eq!(files_in(f.paths(VID).dir()), before);
    let info = f.engine.volume_info(&v).unwrap();
    assert_eq!((info.size, info.config.size), (4 * MIB, 4 * MIB));
    assert_eq!(read_at(&f.paths(VID).clean(), 0, 4), b"data");
}

fn import_data_of_a_bad_size_is_invalid_and_opens_no_import(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin(VID, 4 * MIB, 1);
    for size in BAD_SIZES {
        let result = f
            .engine
            .import_data(&v, size, true, &OpCtx::quiet("ImportData"));
        assert_refused_size(result, size);
        assert!(!exists(&f.paths(VID).import()), "{size}: no import file");
    }
    f.engine
        .import_data(&v, 8 * MIB, false, &OpCtx::quiet("ImportData"))
        .expect("no import is in progress: a good size works");
}

on_every_fs!(
    create_with_a_bad_size_is_invalid_and_registers_nothing,
    resize_to_a_bad_size_is_invalid_and_keeps_the_image,
    import_data_of_a_bad_size_is_invalid_and_opens_no_import,
);
