//! Synthetic PostgreSQL WAL segments.
//!
//! Every page header is valid for the page's own position, so a server that
//! checks headers accepts the load, and the payload compresses like real WAL.
//!
//! # Layout
//!
//! - this file: what to generate ([`GenerateSpec`]), the loop that writes
//!   numbered segment files to a directory ([`generate`]), and the writer
//!   that stops a segment when the run is cancelled.
//! - `pages`: the page-header layout (`XLogPageHeaderData`, short and long
//!   form), [`PgVersion`] magics, [`write_segment`] and
//!   [`check_page_headers`].
//! - `payload`: the [`Payload`] pool that fills the pages, synthetic or
//!   taken from a user's real segment.
//! - `synthetic`: the deterministic WAL-like records of the synthetic pool.
//! - `tests`: the unit tests of all of the above.

use std::fs::{self, File};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use tokio_util::sync::CancellationToken;

mod pages;
mod payload;
mod synthetic;
#[cfg(test)]
mod tests;

pub use pages::{
    check_page_headers, segment_range, write_segment, PgVersion, SegmentShape, DEFAULT_SYSTEM_ID,
    LONG_HEADER, SHORT_HEADER,
};
pub use payload::Payload;

use super::walname::{segment_bytes_from_mib, SegmentName, MIB, PAGE_SIZE};

/// What went wrong while loading a template or writing segments.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot read WAL template {path}: {source}")]
    TemplateRead { path: PathBuf, source: io::Error },
    #[error("WAL template {path} is empty")]
    TemplateEmpty { path: PathBuf },
    #[error(
        "WAL template {path} is {len} bytes, not a whole number of {PAGE_SIZE}-byte WAL pages"
    )]
    TemplateSize { path: PathBuf, len: u64 },
    #[error("WAL template {path} is not a PostgreSQL 15, 16 or 17 WAL segment: {found}")]
    TemplateNotWal { path: PathBuf, found: String },
    #[error("invalid WAL segment size {bytes} bytes: {reason}")]
    SegmentSize { bytes: u64, reason: String },
    #[error("invalid timeline 0: PostgreSQL timelines start at 1")]
    Timeline,
    #[error(
        "start LSN {} is not at a WAL segment boundary for {} MiB segments; \
         use {} (the boundary below)",
        fmt_lsn(*lsn), segment_bytes / MIB, fmt_lsn(*boundary)
    )]
    UnalignedStart {
        lsn: u64,
        segment_bytes: u64,
        boundary: u64,
    },
    #[error("{count} segments of {segment_bytes} bytes from LSN {} run past the largest LSN", fmt_lsn(*start_lsn))]
    LsnOverflow {
        start_lsn: u64,
        count: u64,
        segment_bytes: u64,
    },
    #[error("cannot create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot rename {from} to {to}: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
}

/// Formats an LSN the way PostgreSQL prints it.
fn fmt_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// What to generate and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateSpec {
    /// Directory for the segments, created if missing.
    pub dir: PathBuf,
    /// Number of consecutive segments.
    pub count: u64,
    /// Segment size in bytes (1 MiB to 1 GiB, a power of two).
    pub segment_bytes: u64,
    /// Timeline of every segment (1 or more).
    pub timeline: u32,
    /// LSN of the first segment's first byte; must be a segment boundary.
    pub start_lsn: u64,
    /// Which page magic to write.
    pub pg_version: PgVersion,
    /// Write `NAME.gz` instead of `NAME`.
    pub gzip: bool,
    /// `xlp_sysid` in every segment's long header.
    pub system_id: u64,
}

impl GenerateSpec {
    /// Checks the spec and returns the first segment's name.
    fn first_segment(&self) -> Result<SegmentName, GenerateError> {
        let bytes = self.segment_bytes;
        let mib = if bytes.is_multiple_of(MIB) {
            bytes / MIB
        } else {
            0
        };
        segment_bytes_from_mib(mib)
            .map_err(|reason| GenerateError::SegmentSize { bytes, reason })?;
        if self.timeline == 0 {
            return Err(GenerateError::Timeline);
        }
        if !self.start_lsn.is_multiple_of(bytes) {
            return Err(GenerateError::UnalignedStart {
                lsn: self.start_lsn,
                segment_bytes: bytes,
                boundary: self.start_lsn - self.start_lsn % bytes,
            });
        }
        // The last segment may end exactly at 2^64: that is an end, not a start.
        let end = self.start_lsn as u128 + self.count as u128 * bytes as u128;
        if end > 1u128 << 64 {
            return Err(GenerateError::LsnOverflow {
                start_lsn: self.start_lsn,
                count: self.count,
                segment_bytes: bytes,
            });
        }
        Ok(SegmentName::containing(
            self.timeline,
            self.start_lsn,
            bytes,
        ))
    }
}

/// Writes `spec.count` consecutive segments into `spec.dir` and returns how
/// many it wrote. Calls `on_file(path, size_on_disk)` after each file.
///
/// Each file is written as `NAME.tmp` and renamed when complete, so an
/// interrupted run never leaves a truncated file under a WAL name.
/// `stop` is looked at between batches of pages: once cancelled, the
/// segment being written is removed and the count written so far returned
/// (fewer than `spec.count`). Files are
/// not fsynced: generated WAL is reproducible, and the benchmark measures the
/// server, not our disk. An existing file with the same name is replaced.
pub fn generate(
    spec: &GenerateSpec,
    payload: &Payload,
    stop: &CancellationToken,
    on_file: &mut dyn FnMut(&Path, u64),
) -> Result<u64, GenerateError> {
    let mut name = spec.first_segment()?;
    fs::create_dir_all(&spec.dir).map_err(|source| GenerateError::CreateDir {
        path: spec.dir.clone(),
        source,
    })?;
    for written in 0..spec.count {
        if written > 0 {
            name = name.next(spec.segment_bytes);
        }
        let file_name = if spec.gzip {
            format!("{name}.gz")
        } else {
            name.to_string()
        };
        let path = spec.dir.join(&file_name);
        let tmp = spec.dir.join(format!("{file_name}.tmp"));
        let size = match write_file(&tmp, spec, name, payload, stop) {
            Ok(size) => size,
            Err(source) => {
                let _ = fs::remove_file(&tmp);
                if stop.is_cancelled() {
                    return Ok(written);
                }
                return Err(GenerateError::Write { path: tmp, source });
            }
        };
        fs::rename(&tmp, &path).map_err(|source| GenerateError::Rename {
            from: tmp.clone(),
            to: path.clone(),
            source,
        })?;
        on_file(&path, size);
    }
    Ok(spec.count)
}

/// Writes one segment file and returns its size on disk.
fn write_file(
    path: &Path,
    spec: &GenerateSpec,
    name: SegmentName,
    payload: &Payload,
    stop: &CancellationToken,
) -> io::Result<u64> {
    let mut file = Stoppable {
        inner: File::create(path)?,
        stop,
    };
    let (bytes, pg, sysid) = (spec.segment_bytes, spec.pg_version, spec.system_id);
    if !spec.gzip {
        write_segment(&mut file, name, bytes, pg, sysid, payload)?;
        return Ok(bytes);
    }
    let buffered = io::BufWriter::with_capacity(MIB as usize, &mut file);
    let mut gz = GzEncoder::new(buffered, Compression::fast());
    write_segment(&mut gz, name, bytes, pg, sysid, payload)?;
    gz.finish()?.flush()?;
    Ok(file.inner.metadata()?.len())
}

/// A writer that fails once `stop` is cancelled, so a segment being written
/// stops within one batch of pages.
struct Stoppable<'a, W> {
    inner: W,
    stop: &'a CancellationToken,
}

impl<W: Write> Stoppable<'_, W> {
    fn check(&self) -> io::Result<()> {
        if self.stop.is_cancelled() {
            return Err(io::Error::other("generation stopped"));
        }
        Ok(())
    }
}

impl<W: Write> Write for Stoppable<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        self.inner.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.check()?;
        self.inner.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
