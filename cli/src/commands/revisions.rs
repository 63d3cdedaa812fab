//! `qubes-storage volume revisions|describe|pin|unpin|revert|delta`: a volume's
//! revisions with their descriptions and pins (RevisionDetails), changing them
//! (SetRevisionDetails), going back to one and saying which by its description too,
//! and what changed since one (ExportDelta), shown as ranges or applied to a copy of
//! the revision.

use std::fs::File;
use std::os::unix::fs::FileExt;

use serde_json::json;
use zbus::Variant;

use super::Context;
use crate::args::{DeltaArgs, VolumeRef};
use crate::error::{CliError, Result};
use crate::interrupt::Interrupt;
use crate::job_watch::{run_following_job, JobWatch, Labels};
use crate::model::{Revision, VolumeInfo};
use crate::output::{iso_utc, print_json, print_text, yes_no, Align, Table};
use crate::paths::VOLUME_IFACE;
use crate::size::format_size;

/// The volume's object path and its properties.
async fn fetch(context: &Context, volume: &VolumeRef) -> Result<(String, VolumeInfo)> {
    let (path, info) = context
        .client
        .volume_info(&volume.pool, &volume.vid)
        .await?;
    Ok((path.to_string(), info))
}

pub async fn list(context: &Context, volume: &VolumeRef) -> Result<()> {
    let (_, info) = fetch(context, volume).await?;
    if context.json {
        return print_json(&info.revisions);
    }
    print_text(&table(&info.revisions).render())
}

/// REVISION, TIMESTAMP, PINNED, EXCLUSIVE (`-` until measured), DESCRIPTION.
pub fn table(revisions: &[Revision]) -> Table {
    let mut table = Table::new(&[
        ("REVISION", Align::Right),
        ("TIMESTAMP", Align::Left),
        ("PINNED", Align::Left),
        ("EXCLUSIVE", Align::Right),
        ("DESCRIPTION", Align::Left),
    ]);
    for revision in revisions {
        table.push(vec![
            revision.id.clone(),
            iso_utc(revision.timestamp),
            yes_no(revision.pinned),
            revision.exclusive.map_or("-".to_owned(), format_size),
            revision.description.clone(),
        ]);
    }
    table
}

/// SetRevisionDetails with one key, on `revision` (the newest for `None`).
pub async fn set_details(
    context: &Context,
    volume: &VolumeRef,
    revision: Option<String>,
    key: &'static str,
    value: Variant<'_>,
) -> Result<()> {
    let revision = revision.unwrap_or_default();
    let path = context
        .client
        .volume_path(&volume.pool, &volume.vid)
        .await?;
    let mut details = crate::proxies::Options::new();
    details.insert(key, value);
    let body = (revision.as_str(), details, context.client.options());
    context
        .client
        .call(path.as_str(), VOLUME_IFACE, "SetRevisionDetails", &body)
        .await
}

/// Revert, then one sentence naming the revision gone back to, by its description too.
pub async fn revert(context: &Context, volume: &VolumeRef, revision: Option<String>) -> Result<()> {
    let (path, before) = fetch(context, volume).await?;
    let id = revision.unwrap_or_default();
    let target = match id.as_str() {
        "" => before.revisions.last(),
        id => before.revisions.iter().find(|r| r.id == id),
    }
    .cloned();
    let body = (id.as_str(), context.client.options());
    context
        .client
        .call::<_, ()>(path.as_str(), VOLUME_IFACE, "Revert", &body)
        .await?;
    let Some(target) = target else {
        return Ok(());
    };
    let after = fetch(context, volume).await.map(|(_, info)| info).ok();
    if context.json {
        let kept = after
            .as_ref()
            .and_then(|after| after.revision_new_since(&before));
        return print_json(&json!({
            "reverted_to": &target,
            "kept_as": kept.map(|kept| kept.id.clone()),
            "size_before": before.size,
            "size": after.as_ref().map(|after| after.size),
        }));
    }
    print_text(&format!(
        "{}\n",
        reverted(volume, &target, &before, after.as_ref())
    ))
}

/// `reverted p:vid to revision 3 (…, "known good"); it is pinned, so it stays; the
/// image before kept as revision 5` — or, when the volume keeps no revisions, that the
/// image before is gone (nothing can undo that revert). A revert takes the revision's
/// size too (as the reference driver's does): when that changes the volume's size, the
/// sentence says so, since a resize in between is undone without any flag.
fn reverted(
    volume: &VolumeRef,
    target: &Revision,
    before: &VolumeInfo,
    after: Option<&VolumeInfo>,
) -> String {
    let stays = match target.pinned {
        true => "; it is pinned, so it stays",
        false => "",
    };
    let kept = after.and_then(|after| after.revision_new_since(before));
    let previous = match (kept, before.revisions_to_keep) {
        (Some(kept), _) => format!("; the image before kept as revision {}", kept.id),
        (None, 0) => "; the image before was not kept (the volume keeps no revisions)".to_owned(),
        (None, _) => String::new(),
    };
    let resized = match after {
        Some(after) if after.size != before.size => format!(
            "; its size went from {} to {}, the revision's",
            format_size(before.size),
            format_size(after.size)
        ),
        _ => String::new(),
    };
    format!(
        "reverted {}:{} to {}{stays}{previous}{resized}",
        volume.pool,
        volume.vid,
        target.label()
    )
}

/// ExportDelta: the ranges (a table, or JSON), or with `--apply-to` the copy of the
/// revision brought up to the committed image (one line saying so). Nothing on stderr
/// but a progress bar.
pub async fn delta(context: &Context, args: DeltaArgs) -> Result<()> {
    let path = context
        .client
        .volume_path(&args.volume.pool, &args.volume.vid)
        .await?;
    let mut options = context.client.options();
    if let Some(granularity) = args.granularity {
        options.insert("granularity", Variant::from(granularity));
    }
    let name = format!("{}:{}", args.volume.pool, args.volume.vid);
    let interrupt = Interrupt::install();
    let labels = Labels::copy_then_commit(format!("compare {name}"), &name);
    let watch = JobWatch::subscribe(
        &context.client,
        path.as_str(),
        "ExportDelta",
        labels,
        context.progress,
    )
    .await?;
    let body = (args.revision.id().unwrap_or_default(), options);
    let call = context
        .client
        .call(path.as_str(), VOLUME_IFACE, "ExportDelta", &body);
    let (fd, size, ranges): (zbus::OwnedFd, u64, Vec<(u64, u64)>) =
        run_following_job(&context.client, watch, &interrupt, call).await?;
    let image = File::from(std::os::fd::OwnedFd::from(fd));
    let changed: u64 = ranges.iter().map(|(_, len)| len).sum();
    if let Some(target) = &args.apply_to {
        apply(&image, size, &ranges, target)?;
    }
    if context.json {
        return print_json(&json!({ "size": size, "changed": changed, "ranges": ranges }));
    }
    match &args.apply_to {
        Some(target) => print_text(&format!(
            "{}: {} changed, written in {} {}; it is the committed image now ({size} bytes)\n",
            target.display(),
            format_size(changed),
            ranges.len(),
            if ranges.len() == 1 { "range" } else { "ranges" },
        )),
        None => print_text(&ranges_table(&ranges).render()),
    }
}

/// OFFSET and LENGTH in bytes (scripts read them).
fn ranges_table(ranges: &[(u64, u64)]) -> Table {
    let mut table = Table::new(&[("OFFSET", Align::Right), ("LENGTH", Align::Right)]);
    for (offset, length) in ranges {
        table.push(vec![offset.to_string(), length.to_string()]);
    }
    table
}

/// Truncate `target` to `size`, then copy each range from the image into it, and sync.
fn apply(image: &File, size: u64, ranges: &[(u64, u64)], target: &std::path::Path) -> Result<()> {
    let cannot =
        |what: &str, error| CliError::io(format!("cannot {what} {}", target.display()), error);
    let out = File::options()
        .write(true)
        .open(target)
        .map_err(|e| cannot("open", e))?;
    out.set_len(size).map_err(|e| cannot("resize", e))?;
    let mut buffer = vec![0u8; 1 << 20];
    for &(offset, length) in ranges {
        let mut done = 0;
        while done < length {
            let n = (length - done).min(buffer.len() as u64) as usize;
            image
                .read_exact_at(&mut buffer[..n], offset + done)
                .map_err(|e| CliError::io("cannot read the committed image", e))?;
            out.write_all_at(&buffer[..n], offset + done)
                .map_err(|e| cannot("write", e))?;
            done += n as u64;
        }
    }
    out.sync_all().map_err(|e| cannot("sync", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(id: &str, timestamp: i64, description: &str, pinned: bool) -> Revision {
        Revision {
            id: id.into(),
            timestamp,
            description: description.into(),
            pinned,
            ..Revision::default()
        }
    }

    #[test]
    fn revisions_print_with_their_details() {
        let mut measured = revision("10", 1_700_000_100, "", false);
        measured.exclusive = Some(3 << 20);
        let revisions = [
            revision("9", 1_700_000_000, "before the upgrade", true),
            measured,
        ];
        assert_eq!(
            table(&revisions).render(),
            "REVISION  TIMESTAMP             PINNED  EXCLUSIVE  DESCRIPTION\n\
             \x20      9  2023-11-14T22:13:20Z  yes             -  before the upgrade\n\
             \x20     10  2023-11-14T22:15:00Z  no        3.0 MiB\n"
        );
    }

    fn work_private() -> VolumeRef {
        VolumeRef {
            pool: "p".into(),
            vid: "appvms/work/private".into(),
        }
    }

    #[test]
    fn a_revert_names_the_revision_by_its_description() {
        let volume = work_private();
        let target = revision("3", 0, "known good", true);
        let before = VolumeInfo {
            revisions_to_keep: 2,
            revisions: vec![target.clone()],
            ..VolumeInfo::default()
        };
        let after = VolumeInfo {
            revisions: vec![target.clone(), revision("4", 0, "", false)],
            ..before.clone()
        };
        assert_eq!(
            reverted(&volume, &target, &before, Some(&after)),
            "reverted p:appvms/work/private to revision 3 (1970-01-01T00:00:00Z, \"known good\"); it is pinned, so it stays; the image before kept as revision 4"
        );
    }

    /// With revisions_to_keep 0 nothing can undo the revert: it says so.
    #[test]
    fn a_revert_that_keeps_no_revision_says_the_image_before_is_gone() {
        let volume = work_private();
        let target = revision("3", 0, "", false);
        let before = VolumeInfo {
            revisions_to_keep: 0,
            revisions: vec![target.clone()],
            ..VolumeInfo::default()
        };
        let after = VolumeInfo {
            revisions: Vec::new(),
            ..before.clone()
        };
        assert!(reverted(&volume, &target, &before, Some(&after))
            .ends_with("; the image before was not kept (the volume keeps no revisions)"));
    }

    /// A revert to a revision of another size (a resize since) says the size changed.
    #[test]
    fn a_revert_that_changes_the_size_says_so() {
        let volume = work_private();
        let target = revision("3", 0, "", false);
        let before = VolumeInfo {
            size: 96 << 20,
            revisions_to_keep: 1,
            revisions: vec![target.clone()],
            ..VolumeInfo::default()
        };
        let after = VolumeInfo {
            size: 64 << 20,
            revisions: vec![revision("4", 0, "", false)],
            ..before.clone()
        };
        assert!(reverted(&volume, &target, &before, Some(&after)).ends_with(
            "; the image before kept as revision 4; its size went from 96.0 MiB to 64.0 MiB, the revision's"
        ));
        let same = VolumeInfo {
            size: 96 << 20,
            ..after.clone()
        };
        assert!(!reverted(&volume, &target, &before, Some(&same)).contains("size"));
    }

    #[test]
    fn applying_ranges_writes_them_and_sets_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let (image_path, target) = (dir.path().join("image"), dir.path().join("copy"));
        std::fs::write(&image_path, b"abcdefghij").unwrap();
        std::fs::write(&target, b"ABCDEFGHIJKLMNOP").unwrap();
        let image = File::open(&image_path).unwrap();
        apply(&image, 10, &[(1, 2), (9, 1)], &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"AbcDEFGHIj");
    }
}
