//! Upload settings as validated types: a block size and a job count exist
//! only within Klio's limits, so no layer checks or converts them again.

use std::fmt;
use std::time::Duration;

use crate::endpoint::MAX_BLOCK_BYTES;

/// Payload per PutRequest, in whole KiB from 1 to 8192 (Klio's 8 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize(u32);

impl BlockSize {
    /// The largest block, in KiB.
    pub const MAX_KIB: u32 = (MAX_BLOCK_BYTES / 1024) as u32;
    /// The seed's default, 2 MiB.
    pub const DEFAULT: BlockSize = BlockSize(2048);

    /// A block of `kib` KiB, if Klio takes it.
    pub fn from_kib(kib: u64) -> Result<BlockSize, String> {
        match u32::try_from(kib) {
            Ok(k) if (1..=Self::MAX_KIB).contains(&k) => Ok(BlockSize(k)),
            _ => Err(format!("{kib} is not in 1..={}", Self::MAX_KIB)),
        }
    }

    /// Parses a flag's value (whole KiB).
    pub fn parse_kib(text: &str) -> Result<BlockSize, String> {
        let kib: u64 = text.parse().map_err(|e| format!("{e}"))?;
        BlockSize::from_kib(kib)
    }

    pub fn kib(self) -> u32 {
        self.0
    }

    pub fn bytes(self) -> usize {
        self.0 as usize * 1024
    }
}

impl fmt::Display for BlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Parallel uploads, each on its own connection: 1 to 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jobs(u32);

impl Jobs {
    pub const MAX: u32 = 1024;
    pub const ONE: Jobs = Jobs(1);

    /// `n` jobs, if at least one and at most `max` (itself at most 1024).
    pub fn new(n: u64, max: u32) -> Result<Jobs, String> {
        let max = max.min(Self::MAX);
        match u32::try_from(n) {
            Ok(j) if (1..=max).contains(&j) => Ok(Jobs(j)),
            _ => Err(format!("{n} is not in 1..={max}")),
        }
    }

    /// Parses a flag's value.
    pub fn parse(text: &str) -> Result<Jobs, String> {
        let n: u64 = text.parse().map_err(|e| format!("{e}"))?;
        Jobs::new(n, Self::MAX)
    }

    pub fn get(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for Jobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Most further attempts at one file.
pub const MAX_RETRIES: u32 = 100;

/// How every file of a run is uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSettings {
    pub block: BlockSize,
    /// Longest one attempt may take, verification included.
    pub timeout: Duration,
    /// Further attempts after a failure that may be passing (connection
    /// lost, server unavailable, timeout), at most [`MAX_RETRIES`].
    pub retries: u32,
    /// Read every stored file back and compare it with what was sent.
    pub verify: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_klio_sizes_exist() {
        assert_eq!(BlockSize::from_kib(8192).unwrap().bytes(), 8 << 20);
        assert_eq!(BlockSize::from_kib(0).unwrap_err(), "0 is not in 1..=8192");
        assert_eq!(
            BlockSize::from_kib(9000).unwrap_err(),
            "9000 is not in 1..=8192"
        );
        assert!(BlockSize::parse_kib("1.5").is_err());
        assert_eq!(BlockSize::parse_kib("64").unwrap().kib(), 64);
        assert_eq!(Jobs::new(4, 256).unwrap().get(), 4);
        assert_eq!(Jobs::new(300, 256).unwrap_err(), "300 is not in 1..=256");
        assert_eq!(
            Jobs::new(2000, 5000).unwrap_err(),
            "2000 is not in 1..=1024"
        );
        assert_eq!(Jobs::parse("1025").unwrap_err(), "1025 is not in 1..=1024");
    }
}
