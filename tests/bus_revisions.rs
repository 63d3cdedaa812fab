//! The members of issue 13 on a real dbus-daemon and a loop-mounted btrfs pool:
//! RevisionDetails and RevisionDetailsSet (SetRevisionDetails, Stop's revision
//! options), MeasureSpace of a volume (with a Job for large images) and of a pool, and
//! ExportDelta with its fd — every change announced before the reply, every refusal a
//! clear error that changes nothing.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use common::{assert_error, call_traced, opts, opts_of, FsType, Harness, VolumeProxy, MIB};
use zbus::{OwnedObjectPath, OwnedVariant, Variant};

const VOLUME: &str = "org.qubes.Storage.Volume";
const PRIVATE: &str = "appvms/work/private";

type Details = Vec<(String, i64, u32, String, bool, i64)>;

async fn with_origin(size: u64) -> (Harness, OwnedObjectPath, OwnedObjectPath) {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 512 * MIB).await;
    let volume = h.origin_volume(&pool, PRIVATE, size).await;
    (h, pool, volume)
}

/// ImportData of `data`, then ImportDataEnd(true): the previous image becomes a revision.
async fn import(volume: &VolumeProxy<'_>, data: &[u8]) {
    let fd = volume
        .import_data(data.len() as u64, common::shrink_ok())
        .await
        .unwrap();
    let mut file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    file.write_all(data).unwrap();
    drop(file);
    volume.import_data_end(true, opts()).await.unwrap();
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn details_of(value: &OwnedVariant) -> Details {
    Details::try_from(value.try_clone().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn set_revision_details_announces_the_property_and_the_signal_before_the_reply() {
    let (h, _, path) = with_origin(4 * MIB).await;
    let v = h.volume(&path).await;
    import(&v, &data(1, MIB as usize)).await;
    let details = opts_of([
        ("description", Variant::from("before the upgrade")),
        ("pinned", Variant::from(true)),
    ]);
    let trace = call_traced(
        &h.conn,
        path.as_str(),
        VOLUME,
        "SetRevisionDetails",
        &("1", details, opts()),
    )
    .await;
    assert!(!trace.is_error(), "{:?}", trace.reply);
    let set = trace.before("RevisionDetailsSet");
    assert_eq!(set.len(), 1);
    let body: (String, String, bool) = set[0].body().deserialize().unwrap();
    assert_eq!(body, ("1".into(), "before the upgrade".into(), true));
    let changed = trace.changed_properties(path.as_str());
    let announced = details_of(&changed["RevisionDetails"]);
    assert_eq!(announced, v.revision_details().await.unwrap());
    let (id, seconds, _, description, pinned, exclusive) = announced[0].clone();
    assert_eq!(
        (id.as_str(), description.as_str(), pinned, exclusive),
        ("1", "before the upgrade", true, -1)
    );
    assert_eq!(seconds, v.revisions().await.unwrap()[0].1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_with_revision_options_describes_the_revision_it_keeps() {
    let (h, _, path) = with_origin(4 * MIB).await;
    let v = h.volume(&path).await;
    import(&v, &data(1, MIB as usize)).await;
    let dirty = v.start(opts()).await.unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dirty)
        .unwrap()
        .write_all_at(b"session", 0)
        .unwrap();
    let keep = opts_of([
        ("revision_description", Variant::from("before the session")),
        ("revision_pinned", Variant::from(true)),
    ]);
    let trace = call_traced(&h.conn, path.as_str(), VOLUME, "Stop", &(keep,)).await;
    assert!(!trace.is_error(), "{:?}", trace.reply);
    let members: Vec<String> = trace
        .signals_before
        .iter()
        .map(common::member_of)
        .filter(|m| m.starts_with("Revision"))
        .collect();
    // The kept revision is pinned, so it does not count: revision 1 is not pruned.
    assert_eq!(members, ["RevisionAdded", "RevisionDetailsSet"]);
    let details = v.revision_details().await.unwrap();
    let summary: Vec<(&str, &str, bool)> = details
        .iter()
        .map(|d| (d.0.as_str(), d.3.as_str(), d.4))
        .collect();
    assert_eq!(
        summary,
        [("1", "", false), ("2", "before the session", true)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_details_are_refused_and_change_nothing() {
    let (h, _, path) = with_origin(4 * MIB).await;
    let v = h.volume(&path).await;
    import(&v, &data(1, MIB as usize)).await;
    let before = v.revision_details().await.unwrap();
    let set = |details: HashMap<&'static str, Variant<'static>>, revision: &'static str| {
        let v = v.clone();
        async move { v.set_revision_details(revision, details, opts()).await }
    };
    let message = assert_error(
        set(opts_of([("description", Variant::from("two\nlines"))]), "").await,
        "InvalidArgument",
    );
    assert!(
        message.contains(PRIVATE) && message.contains("control"),
        "{message}"
    );
    let message = assert_error(
        set(opts_of([("colour", Variant::from("red"))]), "").await,
        "InvalidArgument",
    );
    assert!(
        message.contains("unknown detail \"colour\"; known: description, pinned"),
        "{message}"
    );
    assert_error(
        set(opts_of([("pinned", Variant::from("yes"))]), "").await,
        "InvalidArgument",
    );
    assert_error(set(opts(), "").await, "InvalidArgument");
    let long = "x".repeat(257);
    assert_error(
        set(opts_of([("description", Variant::from(long))]), "").await,
        "InvalidArgument",
    );
    assert_error(
        set(opts_of([("pinned", Variant::from(true))]), "9").await,
        "NotFound",
    );
    let keep = opts_of([("revision_description", Variant::from("x"))]);
    let message = assert_error(v.stop(keep).await, "InvalidArgument");
    assert!(message.contains("not started"), "{message}");
    assert_eq!(v.revision_details().await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn measure_space_reports_each_file_and_announces_the_revisions_bytes() {
    let (h, _, path) = with_origin(4 * MIB).await;
    let v = h.volume(&path).await;
    import(&v, &data(1, 2 * MIB as usize)).await;
    import(&v, &data(2, 2 * MIB as usize)).await;
    let trace = call_traced(&h.conn, path.as_str(), VOLUME, "MeasureSpace", &(opts(),)).await;
    assert!(!trace.is_error(), "{:?}", trace.reply);
    let (images,): (Vec<(String, String, u64, u64)>,) = trace.reply.body().deserialize().unwrap();
    let roles: Vec<(&str, &str)> = images
        .iter()
        .map(|(role, id, _, _)| (role.as_str(), id.as_str()))
        .collect();
    assert_eq!(
        roles,
        [("committed", ""), ("precache", ""), ("revision", "2")]
    );
    // The committed image and its precache are reflinks of each other.
    assert_eq!((images[0].2, images[0].3), (0, 2 * MIB));
    let revision_exclusive = images[2].2 as i64;
    let changed = trace.changed_properties(path.as_str());
    let announced = details_of(&changed["RevisionDetails"]);
    assert_eq!(announced[0].5, revision_exclusive);
    assert_eq!(v.revision_details().await.unwrap()[0].5, revision_exclusive);
}

#[tokio::test(flavor = "multi_thread")]
async fn measuring_large_images_publishes_a_job_before_the_reply() {
    let (h, _, path) = with_origin(2 << 30).await;
    let trace = call_traced(&h.conn, path.as_str(), VOLUME, "MeasureSpace", &(opts(),)).await;
    assert!(!trace.is_error(), "{:?}", trace.reply);
    let added = trace.before("InterfacesAdded");
    let job = added
        .iter()
        .find_map(|m| {
            let (object, ifaces): (
                OwnedObjectPath,
                HashMap<String, HashMap<String, OwnedVariant>>,
            ) = m.body().deserialize().unwrap();
            let job = ifaces.get("org.qubes.Storage.Job")?;
            Some((
                object,
                String::try_from(job["Operation"].try_clone().unwrap()).unwrap(),
            ))
        })
        .expect("a Job");
    assert_eq!(job.1, "MeasureSpace");
    let completed = trace.before("Completed");
    assert_eq!(completed.len(), 1);
    assert_eq!(
        completed[0].header().path().unwrap().as_str(),
        job.0.as_str()
    );
    let (success, _): (bool, String) = completed[0].body().deserialize().unwrap();
    assert!(success);
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_measure_space_gives_what_each_remove_gives_back() {
    let (h, pool, path) = with_origin(8 * MIB).await;
    import(&h.volume(&path).await, &data(1, 3 * MIB as usize)).await;
    let other = h
        .origin_volume(&pool, "appvms/other/private", 8 * MIB)
        .await;
    import(&h.volume(&other).await, &data(2, MIB as usize)).await;
    let measured = h.pool(&pool).await.measure_space(opts()).await.unwrap();
    assert_eq!(
        measured,
        [
            ("appvms/other/private".to_owned(), MIB, 0),
            (PRIVATE.to_owned(), 3 * MIB, 0)
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn export_delta_hands_out_the_image_and_what_changed() {
    let (h, _, path) = with_origin(4 * MIB).await;
    let v = h.volume(&path).await;
    let base = data(1, 4 * MIB as usize);
    import(&v, &base).await;
    let mut next = base.clone();
    next[100..200].fill(0xAA);
    next[3 * MIB as usize..3 * MIB as usize + 5000].fill(0x55);
    import(&v, &next).await;
    let granularity = opts_of([("granularity", Variant::from(512u64))]);
    let (fd, size, ranges) = v.export_delta("", granularity).await.unwrap();
    assert_eq!(size, 4 * MIB);
    assert_eq!(ranges, [(0, 512), (3 * MIB, 5120)]);
    let mut file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    let mut applied = base.clone();
    for (offset, len) in &ranges {
        file.read_exact_at(
            &mut applied[*offset as usize..(offset + len) as usize],
            *offset,
        )
        .unwrap();
    }
    assert!(applied == next);
    let mut whole = Vec::new();
    file.read_to_end(&mut whole).unwrap();
    assert!(whole == next, "the fd reads the committed image");
    let bad = opts_of([("granularity", Variant::from(3000u64))]);
    assert_error(v.export_delta("", bad).await, "InvalidArgument");
    assert_error(v.export_delta("7", opts()).await, "NotFound");
}
