//! Introspection. The files in `dbus/` are the one description of the interfaces: the
//! service embeds them and serves them (re-rendered without comments or documentation).
//! These tests check what a client sees: every member of each file is served as
//! declared, each object describes only itself and names its children (contract
//! rev 2), and the tools people use — `busctl tree`, `busctl introspect`,
//! `gdbus introspect` — walk every object without a single warning.

mod common;

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Command;

use common::common_fs::Frozen;
use common::{opts, FsType, Harness, MIB};
use futures_util::StreamExt;
use zbus::{MessageStream, OwnedObjectPath};

fn xml_file(iface: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("dbus")
        .join(format!("{iface}.xml"))
}

/// The `<interface name="iface">…</interface>` element of an introspection document.
fn interface_element(xml: &str, iface: &str) -> String {
    let open = format!("<interface name=\"{iface}\">");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("{iface} is not in:\n{xml}"));
    let end =
        start + xml[start..].find("</interface>").expect("</interface>") + "</interface>".len();
    xml[start..end].to_owned()
}

fn strip_comments(xml: &str) -> String {
    let mut out = String::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("-->").expect("unterminated comment");
        rest = &rest[start + end + 3..];
    }
    out.push_str(rest);
    out
}

/// The members of an interface element, each as one whitespace-collapsed string
/// without documentation annotations, sorted.
fn members(element: &str) -> Vec<String> {
    let body = strip_comments(element);
    let body: String = body
        .lines()
        .filter(|line| !line.contains("DocString"))
        .collect::<Vec<_>>()
        .join("\n");
    let collapsed = body
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("> <", "><");
    let inner = collapsed
        .split_once('>')
        .expect("open tag")
        .1
        .rsplit_once("</interface>")
        .expect("close")
        .0;
    let mut members = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let tag: String = rest[1..]
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        let first_end = rest.find('>').expect("tag end") + 1;
        let end = if rest[..first_end].ends_with("/>") {
            first_end
        } else {
            let close = format!("</{tag}>");
            rest.find(&close).expect("closing tag") + close.len()
        };
        members.push(rest[..end].to_owned());
        rest = rest[end..].trim_start();
    }
    members.sort();
    members
}

async fn introspect(h: &Harness, path: &str) -> String {
    let proxy = zbus::fdo::IntrospectableProxy::builder(&h.conn)
        .destination(common::SERVICE)
        .path(path.to_owned())
        .build()
        .await
        .unwrap();
    proxy.introspect().await.expect("Introspect")
}

#[track_caller]
fn assert_served_as_declared(xml: &str, iface: &str) {
    let file = xml_file(iface);
    let declared =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(
        members(&interface_element(&declared, iface)),
        members(&interface_element(xml, iface)),
        "the service does not serve {} as declared",
        file.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manager_pool_and_volume_are_served_as_their_xml_files_declare() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let volume = h.origin_volume(&pool, "appvms/work/private", MIB).await;
    assert_served_as_declared(
        &introspect(&h, "/org/qubes/Storage").await,
        "org.qubes.Storage.Manager",
    );
    assert_served_as_declared(
        &introspect(&h, pool.as_str()).await,
        "org.qubes.Storage.Pool",
    );
    assert_served_as_declared(
        &introspect(&h, volume.as_str()).await,
        "org.qubes.Storage.Volume",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_properties_are_annotated_as_not_emitting_changes() {
    for (iface, property) in [
        ("org.qubes.Storage.Volume", "Usage"),
        ("org.qubes.Storage.Pool", "UsageDetails"),
    ] {
        let published = std::fs::read_to_string(xml_file(iface)).unwrap();
        let member = members(&interface_element(&published, iface))
            .into_iter()
            .find(|m| m.starts_with(&format!("<property name=\"{property}\"")))
            .unwrap_or_else(|| panic!("{property} missing"));
        assert!(
            member.contains(r#"<annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"/>"#),
            "{member}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_is_served_as_its_xml_file_declares_and_busctl_reads_it_cleanly() {
    let mut h = Harness::start().await;
    let ext4 = h.pool_on("slow", FsType::Ext4, 1024 * MIB).await;
    let btrfs = h.pool_on("fast", FsType::Btrfs, 1024 * MIB).await;
    let source = h.origin_volume(&ext4, "vm-templates/big/root", MIB).await;
    let src = h.volume(&source).await;
    let fd = src.import_data(256 * MIB, opts()).await.unwrap();
    let file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    let block = common::common_fs::pattern(5, 0, MIB as usize);
    for chunk in 0..256u64 {
        file.write_all_at(&block, chunk * MIB).unwrap();
    }
    drop(file);
    src.import_data_end(true, opts()).await.unwrap();
    let destination = h
        .volume(&h.origin_volume(&btrfs, "appvms/clone/root", MIB).await)
        .await;
    let destination_pool = h.pool(&btrfs).await.dir_path().await.unwrap();
    let mut stream = MessageStream::from(&h.conn);
    let import =
        tokio::spawn(async move { destination.import_volume(&source.as_ref(), opts()).await });
    let job = loop {
        let msg = stream.next().await.unwrap().unwrap();
        let header = msg.header();
        let path = header
            .path()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        if path.starts_with("/org/qubes/Storage/jobs/") {
            break OwnedObjectPath::try_from(path).unwrap();
        }
    };
    drop(stream);
    // Held where it is: the Job stays while it is read.
    let frozen = Frozen::new(std::path::Path::new(&destination_pool));
    let xml = introspect(&h, job.as_str()).await;
    let busctl = run_clean(&h, "busctl", &["introspect", common::SERVICE, job.as_str()]);
    h.job(&job).await.cancel(opts()).await.unwrap();
    frozen.thaw();
    assert!(busctl.contains("org.qubes.Storage.Job"), "{busctl}");
    common::assert_error(import.await.unwrap(), "Cancelled");
    assert_served_as_declared(&xml, "org.qubes.Storage.Job");
}

/// Runs `tool` (busctl or gdbus) against the test bus; asserts exit 0 and an empty
/// stderr; returns stdout.
fn run_clean(h: &Harness, tool: &str, args: &[&str]) -> String {
    let address = h.bus.address();
    let mut command = Command::new(tool);
    match tool {
        "busctl" => command
            .arg(format!("--address={address}"))
            .arg("--no-pager"),
        _ => command.args([args[0], "--address", address]),
    };
    let rest = if tool == "busctl" { args } else { &args[1..] };
    let output = command.args(rest).output().expect("run the tool");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.is_empty(),
        "{tool} {args:?}: {}\nstderr:\n{stderr}",
        output.status
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn busctl_and_gdbus_walk_every_object_without_a_warning() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let template = h
        .origin_volume(&pool, "vm-templates/fedora/root", MIB)
        .await;
    let volume = h.origin_volume(&pool, "appvms/work/private", MIB).await;
    let tree = run_clean(&h, "busctl", &["tree", common::SERVICE]);
    let paths: Vec<String> = tree
        .lines()
        .filter_map(|line| line.split_once('/').map(|(_, p)| format!("/{p}")))
        .collect();
    for wanted in [pool.as_str(), template.as_str(), volume.as_str()] {
        assert!(paths.iter().any(|p| p == wanted), "{wanted} not in\n{tree}");
    }
    for path in &paths {
        run_clean(&h, "busctl", &["introspect", common::SERVICE, path]);
        let gdbus = [
            "introspect",
            "--dest",
            common::SERVICE,
            "--object-path",
            path,
        ];
        run_clean(&h, "gdbus", &gdbus);
    }
    let recursive = [
        "introspect",
        "--dest",
        common::SERVICE,
        "--object-path",
        "/",
        "--recurse",
    ];
    let everything = run_clean(&h, "gdbus", &recursive);
    assert!(
        everything.contains("org.qubes.Storage.Volume"),
        "{everything}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_describes_only_itself_and_names_its_children() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    h.origin_volume(&pool, "appvms/work/private", MIB).await;
    let pools = introspect(&h, "/org/qubes/Storage/pools").await;
    assert!(pools.contains("<node name=\"p\"/>"), "{pools}");
    assert!(!pools.contains("org.qubes.Storage.Pool"), "{pools}");
    let pool_xml = introspect(&h, pool.as_str()).await;
    assert!(pool_xml.contains("<node name=\"volumes\"/>"), "{pool_xml}");
    assert!(!pool_xml.contains("org.qubes.Storage.Volume"), "{pool_xml}");
    let volumes = introspect(&h, &format!("{}/volumes", pool.as_str())).await;
    assert!(
        volumes.contains("<node name=\"appvms_2fwork_2fprivate\"/>"),
        "{volumes}"
    );
    assert!(
        !volumes.contains("<interface name=\"org.qubes.Storage"),
        "{volumes}"
    );
}
