//! `ExportDelta` in the facade: the committed image opened read-only as Export opens
//! it, a revision as the base, and the ranges where they differ ([`crate::delta`]),
//! computed under the volume's lock held shared (the volume cannot commit, revert or
//! be removed meanwhile; snapshots of it still start).

use std::fs::File;

use tracing::info;

use super::Engine;
use crate::context::OpCtx;
use crate::delta::{self, Delta, Granularity};
use crate::dir::Access;
use crate::error::{EngineError, Result};
use crate::model::{Revision, VolumeRef};
use crate::revision;

/// What ExportDelta hands out.
#[derive(Debug)]
pub struct ExportedDelta {
    /// The committed image, read-only (what [`Engine::export`] returns).
    pub file: File,
    /// The revision the ranges are relative to.
    pub base: Revision,
    pub delta: Delta,
}

impl Engine {
    /// The committed image and the ranges where it differs from revision `base` (`None`:
    /// the highest). `NotFound` without such a revision, `NotSupported` for a volume
    /// that does not save on stop (as Export).
    pub fn export_delta(
        &self,
        vol: &VolumeRef,
        base: Option<u64>,
        granularity: Granularity,
        ctx: &OpCtx,
    ) -> Result<ExportedDelta> {
        self.with_volume_read(vol, ctx, |v| {
            if !v.config.save_on_stop {
                return Err(EngineError::not_supported(
                    "cannot export a delta: the volume is not save_on_stop, so it has no revisions",
                ));
            }
            let dir = v
                .vm_dir()?
                .ok_or_else(|| EngineError::not_found("has no revisions"))?;
            let base_revision = revision::find(&dir, &v.paths, base)?;
            let file = v.export(ctx)?;
            let base_name = v
                .paths
                .revision_name(base_revision.id, base_revision.timestamp);
            let base_file = dir.open_file(&base_name, Access::Read)?;
            let base_what = dir.join(&base_name).display().to_string();
            let delta = delta::changed_ranges(
                &base_file,
                &base_what,
                &file,
                "the committed image",
                granularity,
                ctx,
            )?;
            info!(
                revision = base_revision.id,
                description = v.config.revision_notes.description(&base_revision),
                ranges = delta.ranges.len(),
                bytes = delta.changed_bytes(),
                compared = delta.bytes_compared,
                read = delta.bytes_read,
                "delta from a revision to the committed image"
            );
            Ok(ExportedDelta {
                file,
                base: base_revision,
                delta,
            })
        })
    }
}
