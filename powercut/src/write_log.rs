//! The recorded stream of one disk, in the order the disk received it: block writes
//! (offset and bytes), zeroed ranges (discard / write-zeroes, which the loop driver
//! turns into `fallocate` on its backing file), flushes, and named marks the test
//! inserts between requests ("the operation begins", "the operation was
//! acknowledged"). It is the dm-log-writes log of this harness.
//!
//! A flush makes durable every write that completed before it: the recorder logs a
//! write before it replies to it, and a mark is logged after the operation it marks
//! returned, so every write the kernel waited for before a flush or a mark sits
//! before it in the log.

use std::fmt;

/// One request the disk received, or a mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `len` bytes at `offset`; the bytes are `data[at..at + len]` of the log.
    Write { offset: u64, len: u64, at: usize },
    /// `len` bytes at `offset` now read as zeros (a discard or write-zeroes).
    Zero { offset: u64, len: u64 },
    /// A cache flush: everything before it is on stable storage.
    Flush,
    /// A point the test named.
    Mark(String),
}

impl Entry {
    /// Does this entry change the disk's content?
    pub fn changes_content(&self) -> bool {
        matches!(self, Entry::Write { .. } | Entry::Zero { .. })
    }
}

/// Every entry of one recording plus the bytes of its writes.
#[derive(Debug, Default, Clone)]
pub struct WriteLog {
    entries: Vec<Entry>,
    data: Vec<u8>,
}

impl WriteLog {
    pub fn record_write(&mut self, offset: u64, bytes: &[u8]) {
        let at = self.data.len();
        self.data.extend_from_slice(bytes);
        self.entries.push(Entry::Write {
            offset,
            len: bytes.len() as u64,
            at,
        });
    }

    pub fn record_zero(&mut self, offset: u64, len: u64) {
        self.entries.push(Entry::Zero { offset, len });
    }

    pub fn record_flush(&mut self) {
        self.entries.push(Entry::Flush);
    }

    pub fn record_mark(&mut self, name: &str) {
        self.entries.push(Entry::Mark(name.to_owned()));
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The bytes of a `Write` entry (empty for any other entry).
    pub fn bytes_of(&self, entry: &Entry) -> &[u8] {
        match *entry {
            Entry::Write { len, at, .. } => &self.data[at..at + len as usize],
            _ => &[],
        }
    }

    /// The position of the first mark named `name`.
    pub fn mark(&self, name: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| matches!(e, Entry::Mark(m) if m == name))
    }

    /// The positions of every flush.
    pub fn flushes(&self) -> Vec<usize> {
        let flush = |(i, e): (usize, &Entry)| (*e == Entry::Flush).then_some(i);
        self.entries.iter().enumerate().filter_map(flush).collect()
    }

    /// The first flush at or after `position`, else the end of the log.
    pub fn next_flush(&self, position: usize) -> usize {
        let mut rest = self.entries.iter().skip(position);
        rest.position(|e| *e == Entry::Flush)
            .map_or(self.entries.len(), |i| position + i)
    }

    /// The positions in `from..to` of entries that change content.
    pub fn changes_between(&self, from: usize, to: usize) -> Vec<usize> {
        (from..to.min(self.entries.len()))
            .filter(|&i| self.entries[i].changes_content())
            .collect()
    }

    /// How many writes, zeroed ranges, flushes and bytes the log holds.
    pub fn summary(&self) -> LogSummary {
        let count = |f: fn(&Entry) -> bool| self.entries.iter().filter(|e| f(e)).count();
        LogSummary {
            writes: count(|e| matches!(e, Entry::Write { .. })),
            zeroes: count(|e| matches!(e, Entry::Zero { .. })),
            flushes: count(|e| *e == Entry::Flush),
            bytes: self.data.len() as u64,
        }
    }
}

/// Counts of one log, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSummary {
    pub writes: usize,
    pub zeroes: usize,
    pub flushes: usize,
    pub bytes: u64,
}

impl fmt::Display for LogSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} writes ({} bytes), {} zeroed ranges, {} flushes",
            self.writes, self.bytes, self.zeroes, self.flushes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WriteLog {
        let mut log = WriteLog::default();
        log.record_write(0, b"ab");
        log.record_flush();
        log.record_mark("begin");
        log.record_write(512, b"cde");
        log.record_zero(4096, 4096);
        log.record_flush();
        log
    }

    #[test]
    fn write_bytes_are_kept_in_order() {
        let log = sample();
        assert_eq!(log.bytes_of(&log.entries()[0]), b"ab");
        assert_eq!(log.bytes_of(&log.entries()[3]), b"cde");
        assert_eq!(log.bytes_of(&log.entries()[1]), b"");
    }

    #[test]
    fn flushes_marks_and_changes_are_found_by_position() {
        let log = sample();
        assert_eq!(log.flushes(), [1, 5]);
        assert_eq!(log.mark("begin"), Some(2));
        assert_eq!(log.mark("end"), None);
        assert_eq!(log.next_flush(2), 5);
        assert_eq!(log.next_flush(6), 6);
        assert_eq!(log.changes_between(1, 5), [3, 4]);
    }

    #[test]
    fn summary_counts_every_kind() {
        let s = sample().summary();
        assert_eq!((s.writes, s.zeroes, s.flushes, s.bytes), (2, 1, 2, 5));
    }
}
