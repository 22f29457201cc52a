//! A gzip reader for WAL segments that says what went wrong as a type.
//!
//! Every member of the file is read, as `gunzip` does, and each member's
//! trailer (CRC-32 and length) is checked against the bytes it gave. A
//! failure is an [`io::Error`] carrying a [`GzipError`], so callers decide
//! by its kind, never by the text of a library's message.

use std::io::{self, BufRead, Read};

use flate2::bufread::DeflateDecoder;
use flate2::Crc;

/// What is wrong with a gzip file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GzipError {
    /// Not gzip at all, or a header cut short.
    #[error("not a gzip file: {0}")]
    Header(&'static str),
    /// The compressed data is damaged.
    #[error("gzip data is corrupt: {0}")]
    Data(String),
    /// A member's trailer disagrees with the data it holds.
    #[error(
        "gzip trailer (CRC or size) does not match the decompressed data: the file is damaged"
    )]
    Trailer,
    /// The file ends inside a member.
    #[error("gzip file is truncated: it ends inside the compressed data")]
    Truncated,
}

impl GzipError {
    /// The error inside `e`, if a [`GzipReader`] made it.
    pub fn of(e: &io::Error) -> Option<&GzipError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<GzipError>())
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// Header flag bits (RFC 1952).
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

enum State<R> {
    /// Before a member's header; `first` until one member was read.
    Header {
        input: R,
        first: bool,
    },
    Body {
        inflate: DeflateDecoder<R>,
        crc: Crc,
    },
    Done,
    /// After an error: every later read fails the same way.
    Failed(GzipError),
}

/// Reads the decompressed bytes of every member of a gzip stream.
pub struct GzipReader<R> {
    state: State<R>,
    /// Members read completely so far.
    members: u64,
}

impl<R: BufRead> GzipReader<R> {
    pub fn new(input: R) -> GzipReader<R> {
        GzipReader {
            state: State::Header { input, first: true },
            members: 0,
        }
    }

    /// Members read completely so far.
    pub fn members(&self) -> u64 {
        self.members
    }

    fn fail(&mut self, e: GzipError) -> io::Error {
        self.state = State::Failed(e.clone());
        e.into_io()
    }
}

impl<R: BufRead> Read for GzipReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Ok(0),
                State::Failed(e) => {
                    self.state = State::Failed(e.clone());
                    return Err(e.into_io());
                }
                State::Header { mut input, first } => {
                    if !first && input.fill_buf()?.is_empty() {
                        return Ok(0);
                    }
                    if let Err(e) = skip_header(&mut input) {
                        return Err(self.fail(e));
                    }
                    self.state = State::Body {
                        inflate: DeflateDecoder::new(input),
                        crc: Crc::new(),
                    };
                }
                State::Body {
                    mut inflate,
                    mut crc,
                } => {
                    if buf.is_empty() {
                        self.state = State::Body { inflate, crc };
                        return Ok(0);
                    }
                    let n = match inflate.read(buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            return Err(self.fail(GzipError::Truncated))
                        }
                        Err(e) => return Err(self.fail(GzipError::Data(e.to_string()))),
                    };
                    if n > 0 {
                        crc.update(&buf[..n]);
                        self.state = State::Body { inflate, crc };
                        return Ok(n);
                    }
                    let mut input = inflate.into_inner();
                    if let Err(e) = check_trailer(&mut input, &crc) {
                        return Err(self.fail(e));
                    }
                    self.members += 1;
                    self.state = State::Header {
                        input,
                        first: false,
                    };
                }
            }
        }
    }
}

fn read_exact(
    input: &mut impl BufRead,
    buf: &mut [u8],
    on_eof: GzipError,
) -> Result<(), GzipError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => on_eof,
        _ => GzipError::Data(e.to_string()),
    })
}

fn skip_header(input: &mut impl BufRead) -> Result<(), GzipError> {
    let mut fixed = [0u8; 10];
    read_exact(
        input,
        &mut fixed,
        GzipError::Header("shorter than a gzip header"),
    )?;
    if fixed[0..2] != [0x1f, 0x8b] {
        return Err(GzipError::Header("no gzip magic number"));
    }
    if fixed[2] != 8 {
        return Err(GzipError::Header("compression method is not deflate"));
    }
    let flags = fixed[3];
    if flags & FEXTRA != 0 {
        let mut len = [0u8; 2];
        read_exact(input, &mut len, GzipError::Truncated)?;
        let mut extra = vec![0u8; u16::from_le_bytes(len) as usize];
        read_exact(input, &mut extra, GzipError::Truncated)?;
    }
    for field in [FNAME, FCOMMENT] {
        if flags & field != 0 {
            let mut skipped = Vec::new();
            let n = input
                .read_until(0, &mut skipped)
                .map_err(|e| GzipError::Data(e.to_string()))?;
            if n == 0 || skipped.last() != Some(&0) {
                return Err(GzipError::Truncated);
            }
        }
    }
    if flags & FHCRC != 0 {
        let mut crc16 = [0u8; 2];
        read_exact(input, &mut crc16, GzipError::Truncated)?;
    }
    Ok(())
}

fn check_trailer(input: &mut impl BufRead, crc: &Crc) -> Result<(), GzipError> {
    let mut trailer = [0u8; 8];
    read_exact(input, &mut trailer, GzipError::Truncated)?;
    let sum = u32::from_le_bytes(trailer[0..4].try_into().expect("4 bytes"));
    let size = u32::from_le_bytes(trailer[4..8].try_into().expect("4 bytes"));
    if sum != crc.sum() || size != crc.amount() {
        return Err(GzipError::Trailer);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<(Vec<u8>, u64), io::Error> {
        let mut r = GzipReader::new(bytes);
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok((out, r.members()))
    }

    #[test]
    fn reads_every_member_like_gunzip() {
        let (a, b) = (vec![7u8; 100_000], vec![9u8; 50_000]);
        let mut both = gz(&a);
        both.extend(gz(&b));
        let (out, members) = read_all(&both).unwrap();
        assert_eq!(members, 2);
        assert_eq!(out.len(), 150_000);
        assert_eq!(&out[..100_000], &a[..]);
        assert_eq!(&out[100_000..], &b[..]);
    }

    #[test]
    fn damage_is_typed() {
        let good = gz(&[1u8; 10_000]);
        let kind = |bytes: &[u8]| GzipError::of(&read_all(bytes).unwrap_err()).cloned();

        let mut crc = good.clone();
        let at = crc.len() - 8;
        crc[at] ^= 0xff;
        assert_eq!(kind(&crc), Some(GzipError::Trailer));

        let mut size = good.clone();
        let at = size.len() - 1;
        size[at] ^= 1;
        assert_eq!(kind(&size), Some(GzipError::Trailer));

        assert_eq!(kind(&good[..good.len() - 3]), Some(GzipError::Truncated));
        assert!(matches!(kind(b"garbage"), Some(GzipError::Header(_))));
        assert!(matches!(kind(&[]), Some(GzipError::Header(_))));
        let mut body = good.clone();
        for b in &mut body[10..14] {
            *b = 0xff;
        }
        assert!(matches!(
            kind(&body),
            Some(GzipError::Data(_) | GzipError::Truncated | GzipError::Trailer)
        ));
    }
}
