//! Source: the WAL files of a directory, in name order, ready to upload.
//!
//! Plain files and `NAME.gz` are accepted; `.gz` sizes come from the gzip
//! trailer (ISIZE). Subdirectories such as `archive_status/` are ignored;
//! files whose name is not a WAL name are reported as skipped, not sent.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::common::walname::is_wal_name;

/// One file to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    /// The name Klio stores it under (without `.gz`).
    pub wal_name: String,
    /// Uncompressed size: the `segment_size` of every block.
    pub size: u64,
    pub gzip: bool,
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
pub fn list(dir: &Path) -> Result<Listing, SourceError> {
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
        match classify(&path) {
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

fn classify(path: &Path) -> Entry {
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
    let size = if gzip {
        match gzip_trailer_size(path) {
            Ok(size) => size,
            Err(e) => return Entry::Skip(format!("not a usable gzip file: {e}")),
        }
    } else {
        meta.len()
    };
    Entry::Segment(Segment {
        path: path.to_path_buf(),
        wal_name: wal_name.to_string(),
        size,
        gzip,
    })
}

/// The uncompressed size a gzip file declares in its trailer (ISIZE, the
/// last four bytes, little-endian).
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

        let l = list(d).unwrap();
        let names: Vec<_> = l.segments.iter().map(|s| s.wal_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000003",
                "00000002.history"
            ]
        );
        assert_eq!(l.segments[2].size, 5000);
        assert!(l.segments[2].gzip);
        assert_eq!(l.bytes(), 1 + 2 + 5000 + 1);
        let skipped: Vec<_> = l
            .skipped
            .iter()
            .map(|s| s.path.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(skipped, ["000000010000000000000009.gz", "notes.txt"]);
        assert!(l.skipped[0].reason.contains("gzip"));
    }

    #[test]
    fn bad_directories_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = list(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("does not exist") && e.contains("nope"), "{e}");
        let f = dir.path().join("f");
        std::fs::write(&f, b"").unwrap();
        assert!(list(&f).unwrap_err().to_string().contains("is a file"));
        assert!(list(dir.path()).unwrap().segments.is_empty());
    }
}
