//! An append-only file of checksummed lines, the journal of one pool's state changes
//! (see [`crate::store`]). Each record is one line
//!
//! ```text
//! <CRC-32 of the text, 8 lowercase hex digits> <text>\n
//! ```
//!
//! appended with `O_APPEND` and made durable with `fdatasync` (fsync site
//! `journal-append`, [`crate::fsync_fault`]) before the change it records counts, so a
//! change costs one small write and one flush whatever the size of the pool. A line is
//! plain text (JSON here), readable with `cat`.
//!
//! Reading checks every line's checksum. The last line may be torn — a crash during its
//! append leaves it without its newline, cut short, or with zeros where the data never
//! reached the disk — and a torn last line is ignored and cut off (it was never
//! acknowledged: its append had not returned). A bad line followed by good ones is not a
//! torn append but damage, and reading fails naming the file and the line. An append
//! that fails half-way cuts its partial line off again (and, should that fail too, the
//! next append does it first), so later records never follow garbage.
//!
//! **Group commit.** Writing a record and making it durable are two steps
//! ([`Journal::write`] under its owner's lock, then [`Syncer::sync`] outside it), so
//! that changes recorded at the same time share one fdatasync: the first waiter whose
//! record is not yet durable syncs everything written so far and the others find
//! theirs covered. A failed fdatasync fails every record beyond what is known durable
//! (the *cut point*): from then on no fdatasync runs and every such record's writer is
//! told it failed, until the file is cut back to the cut point ([`Journal::cut_failed`],
//! which its writers' owner calls, and which the next write does first if it has not
//! happened yet). The cut ends an *epoch*: a record of an earlier epoch counts as
//! durable exactly when it ends at or before its epoch's cut point, so neither a record
//! written after a failure but before the cut, nor one whose bytes a later record
//! reoccupies, can be taken for durable — and a record that was durable before a
//! failure is never reported as failed. (A fresh descriptor's fdatasync after a failed
//! one may report success for pages whose writeback failed: nothing is synced while a
//! cut is due, so it can never cover the failed records.)

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rustix::fs::OFlags;
use tracing::{info, warn};

use crate::durable::{self, ReplaceSites};
use crate::error::{EngineError, IoContext, Result};
use crate::failpoint;

/// The fsync sites of the replace that empties a journal ([`crate::fsync_fault`]).
const EMPTIED: ReplaceSites = ReplaceSites {
    file: "journal-empty-file",
    dir: "journal-empty-dir",
};

/// The CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`) lookup table.
const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// CRC-32 of `bytes` (zlib's `crc32(0, bytes)`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// One record as written: checksum, space, text, newline.
pub fn frame(text: &str) -> String {
    format!("{:08x} {text}\n", crc32(text.as_bytes()))
}

/// The text of a complete line (without its newline) if its checksum matches.
fn unframe(line: &[u8]) -> Option<&str> {
    let (sum, text) = (line.get(..8)?, line.get(9..)?);
    if line[8] != b' ' {
        return None;
    }
    let sum = u32::from_str_radix(std::str::from_utf8(sum).ok()?, 16).ok()?;
    (crc32(text) == sum).then_some(())?;
    std::str::from_utf8(text).ok()
}

/// The good records of a journal's bytes and the length they end at; a torn last line
/// is left out. Damage before the last line is an error naming `path` and the line.
fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<String>, u64)> {
    let mut records = Vec::new();
    let mut good_len = 0;
    let mut rest = bytes;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            break; // no newline: a torn last line
        };
        let (line, after) = (&rest[..end], &rest[end + 1..]);
        match unframe(line) {
            Some(text) => records.push(text.to_owned()),
            None if after.iter().all(|&b| b == 0) => break, // torn last line
            None => {
                return Err(EngineError::invalid(format!(
                    "state journal {} is damaged at line {line_no} (its checksum does not match); restore it from a backup or remove the line",
                    path.display()
                )))
            }
        }
        good_len += end as u64 + 1;
        rest = after;
    }
    Ok((records, good_len))
}

/// The journal file of one pool, open for appending between calls by path (no file is
/// held open, so the state directory can be remounted read-only underneath).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// The length of the good records: where the next record goes.
    len: u64,
    /// Records since the file was emptied.
    records: u64,
    /// A failed append may have left a partial line beyond `len`.
    partial: bool,
    /// The file exists (a state directory of earlier versions has none until the
    /// first change, which creates it durably).
    exists: bool,
    /// Makes written records durable, shared by their writers.
    syncer: Arc<Syncer>,
}

/// A record written but perhaps not yet durable: where it ends, in which epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    end: u64,
}

impl Ticket {
    /// The offset just past the record.
    pub fn end(&self) -> u64 {
        self.end
    }
}

/// The fdatasyncs of one journal file, shared by the writers of its records (see the
/// module comment).
#[derive(Debug)]
pub struct Syncer {
    path: PathBuf,
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Bytes written (good records).
    written: u64,
    /// Bytes known durable.
    synced: u64,
    /// Bumped by every cut: the records of an earlier epoch that end beyond its cut
    /// point were cut off.
    epoch: u64,
    /// The cut point of each ended epoch (indexed by epoch): what was durable when its
    /// fdatasync failed.
    cut_points: Vec<u64>,
    /// An fdatasync failed and the file has not been cut back to `synced` yet: no
    /// fdatasync runs meanwhile.
    cut_due: bool,
    /// An fdatasync is running.
    running: bool,
    /// The errno of the last failed fdatasync, for its waiters.
    failure: Option<i32>,
    /// Tests: the next fdatasync fails with EIO.
    #[cfg(test)]
    fail_next: bool,
}

impl Syncer {
    fn new(path: &Path, len: u64) -> Arc<Syncer> {
        Arc::new(Syncer {
            path: path.to_owned(),
            state: Mutex::new(SyncState {
                written: len,
                synced: len,
                ..SyncState::default()
            }),
            done: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How much of the file is known durable.
    pub fn synced(&self) -> u64 {
        self.lock().synced
    }

    /// Return once the record of `ticket` is durable — synced by this caller or by
    /// another whose fdatasync began after the record was written — or with the error
    /// of the fdatasync that failed to make it so.
    pub fn sync(&self, ticket: Ticket) -> Result<()> {
        let mut state = self.lock();
        loop {
            if ticket.epoch != state.epoch {
                // Its epoch ended with a cut: kept if it was durable by then.
                return match ticket.end <= state.cut_points[ticket.epoch as usize] {
                    true => Ok(()),
                    false => Err(self.failed(state.failure)),
                };
            }
            if state.synced >= ticket.end {
                return Ok(());
            }
            if state.cut_due {
                // Beyond the cut point: it will be cut.
                return Err(self.failed(state.failure));
            }
            if !state.running {
                state = self.lead(state);
                continue;
            }
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// An fdatasync failed and the file is still to be cut back ([`Journal::cut_failed`]).
    pub fn cut_due(&self) -> bool {
        self.lock().cut_due
    }

    /// fdatasync everything written so far, for every waiter.
    fn lead<'a>(&'a self, mut state: MutexGuard<'a, SyncState>) -> MutexGuard<'a, SyncState> {
        state.running = true;
        let target = state.written;
        drop(state);
        let outcome = open_for_sync(&self.path)
            .and_then(|file| durable::sync_data(&file, "journal-append", &self.path));
        let mut state = self.lock();
        #[cfg(test)]
        let outcome = match std::mem::take(&mut state.fail_next) {
            true => Err(EngineError::io(
                "a failure for the test",
                std::io::Error::from_raw_os_error(libc_eio()),
            )),
            false => outcome,
        };
        state.running = false;
        match outcome {
            Ok(()) => state.synced = state.synced.max(target),
            Err(err) => {
                state.cut_due = true;
                let errno = err.os_error().and_then(std::io::Error::raw_os_error);
                state.failure = Some(errno.unwrap_or(libc_eio()));
            }
        }
        self.done.notify_all();
        state
    }

    fn failed(&self, errno: Option<i32>) -> EngineError {
        let errno = errno.unwrap_or(libc_eio());
        EngineError::io(
            format!(
                "cannot make a change durable in the state journal {}",
                self.path.display()
            ),
            std::io::Error::from_raw_os_error(errno),
        )
    }

    /// A record of `len` more bytes was written; its ticket.
    fn wrote(&self, len: u64) -> Ticket {
        let mut state = self.lock();
        state.written += len;
        Ticket {
            epoch: state.epoch,
            end: state.written,
        }
    }

    /// The file was cut back to `len`, what is durable: the epoch ends (its records
    /// beyond `len` are gone) and fdatasyncs may run again.
    fn cut_to(&self, len: u64) {
        let mut state = self.lock();
        state.written = len;
        state.synced = state.synced.min(len);
        state.cut_points.push(len);
        state.epoch += 1;
        state.cut_due = false;
        self.done.notify_all();
    }

    /// Tests: the next fdatasync fails.
    #[cfg(test)]
    pub(crate) fn fail_next(&self) {
        self.lock().fail_next = true;
    }
}

/// EIO, for a failure without an errno.
fn libc_eio() -> i32 {
    rustix::io::Errno::IO.raw_os_error()
}

fn open_for_sync(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
        .open(path)
        .io_ctx(|| format!("cannot open the state journal {}", path.display()))
}

impl Journal {
    /// Read the journal at `path` (missing = empty), cutting a torn last line off.
    pub fn open(path: &Path) -> Result<(Journal, Vec<String>)> {
        let (bytes, exists) = match std::fs::read(path) {
            Ok(bytes) => (bytes, true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), false),
            Err(e) => {
                return Err(EngineError::io(
                    format!("cannot read {}", path.display()),
                    e,
                ))
            }
        };
        let (records, len) = parse(path, &bytes)?;
        let mut journal = Journal {
            path: path.to_owned(),
            len,
            records: records.len() as u64,
            partial: false,
            exists,
            syncer: Syncer::new(path, len),
        };
        if len < bytes.len() as u64 {
            warn!(file = %path.display(), kept = len, dropped = bytes.len() as u64 - len,
                "cutting off a torn last record (an append interrupted by a crash)");
            // A state directory that cannot be written still loads; the next append
            // cuts the torn record first.
            journal.partial = journal.truncate().is_err();
        }
        Ok((journal, records))
    }

    /// Make `path` an empty journal (a new inode, atomically; a step of the crash
    /// tests: `replace`).
    pub fn create_empty(path: &Path) -> Result<Journal> {
        durable::replace_with(path, EMPTIED, |_| Ok(()))?;
        Ok(Journal {
            path: path.to_owned(),
            len: 0,
            records: 0,
            partial: false,
            exists: true,
            syncer: Syncer::new(path, 0),
        })
    }

    /// What makes this journal's written records durable.
    pub fn syncer(&self) -> Arc<Syncer> {
        self.syncer.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records since the journal was last emptied.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Append one record durably (write + fdatasync; a step of the crash tests:
    /// `append`). On failure nothing of it stays.
    pub fn append(&mut self, text: &str) -> Result<()> {
        let ticket = self.write(text)?;
        match self.syncer.sync(ticket) {
            Ok(()) => {
                self.recorded(ticket);
                Ok(())
            }
            Err(err) => {
                self.cut_failed()?;
                Err(err)
            }
        }
    }

    /// Write one record without making it durable: [`Syncer::sync`] its ticket, then
    /// [`Journal::recorded`] (or [`Journal::cut_failed`] when the sync failed). The
    /// caller serialises writes (its lock); syncs need no lock. A failed write leaves
    /// nothing of the record.
    pub fn write(&mut self, text: &str) -> Result<Ticket> {
        let line = frame(text);
        if !self.exists {
            *self = Journal::create_empty(&self.path)?;
        }
        if self.syncer.cut_due() {
            // Never write behind records a failed fdatasync left (the module comment).
            self.cut_failed()?;
        }
        let mut file = self.open_for_append()?;
        if self.partial {
            self.cut(&file)?;
        }
        let written = file
            .write_all(line.as_bytes())
            .io_ctx(|| format!("cannot append to the state journal {}", self.path.display()));
        if let Err(err) = written {
            self.partial = true;
            if self.cut(&file).is_err() {
                warn!(file = %self.path.display(), "cannot cut off a failed append yet; the next append will");
            }
            return Err(err);
        }
        self.len += line.len() as u64;
        self.records += 1;
        Ok(self.syncer.wrote(line.len() as u64))
    }

    /// The record of `ticket` is durable (a step of the crash tests: `append`).
    pub fn recorded(&self, ticket: Ticket) {
        info!(op = "append", path = %self.path.display(), end = ticket.end, "state change recorded");
        failpoint::step("append");
    }

    /// After a failed sync: cut the file back to the records known durable, so that
    /// no record that failed is ever read back — once: a cut already made (by another
    /// writer, or by the write that followed the failure) is not repeated, so the
    /// records written after it stay. Returns how many records were cut.
    pub fn cut_failed(&mut self) -> Result<u64> {
        if !self.syncer.cut_due() {
            // Nothing failed, or the cut is made: what follows it is not to be cut.
            return Ok(0);
        }
        let synced = self.syncer.synced();
        if self.len <= synced {
            self.syncer.cut_to(synced);
            return Ok(0);
        }
        let cut = self.count_records_beyond(synced);
        self.len = synced;
        self.records -= cut;
        self.syncer.cut_to(synced);
        self.partial = true;
        let file = self.open_for_append()?;
        self.cut(&file)?;
        Ok(cut)
    }

    /// How many records the file holds beyond `offset` (read back from it).
    fn count_records_beyond(&self, offset: u64) -> u64 {
        let bytes = std::fs::read(&self.path).unwrap_or_default();
        let start = (offset as usize).min(bytes.len());
        let end = (self.len as usize).min(bytes.len());
        bytes[start..end].iter().filter(|&&b| b == b'\n').count() as u64
    }

    fn open_for_append(&self) -> Result<File> {
        OpenOptions::new()
            .append(true)
            .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
            .open(&self.path)
            .io_ctx(|| format!("cannot open the state journal {}", self.path.display()))
    }

    /// Cut `file` back to the good records.
    fn cut(&mut self, file: &File) -> Result<()> {
        file.set_len(self.len)
            .io_ctx(|| format!("cannot truncate the state journal {}", self.path.display()))?;
        durable::sync_data(file, "journal-cut", &self.path)?;
        self.partial = false;
        Ok(())
    }

    fn truncate(&self) -> Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
            .open(&self.path)
            .io_ctx(|| format!("cannot open the state journal {}", self.path.display()))?;
        file.set_len(self.len)
            .io_ctx(|| format!("cannot truncate the state journal {}", self.path.display()))?;
        durable::sync_data(&file, "journal-cut", &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn journal_with(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.journal");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    fn records(texts: &[&str]) -> Vec<u8> {
        texts
            .iter()
            .map(|t| frame(t))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414f_a339
        );
    }

    #[test]
    fn appended_records_read_back_in_order() {
        let (_dir, path) = journal_with(b"");
        let (mut journal, found) = Journal::open(&path).unwrap();
        assert!(found.is_empty());
        journal.append(r#"{"a":1}"#).unwrap();
        journal.append(r#"{"b":2}"#).unwrap();
        let (journal, found) = Journal::open(&path).unwrap();
        assert_eq!(found, [r#"{"a":1}"#, r#"{"b":2}"#]);
        assert_eq!(journal.records(), 2);
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_cut_off() {
        let good = records(&["one", "two"]);
        for tail in [
            &b"0000"[..],
            b"deadbeef thr",
            b"\0\0\0\0\0\0\0\0\0\0\0",
            b"00000000 three\n",
            b"00000000 three\n\0\0\0",
        ] {
            let mut bytes = good.clone();
            bytes.extend_from_slice(tail);
            let (_dir, path) = journal_with(&bytes);
            let (mut journal, found) = Journal::open(&path).unwrap();
            assert_eq!(found, ["one", "two"], "tail {tail:?}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                good,
                "tail {tail:?} is cut off"
            );
            journal.append("three").unwrap();
            assert_eq!(Journal::open(&path).unwrap().1, ["one", "two", "three"]);
        }
    }

    #[test]
    fn a_damaged_line_before_good_ones_is_an_error_naming_file_and_line() {
        let mut bytes = records(&["one"]);
        bytes.extend_from_slice(b"00000000 two\n");
        bytes.extend(records(&["three"]));
        let (_dir, path) = journal_with(&bytes);
        let err = Journal::open(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing is cut");
    }

    #[test]
    fn one_fdatasync_covers_every_record_written_before_it() {
        let (_dir, path) = journal_with(b"");
        let (mut journal, _) = Journal::open(&path).unwrap();
        let tickets: Vec<Ticket> = ["a", "b", "c"]
            .iter()
            .map(|t| journal.write(t).unwrap())
            .collect();
        let syncer = journal.syncer();
        let before = crate::barrier::thread_counts();
        syncer.sync(tickets[2]).unwrap();
        syncer.sync(tickets[0]).unwrap();
        syncer.sync(tickets[1]).unwrap();
        let barriers = crate::barrier::thread_counts().since(&before);
        assert_eq!(barriers.total(), 1, "{barriers:?}");
        assert_eq!(Journal::open(&path).unwrap().1, ["a", "b", "c"]);
    }

    #[test]
    fn records_not_known_durable_are_cut_after_a_failed_sync() {
        let (_dir, path) = journal_with(b"");
        let (mut journal, _) = Journal::open(&path).unwrap();
        journal.append("kept").unwrap();
        let lost = journal.write("lost").unwrap();
        assert_eq!(journal.cut_failed().unwrap(), 0, "nothing failed yet");
        journal.syncer().fail_next();
        assert!(journal.syncer().sync(lost).is_err());
        assert_eq!(journal.cut_failed().unwrap(), 1);
        assert_eq!(journal.cut_failed().unwrap(), 0, "cut once");
        assert_eq!(std::fs::read(&path).unwrap(), records(&["kept"]));
        assert_eq!(journal.records(), 1);
        assert!(journal.syncer().synced() < lost.end());
        journal.append("next").unwrap();
        assert_eq!(Journal::open(&path).unwrap().1, ["kept", "next"]);
        assert!(journal.syncer().sync(lost).is_err(), "its bytes are reused");
    }

    #[test]
    fn a_record_written_after_a_failed_sync_follows_the_cut_not_the_failed_records() {
        let (_dir, path) = journal_with(b"");
        let (mut journal, _) = Journal::open(&path).unwrap();
        journal.append("kept").unwrap();
        let failed = journal.write("failed").unwrap();
        journal.syncer().fail_next();
        assert!(journal.syncer().sync(failed).is_err());
        // Another change is written before the failed record's owner has cut it.
        let next = journal.write("next").unwrap();
        journal.syncer().sync(next).unwrap();
        assert_eq!(journal.cut_failed().unwrap(), 0, "the write cut first");
        assert!(journal.syncer().sync(failed).is_err());
        assert_eq!(Journal::open(&path).unwrap().1, ["kept", "next"]);
    }

    #[test]
    fn after_a_failed_sync_nothing_is_synced_until_the_cut_and_later_records_fail() {
        let (_dir, path) = journal_with(b"");
        let (mut journal, _) = Journal::open(&path).unwrap();
        let durable = journal.write("durable").unwrap();
        journal.syncer().sync(durable).unwrap();
        let (first, second) = (
            journal.write("first").unwrap(),
            journal.write("second").unwrap(),
        );
        journal.syncer().fail_next();
        assert!(journal.syncer().sync(first).is_err());
        // A fresh descriptor's fdatasync could report success for the failed pages: none
        // runs before the cut, and the record behind the failed one fails with it.
        let before = crate::barrier::thread_counts();
        assert!(journal.syncer().sync(second).is_err());
        assert_eq!(crate::barrier::thread_counts().since(&before).total(), 0);
        journal.cut_failed().unwrap();
        assert!(journal.syncer().sync(second).is_err(), "after the cut too");
        assert!(
            journal.syncer().sync(durable).is_ok(),
            "a record durable before the failure is never reported as failed"
        );
        assert_eq!(Journal::open(&path).unwrap().1, ["durable"]);
    }

    #[test]
    fn a_missing_journal_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, found) = Journal::open(&dir.path().join("none.journal")).unwrap();
        assert!(found.is_empty());
        assert_eq!(journal.records(), 0);
    }
}
