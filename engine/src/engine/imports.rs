//! Imports: ImportData / ImportDataEnd with their in-progress bookkeeping (an import
//! belongs to the caller that opened it and blocks every other change to the volume),
//! abandoning a departed caller's import, and ImportVolume.

use std::collections::HashMap;
use std::fs::File;

use tracing::info;

use super::Engine;
use crate::context::OpCtx;
use crate::error::{EngineError, Result};
use crate::model::VolumeRef;
use crate::names::ImageSize;
use crate::volume::Volume;

impl Engine {
    /// R§3.17: a fresh sparse import file of `size` bytes (whole sectors, below 2^63);
    /// returns it opened write-only.
    pub fn import_data(&self, vol: &VolumeRef, size: u64, ctx: &OpCtx) -> Result<File> {
        let size = ImageSize::new(size).map_err(|e| e.on(vol))?.get();
        self.with_volume(vol, ctx, |v, _| {
            self.refuse_while_importing(vol, "start another import")?;
            let file = v.import_data(size)?;
            let owner = ctx.caller().map(str::to_owned);
            self.importing_set().insert(vol.clone(), owner);
            Ok(file)
        })
    }

    /// R§3.18. Ends the import in progress (also one left by a client that went away:
    /// `false` discards it).
    pub fn import_data_end(&self, vol: &VolumeRef, success: bool, ctx: &OpCtx) -> Result<()> {
        self.with_volume(vol, ctx, |v, _| {
            let out = v.import_data_end(success, ctx);
            // A commit that failed (a full disk) keeps the written import file: the
            // import stays in progress, so nothing deletes it before a retry or
            // ImportDataEnd(false).
            if out.is_ok() || !success {
                self.importing_set().remove(vol);
            }
            out
        })
    }

    pub(super) fn importing_set(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<VolumeRef, Option<String>>> {
        self.importing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The volumes whose import `caller` opened and has not ended.
    pub fn imports_of(&self, caller: &str) -> Vec<VolumeRef> {
        let importing = self.importing_set();
        importing
            .iter()
            .filter(|(_, owner)| owner.as_deref() == Some(caller))
            .map(|(vol, _)| vol.clone())
            .collect()
    }

    /// The caller that opened `vol`'s import went away without ending it: discard the
    /// import as ImportDataEnd(false) would. Returns whether there was one to discard
    /// (an import ended meanwhile, or opened by someone else, is left alone).
    pub fn abandon_import(&self, vol: &VolumeRef, caller: &str, ctx: &OpCtx) -> Result<bool> {
        self.with_volume(vol, ctx, |v, _| {
            if self.importing_set().get(vol).and_then(Option::as_deref) != Some(caller) {
                return Ok(false);
            }
            info!(pool = %vol.pool, vid = %vol.vid, caller, "the importer went away: discarding its import");
            let out = v.import_data_end(false, ctx);
            self.importing_set().remove(vol);
            out.map(|_| true)
        })
    }

    /// Between ImportData and ImportDataEnd the import file is the importer's: nothing
    /// else may replace, commit or delete it. Called under the volume's lock.
    pub(super) fn refuse_while_importing(&self, vol: &VolumeRef, what: &str) -> Result<()> {
        if self.importing_set().contains_key(vol) {
            return Err(EngineError::busy(format!(
                "cannot {what} while an import is in progress (end it with ImportDataEnd)"
            )));
        }
        Ok(())
    }

    /// R§3.19: clone `source` (any pool) into `vol`.
    pub fn import_volume(&self, vol: &VolumeRef, source: &VolumeRef, ctx: &OpCtx) -> Result<()> {
        if vol == source {
            return Err(EngineError::invalid("cannot import a volume into itself").on(vol));
        }
        let (src_pool, src_config, _) = self.lookup(source)?;
        self.with_volume(vol, ctx, |v, _| {
            self.refuse_while_importing(vol, "import another volume")?;
            let src = Volume::new(&src_pool.dir_path, src_config);
            src.check_dirs()?;
            v.import_volume(&src, ctx)
        })
    }
}
