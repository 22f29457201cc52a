//! The payload that fills pages after their headers: the synthetic pool,
//! or the pages of a user's real segment (plain or gzip) without headers.

use std::fs;
use std::io::{IoSlice, Read};
use std::path::Path;
use std::sync::Arc;

use super::pages::{
    known_magics, PageHeader, PgVersion, LONG_HEADER, SHORT_HEADER, XLP_LONG_HEADER,
};
use super::synthetic::{synthetic_wal, SYNTHETIC_BYTES};
use super::GenerateError;
use crate::walname::PAGE_SIZE;

/// The bytes that fill pages after their headers, read as an endless stream
/// that wraps around. Cheap to clone; share it between writers.
#[derive(Clone)]
pub struct Payload {
    pool: Arc<[u8]>,
    /// Length of one period of the stream; `pool` may hold several copies so
    /// that one page never needs more than two slices.
    pub(super) period: usize,
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
    pub(super) fn slices<'a>(&'a self, pos: usize, len: usize, out: &mut Vec<IoSlice<'a>>) {
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
        let raw = fs::read(path).map_err(|source| GenerateError::TemplateRead {
            path: path.into(),
            source,
        })?;
        Payload::from_template_bytes(path, &raw)
    }

    /// [`Payload::from_template`] of a template's bytes, already read
    /// (sent by a coordinator); `path` names it in errors. A gzip template
    /// may decompress to at most [`MAX_TEMPLATE_BYTES`].
    pub fn from_template_bytes(path: &Path, raw: &[u8]) -> Result<Payload, GenerateError> {
        let data = decompress_template(path, raw)?;
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

/// Largest template, decompressed: the largest WAL segment.
pub const MAX_TEMPLATE_BYTES: u64 = 1 << 30;

/// A template's bytes, decompressed if they are gzip.
fn decompress_template(path: &Path, raw: &[u8]) -> Result<Vec<u8>, GenerateError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw.to_vec());
    }
    let err = |source| GenerateError::TemplateRead {
        path: path.into(),
        source,
    };
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(raw)
        .take(MAX_TEMPLATE_BYTES + 1)
        .read_to_end(&mut plain)
        .map_err(err)?;
    if plain.len() as u64 > MAX_TEMPLATE_BYTES {
        return Err(err(std::io::Error::other(format!(
            "it decompresses to more than {MAX_TEMPLATE_BYTES} bytes, the largest WAL segment"
        ))));
    }
    Ok(plain)
}
