//! WAL rates and sizes as users write them: `512KiB/s`, `64KiB/s..4MiB/s`,
//! `64MiB`; and how a range is spread over clusters.

use std::fmt;
use std::str::FromStr;

use walplayer_wal::rng::Rng;

const UNITS: [(&str, f64); 9] = [
    ("B", 1.0),
    ("KiB", 1024.0),
    ("MiB", 1048576.0),
    ("GiB", 1073741824.0),
    ("kB", 1e3),
    ("KB", 1e3),
    ("MB", 1e6),
    ("GB", 1e9),
    ("", 1.0),
];

/// Parses a size such as `64MiB`, `2 MiB`, `512KiB` or `1000` (bytes).
pub fn parse_bytes(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (t[..split].trim(), t[split..].trim());
    let value: f64 = number.parse().map_err(|_| {
        format!("{text:?} is not a size: write a number and a unit, e.g. 512KiB or 2MiB")
    })?;
    let scale = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, s)| *s)
        .ok_or_else(|| {
            format!("{text:?}: unknown unit {unit:?}; use B, KiB, MiB or GiB (or kB, MB, GB)")
        })?;
    Ok(value * scale)
}

/// Parses a rate such as `512KiB/s` (the `/s` may be left out).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let bytes = parse_bytes(t.strip_suffix("/s").unwrap_or(t))?;
    if !(bytes > 0.0 && bytes.is_finite()) {
        return Err(format!("rate {text:?} must be above zero, e.g. 512KiB/s"));
    }
    Ok(bytes)
}

/// Writes bytes per second with a binary unit, e.g. `512KiB/s`.
pub fn fmt_rate(bytes_per_second: f64) -> String {
    format!("{}/s", fmt_bytes(bytes_per_second))
}

/// Writes a size with a binary unit, e.g. `1.5MiB`.
pub fn fmt_bytes(bytes: f64) -> String {
    let mut value = bytes;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value.abs() < 1024.0 || unit == "GiB" {
            return if value.fract() == 0.0 {
                format!("{value}{unit}")
            } else {
                format!("{value:.2}{unit}")
            };
        }
        value /= 1024.0;
    }
    unreachable!("the loop returns at GiB")
}

/// `--wal-rate`: one rate for every cluster, or a range `A..B` spread
/// log-uniformly over the clusters (seeded, so a run is repeatable).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateSpec {
    Fixed(f64),
    Range { low: f64, high: f64 },
}

impl RateSpec {
    /// The rate of cluster `index` in bytes per second.
    pub fn for_cluster(&self, index: u64, seed: u64) -> f64 {
        match *self {
            RateSpec::Fixed(r) => r,
            RateSpec::Range { low, high } => {
                let mut rng = Rng::new(seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
                low * (high / low).powf(rng.unit())
            }
        }
    }

    /// The highest rate any cluster can get.
    pub fn max(&self) -> f64 {
        match *self {
            RateSpec::Fixed(r) => r,
            RateSpec::Range { high, .. } => high,
        }
    }
}

impl FromStr for RateSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<RateSpec, String> {
        match text.split_once("..") {
            None => Ok(RateSpec::Fixed(parse_rate(text)?)),
            Some((a, b)) => {
                let (low, high) = (parse_rate(a)?, parse_rate(b)?);
                if low > high {
                    return Err(format!(
                        "rate range {text:?} runs downwards: write the lower rate first, e.g. 64KiB/s..4MiB/s"
                    ));
                }
                Ok(RateSpec::Range { low, high })
            }
        }
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RateSpec::Fixed(r) => f.write_str(&fmt_rate(r)),
            RateSpec::Range { low, high } => write!(f, "{}..{}", fmt_rate(low), fmt_rate(high)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_sizes_parse_with_units() {
        assert_eq!(parse_rate("512KiB/s"), Ok(524288.0));
        assert_eq!(parse_rate("1MiB"), Ok(1048576.0));
        assert_eq!(parse_rate("100B/s"), Ok(100.0));
        assert_eq!(parse_bytes("64MiB"), Ok(64.0 * 1048576.0));
        assert_eq!(parse_bytes("1.5 KiB"), Ok(1536.0));
        assert!(parse_rate("0KiB/s").unwrap_err().contains("above zero"));
        assert!(parse_rate("fast").unwrap_err().contains("not a size"));
        assert!(parse_bytes("3 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert_eq!(fmt_rate(524288.0), "512KiB/s");
        assert_eq!(fmt_bytes(1536.0 * 1024.0), "1.50MiB");
    }

    #[test]
    fn a_range_spreads_clusters_log_uniformly_and_repeatably() {
        let spec: RateSpec = "64KiB/s..4MiB/s".parse().unwrap();
        let rates: Vec<f64> = (0..4000).map(|i| spec.for_cluster(i, 9)).collect();
        assert!(rates.iter().all(|r| (65536.0..=4194304.0).contains(r)));
        // Log-uniform: half the clusters below the geometric mean (512 KiB/s).
        let below = rates.iter().filter(|r| **r < 524288.0).count();
        assert!(
            (1800..2200).contains(&below),
            "{below} of 4000 below the geometric mean"
        );
        assert_eq!(spec.for_cluster(17, 9), rates[17]);
        assert_ne!(spec.for_cluster(17, 10), rates[17]);
        assert!("4MiB/s..64KiB/s"
            .parse::<RateSpec>()
            .unwrap_err()
            .contains("downwards"));
        assert_eq!(spec.to_string(), "64KiB/s..4MiB/s");
    }
}
