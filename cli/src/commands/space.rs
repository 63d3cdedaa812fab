//! `qubes-storage volume space` and `qubes-storage pool space`: where the bytes really
//! are when reflinks share them (MeasureSpace). Per file of a volume: what it holds
//! alone (what deleting it gives back) and what it shares; per volume of a pool: what
//! its Remove gives back. A long measurement shows a progress bar and Ctrl-C cancels
//! it, as for copies.

use serde::Serialize;

use super::Context;
use crate::args::VolumeRef;
use crate::error::Result;
use crate::interrupt::Interrupt;
use crate::job_watch::{run_following_job, JobWatch, Labels};
use crate::output::{print_json, print_text, Align, Table};
use crate::paths::{POOL_IFACE, VOLUME_IFACE};
use crate::size::format_size;

#[derive(Debug, Serialize, PartialEq)]
struct ImageRow {
    /// `committed`, `running`, `precache`, `import` or `revision`.
    file: String,
    /// The revision's id, for revisions.
    revision: Option<String>,
    exclusive: u64,
    shared: u64,
}

#[derive(Debug, Serialize, PartialEq)]
struct VolumeRow {
    vid: String,
    /// What a Remove of the volume gives back.
    exclusive: u64,
    shared: u64,
}

/// MeasureSpace on `path`, following its Job.
async fn measure<T>(context: &Context, path: &str, interface: &str, what: &str) -> Result<T>
where
    T: for<'d> zbus::wire::DynamicDeserialize<'d>,
{
    let interrupt = Interrupt::install();
    let labels = Labels::copy_then_commit(format!("measure {what}"), what);
    let watch = JobWatch::subscribe(
        &context.client,
        path,
        "MeasureSpace",
        labels,
        context.progress,
    )
    .await?;
    let body = (context.client.options(),);
    let call = context.client.call(path, interface, "MeasureSpace", &body);
    run_following_job(&context.client, watch, &interrupt, call).await
}

pub async fn volume(context: &Context, volume: &VolumeRef) -> Result<()> {
    let path = context
        .client
        .volume_path(&volume.pool, &volume.vid)
        .await?;
    let what = format!("{}:{}", volume.pool, volume.vid);
    let (images,): (Vec<(String, String, u64, u64)>,) =
        measure(context, path.as_str(), VOLUME_IFACE, &what).await?;
    let rows: Vec<ImageRow> = images
        .into_iter()
        .map(|(file, revision, exclusive, shared)| ImageRow {
            file,
            revision: Some(revision).filter(|id| !id.is_empty()),
            exclusive,
            shared,
        })
        .collect();
    if context.json {
        return print_json(&rows);
    }
    print_text(&image_table(&rows).render())
}

fn image_table(rows: &[ImageRow]) -> Table {
    let mut table = Table::new(&[
        ("FILE", Align::Left),
        ("REVISION", Align::Right),
        ("EXCLUSIVE", Align::Right),
        ("SHARED", Align::Right),
    ]);
    for row in rows {
        table.push(vec![
            row.file.clone(),
            row.revision.clone().unwrap_or_else(|| "-".to_owned()),
            format_size(row.exclusive),
            format_size(row.shared),
        ]);
    }
    table
}

pub async fn pool(context: &Context, pool: &str) -> Result<()> {
    let path = context.client.pool_path(pool).await?;
    let (volumes,): (Vec<(String, u64, u64)>,) =
        measure(context, path.as_str(), POOL_IFACE, pool).await?;
    let rows: Vec<VolumeRow> = volumes
        .into_iter()
        .map(|(vid, exclusive, shared)| VolumeRow {
            vid,
            exclusive,
            shared,
        })
        .collect();
    if context.json {
        return print_json(&rows);
    }
    print_text(&volume_table(&rows).render())
}

/// The EXCLUSIVE column is what a Remove gives back.
fn volume_table(rows: &[VolumeRow]) -> Table {
    let mut table = Table::new(&[
        ("VID", Align::Left),
        ("REMOVE GIVES BACK", Align::Right),
        ("SHARED", Align::Right),
    ]);
    for row in rows {
        table.push(vec![
            row.vid.clone(),
            format_size(row.exclusive),
            format_size(row.shared),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_show_their_revision_and_sizes() {
        let rows = [
            ImageRow {
                file: "committed".into(),
                revision: None,
                exclusive: 0,
                shared: 2 << 20,
            },
            ImageRow {
                file: "revision".into(),
                revision: Some("4".into()),
                exclusive: 1 << 20,
                shared: 512,
            },
        ];
        assert_eq!(
            image_table(&rows).render(),
            "FILE       REVISION  EXCLUSIVE   SHARED\n\
             committed         -        0 B  2.0 MiB\n\
             revision          4    1.0 MiB    512 B\n"
        );
    }

    #[test]
    fn volumes_show_what_a_remove_gives_back() {
        let rows = [VolumeRow {
            vid: "appvms/a/private".into(),
            exclusive: 3 << 20,
            shared: 0,
        }];
        assert_eq!(
            volume_table(&rows).render(),
            "VID               REMOVE GIVES BACK  SHARED\n\
             appvms/a/private            3.0 MiB     0 B\n"
        );
    }
}
