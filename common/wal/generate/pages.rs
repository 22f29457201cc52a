//! Page headers (`XLogPageHeaderData`, short and long form): the magic of
//! each PostgreSQL version, writing a whole segment with a valid header on
//! every page, and checking the headers of a segment read back.
//!
//! Writing is disk-bound: the payload is never copied, each batch of pages
//! goes to the kernel as one `write_vectored` of header/payload slices.

use std::io::{self, IoSlice, Write};

use super::fmt_lsn;
use super::payload::Payload;
use crate::walname::{SegmentName, PAGE_SIZE};

/// Size of a short page header (SizeOfXLogShortPHD, MAXALIGNed).
pub const SHORT_HEADER: usize = 24;

/// Size of a long page header (SizeOfXLogLongPHD), first page of a segment.
pub const LONG_HEADER: usize = 40;

/// `xlp_sysid` walplayer writes unless told otherwise (any fixed value
/// works; PostgreSQL derives its own from the initdb time).
pub const DEFAULT_SYSTEM_ID: u64 = 7_316_000_000_000_000_001;

/// `xlp_info`: this page has the long header.
pub(super) const XLP_LONG_HEADER: u16 = 0x0002;
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

pub(super) fn known_magics() -> String {
    let all: Vec<String> = PgVersion::ALL
        .iter()
        .map(|v| format!("0x{:04X} (PostgreSQL {v})", v.magic()))
        .collect();
    all.join(", ")
}

/// The fields of a page header that we check.
pub(super) struct PageHeader {
    pub(super) magic: u16,
    pub(super) info: u16,
    tli: u32,
    pageaddr: u64,
    seg_size: u32,
    blcksz: u32,
}

impl PageHeader {
    /// Reads the header at the start of `page`; the long-only fields are
    /// zero unless the page has the long flag.
    pub(super) fn parse(page: &[u8]) -> PageHeader {
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

/// What every segment of one stream of WAL shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentShape {
    pub segment_bytes: u64,
    pub pg_version: PgVersion,
    pub system_id: u64,
}

/// Appends bytes `offset..offset + len` of the segment [`write_segment`]
/// writes for `name` to `out`, without making the rest of it: a simulated
/// cluster regenerates each block as it sends it, so WAL waiting to be sent
/// costs no memory.
pub fn segment_range(
    name: SegmentName,
    shape: &SegmentShape,
    payload: &Payload,
    offset: u64,
    len: usize,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let SegmentShape {
        segment_bytes,
        pg_version,
        system_id,
    } = *shape;
    check_segment_bytes(segment_bytes)?;
    let end = offset.saturating_add(len as u64);
    if end > segment_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bytes {offset}..{end} run past the end of a {segment_bytes}-byte segment"),
        ));
    }
    let start_lsn = name.start_lsn(segment_bytes);
    let index = start_lsn / segment_bytes;
    let base = (index as u128 * payload_per_segment(segment_bytes) as u128 % payload.period as u128)
        as usize;
    let page_bytes = PAGE_SIZE as u64;
    let mut header = Vec::with_capacity(LONG_HEADER);
    let mut slices = Vec::with_capacity(2);
    let mut at = offset;
    out.reserve(len);
    while at < end {
        let page = at / page_bytes;
        let in_page = (at % page_bytes) as usize;
        let take = (PAGE_SIZE - in_page).min((end - at) as usize);
        header.clear();
        let long = (page == 0).then_some((system_id, segment_bytes));
        put_page_header(
            &mut header,
            pg_version,
            name.timeline,
            start_lsn + page * page_bytes,
            long,
        );
        let h = header.len();
        if in_page < h {
            out.extend_from_slice(&header[in_page..h.min(in_page + take)]);
        }
        if in_page + take > h {
            // Payload consumed by the pages before this one.
            let before = match page {
                0 => 0,
                p => (PAGE_SIZE - LONG_HEADER) + (p as usize - 1) * (PAGE_SIZE - SHORT_HEADER),
            };
            let from = in_page.max(h) - h;
            let to = in_page + take - h;
            slices.clear();
            payload.slices(
                (base + before + from) % payload.period,
                to - from,
                &mut slices,
            );
            for s in &slices {
                out.extend_from_slice(s);
            }
        }
        at += take as u64;
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
