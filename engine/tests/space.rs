//! Honest space on real filesystems (issue 13): a volume's files measured as bytes
//! exclusive to each file and shared, checked against `btrfs filesystem du` on btrfs
//! and against FIEMAP walked by `filefrag` on XFS; on ext4 nothing is shared. A pool's
//! measurement gives each volume what its Remove gives back, in a layout whose numbers
//! are known: a template, a snapshot volume writing beside it, an independent origin.

mod common_fs;
mod scenario_support;

use std::path::{Path, PathBuf};

use common_fs::{command, run_ok, FsType, MIB};
use qubes_storage_engine::layout::revision_file_name;
use qubes_storage_engine::{
    FileSpace, ImageRole, ImageSpace, OpCtx, VolumeRef, VolumeSpace, VolumeSpec,
};
use scenario_support::{on_every_fs, write_at, Fixture};

impl Fixture {
    fn measure(&self, v: &VolumeRef) -> Vec<ImageSpace> {
        self.engine
            .measure_volume(v, &OpCtx::quiet("MeasureSpace"))
            .unwrap()
    }

    fn measure_pool(&self) -> Vec<VolumeSpace> {
        self.engine
            .measure_pool(&self.pool, &OpCtx::quiet("MeasureSpace"))
            .unwrap()
    }

    /// The file of `image` of volume `v`.
    fn file_of(&self, v: &VolumeRef, image: &ImageSpace) -> PathBuf {
        let name = v.vid.name();
        let file = match (image.role, image.revision) {
            (ImageRole::Committed, _) => format!("{name}.img"),
            (ImageRole::Running, _) => format!("{name}-dirty.img"),
            (ImageRole::Precache, _) => format!("{name}-precache.img"),
            (ImageRole::Import, _) => format!("{name}-import.img"),
            (ImageRole::Revision, Some(r)) => revision_file_name(name, r.id, r.timestamp),
            (ImageRole::Revision, None) => unreachable!("a revision names itself"),
        };
        self.dir.join(v.vid.vm_dir()).join(file)
    }

    /// An origin with three sessions of scattered writes, partly over each other: a
    /// committed image, a precache and two revisions sharing some extents and not others.
    fn origin_with_history(&self) -> VolumeRef {
        let v = self.origin("appvms/work/private", 64 * MIB, 2);
        self.session(&v, 0, &pattern(1, 16 * MIB as usize));
        self.session(&v, 4 * MIB, &pattern(2, 4 * MIB as usize));
        let dirty = self.start(&v);
        write_at(&dirty, 12 * MIB, &pattern(3, MIB as usize));
        write_at(&dirty, 40 * MIB, &pattern(4, 2 * MIB as usize));
        self.stop(&v);
        v
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    common_fs::pattern(seed, 0, len)
}

/// `Total` and `Exclusive` of `btrfs filesystem du --raw` for one file.
fn btrfs_du(path: &Path) -> (u64, u64) {
    let out = run_ok(command(
        "btrfs",
        [
            "filesystem".as_ref(),
            "du".as_ref(),
            "--raw".as_ref(),
            path.as_os_str(),
        ],
    ));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().last().expect("a line for the file");
    let fields: Vec<u64> = line
        .split_whitespace()
        .take(2)
        .map(|f| f.parse().expect("a number"))
        .collect();
    (fields[0], fields[1])
}

/// Exclusive and shared bytes from `filefrag -v -b1` (FIEMAP walked by another tool).
fn filefrag_space(path: &Path) -> FileSpace {
    let out = run_ok(command(
        "filefrag",
        ["-v".as_ref(), "-b1".as_ref(), path.as_os_str()],
    ));
    let mut space = FileSpace::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split(':').map(str::trim).collect();
        if fields.len() < 4 || fields[0].parse::<u64>().is_err() {
            continue;
        }
        let length: u64 = fields[3].parse().expect("a length");
        let flags = fields.last().copied().unwrap_or_default();
        match flags.split(',').any(|f| f == "shared") {
            true => space.shared += length,
            false => space.exclusive += length,
        }
    }
    space
}

#[test]
fn btrfs_files_agree_with_btrfs_filesystem_du() {
    let f = Fixture::new(FsType::Btrfs);
    let v = f.origin_with_history();
    let images = f.measure(&v);
    let roles: Vec<ImageRole> = images.iter().map(|i| i.role).collect();
    assert_eq!(
        roles,
        [
            ImageRole::Committed,
            ImageRole::Precache,
            ImageRole::Revision,
            ImageRole::Revision
        ]
    );
    for image in &images {
        let (total, exclusive) = btrfs_du(&f.file_of(&v, image));
        assert_eq!(
            (image.space.total(), image.space.exclusive),
            (total, exclusive),
            "{image:?}"
        );
    }
    assert_eq!(images[0].space.total(), 18 * MIB, "what the sessions wrote");
}

#[test]
fn xfs_files_agree_with_fiemap_walked_by_filefrag() {
    let f = Fixture::new(FsType::Xfs);
    let v = f.origin_with_history();
    let images = f.measure(&v);
    assert_eq!(images.len(), 4);
    for image in &images {
        assert_eq!(
            image.space,
            filefrag_space(&f.file_of(&v, image)),
            "{image:?}"
        );
    }
    assert_eq!(images[0].space.total(), 18 * MIB, "what the sessions wrote");
    // Revision 2 is the image before session 2, which overwrote 4 MiB of it: those
    // blocks are revision 2's alone (XFS splits extents where sharing ends).
    assert_eq!(images[2].revision.map(|r| r.id), Some(2));
    assert_eq!(images[2].space.exclusive, 4 * MIB);
}

#[test]
fn ext4_files_share_nothing() {
    let f = Fixture::new(FsType::Ext4);
    let v = f.origin_with_history();
    let images = f.measure(&v);
    assert_eq!(images.len(), 4);
    for image in &images {
        assert_eq!(image.space.shared, 0, "{image:?}");
        assert_eq!(
            image.space,
            filefrag_space(&f.file_of(&v, image)),
            "{image:?}"
        );
    }
}

on_every_fs!(
    measuring_records_the_exclusive_bytes_of_each_revision,
    a_pool_measures_what_each_remove_gives_back,
);

fn measuring_records_the_exclusive_bytes_of_each_revision(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin_with_history();
    assert!(f
        .engine
        .volume_info(&v)
        .unwrap()
        .revision_details
        .iter()
        .all(|d| d.exclusive.is_none()));
    let images = f.measure(&v);
    let details = f.engine.volume_info(&v).unwrap().revision_details;
    for d in &details {
        let measured = images
            .iter()
            .find(|i| i.revision == Some(d.revision))
            .unwrap();
        assert_eq!(d.exclusive, Some(measured.space.exclusive));
    }
    // The oldest revision is pruned at the next commit: its measurement goes with it.
    f.session(&v, 0, b"x");
    let details = f.engine.volume_info(&v).unwrap().revision_details;
    assert_eq!(details.len(), 2);
    assert_eq!(details[1].exclusive, None, "never measured");
}

/// A template with 8 MiB of data, a snapshot volume of it that writes 3 MiB elsewhere
/// while running, an independent origin with 5 MiB.
fn a_pool_measures_what_each_remove_gives_back(t: FsType) {
    let f = Fixture::new(t);
    let template = f.origin("vm-templates/t/root", 64 * MIB, 1);
    f.session(&template, 0, &pattern(1, 8 * MIB as usize));
    let snapshot = f.create(
        "appvms/a/root",
        VolumeSpec {
            rw: true,
            snap_on_start: true,
            source: Some(template.vid.clone()),
            ..Default::default()
        },
    );
    let dirty = f.start(&snapshot);
    write_at(&dirty, 32 * MIB, &pattern(2, 3 * MIB as usize));
    let other = f.origin("appvms/b/private", 64 * MIB, 1);
    f.session(&other, 0, &pattern(3, 5 * MIB as usize));
    let (d, w, e) = (8 * MIB, 3 * MIB, 5 * MIB);
    let space = |exclusive, shared| FileSpace { exclusive, shared };
    let expected = match t.has_reflink() {
        // The template's data is shared by its precache and the snapshot's image (and
        // its committed image by the snapshot's link): a Remove of either gives back
        // only what it alone wrote; the other origin's image and precache share one
        // set of extents.
        true => [space(w, d), space(e, 0), space(0, d)],
        // Copies: the snapshot's running image is its own; only the committed image
        // the snapshot links is shared.
        false => [space(d + w, d), space(2 * e, 0), space(d, d)],
    };
    let measured: Vec<(String, FileSpace)> = f
        .measure_pool()
        .into_iter()
        .map(|v| (v.vid.to_string(), v.space))
        .collect();
    let vids = ["appvms/a/root", "appvms/b/private", "vm-templates/t/root"];
    let expected: Vec<(String, FileSpace)> =
        vids.iter().map(|v| v.to_string()).zip(expected).collect();
    assert_eq!(measured, expected);
}
