//! Service-level objectives: `--slo 'lag.p99<5s'`, checked against what a
//! run (or one step of a capacity search) measured.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::rate::{fmt_bytes, parse_bytes};

/// What an objective bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// A quantile of segment lag (0.5, 0.9, 0.99, 0.999) or the maximum.
    Lag(LagStat),
    /// The largest backlog of any one cluster.
    BacklogMax,
    /// Failed Put attempts.
    Errors,
    /// Acknowledged bytes over bytes of complete segments produced.
    AckRate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagStat {
    P50,
    P90,
    P99,
    P999,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl Op {
    fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Op::Lt => value < bound,
            Op::Le => value <= bound,
            Op::Gt => value > bound,
            Op::Ge => value >= bound,
            Op::Eq => value == bound,
        }
    }
}

/// One objective: a metric, a comparison and a bound (seconds for lag,
/// bytes for backlog, a count, or a ratio).
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    pub metric: Metric,
    pub op: Op,
    pub bound: f64,
    text: String,
}

/// What a run or a step measured, for checking objectives.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// Segment lag in nanoseconds: p50, p90, p99, p99.9, max.
    pub lag_ns: [u64; 5],
    pub backlog_max: u64,
    pub errors: u64,
    pub ack_rate: f64,
}

/// An objective's verdict, as the summary lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub expr: String,
    pub measured: String,
    pub value: f64,
    pub pass: bool,
}

const METRICS: &str =
    "lag.p50, lag.p90, lag.p99, lag.p999, lag.max, backlog.max, errors or ack.rate";

impl FromStr for Slo {
    type Err = String;

    fn from_str(text: &str) -> Result<Slo, String> {
        let t = text.trim();
        let at = t.find(['<', '>', '=']).ok_or_else(|| {
            format!(
                "SLO {text:?} has no comparison: write e.g. 'lag.p99<5s' or 'backlog.max<=64MiB'"
            )
        })?;
        let (name, rest) = (t[..at].trim(), &t[at..]);
        let (op, bound_text) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .iter()
        .find_map(|(s, op)| rest.strip_prefix(s).map(|b| (*op, b.trim())))
        .ok_or_else(|| format!("SLO {text:?}: use one of <, <=, >, >=, =="))?;
        let metric = match name {
            "lag.p50" => Metric::Lag(LagStat::P50),
            "lag.p90" => Metric::Lag(LagStat::P90),
            "lag.p99" => Metric::Lag(LagStat::P99),
            "lag.p999" => Metric::Lag(LagStat::P999),
            "lag.max" => Metric::Lag(LagStat::Max),
            "backlog.max" => Metric::BacklogMax,
            "errors" => Metric::Errors,
            "ack.rate" => Metric::AckRate,
            _ => {
                return Err(format!(
                    "SLO {text:?}: unknown metric {name:?}; use {METRICS}"
                ))
            }
        };
        let bound = match metric {
            Metric::Lag(_) => humantime::parse_duration(bound_text)
                .map(|d| d.as_secs_f64())
                .map_err(|e| {
                    format!(
                        "SLO {text:?}: {bound_text:?} is not a duration ({e}); e.g. 5s or 500ms"
                    )
                })?,
            Metric::BacklogMax => {
                parse_bytes(bound_text).map_err(|e| format!("SLO {text:?}: {e}"))?
            }
            Metric::Errors | Metric::AckRate => bound_text
                .parse::<f64>()
                .ok()
                .filter(|b| b.is_finite() && *b >= 0.0)
                .ok_or_else(|| format!("SLO {text:?}: {bound_text:?} is not a number"))?,
        };
        Ok(Slo {
            metric,
            op,
            bound,
            text: t.to_string(),
        })
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Slo {
    /// The measured value in the bound's unit, and as people read it.
    fn value(&self, m: &Measured) -> (f64, String) {
        match self.metric {
            Metric::Lag(stat) => {
                let ns = m.lag_ns[stat as usize];
                let d = Duration::from_nanos(ns);
                (d.as_secs_f64(), format!("{:.3} s", d.as_secs_f64()))
            }
            Metric::BacklogMax => (m.backlog_max as f64, fmt_bytes(m.backlog_max as f64)),
            Metric::Errors => (m.errors as f64, m.errors.to_string()),
            Metric::AckRate => (m.ack_rate, format!("{:.4}", m.ack_rate)),
        }
    }

    /// Whether `m` meets this objective.
    pub fn check(&self, m: &Measured) -> Verdict {
        let (value, measured) = self.value(m);
        Verdict {
            expr: self.text.clone(),
            measured,
            value,
            pass: self.op.holds(value, self.bound),
        }
    }

    /// Whether breaking this objective can be undone by a later recovery:
    /// an upper bound on backlog, once broken for the abort window, is
    /// taken as lost (see `--abort-on-breach`).
    pub fn bounds_backlog(&self) -> Option<u64> {
        match (self.metric, self.op) {
            (Metric::BacklogMax, Op::Lt | Op::Le) => Some(self.bound as u64),
            _ => None,
        }
    }
}

/// Checks every objective; `true` when all hold.
pub fn check_all(slos: &[Slo], m: &Measured) -> (Vec<Verdict>, bool) {
    let verdicts: Vec<Verdict> = slos.iter().map(|s| s.check(m)).collect();
    let pass = verdicts.iter().all(|v| v.pass);
    (verdicts, pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured() -> Measured {
        Measured {
            lag_ns: [
                1_000_000,
                2_000_000,
                1_500_000_000,
                2_000_000_000,
                3_000_000_000,
            ],
            backlog_max: 10 << 20,
            errors: 0,
            ack_rate: 0.995,
        }
    }

    #[test]
    fn objectives_parse_with_units_and_check() {
        let m = measured();
        let cases = [
            ("lag.p99<5s", true),
            ("lag.p99<1s", false),
            ("lag.p50 <= 1ms", true),
            ("lag.max<3s", false),
            ("backlog.max<64MiB", true),
            ("backlog.max<8MiB", false),
            ("errors==0", true),
            ("errors>0", false),
            ("ack.rate>=0.99", true),
            ("ack.rate>0.999", false),
        ];
        for (text, pass) in cases {
            let slo: Slo = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(slo.check(&m).pass, pass, "{text}");
        }
        let v = "lag.p99<1s".parse::<Slo>().unwrap().check(&m);
        assert_eq!((v.value, v.measured.as_str()), (1.5, "1.500 s"));
        let (verdicts, pass) = check_all(
            &["errors==0".parse().unwrap(), "lag.p99<1s".parse().unwrap()],
            &m,
        );
        assert!(!pass && verdicts[0].pass && !verdicts[1].pass);
    }

    #[test]
    fn bad_objectives_say_what_to_write() {
        let e = |t: &str| t.parse::<Slo>().unwrap_err();
        assert!(e("lag.p99").contains("no comparison"));
        assert!(e("lag.p95<5s").contains("lag.p999"));
        assert!(e("lag.p99<soon").contains("not a duration"));
        assert!(e("backlog.max<lots").contains("not a size"));
        assert!(e("errors<none").contains("not a number"));
        assert!(e("errors=0").contains("<, <=, >, >=, =="));
    }
}
