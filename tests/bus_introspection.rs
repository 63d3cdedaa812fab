//! The introspection files in `dbus/` are the published description of the interfaces:
//! this test introspects the running service and compares each interface with its
//! file (comments, whitespace and member order normalised), so neither can drift.
//! `QSD_BLESS=1` rewrites, from the running service, a file whose elements differ (a
//! file that matches keeps its documentation comments).

mod common;

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use common::{opts, FsType, Harness, MIB};
use futures_util::StreamExt;
use zbus::{MessageStream, OwnedObjectPath};

const HEADER: &str = r#"<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
"#;

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

/// The members of an interface element, each as one whitespace-collapsed string, sorted.
fn members(element: &str) -> Vec<String> {
    let body = strip_comments(element);
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
fn check_or_bless(xml: &str, iface: &str) {
    let live = interface_element(xml, iface);
    let file = xml_file(iface);
    let published = std::fs::read_to_string(&file).unwrap_or_default();
    let unchanged = published.contains("<interface")
        && members(&interface_element(&published, iface)) == members(&live);
    // A file that matches keeps its documentation comments (docs/dbus-api.md is
    // generated from them); a rewritten one has none until they are written again,
    // which tests/docs_api.rs reports.
    if std::env::var_os("QSD_BLESS").is_some() && !unchanged {
        let note = format!(
            "<!-- The {iface} interface as the service introspects it; document each\n     \
             element in a gdbus-codegen style comment (tests/docs_api.rs). -->"
        );
        std::fs::write(
            &file,
            format!("{HEADER}{note}\n<node>\n  {live}\n</node>\n"),
        )
        .unwrap();
        return;
    }
    assert!(!published.is_empty(), "{} is missing", file.display());
    assert_eq!(
        members(&interface_element(&published, iface)),
        members(&live),
        "{} differs from the running service (run with QSD_BLESS=1 to rewrite it)",
        file.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manager_pool_and_volume_match_their_xml_files() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let volume = h.origin_volume(&pool, "appvms/work/private", MIB).await;
    check_or_bless(
        &introspect(&h, "/org/qubes/Storage").await,
        "org.qubes.Storage.Manager",
    );
    check_or_bless(
        &introspect(&h, pool.as_str()).await,
        "org.qubes.Storage.Pool",
    );
    check_or_bless(
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
async fn job_matches_its_xml_file() {
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
    let xml = introspect(&h, job.as_str()).await;
    h.job(&job).await.cancel(opts()).await.unwrap();
    let _ = import.await.unwrap();
    check_or_bless(&xml, "org.qubes.Storage.Job");
}
