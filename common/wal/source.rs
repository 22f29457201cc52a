//! Source: the WAL files of a directory, in name order, ready to upload.
//!
//! Plain files and `NAME.gz` are accepted; a `.gz` file's size is what
//! `gunzip` gives, measured while listing by reading every member and
//! checking each member's trailer (CRC-32 and ISIZE), so a file of several
//! members is sent whole and a damaged one fails before a byte is sent.
//! Subdirectories such as `archive_status/` are ignored;
//! files whose name is not a WAL name are reported as skipped, not sent.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::gzip::{GzipError, GzipReader};
use crate::walname::is_wal_name;

/// One file to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    /// The name Klio stores it under (without `.gz`).
    pub wal_name: String,
    /// Uncompressed size: the `segment_size` of every block.
    pub size: u64,
    pub gzip: bool,
    /// Why the file cannot be sent, found while listing it: a file with a
    /// WAL name is never skipped, it fails with its own record.
    pub unreadable: Option<String>,
}

impl Segment {
    /// Opens the file for reading its WAL bytes (decompressed if `.gz`).
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        let file = File::open(&self.path)?;
        Ok(if self.gzip {
            Box::new(GzipReader::new(BufReader::with_capacity(256 << 10, file)))
        } else {
            Box::new(file)
        })
    }

    /// A read error, in words that say what is wrong with the file.
    pub fn read_error(&self, e: &io::Error) -> String {
        match GzipError::of(e) {
            Some(gzip) => gzip.to_string(),
            None => format!("cannot read file: {e}"),
        }
    }

    /// The file held another number of bytes than its size said: `read`
    /// of them, or more than the size when `None`.
    pub fn length_mismatch(&self, read: Option<u64>) -> String {
        let read = match read {
            Some(n) => format!("{n} bytes"),
            None => "more bytes".to_string(),
        };
        if self.gzip {
            format!(
                "decompressed length differs from the one measured when listing: {read} instead of {} (the file changed while being sent)",
                self.size
            )
        } else {
            format!(
                "file changed size while being sent: {read} instead of {}",
                self.size
            )
        }
    }
}

/// A directory entry that will not be sent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// The listing of one input directory.
#[derive(Debug, Default)]
pub struct Listing {
    pub segments: Vec<Segment>,
    pub skipped: Vec<Skipped>,
}

impl Listing {
    /// Total uncompressed bytes to send.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }
}

/// A directory that cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("WAL directory {0} does not exist: give the directory that holds the WAL files")]
    Missing(PathBuf),
    #[error("WAL directory {0} is a file, not a directory: give the directory that holds it")]
    NotADirectory(PathBuf),
    #[error("cannot read WAL directory {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Lists `dir`: WAL files in name order, everything else skipped.
pub fn list(dir: &Path, links: Links) -> Result<Listing, SourceError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SourceError::Missing(dir.to_path_buf()))
        }
        Err(source) => {
            return Err(SourceError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
        Ok(m) if !m.is_dir() => return Err(SourceError::NotADirectory(dir.to_path_buf())),
        Ok(_) => {}
    }
    let read_err = |source| SourceError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        entries.push(entry.path());
    }
    entries.sort();
    let mut listing = Listing::default();
    for path in entries {
        match classify(&path, links) {
            Entry::Directory => {}
            Entry::Segment(s) => listing.segments.push(s),
            Entry::Skip(reason) => listing.skipped.push(Skipped { path, reason }),
        }
    }
    Ok(listing)
}

enum Entry {
    Directory,
    Segment(Segment),
    Skip(String),
}

/// Whether a listing follows symbolic links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Follow them, as `play` does with links a user placed.
    Follow,
    /// Never follow them: an agent reads nothing outside its data directory.
    Refuse,
}

fn classify(path: &Path, links: Links) -> Entry {
    if links == Links::Refuse {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Entry::Skip(
                    "a symbolic link: an agent reads nothing outside its --data-dir".into(),
                )
            }
            Ok(_) => {}
            Err(e) => return Entry::Skip(format!("cannot read it: {e}")),
        }
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Entry::Skip(format!("cannot read it: {e}")),
    };
    if meta.is_dir() {
        return Entry::Directory;
    }
    if !meta.is_file() {
        return Entry::Skip("not a regular file".into());
    }
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Entry::Skip("file name is not UTF-8, so not a WAL file name".into());
    };
    let (wal_name, gzip) = match name.strip_suffix(".gz") {
        Some(inner) => (inner, true),
        None => (name, false),
    };
    if !is_wal_name(wal_name) {
        return Entry::Skip("not a WAL file name".into());
    }
    let (size, unreadable) = if gzip {
        match gzip_trailer_size(path).and_then(|_| gunzipped_size(path)) {
            Ok(size) => (size, None),
            Err(e) => (0, Some(format!("not a usable gzip file: {e}"))),
        }
    } else {
        (meta.len(), None)
    };
    Entry::Segment(Segment {
        path: path.to_path_buf(),
        wal_name: wal_name.to_string(),
        size,
        gzip,
        unreadable,
    })
}

/// The bytes `gunzip` gives for `path`: every member read, each member's
/// CRC-32 and length checked against its trailer.
pub fn gunzipped_size(path: &Path) -> std::io::Result<u64> {
    let file = File::open(path)?;
    let mut reader = GzipReader::new(BufReader::with_capacity(256 << 10, file));
    std::io::copy(&mut reader, &mut std::io::sink())
}

/// The uncompressed size a gzip file's last member declares in its
/// trailer (ISIZE, the last four bytes, little-endian).
pub fn gzip_trailer_size(path: &Path) -> std::io::Result<u64> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    // 10-byte header, at least 2 bytes of deflate data, 8-byte trailer.
    if len < 20 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len} bytes is too short for gzip"),
        ));
    }
    let mut magic = [0u8; 2];
    file.read_exact(&mut magic)?;
    if magic != [0x1f, 0x8b] {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no gzip magic number at its start",
        ));
    }
    file.seek(SeekFrom::End(-4))?;
    let mut isize = [0u8; 4];
    file.read_exact(&mut isize)?;
    Ok(u32::from_le_bytes(isize) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    #[test]
    fn lists_in_name_order_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("000000010000000000000002"), b"bb").unwrap();
        std::fs::write(d.join("000000010000000000000001"), b"a").unwrap();
        std::fs::write(d.join("00000002.history"), b"h").unwrap();
        std::fs::write(d.join("notes.txt"), b"x").unwrap();
        std::fs::write(d.join("000000010000000000000009.gz"), b"junk").unwrap();
        std::fs::create_dir(d.join("archive_status")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[7u8; 5000]).unwrap();
        std::fs::write(d.join("000000010000000000000003.gz"), gz.finish().unwrap()).unwrap();

        let l = list(d, Links::Follow).unwrap();
        let names: Vec<_> = l.segments.iter().map(|s| s.wal_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000009",
                "00000002.history"
            ]
        );
        assert_eq!(l.segments[2].size, 5000);
        assert!(l.segments[2].gzip);
        // A WAL name is never skipped: the damaged one is a segment that
        // fails, with the reason found while listing.
        let junk = &l.segments[3];
        assert!(junk.unreadable.as_deref().unwrap().contains("gzip"));
        assert!(l.segments.iter().filter(|s| s.unreadable.is_some()).count() == 1);
        assert_eq!(l.bytes(), 1 + 2 + 5000 + 1);
        let skipped: Vec<_> = l
            .skipped
            .iter()
            .map(|s| s.path.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(skipped, ["notes.txt"]);
        assert!(l.skipped[0].reason.contains("not a WAL file name"));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    /// A damage done to a gzip file: cut it, flip a byte, or append junk.
    #[derive(Debug, Clone)]
    enum Damage {
        Truncate(usize),
        Flip(usize, u8),
        Append(Vec<u8>),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            any::<usize>().prop_map(Damage::Truncate),
            (any::<usize>(), 1u8..).prop_map(|(i, x)| Damage::Flip(i, x)),
            prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Append),
        ]
    }

    fn apply(mut gz: Vec<u8>, damages: &[Damage]) -> Vec<u8> {
        for d in damages {
            match d {
                Damage::Truncate(n) => gz.truncate(n % (gz.len() + 1)),
                Damage::Flip(i, x) if !gz.is_empty() => {
                    let i = i % gz.len();
                    gz[i] ^= x;
                }
                Damage::Flip(..) => {}
                Damage::Append(junk) => gz.extend_from_slice(junk),
            }
        }
        gz
    }

    /// WAL-like names: near misses of the 24 hex digits, `.partial`,
    /// `.history`, `.backup`, `.gz`.
    fn near_wal_name() -> impl Strategy<Value = String> {
        "[0-9A-Fa-fgG]{0,26}(\\.(gz|partial|history|backup|tmp))?(\\.gz)?"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any bytes under a `.gz` WAL name: the trailer reader and the
        /// listing may refuse them, never panic.
        #[test]
        fn any_bytes_as_gz_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("000000010000000000000001.gz");
            std::fs::write(&path, &bytes).unwrap();
            let whole = gzip_trailer_size(&path).and_then(|_| gunzipped_size(&path));
            let l = list(dir.path(), Links::Follow).unwrap();
            prop_assert_eq!(l.segments.len() + l.skipped.len(), 1);
            if let Ok(size) = whole {
                prop_assert_eq!(l.segments[0].size, size);
                prop_assert!(l.segments[0].unreadable.is_none());
            }
        }

        /// Damaged gzip of random data read through the uploader's reader:
        /// errors are fine, panics are not; undamaged data reads back equal.
        #[test]
        fn damaged_gzip_reads_never_panic(
            data in prop::collection::vec(any::<u8>(), 0..20_000),
            damages in prop::collection::vec(damage(), 0..3),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("000000010000000000000001.gz");
            let damaged = apply(gzip(&data), &damages);
            let intact = damages.is_empty();
            std::fs::write(&path, &damaged).unwrap();
            let _ = gzip_trailer_size(&path);
            let _ = list(dir.path(), Links::Follow).unwrap();
            let mut out = Vec::new();
            let segment = Segment { path: path.clone(), wal_name: String::new(), size: 0, gzip: true, unreadable: None };
            let read = segment.open().and_then(|mut r| r.read_to_end(&mut out));
            if intact {
                prop_assert!(read.is_ok());
                prop_assert!(out == data);
            }
        }

        /// Names close to WAL names, as files: the listing sorts them into
        /// segments and skipped without panicking, and every segment's name
        /// is a WAL name.
        #[test]
        fn near_wal_names_are_classified(names in prop::collection::btree_set(near_wal_name(), 0..8)) {
            let dir = tempfile::tempdir().unwrap();
            for name in names.iter().filter(|n| !n.is_empty()) {
                std::fs::write(dir.path().join(name), b"x").unwrap();
            }
            let l = list(dir.path(), Links::Follow).unwrap();
            for s in &l.segments {
                prop_assert!(is_wal_name(&s.wal_name), "{}", s.wal_name);
            }
        }
    }

    #[test]
    fn bad_directories_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = list(&dir.path().join("nope"), Links::Follow)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist") && e.contains("nope"), "{e}");
        let f = dir.path().join("f");
        std::fs::write(&f, b"").unwrap();
        assert!(list(&f, Links::Follow)
            .unwrap_err()
            .to_string()
            .contains("is a file"));
        assert!(list(dir.path(), Links::Follow).unwrap().segments.is_empty());
    }

    /// Issue item 4: two gzip members of one segment (as `cat a.gz b.gz`
    /// makes) are one segment of what `gunzip` gives; a damaged member, or
    /// one whose trailer disagrees with its data, fails the file.
    #[test]
    fn a_gzip_file_of_two_members_is_listed_whole_and_a_lying_member_fails() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut two = gzip(&data[..15_000]);
        two.extend(gzip(&data[15_000..]));
        let path = dir.path().join("000000010000000000000001.gz");
        std::fs::write(&path, &two).unwrap();
        let l = list(dir.path(), Links::Follow).unwrap();
        assert_eq!(l.segments[0].size, 40_000);
        assert!(l.segments[0].unreadable.is_none());
        let mut out = Vec::new();
        l.segments[0].open().unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, data);

        // The first member's ISIZE one more than its data: that member lies.
        let first = gzip(&data[..15_000]);
        let at = first.len() - 4;
        two[at] ^= 1;
        std::fs::write(&path, &two).unwrap();
        let l = list(dir.path(), Links::Follow).unwrap();
        let why = l.segments[0].unreadable.as_deref().unwrap();
        assert!(why.contains("gzip trailer"), "{why}");
    }

    #[test]
    fn a_wal_named_file_that_cannot_be_read_is_a_segment_that_fails() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00000001000000000000000B.gz"), b"garbage").unwrap();
        let l = list(dir.path(), Links::Follow).unwrap();
        assert!(l.skipped.is_empty(), "a WAL name is never skipped");
        assert_eq!(l.segments.len(), 1);
        let why = l.segments[0].unreadable.as_deref().unwrap();
        assert!(why.contains("not a usable gzip file"), "{why}");
    }

    #[test]
    fn an_agent_listing_never_follows_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"not yours").unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("000000010000000000000001")).unwrap();
        let refused = list(dir.path(), Links::Refuse).unwrap();
        assert!(refused.segments.is_empty());
        assert!(
            refused.skipped[0].reason.contains("symbolic link"),
            "{:?}",
            refused.skipped
        );
        let followed = list(dir.path(), Links::Follow).unwrap();
        assert_eq!(
            followed.segments.len(),
            1,
            "play follows links a user placed"
        );
    }
}
