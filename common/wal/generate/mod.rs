//! Synthetic PostgreSQL WAL segments.
//!
//! Owns the page-header layout (`XLogPageHeaderData`, short and long form),
//! the payload pool that fills the pages (synthetic, or taken from a user's
//! real segment), and writing numbered segments to a directory. Every page
//! header is valid for the page's own position, so a server that checks
//! headers accepts the load, and the payload compresses like real WAL.
//!
//! Writing is disk-bound: the payload is never copied, each batch of pages
//! goes to the kernel as one `write_vectored` of header/payload slices.

use std::fs::{self, File};
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::write::GzEncoder;
use flate2::Compression;
use tokio_util::sync::CancellationToken;

mod synthetic;

use super::walname::{segment_bytes_from_mib, SegmentName, MIB, PAGE_SIZE};
use synthetic::{synthetic_wal, SYNTHETIC_BYTES};

/// Size of a short page header (SizeOfXLogShortPHD, MAXALIGNed).
pub const SHORT_HEADER: usize = 24;

/// Size of a long page header (SizeOfXLogLongPHD), first page of a segment.
pub const LONG_HEADER: usize = 40;

/// `xlp_sysid` walplayer writes unless told otherwise (any fixed value
/// works; PostgreSQL derives its own from the initdb time).
pub const DEFAULT_SYSTEM_ID: u64 = 7_316_000_000_000_000_001;

/// `xlp_info`: this page has the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
/// `xlp_info`: set by PostgreSQL on every page written outside a backup; we
/// copy it so our headers look like the ones a running server writes.
const XLP_BKP_REMOVABLE: u16 = 0x0004;

/// Pages per `write_vectored` call: at most two payload slices and one
/// header slice per page keeps a batch under Linux's IOV_MAX of 1024.
const BATCH_PAGES: usize = 340;

/// The PostgreSQL major version whose WAL page magic we write.
///
/// The default is 16: the middle of the supported range, and what most
/// CloudNativePG clusters run today.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum PgVersion {
    #[value(name = "15")]
    V15,
    #[default]
    #[value(name = "16")]
    V16,
    #[value(name = "17")]
    V17,
}

impl PgVersion {
    /// All supported versions, oldest first.
    pub const ALL: [PgVersion; 3] = [PgVersion::V15, PgVersion::V16, PgVersion::V17];

    /// `XLOG_PAGE_MAGIC` of this major version.
    pub fn magic(self) -> u16 {
        match self {
            PgVersion::V15 => 0xD110,
            PgVersion::V16 => 0xD113,
            PgVersion::V17 => 0xD116,
        }
    }

    /// The version whose page magic is `magic`, if we know it.
    pub fn from_magic(magic: u16) -> Option<PgVersion> {
        PgVersion::ALL.into_iter().find(|v| v.magic() == magic)
    }

    /// The major version number.
    pub fn major(self) -> u32 {
        match self {
            PgVersion::V15 => 15,
            PgVersion::V16 => 16,
            PgVersion::V17 => 17,
        }
    }
}

impl std::fmt::Display for PgVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.major())
    }
}

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

/// The bytes that fill pages after their headers, read as an endless stream
/// that wraps around. Cheap to clone; share it between writers.
#[derive(Clone)]
pub struct Payload {
    pool: Arc<[u8]>,
    /// Length of one period of the stream; `pool` may hold several copies so
    /// that one page never needs more than two slices.
    period: usize,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl Payload {
    fn from_stream(stream: Vec<u8>) -> Payload {
        debug_assert!(!stream.is_empty());
        let period = stream.len();
        let copies = (2 * PAGE_SIZE).div_ceil(period).max(1);
        let pool: Arc<[u8]> = stream.repeat(copies).into();
        Payload { pool, period }
    }

    /// One period of the payload stream.
    pub fn bytes(&self) -> &[u8] {
        &self.pool[..self.period]
    }

    /// The slices holding `len` stream bytes starting at stream offset `pos`.
    fn slices<'a>(&'a self, pos: usize, len: usize, out: &mut Vec<IoSlice<'a>>) {
        let pos = pos % self.period;
        let first = len.min(self.pool.len() - pos);
        out.push(IoSlice::new(&self.pool[pos..pos + first]));
        if first < len {
            // The pool holds at least two pages, so one wrap is enough.
            out.push(IoSlice::new(&self.pool[..len - first]));
        }
    }

    /// A deterministic pool of WAL-like records that compresses like WAL
    /// written by pgbench.
    ///
    /// Calibration, gzip level 6, PostgreSQL 15, `pgbench -i -s 5` then
    /// `pgbench -c 2 -T 20`, 16 MiB segments:
    /// - `pgbench -i` (COPY of accounts, index build): 14.8:1 (8.2 to 31:1);
    /// - just after a checkpoint (94% full-page images): 9.7:1;
    /// - steady state, no full-page images: 3.1:1;
    /// - all ten segments together: 7.5:1.
    ///
    /// The pool imitates the busy part of a run with checkpoints: pgbench
    /// transactions (three HOT updates, an insert, a commit) where about one
    /// block reference in twelve carries a full-page image, and a few
    /// mostly-zero images of non-heap pages. It gzips at about 9:1 with
    /// flate2's default level (see `synthetic_ratio_is_calibrated`).
    pub fn synthetic() -> Payload {
        Payload::from_stream(synthetic_wal(SYNTHETIC_BYTES))
    }

    /// The payload of a user's real WAL segment: every page without its
    /// header, so generated load compresses like their production.
    ///
    /// Accepts a plain segment or a gzip-compressed one, of any whole number
    /// of pages; pages that are all zeros (the tail of a `.partial` file) are
    /// kept as zeros.
    pub fn from_template(path: &Path) -> Result<Payload, GenerateError> {
        let data = read_template(path)?;
        if data.is_empty() {
            return Err(GenerateError::TemplateEmpty { path: path.into() });
        }
        if !data.len().is_multiple_of(PAGE_SIZE) {
            return Err(GenerateError::TemplateSize {
                path: path.into(),
                len: data.len() as u64,
            });
        }
        let not_wal = |found: String| GenerateError::TemplateNotWal {
            path: path.into(),
            found,
        };
        let first = PageHeader::parse(&data);
        let version = PgVersion::from_magic(first.magic).ok_or_else(|| {
            not_wal(format!(
                "the first page starts with magic 0x{:04X}, expected {}",
                first.magic,
                known_magics()
            ))
        })?;
        if first.info & XLP_LONG_HEADER == 0 {
            return Err(not_wal(format!(
                "the first page (PostgreSQL {version}) has no long header, so the file \
                 does not start at a segment boundary"
            )));
        }
        let mut stream = Vec::with_capacity(data.len());
        for (i, page) in data.chunks_exact(PAGE_SIZE).enumerate() {
            let header = if i == 0 { LONG_HEADER } else { SHORT_HEADER };
            let magic = u16::from_le_bytes([page[0], page[1]]);
            let blank = page[..SHORT_HEADER].iter().all(|&b| b == 0);
            if magic != version.magic() && !blank {
                return Err(not_wal(format!(
                    "page {i} (offset {}) has magic 0x{magic:04X}, but the first page has \
                     0x{:04X} (PostgreSQL {version})",
                    i * PAGE_SIZE,
                    version.magic()
                )));
            }
            stream.extend_from_slice(&page[header..]);
        }
        Ok(Payload::from_stream(stream))
    }
}

fn known_magics() -> String {
    let all: Vec<String> = PgVersion::ALL
        .iter()
        .map(|v| format!("0x{:04X} (PostgreSQL {v})", v.magic()))
        .collect();
    all.join(", ")
}

/// Reads a template, decompressing it if it is gzip.
fn read_template(path: &Path) -> Result<Vec<u8>, GenerateError> {
    let err = |source| GenerateError::TemplateRead {
        path: path.into(),
        source,
    };
    let data = fs::read(path).map_err(err)?;
    if !data.starts_with(&[0x1f, 0x8b]) {
        return Ok(data);
    }
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(&data[..])
        .read_to_end(&mut plain)
        .map_err(err)?;
    Ok(plain)
}

/// The fields of a page header that we check.
struct PageHeader {
    magic: u16,
    info: u16,
    tli: u32,
    pageaddr: u64,
    seg_size: u32,
    blcksz: u32,
}

impl PageHeader {
    /// Reads the header at the start of `page`; the long-only fields are
    /// zero unless the page has the long flag.
    fn parse(page: &[u8]) -> PageHeader {
        let u16_at = |o: usize| u16::from_le_bytes([page[o], page[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(page[o..o + 4].try_into().unwrap());
        let info = u16_at(2);
        let long = info & XLP_LONG_HEADER != 0;
        PageHeader {
            magic: u16_at(0),
            info,
            tli: u32_at(4),
            pageaddr: u64::from_le_bytes(page[8..16].try_into().unwrap()),
            seg_size: if long { u32_at(32) } else { 0 },
            blcksz: if long { u32_at(36) } else { 0 },
        }
    }
}

/// Writes the header of the page at `pageaddr` into `out` (24 or 40 bytes).
fn put_page_header(
    out: &mut Vec<u8>,
    version: PgVersion,
    tli: u32,
    pageaddr: u64,
    long: Option<(u64, u64)>,
) {
    let mut info = XLP_BKP_REMOVABLE;
    if long.is_some() {
        info |= XLP_LONG_HEADER;
    }
    out.extend_from_slice(&version.magic().to_le_bytes());
    out.extend_from_slice(&info.to_le_bytes());
    out.extend_from_slice(&tli.to_le_bytes());
    out.extend_from_slice(&pageaddr.to_le_bytes());
    // xlp_rem_len: we never continue a record across pages, and padding.
    out.extend_from_slice(&[0; 8]);
    if let Some((system_id, segment_bytes)) = long {
        out.extend_from_slice(&system_id.to_le_bytes());
        out.extend_from_slice(&(segment_bytes as u32).to_le_bytes());
        out.extend_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    }
}

/// Payload bytes one segment consumes.
fn payload_per_segment(segment_bytes: u64) -> u64 {
    segment_bytes
        - (segment_bytes / PAGE_SIZE as u64) * SHORT_HEADER as u64
        - (LONG_HEADER - SHORT_HEADER) as u64
}

/// Checks a segment size: a whole number of pages that fits `xlp_seg_size`.
fn check_segment_bytes(segment_bytes: u64) -> io::Result<()> {
    if segment_bytes == 0
        || !segment_bytes.is_multiple_of(PAGE_SIZE as u64)
        || segment_bytes > u32::MAX as u64
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("segment size {segment_bytes} is not a whole number of WAL pages below 4 GiB"),
        ));
    }
    Ok(())
}

/// Writes one whole segment: valid headers for `name`'s position, payload
/// from `payload`.
///
/// The payload stream is read continuously across consecutive segments, so
/// neighbouring segments differ, and a template of exactly one segment is
/// reproduced byte for byte apart from the headers.
pub fn write_segment(
    out: &mut impl Write,
    name: SegmentName,
    segment_bytes: u64,
    pg_version: PgVersion,
    system_id: u64,
    payload: &Payload,
) -> io::Result<()> {
    check_segment_bytes(segment_bytes)?;
    let start_lsn = name.start_lsn(segment_bytes);
    let pages = (segment_bytes / PAGE_SIZE as u64) as usize;
    let index = start_lsn / segment_bytes;
    let mut pos = (index as u128 * payload_per_segment(segment_bytes) as u128
        % payload.period as u128) as usize;

    let mut headers = Vec::with_capacity(BATCH_PAGES * SHORT_HEADER + LONG_HEADER);
    for batch in (0..pages).step_by(BATCH_PAGES) {
        let end = (batch + BATCH_PAGES).min(pages);
        headers.clear();
        for page in batch..end {
            let long = (page == 0).then_some((system_id, segment_bytes));
            let pageaddr = start_lsn + (page * PAGE_SIZE) as u64;
            put_page_header(&mut headers, pg_version, name.timeline, pageaddr, long);
        }
        // A fresh vector each batch: it borrows `headers`, refilled above.
        let mut slices = Vec::with_capacity(3 * (end - batch));
        let mut at = 0;
        for page in batch..end {
            let header = if page == 0 { LONG_HEADER } else { SHORT_HEADER };
            slices.push(IoSlice::new(&headers[at..at + header]));
            at += header;
            payload.slices(pos, PAGE_SIZE - header, &mut slices);
            pos = (pos + PAGE_SIZE - header) % payload.period;
        }
        write_all_vectored(out, &mut slices)?;
    }
    Ok(())
}

/// `Write::write_all_vectored`, which is not stable yet.
fn write_all_vectored(out: &mut impl Write, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Verifies every page header of the whole segment `data` named `name`, and
/// returns the PostgreSQL version its magic belongs to.
pub fn check_page_headers(
    data: &[u8],
    name: SegmentName,
    segment_bytes: u64,
) -> Result<PgVersion, String> {
    if data.len() as u64 != segment_bytes {
        return Err(format!(
            "segment {name} is {} bytes, expected {segment_bytes}",
            data.len()
        ));
    }
    check_segment_bytes(segment_bytes).map_err(|e| e.to_string())?;
    let start_lsn = name.start_lsn(segment_bytes);
    let first = PageHeader::parse(data);
    let version = PgVersion::from_magic(first.magic).ok_or_else(|| {
        format!(
            "segment {name}: magic 0x{:04X} on the first page, expected {}",
            first.magic,
            known_magics()
        )
    })?;
    for (i, page) in data.chunks_exact(PAGE_SIZE).enumerate() {
        let lsn = start_lsn + (i * PAGE_SIZE) as u64;
        let bad = |what: String| format!("segment {name}, page {i} (LSN {}): {what}", fmt_lsn(lsn));
        let h = PageHeader::parse(page);
        if h.magic != version.magic() {
            return Err(bad(format!(
                "magic 0x{:04X}, expected 0x{:04X}",
                h.magic,
                version.magic()
            )));
        }
        if h.tli != name.timeline {
            return Err(bad(format!(
                "timeline {}, expected {}",
                h.tli, name.timeline
            )));
        }
        if h.pageaddr != lsn {
            return Err(bad(format!("page address {}", fmt_lsn(h.pageaddr))));
        }
        let long = h.info & XLP_LONG_HEADER != 0;
        if long != (i == 0) {
            return Err(bad(format!(
                "long header flag is {long}, expected only on the first page"
            )));
        }
        if i == 0 && (h.seg_size as u64 != segment_bytes || h.blcksz as usize != PAGE_SIZE) {
            return Err(bad(format!(
                "long header says segment size {} and page size {}",
                h.seg_size, h.blcksz
            )));
        }
    }
    Ok(version)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const SEG: u64 = MIB;

    fn spec(dir: &Path, count: u64) -> GenerateSpec {
        GenerateSpec {
            dir: dir.to_path_buf(),
            count,
            segment_bytes: SEG,
            timeline: 1,
            start_lsn: 0,
            pg_version: PgVersion::default(),
            gzip: false,
            system_id: 7_000_000_000_000_000_001,
        }
    }

    fn run(spec: &GenerateSpec, payload: &Payload) -> Vec<(PathBuf, u64)> {
        let mut files = Vec::new();
        let n = generate(spec, payload, &CancellationToken::new(), &mut |p, b| {
            files.push((p.to_path_buf(), b))
        })
        .unwrap();
        assert_eq!(n, spec.count);
        files
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn names_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(&dir.path().join("a/b"), 3);
        s.segment_bytes = 16 * MIB;
        let files = run(&s, &Payload::synthetic());
        let names: Vec<String> = files
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "000000010000000000000000",
                "000000010000000000000001",
                "000000010000000000000002"
            ]
        );
        assert!(files.iter().all(|(_, b)| *b == 16 * MIB));
        let mut listed: Vec<_> = fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        listed.sort();
        assert_eq!(listed, names, "no temporary files left");
    }

    #[test]
    fn headers_valid_across_log_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), 3);
        s.segment_bytes = 16 * MIB;
        s.start_lsn = 0xFF00_0000;
        s.timeline = 3;
        s.pg_version = PgVersion::V17;
        let files = run(&s, &Payload::synthetic());
        let expect = [
            "0000000300000000000000FF",
            "000000030000000100000000",
            "000000030000000100000001",
        ];
        for ((path, _), want) in files.iter().zip(expect) {
            let name = SegmentName::parse(want).unwrap();
            assert_eq!(path.file_name().unwrap().to_str(), Some(want));
            let data = fs::read(path).unwrap();
            assert_eq!(
                check_page_headers(&data, name, 16 * MIB),
                Ok(PgVersion::V17)
            );
            // The long header only on page 0, checked byte by byte here too.
            assert_eq!(&data[32..40], &[0, 0, 0, 1, 0, 0x20, 0, 0]);
            assert_eq!(&data[24..32], &s.system_id.to_le_bytes());
            for page in data.chunks_exact(PAGE_SIZE).skip(1) {
                assert_eq!(page[2] & 0x02, 0);
            }
        }
    }

    #[test]
    fn every_version_and_position_checks() {
        let payload = Payload::synthetic();
        for version in PgVersion::ALL {
            for lsn in [0, SEG * 7, (5 << 32) + SEG * 3] {
                let name = SegmentName::containing(2, lsn, SEG);
                let mut data = Vec::new();
                write_segment(&mut data, name, SEG, version, 1, &payload).unwrap();
                assert_eq!(data.len() as u64, SEG);
                assert_eq!(check_page_headers(&data, name, SEG), Ok(version));
                let other = name.next(SEG);
                let err = check_page_headers(&data, other, SEG).unwrap_err();
                assert!(
                    err.contains("page 0") && err.contains("page address"),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn check_rejects_damage() {
        let name = SegmentName::containing(1, 0, SEG);
        let mut data = Vec::new();
        write_segment(
            &mut data,
            name,
            SEG,
            PgVersion::V15,
            1,
            &Payload::synthetic(),
        )
        .unwrap();
        let mut bad = data.clone();
        bad[5 * PAGE_SIZE] = 0;
        assert!(check_page_headers(&bad, name, SEG)
            .unwrap_err()
            .contains("page 5"));
        let mut bad = data.clone();
        bad[PAGE_SIZE + 2] |= 0x02;
        assert!(check_page_headers(&bad, name, SEG)
            .unwrap_err()
            .contains("long header"));
        let err = check_page_headers(&data[..PAGE_SIZE], name, SEG).unwrap_err();
        assert!(err.contains("bytes"), "{err}");
        let err = check_page_headers(&data, name, 2 * SEG).unwrap_err();
        assert!(err.contains("bytes"), "{err}");
    }

    #[test]
    fn gzip_matches_plain() {
        let dir = tempfile::tempdir().unwrap();
        let payload = Payload::synthetic();
        let mut s = spec(&dir.path().join("plain"), 2);
        s.start_lsn = 40 * SEG;
        let plain = run(&s, &payload);
        s.dir = dir.path().join("gz");
        s.gzip = true;
        let gz = run(&s, &payload);
        for ((p, _), (g, size)) in plain.iter().zip(&gz) {
            assert_eq!(
                g.file_name().unwrap(),
                &*format!("{}.gz", p.file_name().unwrap().to_str().unwrap())
            );
            let compressed = fs::read(g).unwrap();
            assert_eq!(compressed.len() as u64, *size);
            assert!(*size < SEG / 4, "gzip should shrink WAL, got {size}");
            let isize = u32::from_le_bytes(compressed[compressed.len() - 4..].try_into().unwrap());
            assert_eq!(isize as u64, SEG);
            assert!(gunzip(&compressed) == fs::read(p).unwrap());
        }
    }

    #[test]
    fn consecutive_segments_differ() {
        let payload = Payload::synthetic();
        let a = SegmentName::containing(1, 0, SEG);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        write_segment(&mut x, a, SEG, PgVersion::V16, 1, &payload).unwrap();
        write_segment(&mut y, a.next(SEG), SEG, PgVersion::V16, 1, &payload).unwrap();
        assert!(x[PAGE_SIZE..] != y[PAGE_SIZE..]);
    }

    fn strip_headers(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, page) in data.chunks_exact(PAGE_SIZE).enumerate() {
            out.extend_from_slice(&page[if i == 0 { LONG_HEADER } else { SHORT_HEADER }..]);
        }
        out
    }

    #[test]
    fn template_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(&dir.path().join("tpl"), 1);
        s.start_lsn = 9 * SEG;
        s.pg_version = PgVersion::V15;
        let tpl = run(&s, &Payload::synthetic()).remove(0).0;
        let template = fs::read(&tpl).unwrap();
        let payload = Payload::from_template(&tpl).unwrap();
        assert!(payload.bytes() == &strip_headers(&template)[..]);

        s.dir = dir.path().join("out");
        s.start_lsn = (3 << 32) + 100 * SEG;
        s.timeline = 4;
        s.count = 2;
        s.pg_version = PgVersion::V17;
        for (path, _) in run(&s, &payload) {
            let data = fs::read(&path).unwrap();
            let name = SegmentName::parse(path.file_name().unwrap().to_str().unwrap()).unwrap();
            assert_eq!(check_page_headers(&data, name, SEG), Ok(PgVersion::V17));
            assert!(strip_headers(&data) == payload.bytes());
        }

        // A gzip-compressed template gives the same pool.
        s.dir = dir.path().join("gz");
        s.count = 1;
        s.gzip = true;
        let gz = run(&s, &payload).remove(0).0;
        assert!(Payload::from_template(&gz).unwrap().bytes() == payload.bytes());
    }

    #[test]
    fn small_template_wraps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one-page");
        let name = SegmentName::containing(1, 0, SEG);
        let mut data = Vec::new();
        write_segment(
            &mut data,
            name,
            SEG,
            PgVersion::V16,
            1,
            &Payload::synthetic(),
        )
        .unwrap();
        // Pages past the first may be all zeros, as in a .partial file.
        data.truncate(3 * PAGE_SIZE);
        data[2 * PAGE_SIZE..].fill(0);
        fs::write(&path, &data).unwrap();
        let payload = Payload::from_template(&path).unwrap();
        assert_eq!(
            payload.bytes().len(),
            3 * PAGE_SIZE - LONG_HEADER - 2 * SHORT_HEADER
        );
        let mut out = Vec::new();
        write_segment(&mut out, name.next(SEG), SEG, PgVersion::V16, 1, &payload).unwrap();
        assert_eq!(
            check_page_headers(&out, name.next(SEG), SEG),
            Ok(PgVersion::V16)
        );
    }

    #[test]
    fn bad_templates() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str, data: &[u8]| {
            let path = dir.path().join(name);
            fs::write(&path, data).unwrap();
            let err = Payload::from_template(&path).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
            err
        };
        let missing = dir.path().join("missing");
        let err = Payload::from_template(&missing).unwrap_err().to_string();
        assert!(
            err.contains("cannot read") && err.contains("missing"),
            "{err}"
        );
        assert!(at("empty", b"").contains("is empty"));
        assert!(at("odd", &[0; 5000]).contains("5000 bytes"));
        let err = at("zeros", &vec![0; 2 * PAGE_SIZE]);
        assert!(
            err.contains("magic 0x0000") && err.contains("0xD113"),
            "{err}"
        );
        let mut page = vec![0; PAGE_SIZE];
        page[..2].copy_from_slice(&0xD106u16.to_le_bytes());
        assert!(at("pg13", &page).contains("0xD106"));
        page[..2].copy_from_slice(&0xD113u16.to_le_bytes());
        assert!(at("short", &page).contains("no long header"));
        page[2] = 0x02;
        let mut two = page.repeat(2);
        two[PAGE_SIZE..PAGE_SIZE + 2].copy_from_slice(&0xD116u16.to_le_bytes());
        let err = at("mixed", &two);
        assert!(err.contains("page 1") && err.contains("0xD116"), "{err}");
        assert!(at("badgz", &[0x1f, 0x8b, 1, 2, 3]).contains("cannot read"));
    }

    #[test]
    fn bad_specs() {
        let dir = tempfile::tempdir().unwrap();
        let payload = Payload::synthetic();
        let fails = |s: &GenerateSpec| {
            generate(s, &payload, &CancellationToken::new(), &mut |_, _| ())
                .unwrap_err()
                .to_string()
        };
        let mut s = spec(dir.path(), 1);
        s.segment_bytes = 16 * MIB;
        s.start_lsn = 0x1_0123_4567;
        let err = fails(&s);
        assert!(
            err.contains("1/1234567") && err.contains("not at a WAL segment boundary"),
            "{err}"
        );
        assert!(err.contains("use 1/1000000"), "{err}");
        s.start_lsn = 0;
        s.segment_bytes = 3 * MIB;
        assert!(fails(&s).contains("1, 2, 4"));
        s.segment_bytes = SEG;
        s.timeline = 0;
        assert!(fails(&s).contains("timeline"));
        s.timeline = 1;
        s.start_lsn = u64::MAX - SEG + 1;
        s.count = 2;
        assert!(fails(&s).contains("past the largest LSN"));
        s.count = 1;
        s.dir = dir.path().join("last");
        assert_eq!(
            run(&s, &payload)[0].0.file_name().unwrap(),
            "00000001FFFFFFFF00000FFF"
        );
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        s.dir = file.join("sub");
        let err = fails(&s);
        assert!(
            err.contains("cannot create directory") && err.contains("file"),
            "{err}"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "nothing else written"
        );
    }

    /// Synthetic WAL should gzip like real pgbench WAL around a checkpoint
    /// (measured 9.7:1; steady state 3.1:1, initial load 14.8:1).
    #[test]
    fn synthetic_ratio_is_calibrated() {
        let pool = Payload::synthetic();
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(pool.bytes()).unwrap();
        let ratio = pool.bytes().len() as f64 / gz.finish().unwrap().len() as f64;
        assert!(
            (7.0..=13.0).contains(&ratio),
            "synthetic WAL gzips {ratio:.2}:1"
        );
        assert!(
            Payload::synthetic().bytes() == pool.bytes(),
            "deterministic"
        );
    }

    #[test]
    fn a_stop_ends_generation_leaving_only_complete_segments() {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let mut seen = 0;
        let n = generate(
            &spec(dir.path(), 50),
            &Payload::synthetic(),
            &stop,
            &mut |_, _| {
                seen += 1;
                if seen == 3 {
                    stop.cancel();
                }
            },
        )
        .unwrap();
        assert_eq!(n, 3, "stops after the segment during which it was told");
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "no partial or temporary file: {names:?}");
        for name in &names {
            let len = fs::metadata(dir.path().join(name)).unwrap().len();
            assert_eq!(len, SEG, "{name} is a whole segment");
        }
        let none = generate(
            &spec(dir.path(), 5),
            &Payload::synthetic(),
            &stop,
            &mut |_, _| (),
        );
        assert_eq!(none.unwrap(), 0, "a stopped token writes nothing");
    }

    #[test]
    fn a_stop_during_a_segment_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        let name = SegmentName::containing(1, 0, SEG);
        let tmp = dir.path().join("seg.tmp");
        let err = write_file(
            &tmp,
            &spec(dir.path(), 1),
            name,
            &Payload::synthetic(),
            &stop,
        );
        assert!(err.is_err(), "a stopped writer fails the segment");
    }
}
