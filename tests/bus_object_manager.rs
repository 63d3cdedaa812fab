//! The ObjectManager at `/org/qubes/Storage`: GetManagedObjects lists exactly the
//! objects that serve one of the service's interfaces — pools, volumes, and a Job while
//! its copy runs — each with its interface and the same properties `Properties.GetAll`
//! gives, and no bare parent node (`…/pools`, `…/volumes`, `…/jobs`); the list agrees
//! with what introspection of the object tree shows; InterfacesAdded and
//! InterfacesRemoved still announce objects that come and go; and the interface
//! introspects exactly like zbus's own ObjectManager, which clients were written against.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::common_fs::Frozen;
use common::oracle::{raw_managed_objects, Objects, Recorder};
use common::{fill_scattered, opts, opts_of, start_held_import, FsType, Harness, MIB, SERVICE};
use tokio::task::JoinHandle;
use zbus::{OwnedObjectPath, OwnedVariant};

const ROOT: &str = "/org/qubes/Storage";
const POOL: &str = "org.qubes.Storage.Pool";
const VOLUME: &str = "org.qubes.Storage.Volume";
const JOB: &str = "org.qubes.Storage.Job";
const OBJECT_MANAGER: &str = "org.freedesktop.DBus.ObjectManager";
/// Every object has these; they do not make an object "managed".
const STANDARD_INTERFACES: [&str; 3] = [
    "org.freedesktop.DBus.Peer",
    "org.freedesktop.DBus.Introspectable",
    "org.freedesktop.DBus.Properties",
];
/// A pool's statvfs figures change with any write to its filesystem.
const LIVE_POOL_PROPERTY: &str = "UsageDetails";
/// 1 GiB with half of it data: a cross-filesystem copy outlasts the test's reaction.
const IMAGE: u64 = 1024 * MIB;

/// Two pools (ext4 and btrfs), a 1 GiB source image on ext4 and an empty destination
/// on btrfs: importing one into the other copies bytes and publishes a Job.
struct Fixture {
    h: Harness,
    pools: [OwnedObjectPath; 2],
    source: OwnedObjectPath,
    destination: OwnedObjectPath,
}

async fn fixture() -> Fixture {
    let mut h = Harness::start().await;
    let slow = h.pool_on("slow", FsType::Ext4, 4096 * MIB).await;
    let fast = h.pool_on("fast", FsType::Btrfs, 3072 * MIB).await;
    let source = h.origin_volume(&slow, "vm-templates/big/root", MIB).await;
    fill_scattered(&h.volume(&source).await, IMAGE, 7).await;
    let destination = h.origin_volume(&fast, "appvms/clone/root", MIB).await;
    Fixture {
        h,
        pools: [slow, fast],
        source,
        destination,
    }
}

fn paths<'a>(objects: impl IntoIterator<Item = &'a OwnedObjectPath>) -> BTreeSet<String> {
    objects.into_iter().map(|p| p.to_string()).collect()
}

/// The interface names of each entry.
fn interfaces_of(objects: &Objects) -> BTreeMap<String, Vec<String>> {
    objects
        .iter()
        .map(|(path, ifaces)| (path.clone(), ifaces.keys().cloned().collect()))
        .collect()
}

/// `Properties.GetAll(iface)` of the object at `path`.
async fn get_all(h: &Harness, path: &str, iface: &str) -> BTreeMap<String, OwnedVariant> {
    let proxy = zbus::fdo::PropertiesProxy::builder(&h.conn)
        .destination(SERVICE)
        .path(path.to_owned())
        .build()
        .await
        .unwrap();
    let iface = zbus::names::InterfaceName::try_from(iface).unwrap();
    proxy.get_all(iface).await.unwrap().into_iter().collect()
}

/// Asserts that each entry's properties are what GetAll of that object returns.
async fn assert_properties_match_get_all(h: &Harness, objects: &Objects) {
    for (path, ifaces) in objects {
        for (iface, listed) in ifaces {
            let mut listed = listed.clone();
            let mut read = get_all(h, path, iface).await;
            for props in [&mut listed, &mut read] {
                props.remove(LIVE_POOL_PROPERTY);
            }
            assert_eq!(listed, read, "{path} {iface}: GetManagedObjects vs GetAll");
        }
    }
}

async fn introspect(h: &Harness, path: &str) -> String {
    zbus::fdo::IntrospectableProxy::builder(&h.conn)
        .destination(SERVICE)
        .path(path.to_owned())
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .expect("Introspect")
}

/// The `name` attribute of a tag, if it has one.
fn name_attribute(tag: &str) -> Option<&str> {
    let rest = &tag[tag.find("name=\"")? + "name=\"".len()..];
    Some(&rest[..rest.find('"')?])
}

/// Reads one introspection document of `path`: the interfaces of every node it
/// describes (zbus nests the whole subtree), and the child paths it only names
/// (`<node name="…"/>`, as other implementations write them).
fn read_introspection(
    path: &str,
    xml: &str,
    found: &mut BTreeMap<String, Vec<String>>,
    pending: &mut Vec<String>,
) {
    let mut nodes: Vec<String> = Vec::new();
    for tag in xml
        .split('<')
        .skip(1)
        .map(|t| &t[..t.find('>').unwrap_or(t.len())])
    {
        let current = nodes.last().cloned().unwrap_or_else(|| path.to_owned());
        if tag.starts_with("node") {
            let child = match name_attribute(tag) {
                Some(name) if name.starts_with('/') => name.to_owned(),
                Some(name) => format!("{current}/{name}"),
                None => path.to_owned(),
            };
            if tag.ends_with('/') {
                pending.push(child);
            } else {
                nodes.push(child);
            }
        } else if tag.starts_with("/node") {
            nodes.pop();
        } else if tag.starts_with("interface ") {
            let iface = name_attribute(tag).expect("interface name").to_owned();
            if !STANDARD_INTERFACES.contains(&iface.as_str()) && current != ROOT {
                found.entry(current).or_default().push(iface);
            }
        }
    }
}

/// The objects below `/org/qubes/Storage` that introspection shows with an interface
/// of their own, found by walking the tree from the root.
async fn introspected_objects(h: &Harness) -> BTreeMap<String, Vec<String>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![ROOT.to_owned()];
    while let Some(path) = pending.pop() {
        let xml = introspect(h, &path).await;
        read_introspection(&path, &xml, &mut found, &mut pending);
    }
    found
}

type AddedBody = (
    OwnedObjectPath,
    BTreeMap<String, BTreeMap<String, OwnedVariant>>,
);
type RemovedBody = (OwnedObjectPath, Vec<String>);

/// ImportVolume started, held the moment its Job appears ([`start_held_import`]).
async fn start_copy(f: &Fixture) -> (OwnedObjectPath, JoinHandle<zbus::Result<()>>, Frozen) {
    let destination_pool = f.h.pool(&f.pools[1]).await.dir_path().await.unwrap();
    start_held_import(
        &f.h,
        &f.destination,
        &f.source,
        Path::new(&destination_pool),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_exactly_the_pools_volumes_and_running_jobs_with_their_interfaces() {
    let f = fixture().await;
    let h = &f.h;
    let before = raw_managed_objects(&h.conn).await;
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pool in &f.pools {
        expected.insert(pool.to_string(), vec![POOL.to_owned()]);
    }
    for volume in [&f.source, &f.destination] {
        expected.insert(volume.to_string(), vec![VOLUME.to_owned()]);
    }
    assert_eq!(interfaces_of(&before), expected);
    assert_eq!(introspected_objects(h).await, expected);
    assert_properties_match_get_all(h, &before).await;

    let (job, import, frozen) = start_copy(&f).await;
    let during = raw_managed_objects(&h.conn).await;
    let mut with_job = expected.clone();
    with_job.insert(job.to_string(), vec![JOB.to_owned()]);
    assert_eq!(interfaces_of(&during), with_job, "while the copy runs");
    assert_eq!(introspected_objects(h).await, with_job);
    let job_properties: BTreeSet<_> = during[job.as_str()][JOB].keys().cloned().collect();
    let read: BTreeSet<_> = get_all(h, job.as_str(), JOB).await.into_keys().collect();
    assert_eq!(job_properties, read, "the Job's properties");

    h.job(&job).await.cancel(opts()).await.expect("Cancel");
    frozen.thaw();
    common::assert_error(import.await.unwrap(), "Cancelled");
    let after = raw_managed_objects(&h.conn).await;
    assert_eq!(interfaces_of(&after), expected, "the Job is gone");
    assert_eq!(introspected_objects(h).await, expected);
    assert_properties_match_get_all(h, &after).await;
    assert!(paths(&f.pools).iter().all(|p| after.contains_key(p)));
}

#[tokio::test(flavor = "multi_thread")]
async fn interfaces_added_and_removed_announce_a_volume_that_comes_and_goes() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let mut recorder = Recorder::start(&h.conn).await;
    recorder.flush().await;

    let volume = h.origin_volume(&pool, "appvms/work/private", MIB).await;
    recorder.flush().await;
    let added = recorder.named("InterfacesAdded");
    assert_eq!(added.len(), 1, "one InterfacesAdded for CreateVolume");
    assert_eq!(added[0].header().path().unwrap().as_str(), ROOT);
    assert_eq!(
        added[0].header().interface().unwrap().as_str(),
        OBJECT_MANAGER
    );
    let (path, ifaces): AddedBody = added[0].body().deserialize().unwrap();
    assert_eq!(path, volume);
    let listed = raw_managed_objects(&h.conn).await;
    assert_eq!(
        Some(&ifaces),
        listed.get(volume.as_str()),
        "InterfacesAdded carries what GetManagedObjects lists"
    );

    h.volume(&volume)
        .await
        .remove(opts())
        .await
        .expect("Remove");
    recorder.flush().await;
    let removed = recorder.named("InterfacesRemoved");
    assert_eq!(removed.len(), 1, "one InterfacesRemoved for Remove");
    assert_eq!(removed[0].header().path().unwrap().as_str(), ROOT);
    let body: RemovedBody = removed[0].body().deserialize().unwrap();
    assert_eq!(body, (volume.clone(), vec![VOLUME.to_owned()]));
    let listed = raw_managed_objects(&h.conn).await;
    assert_eq!(
        interfaces_of(&listed),
        BTreeMap::from([(pool.to_string(), vec![POOL.to_owned()])])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_pool_leaves_no_entry_behind() {
    let mut h = Harness::start().await;
    let kept = h.pool_on("kept", FsType::Btrfs, 256 * MIB).await;
    let dir = h.mount(FsType::Btrfs, 256 * MIB).join("gone");
    let manager = h.manager().await;
    let options = opts_of([("dir_path", zbus::Variant::from(dir.to_str().unwrap()))]);
    manager
        .create_pool("gone", "file-reflink", options)
        .await
        .unwrap();
    manager.remove_pool("gone", opts()).await.unwrap();
    let listed = raw_managed_objects(&h.conn).await;
    assert_eq!(
        interfaces_of(&listed),
        BTreeMap::from([(kept.to_string(), vec![POOL.to_owned()])])
    );
}

/// The `<interface name="iface">…</interface>` element of `xml`, whitespace collapsed.
fn interface_element(xml: &str, iface: &str) -> String {
    let open = format!("<interface name=\"{iface}\">");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("{iface} is not in:\n{xml}"));
    let end = start + xml[start..].find("</interface>").unwrap() + "</interface>".len();
    xml[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread")]
async fn introspects_the_object_manager_as_the_dbus_specification_defines_it() {
    let h = Harness::start().await;
    let live = interface_element(&introspect(&h, ROOT).await, OBJECT_MANAGER);
    for member in [
        r#"<method name="GetManagedObjects"> <arg name="objpath_interfaces_and_properties" type="a{oa{sa{sv}}}" direction="out"/> </method>"#,
        r#"<signal name="InterfacesAdded"> <arg name="object_path" type="o"/> <arg name="interfaces_and_properties" type="a{sa{sv}}"/> </signal>"#,
        r#"<signal name="InterfacesRemoved"> <arg name="object_path" type="o"/> <arg name="interfaces" type="as"/> </signal>"#,
    ] {
        assert!(live.contains(member), "{member} is not in {live}");
    }
    assert_eq!(live.matches("<method ").count(), 1, "{live}");
    assert_eq!(live.matches("<signal ").count(), 2, "{live}");
}
