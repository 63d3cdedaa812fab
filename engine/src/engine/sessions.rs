//! Witnesses of running sessions: a stop never commits, unnoticed, a running image
//! whose writes did not all reach the disk.
//!
//! The kernel reports a failed write-back (EIO from a failing disk, ENOSPC from a full
//! thin pool under the filesystem) once to each open file description that was open
//! when it happened, and marks the failed pages clean. The VM's loop device hears of
//! it (and tells the VM); a stop's fresh descriptor would not, and would commit an
//! image that silently lacks those writes — replacing the committed image and, a few
//! stops later, pruning the last revision that still held good data. So a start of a
//! volume that commits at stop opens its running image read-only and keeps that
//! descriptor (its *witness*) for the session, and the stop asks it (write back and
//! wait) before it commits:
//!
//! - nothing failed: the stop commits as always;
//! - writes were lost and the stop keeps a revision: it commits (the VM was told of
//!   the failure, and its next start must see what it saw), and the revision it keeps
//!   of the image from before the session is pinned and described — pruning never
//!   takes it, and a Revert goes back to it;
//! - writes were lost and the stop would keep no revision (`revisions_to_keep` 0): it
//!   refuses, the session stays in its running image, and every later stop refuses the
//!   same way until the volume keeps a revision (`revisions_to_keep` ≥ 1);
//! - with snapshots disabled the session is written into the committed image itself:
//!   there is no image from before it to protect, and the stop commits (logged).
//!
//! What a witness told is also written on the running image itself (the extended
//! attribute [`LOST_WRITES`]), so that a stop refused for it is refused again after a
//! restart of the service; the attribute is removed from the image once it is
//! committed. The witnesses themselves live in memory: a session that was running when
//! the service restarted has none (what its write-back lost before the restart went
//! unnoticed, as before). A snapshot's or volatile volume's session is never committed
//! and has none.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{error, warn};

use super::Engine;
use crate::dir::Access;
use crate::model::{VolumeKind, VolumeRef};
use crate::volume::Volume;

/// The extended attribute that marks a running image whose writes did not all reach
/// the disk (its value: why, shortened).
pub const LOST_WRITES: &str = "user.qubes-storaged.lost-writes";

/// One running session's witness.
struct Session {
    /// Shared, so that it is asked without holding the map (a failing disk may keep
    /// the write-back waiting for minutes; other volumes' starts and stops go on).
    witness: Arc<File>,
    /// Why writes were lost, once the witness told.
    lost: Option<String>,
}

/// The witnesses of the sessions the service started.
#[derive(Default)]
pub(super) struct Sessions(Mutex<HashMap<VolumeRef, Session>>);

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<VolumeRef, Session>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine {
    /// After a start: keep a witness of the running image of a volume that commits at
    /// stop (one already kept for the same image stays, with what it knows).
    pub(super) fn watch_session(&self, vol: &VolumeRef, v: &Volume<'_>) {
        if v.config.kind() == VolumeKind::Snapshot || v.config.kind() == VolumeKind::Volatile {
            return;
        }
        let opened = v.vm_dir().and_then(|dir| match dir {
            Some(dir) => dir.open_file(&v.paths.dirty_name(), Access::Read).map(Some),
            None => Ok(None),
        });
        let witness = match opened {
            Ok(Some(file)) => file,
            Ok(None) => return,
            Err(err) => {
                warn!(error = %err, "cannot keep a witness of the running image; a failed write-back of the session may go unnoticed at stop");
                return;
            }
        };
        let mut sessions = self.sessions.lock();
        if let Some(kept) = sessions.get(vol) {
            if same_file(&kept.witness, &witness) {
                return;
            }
        }
        // A session that lost writes before a restart of the service goes on.
        let lost = crate::sys::get_xattr(&witness, LOST_WRITES)
            .ok()
            .flatten()
            .map(|mark| lost_before_restart(&mark));
        sessions.insert(
            vol.clone(),
            Session {
                witness: Arc::new(witness),
                lost,
            },
        );
    }

    /// Before a stop: why writes of the session were lost, if its witness says so (it
    /// is asked once; what it said is remembered until the session ends). A witness of
    /// another image (the running image was replaced behind the service's back) or of
    /// none (it is gone) is dropped; when the running image cannot be looked at (no
    /// descriptor left, say), the witness is asked all the same.
    pub(super) fn session_lost_writes(&self, vol: &VolumeRef, v: &Volume<'_>) -> Option<String> {
        let witness = {
            let sessions = self.sessions.lock();
            match sessions.get(vol) {
                Some(session) if session.lost.is_some() => return session.lost.clone(),
                Some(session) => Arc::clone(&session.witness),
                None => {
                    drop(sessions);
                    return marked_lost(v);
                }
            }
        };
        let running = v
            .vm_dir()
            .and_then(|dir| match dir {
                Some(dir) => dir.entry(&v.paths.dirty_name()),
                None => Ok(None),
            })
            .map(|entry| entry.map(|e| (e.stat.st_dev, e.stat.st_ino)));
        let ours = crate::sys::stat_fd(&*witness)
            .ok()
            .map(|s| (s.st_dev, s.st_ino));
        match running {
            Ok(None) => {
                self.end_session(vol);
                return None;
            }
            Ok(Some(image)) if ours.is_some_and(|ours| ours != image) => {
                self.end_session(vol);
                return None;
            }
            Ok(Some(_)) => {}
            Err(err) => {
                warn!(error = %err, "cannot look at the running image; its session's witness is asked all the same")
            }
        }
        let err = crate::sys::write_back_and_wait(&witness).err()?;
        error!(path = %v.paths.dirty().display(), error = %err,
            "writes of the running session did not reach the disk");
        let why = err.to_string();
        let mark: String = why.chars().take(60).collect();
        if let Err(err) = crate::sys::set_xattr(&*witness, LOST_WRITES, mark.as_bytes()) {
            warn!(error = %err, "cannot mark the running image as having lost writes; a restart of the service would forget it");
        }
        if let Some(session) = self.sessions.lock().get_mut(vol) {
            session.lost = Some(why.clone());
        }
        Some(why)
    }

    /// After the commit of a session that lost writes: the committed image no longer
    /// carries the mark (best effort; a mark left there is only read on a running image).
    pub(super) fn unmark_lost_writes(&self, v: &Volume<'_>) {
        let cleared = v.vm_dir().and_then(|dir| match dir {
            Some(dir) => dir
                .open_file(&v.paths.clean_name(), Access::Read)
                .and_then(|file| {
                    crate::sys::remove_xattr(&file, LOST_WRITES)
                        .map_err(|e| crate::error::EngineError::io("cannot remove the mark", e))
                }),
            None => Ok(()),
        });
        if let Err(err) = cleared {
            warn!(error = %err, "cannot remove the lost-writes mark from the committed image");
        }
    }

    /// Whether the service started `vol` (one that commits at stop) and it has not
    /// been stopped since, as far as this run of the service knows.
    pub(super) fn has_session(&self, vol: &VolumeRef) -> bool {
        self.sessions.lock().contains_key(vol)
    }

    /// The session of `vol` ended (stopped, or the volume removed).
    pub(super) fn end_session(&self, vol: &VolumeRef) {
        self.sessions.lock().remove(vol);
    }
}

/// The lost-writes mark of `v`'s running image (a session that lost writes before a
/// restart of the service, whose stop was refused).
fn marked_lost(v: &Volume<'_>) -> Option<String> {
    let dir = v.vm_dir().ok().flatten()?;
    let running = dir.open_file(&v.paths.dirty_name(), Access::Read).ok()?;
    let mark = crate::sys::get_xattr(&running, LOST_WRITES)
        .ok()
        .flatten()?;
    Some(lost_before_restart(&mark))
}

fn lost_before_restart(mark: &[u8]) -> String {
    format!(
        "{} (noticed before the service restarted)",
        String::from_utf8_lossy(mark)
    )
}

fn same_file(a: &File, b: &File) -> bool {
    match (crate::sys::stat_fd(a), crate::sys::stat_fd(b)) {
        (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
        _ => false,
    }
}
