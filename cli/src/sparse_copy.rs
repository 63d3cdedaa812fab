//! Moving image bytes through the file descriptors the service hands out (`Export`
//! gives a read-only fd, `ImportData` a write-only one), blocking, run on tokio's
//! blocking pool.
//!
//! Sparseness: when the target is a regular file, all-zero chunks are not written
//! (the target reads as zeros there already: the service's import file is created
//! sparse at its full size, and an export target is truncated first and extended
//! with `set_len` at the end), the way `dd conv=sparse` and `cp --sparse` do. A
//! regular-file source is read only where it holds data: `lseek(SEEK_DATA)` finds the
//! next data extent and `SEEK_HOLE` its end; `ENXIO` means no data follows; any other
//! error (a filesystem or device without the feature) treats the rest as data.
//!
//! Every chunk checks the cancel flag, and the byte count handed to `progress`
//! includes skipped holes, so the bar moves at the image's pace.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

const CHUNK: usize = 1 << 20;

/// Cancellation and progress for one copy.
pub struct Control<'a> {
    pub cancel: &'a AtomicBool,
    pub progress: &'a dyn Fn(u64),
}

impl Control<'_> {
    fn step(&self, done: u64) -> Result<(), CopyError> {
        (self.progress)(done);
        if self.cancel.load(Ordering::SeqCst) {
            return Err(CopyError::Cancelled);
        }
        Ok(())
    }
}

#[derive(Debug)]
pub enum CopyError {
    Cancelled,
    Read(std::io::Error),
    Write(std::io::Error),
    /// The input ended after `got` of the `expected` bytes.
    ShortInput {
        expected: u64,
        got: u64,
    },
    /// The input holds more than the `expected` bytes.
    LongInput {
        expected: u64,
    },
}

fn is_zero(buf: &[u8]) -> bool {
    buf.iter().all(|&byte| byte == 0)
}

/// Writes `buf` at `offset` unless it is all zeros.
fn write_sparse(target: &File, offset: u64, buf: &[u8]) -> Result<(), CopyError> {
    if is_zero(buf) {
        return Ok(());
    }
    target.write_all_at(buf, offset).map_err(CopyError::Write)
}

/// The next data extent `[start, end)` of `source` at or after `from`, below `len`.
fn next_data(source: &File, from: u64, len: u64) -> Option<(u64, u64)> {
    let from_offset = i64::try_from(from).ok()?;
    let start = match lseek(source, from_offset, Whence::SeekData) {
        Ok(start) => start as u64,
        Err(Errno::ENXIO) => return None,
        Err(_) => from,
    };
    if start >= len {
        return None;
    }
    let end = match lseek(source, start as i64, Whence::SeekHole) {
        Ok(end) => (end as u64).min(len),
        Err(_) => len,
    };
    Some((start, end.max(start + 1).min(len)))
}

/// Copies `len` bytes of a regular file or block device into a regular file, reading
/// only data extents and writing only non-zero chunks; `target` ends up `len` long.
pub fn copy_file_sparse(
    source: &File,
    target: &File,
    len: u64,
    control: &Control<'_>,
) -> Result<(), CopyError> {
    check_source_length(source, len)?;
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0;
    while let Some((start, end)) = next_data(source, offset, len) {
        control.step(start)?;
        offset = copy_extent(source, target, (start, end), &mut buf, control)?;
    }
    target.set_len(len).map_err(CopyError::Write)?;
    control.step(len)
}

/// A regular file shorter than `len` would read as zeros past its end: refuse it.
/// (A block device's metadata says 0; its reads fail or come up short instead.)
fn check_source_length(source: &File, len: u64) -> Result<(), CopyError> {
    let metadata = source.metadata().map_err(CopyError::Read)?;
    if metadata.is_file() && metadata.len() < len {
        return Err(CopyError::ShortInput {
            expected: len,
            got: metadata.len(),
        });
    }
    Ok(())
}

/// Copies `[start, end)` chunk by chunk; returns where it stopped (`end`).
fn copy_extent(
    source: &File,
    target: &File,
    (start, end): (u64, u64),
    buf: &mut [u8],
    control: &Control<'_>,
) -> Result<u64, CopyError> {
    let mut offset = start;
    while offset < end {
        let want = usize::try_from(end - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let got = read_at_full(source, &mut buf[..want], offset)?;
        if got < want {
            return Err(CopyError::ShortInput {
                expected: end,
                got: offset + got as u64,
            });
        }
        write_sparse(target, offset, &buf[..got])?;
        offset += got as u64;
        control.step(offset)?;
    }
    Ok(offset)
}

fn read_at_full(source: &File, buf: &mut [u8], offset: u64) -> Result<usize, CopyError> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(CopyError::Read(error)),
        }
    }
    Ok(filled)
}

/// Reads until `buf` is full or the input ends.
fn read_full(source: &mut dyn Read, buf: &mut [u8]) -> Result<usize, CopyError> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(CopyError::Read(error)),
        }
    }
    Ok(filled)
}

/// Fails unless the stream is at its end.
pub fn expect_end(source: &mut dyn Read, expected: u64) -> Result<(), CopyError> {
    let mut probe = [0u8; 1];
    match read_full(source, &mut probe)? {
        0 => Ok(()),
        _ => Err(CopyError::LongInput { expected }),
    }
}

/// Copies exactly `len` bytes of a stream (stdin, a pipe) into a regular file, not
/// writing all-zero chunks; `target` ends up `len` long.
pub fn copy_stream_to_file(
    source: &mut dyn Read,
    target: &File,
    len: u64,
    control: &Control<'_>,
) -> Result<(), CopyError> {
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0;
    while offset < len {
        let want = usize::try_from(len - offset)
            .unwrap_or(usize::MAX)
            .min(CHUNK);
        let got = read_full(source, &mut buf[..want])?;
        if got == 0 {
            return Err(CopyError::ShortInput {
                expected: len,
                got: offset,
            });
        }
        write_sparse(target, offset, &buf[..got])?;
        offset += got as u64;
        control.step(offset)?;
    }
    target.set_len(len).map_err(CopyError::Write)
}

/// Copies exactly `len` bytes from one stream to another (export to stdout, or into
/// something that is not a regular file), writing every byte.
pub fn copy_stream(
    source: &mut dyn Read,
    target: &mut dyn Write,
    len: u64,
    control: &Control<'_>,
) -> Result<(), CopyError> {
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0;
    while done < len {
        let want = usize::try_from(len - done).unwrap_or(usize::MAX).min(CHUNK);
        let got = read_full(source, &mut buf[..want])?;
        if got == 0 {
            return Err(CopyError::ShortInput {
                expected: len,
                got: done,
            });
        }
        target.write_all(&buf[..got]).map_err(CopyError::Write)?;
        done += got as u64;
        control.step(done)?;
    }
    target.flush().map_err(CopyError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1 << 20;

    fn run<T>(copy: impl FnOnce(&Control<'_>) -> T) -> (T, u64) {
        let cancel = AtomicBool::new(false);
        let last = Cell::new(0);
        let progress = |done| last.set(done);
        let result = copy(&Control {
            cancel: &cancel,
            progress: &progress,
        });
        (result, last.get())
    }

    /// A file of `len` bytes holding `data` at `offset` and holes elsewhere.
    fn sparse_source(dir: &tempfile::TempDir, len: u64, offset: u64, data: &[u8]) -> File {
        let path = dir.path().join("source.img");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        file.set_len(len).unwrap();
        file.write_all_at(data, offset).unwrap();
        file
    }

    fn target(dir: &tempfile::TempDir) -> File {
        let path = dir.path().join("target.img");
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap()
    }

    fn read_all(file: &File) -> Vec<u8> {
        let mut content = vec![0u8; file.metadata().unwrap().len() as usize];
        file.read_exact_at(&mut content, 0).unwrap();
        content
    }

    #[test]
    fn file_copy_keeps_content_and_size_and_leaves_holes() {
        let dir = tempfile::tempdir().unwrap();
        let source = sparse_source(&dir, 64 * MIB, 10 * MIB + 5, b"hello");
        let target = target(&dir);
        let (result, done) = run(|control| copy_file_sparse(&source, &target, 64 * MIB, control));
        result.unwrap();
        assert_eq!(done, 64 * MIB);
        assert_eq!(read_all(&target), read_all(&source));
        let allocated = target.metadata().unwrap().blocks() * 512;
        assert!(allocated <= 2 * MIB, "target allocates {allocated} bytes");
    }

    #[test]
    fn zero_chunks_of_a_stream_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut input = vec![0u8; 8 * MIB as usize];
        input[3 * MIB as usize] = 7;
        let target = target(&dir);
        let (result, _) =
            run(|control| copy_stream_to_file(&mut input.as_slice(), &target, 8 * MIB, control));
        result.unwrap();
        assert_eq!(read_all(&target), input);
        assert!(target.metadata().unwrap().blocks() * 512 <= 2 * MIB);
    }

    #[test]
    fn short_stream_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let target = target(&dir);
        let (result, _) =
            run(|control| copy_stream_to_file(&mut &[1u8; 10][..], &target, 20, control));
        assert!(matches!(
            result,
            Err(CopyError::ShortInput {
                expected: 20,
                got: 10
            })
        ));
    }

    #[test]
    fn long_stream_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let target = target(&dir);
        let mut input = &[1u8; 30][..];
        let (result, _) = run(|control| copy_stream_to_file(&mut input, &target, 20, control));
        assert!(result.is_ok());
        assert!(matches!(
            expect_end(&mut input, 20),
            Err(CopyError::LongInput { expected: 20 })
        ));
        assert!(expect_end(&mut &[][..], 20).is_ok());
    }

    #[test]
    fn stream_copy_writes_every_byte() {
        let input: Vec<u8> = (0..3 * MIB).map(|i| (i % 251) as u8).collect();
        let mut output = Vec::new();
        let (result, done) =
            run(|control| copy_stream(&mut input.as_slice(), &mut output, 3 * MIB, control));
        result.unwrap();
        assert_eq!((output, done), (input, 3 * MIB));
    }

    #[test]
    fn cancel_stops_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let target = target(&dir);
        let cancel = AtomicBool::new(true);
        let control = Control {
            cancel: &cancel,
            progress: &|_| {},
        };
        let input = vec![1u8; 4 * MIB as usize];
        let result = copy_stream_to_file(&mut input.as_slice(), &target, 4 * MIB, &control);
        assert!(matches!(result, Err(CopyError::Cancelled)));
        assert!(target.metadata().unwrap().len() <= MIB);
    }

    #[test]
    fn all_hole_source_gives_all_hole_target_of_full_size() {
        let dir = tempfile::tempdir().unwrap();
        let source = sparse_source(&dir, 16 * MIB, 0, b"");
        let target = target(&dir);
        let (result, done) = run(|control| copy_file_sparse(&source, &target, 16 * MIB, control));
        result.unwrap();
        assert_eq!(
            (target.metadata().unwrap().len(), done),
            (16 * MIB, 16 * MIB)
        );
        assert_eq!(target.metadata().unwrap().blocks(), 0);
    }

    #[test]
    fn truncated_source_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let source = sparse_source(&dir, MIB, 0, b"data");
        let target = target(&dir);
        let (result, _) = run(|control| copy_file_sparse(&source, &target, 2 * MIB, control));
        assert!(
            matches!(result, Err(CopyError::ShortInput { expected, got }) if expected == 2 * MIB && got == MIB)
        );
    }
}
