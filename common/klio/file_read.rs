//! Reading a segment chunk by chunk without blocking the runtime, and
//! without moving every chunk to another thread when the bytes are already
//! in memory.
//!
//! A read from the page cache is a copy; handing each chunk from a reader
//! thread to the task that encrypts it costs two thread wake-ups and moves
//! the bytes to another core's cache, which was 15% of `walplayer play`'s
//! CPU against the raw rustls pipe (BENCHMARKS.md). So a plain file is read
//! on the runtime's own thread when the read cannot wait on a disk:
//!
//! - on a memory filesystem (tmpfs, ramfs), always;
//! - elsewhere, with `preadv2(RWF_NOWAIT)`, which reads what the page cache
//!   holds and never waits; whatever it cannot read without waiting is read
//!   on a blocking thread, as is every chunk of a filesystem that does not
//!   support it, and every chunk of a gzip file (decompressing is work for
//!   a blocking thread).
//!
//! Chunks are read into uninitialised capacity: zeroing them first was 10%
//! of play's user CPU.

use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;

use walplayer_wal::source::Segment;

/// A segment's bytes, read in order.
pub struct SegmentInput {
    kind: Kind,
}

enum Kind {
    /// A plain file, read at `offset` with positional reads.
    File {
        file: Arc<File>,
        offset: u64,
        inline: Inline,
    },
    /// A gzip file's decompressed bytes, on a blocking thread.
    Gzip(Option<Box<dyn Read + Send>>),
}

/// Whether a plain file's reads may run on the runtime's thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inline {
    /// Memory-backed: no read waits on a disk.
    Always,
    /// Only what `RWF_NOWAIT` reads.
    NoWait,
    /// Never: every read on a blocking thread.
    Never,
}

impl SegmentInput {
    pub fn open(segment: &Segment) -> io::Result<SegmentInput> {
        if segment.gzip {
            return Ok(SegmentInput {
                kind: Kind::Gzip(Some(segment.open()?)),
            });
        }
        let file = File::open(&segment.path)?;
        let inline = inline_for(&file);
        Ok(SegmentInput {
            kind: Kind::File {
                file: Arc::new(file),
                offset: 0,
                inline,
            },
        })
    }

    /// Appends up to `n` bytes to `chunk`, fewer only where the input ends;
    /// returns the chunk and the bytes read.
    pub async fn read(&mut self, mut chunk: Vec<u8>, n: usize) -> (Vec<u8>, io::Result<usize>) {
        chunk.reserve(n);
        match &mut self.kind {
            Kind::File {
                file,
                offset,
                inline,
            } => {
                let mut got = 0;
                if *inline != Inline::Never {
                    match read_at(file, &mut chunk, n, *offset, *inline == Inline::NoWait) {
                        Ok((read, waits)) => {
                            *offset += read as u64;
                            if !waits {
                                return (chunk, Ok(read));
                            }
                            got = read;
                        }
                        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                            *inline = Inline::Never
                        }
                        Err(e) => return (chunk, Err(e)),
                    }
                }
                // What the page cache did not hold (or everything, where
                // reads cannot be asked not to wait): on a blocking thread.
                let (file, at, rest) = (file.clone(), *offset, n - got);
                let joined = tokio::task::spawn_blocking(move || {
                    let read = read_at(&file, &mut chunk, rest, at, false).map(|(read, _)| read);
                    (chunk, read)
                })
                .await;
                match joined {
                    Ok((chunk, Ok(read))) => {
                        *offset += read as u64;
                        (chunk, Ok(got + read))
                    }
                    Ok((chunk, Err(e))) => (chunk, Err(e)),
                    Err(e) => (Vec::new(), Err(io::Error::other(e))),
                }
            }
            Kind::Gzip(reader) => {
                let Some(mut input) = reader.take() else {
                    return (chunk, Err(io::Error::other("an earlier read failed")));
                };
                let joined = tokio::task::spawn_blocking(move || {
                    let read = (&mut input).take(n as u64).read_to_end(&mut chunk);
                    (input, chunk, read)
                })
                .await;
                match joined {
                    Ok((input, chunk, read)) => {
                        *reader = Some(input);
                        (chunk, read)
                    }
                    Err(e) => (Vec::new(), Err(io::Error::other(e))),
                }
            }
        }
    }
}

/// Where this file's reads may run.
#[cfg(target_os = "linux")]
fn inline_for(file: &File) -> Inline {
    use std::os::fd::AsRawFd;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    // SAFETY: fstatfs writes the struct it is given; the descriptor is open.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut stat) } != 0 {
        return Inline::NoWait;
    }
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between libcs
    match stat.f_type as i64 {
        TMPFS_MAGIC | RAMFS_MAGIC => Inline::Always,
        _ => Inline::NoWait,
    }
}

#[cfg(not(target_os = "linux"))]
fn inline_for(_: &File) -> Inline {
    Inline::Never
}

/// Reads up to `n` bytes at `offset` into `chunk`'s spare capacity, fewer
/// where the file ends or, with `nowait`, where the page cache stops
/// holding it; the bytes read, and whether it stopped for the latter.
fn read_at(
    file: &File,
    chunk: &mut Vec<u8>,
    n: usize,
    offset: u64,
    nowait: bool,
) -> io::Result<(usize, bool)> {
    chunk.reserve(n);
    let mut got = 0;
    while got < n {
        let spare = &mut chunk.spare_capacity_mut()[..n - got];
        match pread(file, spare, offset + got as u64, nowait) {
            Ok(0) => break,
            Ok(read) => {
                // SAFETY: the kernel initialised `read` bytes right after
                // the vector's length.
                unsafe { chunk.set_len(chunk.len() + read) };
                got += read;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if nowait && e.kind() == io::ErrorKind::WouldBlock => return Ok((got, true)),
            // Whatever stopped a read that had already made progress, the
            // rest goes to the blocking read, which reports it if it lasts:
            // the bytes read are never counted twice.
            Err(_) if nowait && got > 0 => return Ok((got, true)),
            Err(e) => return Err(e),
        }
    }
    Ok((got, false))
}

/// One positional read into uninitialised memory.
#[cfg(target_os = "linux")]
fn pread(
    file: &File,
    buf: &mut [std::mem::MaybeUninit<u8>],
    offset: u64,
    nowait: bool,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let flags = if nowait { libc::RWF_NOWAIT } else { 0 };
    // SAFETY: `iov` describes memory we own and may write; the kernel
    // writes at most `buf.len()` bytes there; the descriptor is open.
    let read = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset as libc::off_t, flags) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(read as usize)
}

#[cfg(not(target_os = "linux"))]
fn pread(
    file: &File,
    buf: &mut [std::mem::MaybeUninit<u8>],
    offset: u64,
    _nowait: bool,
) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    // Portable and safe: initialise, then read.
    let buf: &mut [u8] = {
        for b in buf.iter_mut() {
            b.write(0);
        }
        // SAFETY: every byte was just initialised.
        unsafe { &mut *(buf as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) }
    };
    file.read_at(buf, offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn segment(path: std::path::PathBuf, size: u64, gzip: bool) -> Segment {
        Segment {
            path,
            wal_name: "000000010000000000000001".into(),
            size,
            gzip,
            unreadable: None,
        }
    }

    /// Reads `input` to its end in chunks of `n`, after `head`.
    async fn read_all(mut input: SegmentInput, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let (chunk, read) = input.read(b"head".to_vec(), n).await;
            let read = read.unwrap();
            assert_eq!(&chunk[..4], b"head", "the head stays in front");
            assert_eq!(chunk.len(), 4 + read);
            out.extend_from_slice(&chunk[4..]);
            if read < n {
                return out;
            }
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len as u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn every_inline_mode_reads_a_file_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (short, long) = (dir.path().join("short"), dir.path().join("long"));
        std::fs::write(&short, data(5_003)).unwrap();
        std::fs::write(&long, data(1_000_003)).unwrap();
        for inline in [Inline::Always, Inline::NoWait, Inline::Never] {
            for (n, path) in [
                (1, &short),
                (4096, &long),
                (65_536, &long),
                (300_000, &long),
            ] {
                let bytes = std::fs::read(path).unwrap();
                let input = SegmentInput {
                    kind: Kind::File {
                        file: Arc::new(File::open(path).unwrap()),
                        offset: 0,
                        inline,
                    },
                };
                assert_eq!(read_all(input, n).await, bytes, "{inline:?}, chunks of {n}");
            }
        }
    }

    #[tokio::test]
    async fn a_gzip_file_reads_decompressed_and_opened_files_pick_a_mode() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(200_000);
        let gz = dir.path().join("f.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        enc.finish().unwrap();
        let input = SegmentInput::open(&segment(gz, bytes.len() as u64, true)).unwrap();
        assert_eq!(read_all(input, 65_536).await, bytes);

        let plain = dir.path().join("p");
        std::fs::write(&plain, &bytes).unwrap();
        let input = SegmentInput::open(&segment(plain, bytes.len() as u64, false)).unwrap();
        assert!(matches!(
            input.kind,
            Kind::File {
                inline: Inline::Always | Inline::NoWait | Inline::Never,
                ..
            }
        ));
        assert_eq!(read_all(input, 65_536).await, bytes);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn dev_shm_is_read_inline_always() {
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return; // no /dev/shm here: nothing to check
        };
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        assert_eq!(inline_for(&File::open(&path).unwrap()), Inline::Always);
    }
}
