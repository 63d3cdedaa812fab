//! Exports (issue 9 item 2, contract rev 2): every Export is a read-only fd — also the
//! private copy of a volume with snapshots disabled, which its holder must neither
//! write nor grow — and what an export reads never changes afterwards, also when
//! snapshots are disabled after it was made and the VM then starts. On btrfs, XFS and
//! ext4.

mod common_fs;
mod scenario_support;

use std::io::Read;
use std::os::unix::fs::FileExt;

use common_fs::{FsType, MIB};
use qubes_storage_engine::{OpCtx, RevisionsToKeep};
use scenario_support::{on_every_fs, write_at, Fixture};

on_every_fs!(
    every_export_is_read_only,
    an_export_made_before_snapshots_are_disabled_never_sees_the_vms_writes,
);

fn every_export_is_read_only(t: FsType) {
    let f = Fixture::new(t);
    for (vid, rtk) in [("appvms/a/private", 1), ("appvms/b/private", -1)] {
        let v = f.origin(vid, MIB, rtk);
        f.session(&v, 0, b"data");
        let exported = f.engine.export(&v, &OpCtx::quiet("Export")).unwrap();
        let mode = rustix::fs::fcntl_getfl(&exported).unwrap() & rustix::fs::OFlags::RWMODE;
        assert_eq!(mode, rustix::fs::OFlags::RDONLY, "{vid}");
        let write = exported.write_at(b"x", 0).unwrap_err();
        assert_eq!(write.raw_os_error(), Some(libc_ebadf()), "{vid}: {write}");
        let grow =
            rustix::fs::fallocate(&exported, rustix::fs::FallocateFlags::empty(), 0, 64 * MIB)
                .unwrap_err();
        assert_eq!(grow, rustix::io::Errno::BADF, "{vid}");
        assert_eq!(exported.metadata().unwrap().len(), MIB, "{vid}");
    }
}

fn libc_ebadf() -> i32 {
    rustix::io::Errno::BADF.raw_os_error()
}

/// Exported while snapshots were on; then switched to −1: the next start hands the VM
/// a copy, so the export keeps reading the committed bytes (also after the stop).
fn an_export_made_before_snapshots_are_disabled_never_sees_the_vms_writes(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 1);
    f.session(&v, 0, b"committed");
    let mut exported = f.engine.export(&v, &OpCtx::quiet("Export")).unwrap();
    f.engine
        .set_revisions_to_keep(&v, RevisionsToKeep::DISABLED)
        .unwrap();
    let dirty = f.start(&v);
    write_at(&dirty, 0, b"live data");
    f.stop(&v);
    let mut buf = [0u8; 9];
    exported.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"committed");
    // Later starts write into the committed image again (nothing else can hold it).
    let clean = f.paths("appvms/work/private").clean();
    let ino = |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&p.metadata().unwrap());
    let committed = ino(&clean);
    assert_eq!(ino(&f.start(&v)), committed);
}

/// The copy that the first start makes is remembered across a restart of the service.
#[test]
fn a_restart_between_disabling_snapshots_and_the_start_still_protects_the_export() {
    let mut f = Fixture::new(FsType::Btrfs);
    let v = f.origin("appvms/work/private", MIB, 1);
    f.session(&v, 0, b"committed");
    let exported = f.engine.export(&v, &OpCtx::quiet("Export")).unwrap();
    f.engine
        .set_revisions_to_keep(&v, RevisionsToKeep::DISABLED)
        .unwrap();
    f.restart();
    let dirty = f.start(&v);
    write_at(&dirty, 0, b"live data");
    let mut buf = [0u8; 9];
    exported.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"committed");
}
