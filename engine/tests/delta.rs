//! Changed blocks between a revision and the committed image (issue 13), on real btrfs,
//! XFS and ext4: seeded random sessions — new data, the same bytes written again,
//! zeros written over data, holes punched, growth — and the delta checked against the
//! ranges found by comparing the two images byte by byte, at several granularities;
//! applying it to a copy of the base must reproduce the committed image exactly. On
//! btrfs and XFS only the extents the session wrote are read.

mod common_fs;
mod scenario_support;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use common_fs::{FsType, MIB};
use qubes_storage_engine::layout::revision_file_name;
use qubes_storage_engine::{ErrorKind, Granularity, OpCtx, VolumeRef, VolumeSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use scenario_support::{on_every_fs, read_at, write_at, Fixture};

const SIZE: u64 = 32 * MIB;
const GRANULARITIES: [u64; 3] = [1, 4096, 65536];

/// One random session on the running image `dirty`: writes of new data, of the bytes
/// already there, of zeros, and punched holes.
fn random_session(dirty: &std::path::Path, rng: &mut StdRng, writes: usize) {
    let file = File::options().read(true).write(true).open(dirty).unwrap();
    let size = file.metadata().unwrap().len();
    for _ in 0..writes {
        let len = rng.random_range(1..=256 * 1024u64);
        let offset = rng.random_range(0..size - len);
        let mut data = vec![0u8; len as usize];
        match rng.random_range(0..4) {
            0 | 1 => rng.fill(&mut data[..]),
            2 => file.read_exact_at(&mut data, offset).unwrap(),
            _ => {
                let flags =
                    rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
                rustix::fs::fallocate(&file, flags, offset, len).unwrap();
                continue;
            }
        }
        file.write_all_at(&data, offset).unwrap();
    }
    file.sync_all().unwrap();
}

/// The granules where `target` differs from `base` (zeros past its end), as ranges.
fn compared_byte_by_byte(base: &[u8], target: &[u8], granularity: u64) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let size = target.len() as u64;
    let mut start = 0;
    while start < size {
        let end = (start + granularity).min(size);
        let differs = (start..end).any(|i| {
            let b = base.get(i as usize).copied().unwrap_or(0);
            b != target[i as usize]
        });
        if differs {
            match ranges.last_mut() {
                Some(last) if last.0 + last.1 == start => last.1 += end - start,
                _ => ranges.push((start, end - start)),
            }
        }
        start = end;
    }
    ranges
}

impl Fixture {
    fn contents(&self, path: &std::path::Path) -> Vec<u8> {
        let mut data = Vec::new();
        File::open(path).unwrap().read_to_end(&mut data).unwrap();
        data
    }

    /// The newest revision's file and the committed image's, read whole.
    fn base_and_image(&self, v: &VolumeRef) -> (Vec<u8>, Vec<u8>) {
        let info = self.engine.volume_info(v).unwrap();
        let r = *info.revisions.last().unwrap();
        let vm = self.dir.join(v.vid.vm_dir());
        let base = self.contents(&vm.join(revision_file_name(v.vid.name(), r.id, r.timestamp)));
        let image = self.contents(&vm.join(format!("{}.img", v.vid.name())));
        (base, image)
    }

    /// The delta against the newest revision, checked against the byte comparison and
    /// applied to a copy of the base; returns the bytes it compared.
    fn check_delta(&self, v: &VolumeRef, granularity: u64) -> u64 {
        let (base, image) = self.base_and_image(v);
        let exported = self
            .engine
            .export_delta(
                v,
                None,
                Granularity::new(granularity).unwrap(),
                &OpCtx::quiet("ExportDelta"),
            )
            .unwrap();
        let delta = exported.delta;
        assert_eq!(delta.size, image.len() as u64);
        let expected = compared_byte_by_byte(&base, &image, granularity);
        assert_eq!(delta.ranges, expected, "granularity {granularity}");
        let mut applied = base.clone();
        applied.resize(delta.size as usize, 0);
        for (offset, len) in &delta.ranges {
            let piece = &mut applied[*offset as usize..(offset + len) as usize];
            exported.file.read_exact_at(piece, *offset).unwrap();
        }
        assert!(applied == image, "applying the delta reproduces the image");
        delta.bytes_compared
    }
}

on_every_fs!(
    the_delta_of_random_sessions_is_what_differs_byte_by_byte,
    the_delta_of_a_grown_image_covers_its_new_end,
    writing_the_same_bytes_again_is_no_change,
    a_delta_needs_a_revision_and_a_volume_that_saves,
);

fn the_delta_of_random_sessions_is_what_differs_byte_by_byte(t: FsType) {
    let f = Fixture::new(t);
    for seed in 0..3u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let v = f.origin(&format!("appvms/vm{seed}/private"), SIZE, 1);
        random_session(&f.start(&v), &mut rng, 40);
        f.stop(&v);
        random_session(&f.start(&v), &mut rng, 60);
        f.stop(&v);
        for granularity in GRANULARITIES {
            let compared = f.check_delta(&v, granularity);
            if t.has_reflink() {
                assert!(
                    compared < SIZE / 2,
                    "only the extents the session wrote are compared: {compared}"
                );
            }
        }
    }
}

fn the_delta_of_a_grown_image_covers_its_new_end(t: FsType) {
    let f = Fixture::new(t);
    let mut rng = StdRng::seed_from_u64(7);
    let v = f.origin("appvms/work/private", SIZE, 1);
    random_session(&f.start(&v), &mut rng, 20);
    f.stop(&v);
    // Grown while running: the revision the stop keeps has the old size.
    let dirty = f.start(&v);
    f.engine
        .resize(&v, SIZE + 5 * MIB + 512, false, &OpCtx::quiet("Resize"))
        .unwrap();
    write_at(&dirty, SIZE + MIB, &[9u8; 1000]);
    write_at(&dirty, 3 * MIB, &[7u8; 5000]);
    f.stop(&v);
    let (base, image) = f.base_and_image(&v);
    assert_eq!(
        (base.len() as u64, image.len() as u64),
        (SIZE, SIZE + 5 * MIB + 512)
    );
    for granularity in GRANULARITIES {
        f.check_delta(&v, granularity);
    }
}

fn writing_the_same_bytes_again_is_no_change(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", SIZE, 1);
    let mut rng = StdRng::seed_from_u64(11);
    random_session(&f.start(&v), &mut rng, 20);
    f.stop(&v);
    let dirty = f.start(&v);
    let same = read_at(&dirty, 0, 4 * MIB as usize);
    write_at(&dirty, 0, &same);
    f.stop(&v);
    let exported = f
        .engine
        .export_delta(
            &v,
            None,
            Granularity::new(1).unwrap(),
            &OpCtx::quiet("ExportDelta"),
        )
        .unwrap();
    assert!(
        exported.delta.ranges.is_empty(),
        "{:?}",
        exported.delta.ranges
    );
}

fn a_delta_needs_a_revision_and_a_volume_that_saves(t: FsType) {
    let f = Fixture::new(t);
    let ctx = OpCtx::quiet("ExportDelta");
    let g = Granularity::DEFAULT;
    let v = f.origin("appvms/work/private", MIB, 1);
    let err = f.engine.export_delta(&v, None, g, &ctx).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    f.session(&v, 0, b"x");
    let err = f.engine.export_delta(&v, Some(9), g, &ctx).unwrap_err();
    assert!(err.to_string().contains("has no revision 9"), "{err}");
    let volatile = f.create(
        "appvms/a/volatile",
        VolumeSpec {
            size: MIB,
            rw: true,
            ..Default::default()
        },
    );
    let err = f.engine.export_delta(&volatile, None, g, &ctx).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotSupported, "{err}");
}
