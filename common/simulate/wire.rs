//! A simulation over the control channel: the workload share an agent is
//! sent ([`SimulateSpec`]), and what it measured ([`SimulationResult`]),
//! checked on receipt so a peer's numbers cannot make the receiver hold
//! more than the run allows.

use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;

use walplayer_klio::report::FailureKind;
use walplayer_klio::stats::{decode_histogram, encode_histogram, Errors};
use walplayer_klio::wire::{kind_from_wire, kind_to_wire};
use walplayer_proto::control::{
    self, SimulateSpec, SimulatedCluster, SimulationResult, TimelinePoint,
};
use walplayer_wal::generate::PgVersion;

use crate::flags::WorkloadArgs;
use crate::pace::Arrival;
use crate::pace::Recording;
use crate::parts::Parts;
use crate::record::{ClusterRow, Point};
use crate::workload::{Rates, Search, Template, Workload};

/// Largest `--rate-file` a coordinator sends (as CSV).
pub const MAX_RATE_CSV_BYTES: usize = 16 << 20;
/// Largest `--template` a coordinator sends (as read: gzip it if larger).
pub const MAX_TEMPLATE_SEND_BYTES: usize = 32 << 20;

/// The share of `args`'s workload `w` (as checked from `args`) of
/// `clusters` clusters from `first_index` on; a recorded pace and a
/// template go with it.
pub fn spec(args: &WorkloadArgs, w: &Workload, clusters: u64, first_index: u64) -> SimulateSpec {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let value = |v: Option<clap::builder::PossibleValue>| {
        v.map(|p| p.get_name().to_string()).unwrap_or_default()
    };
    SimulateSpec {
        clusters,
        first_index,
        wal_rate: args.wal_rate.to_string(),
        arrival: value(args.arrival.to_possible_value()),
        timeline: args.timeline,
        start_lsn: args.start_lsn,
        pg_version: value(args.pg_version.to_possible_value()),
        flush_interval_ms: ms(args.flush_interval),
        flush_bytes: crate::rate::parse_bytes(&args.flush_bytes).unwrap_or(0.0) as u64,
        duration_ms: ms(args.duration),
        drain_ms: ms(args.drain),
        connections: args.connections.unwrap_or(0),
        aligned: args.aligned,
        seed: args.seed,
        slos: args.slo.iter().map(|s| s.to_string()).collect(),
        abort_on_breach: args.abort_on_breach,
        search: w.search.map(|s| control::SearchSpec {
            step: s.step,
            step_duration_ms: ms(s.step_duration),
            max_clusters: s.max_clusters,
        }),
        rate_csv: match &w.rates {
            Rates::Recorded(r) => r.to_csv(),
            Rates::Spec(_) => String::new(),
        },
        template: w
            .template
            .as_ref()
            .map(|t| t.data.clone())
            .unwrap_or_default(),
        template_name: w
            .template
            .as_ref()
            .map(|t| t.path.display().to_string())
            .unwrap_or_default(),
    }
}

/// The most WAL one cluster of `spec` can produce in its `duration_ms`:
/// at the fastest rate of a range, or for a recorded pace every lap the
/// duration can touch.
pub fn most_bytes(spec: &SimulateSpec) -> u64 {
    let seconds = spec.duration_ms as f64 / 1000.0;
    if !spec.rate_csv.is_empty() {
        return match Recording::parse(&spec.rate_csv) {
            Ok(r) => r.most_within(seconds),
            Err(_) => 0,
        };
    }
    let rate = spec
        .wal_rate
        .parse::<crate::rate::RateSpec>()
        .map_or(0.0, |r| r.max());
    (rate * seconds).ceil() as u64
}

/// Checks that what a share carries fits the control channel: a recorded
/// pace and a template are sent whole to every agent.
pub fn check_sendable(spec: &SimulateSpec) -> Result<(), String> {
    if spec.rate_csv.len() > MAX_RATE_CSV_BYTES {
        return Err(format!(
            "--rate-file makes {} bytes of CSV, more than the {MAX_RATE_CSV_BYTES} a coordinator sends to agents: keep fewer rows (e.g. one per minute)",
            spec.rate_csv.len()
        ));
    }
    if spec.template.len() > MAX_TEMPLATE_SEND_BYTES {
        return Err(format!(
            "--template {} is {} bytes, more than the {MAX_TEMPLATE_SEND_BYTES} a coordinator sends to agents: gzip it (WAL compresses well)",
            spec.template_name,
            spec.template.len()
        ));
    }
    Ok(())
}

/// The workload an agent runs from `spec`, checked as `walplayer
/// simulate` checks its flags; its clusters are named `<prefix>-<i>` (one
/// alone: `<prefix>`).
pub fn workload_of(
    spec: &SimulateSpec,
    prefix: &str,
    wal_size_mib: u64,
    timeout: Duration,
) -> Result<Workload, String> {
    let duration = |ms: u64, what: &str| {
        if ms == 0 {
            return Err(format!("{what} of 0 ms"));
        }
        Ok(Duration::from_millis(ms))
    };
    let args = WorkloadArgs {
        clusters: spec.clusters.max(1),
        wal_rate: spec.wal_rate.parse()?,
        rate_file: None,
        arrival: Arrival::from_str(&spec.arrival, false)
            .map_err(|_| format!("unknown arrival {:?}", spec.arrival))?,
        timeline: spec.timeline,
        start_lsn: spec.start_lsn,
        pg_version: PgVersion::from_str(&spec.pg_version, false)
            .map_err(|_| format!("unknown PostgreSQL version {:?}", spec.pg_version))?,
        template: None,
        flush_interval: duration(spec.flush_interval_ms, "flush interval")?,
        flush_bytes: spec.flush_bytes.to_string(),
        duration: duration(spec.duration_ms, "duration")?,
        drain: duration(spec.drain_ms, "drain")?,
        connections: (spec.connections > 0).then_some(spec.connections),
        aligned: spec.aligned,
        seed: spec.seed,
        slo: spec
            .slos
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?,
        abort_on_breach: spec.abort_on_breach,
        find_max_clusters: false,
        step: 1,
        step_duration: Duration::from_secs(60),
        max_clusters: 1,
    };
    if spec.clusters == 0 {
        return Err("a share of 0 clusters".into());
    }
    check_sendable(spec)?;
    let mut w = args.workload(prefix, spec.first_index, wal_size_mib, timeout)?;
    w.bare_single = spec.search.is_none();
    if !spec.rate_csv.is_empty() {
        let recording =
            Recording::parse(&spec.rate_csv).map_err(|e| format!("its rate file: {e}"))?;
        w.rates = Rates::Recorded(Arc::new(recording));
    }
    if !spec.template.is_empty() {
        w.template = Some(Template {
            path: spec.template_name.clone().into(),
            data: spec.template.clone(),
        });
    }
    if let Some(s) = &spec.search {
        if s.step == 0 || s.step_duration_ms == 0 || s.max_clusters == 0 {
            return Err(format!(
                "a search of {} clusters per step of {} ms up to {} clusters",
                s.step, s.step_duration_ms, s.max_clusters
            ));
        }
        if w.slos.is_empty() {
            return Err("a search without objectives".into());
        }
        w.search = Some(Search {
            step: s.step,
            step_duration: Duration::from_millis(s.step_duration_ms),
            max_clusters: s.max_clusters,
        });
    }
    Ok(w)
}

/// What `parts` measured, to send with Finished.
pub fn result_of(parts: &Parts) -> SimulationResult {
    SimulationResult {
        lag: encode_histogram(&parts.lag).into(),
        ttfb: encode_histogram(&parts.ttfb).into(),
        schedule_error: encode_histogram(&parts.schedule).into(),
        timeline: parts
            .timeline
            .iter()
            .map(|p| TimelinePoint {
                t: p.t,
                produced_bytes: p.produced_bytes,
                sent_bytes: p.sent_bytes,
                acked_bytes: p.acked_bytes,
                files: p.files,
                errors: p.errors,
                p50_ns: p.p50_ns,
                p99_ns: p.p99_ns,
                open_streams: p.open_streams,
                backlog_bytes: p.backlog_bytes,
                backlog_max_bytes: p.backlog_max_bytes,
            })
            .collect(),
        clusters: parts
            .rows
            .iter()
            .map(|r| SimulatedCluster {
                name: r.name.clone(),
                rate_bytes_per_second: r.rate_bytes_per_second,
                segments: r.segments,
                acked_bytes: r.acked_bytes,
                errors: r.errors,
                lag_p50_ms: r.lag_p50_ms,
                lag_p99_ms: r.lag_p99_ms,
                lag_max_ms: r.lag_max_ms,
                backlog_max_bytes: r.backlog_max_bytes,
            })
            .collect(),
        produced_bytes: parts.produced,
        sent_bytes: parts.sent,
        acked_bytes: parts.acked,
        whole_bytes: parts.whole,
        segments_acked: parts.segments_acked,
        segments_unacknowledged: parts.segments_unacknowledged,
        backlog_max_bytes: parts.backlog_max,
        errors: parts
            .errors
            .counts()
            .into_iter()
            .map(|e| control::ErrorCount {
                kind: kind_to_wire(e.kind) as i32,
                message: e.message,
                count: e.count,
            })
            .collect(),
        aborted: parts.aborted.clone().unwrap_or_default(),
    }
}

/// Most error rows a result may carry (the sender keeps 8 per kind, and
/// one more for the rest).
const MAX_ERROR_ROWS: usize = 9 * FailureKind::ALL.len();

/// What a peer's result says, checked: at most `clusters` cluster rows, each
/// accepted by `owns`; at most `seconds` timeline points, each at most
/// that far into the run; histograms whose every length is checked before
/// decoding.
pub fn parts_of(
    r: SimulationResult,
    clusters: u64,
    seconds: u64,
    owns: impl Fn(&str) -> bool,
) -> Result<Parts, String> {
    if r.clusters.len() as u64 > clusters {
        return Err(format!(
            "{} cluster rows for {clusters} simulated clusters",
            r.clusters.len()
        ));
    }
    if let Some(c) = r.clusters.iter().find(|c| !owns(&c.name)) {
        return Err(format!(
            "a row for cluster {}, which it does not simulate",
            walplayer_klio::stats::bounded(&c.name)
        ));
    }
    if r.timeline.len() as u64 > seconds || r.timeline.iter().any(|p| p.t > seconds) {
        return Err(format!(
            "a timeline of {} points, beyond the run's {seconds} seconds",
            r.timeline.len()
        ));
    }
    if r.errors.len() > MAX_ERROR_ROWS {
        return Err(format!(
            "{} error rows, more than {MAX_ERROR_ROWS}",
            r.errors.len()
        ));
    }
    let histogram = |bytes: &[u8], what: &str| {
        decode_histogram(bytes).map_err(|e| format!("its {what} histogram: {e}"))
    };
    let mut errors = Errors::default();
    for e in &r.errors {
        let kind = kind_from_wire(e.kind)
            .ok_or_else(|| format!("an error row of unknown kind {}", e.kind))?;
        errors.record_count(kind, &e.message, e.count);
    }
    Ok(Parts {
        clusters: r.clusters.len() as u64,
        lag: histogram(&r.lag, "lag")?,
        ttfb: histogram(&r.ttfb, "time to first block")?,
        schedule: histogram(&r.schedule_error, "schedule error")?,
        timeline: r
            .timeline
            .iter()
            .map(|p| Point {
                t: p.t,
                produced_bytes: p.produced_bytes,
                sent_bytes: p.sent_bytes,
                acked_bytes: p.acked_bytes,
                files: p.files,
                errors: p.errors,
                p50_ns: p.p50_ns,
                p99_ns: p.p99_ns,
                open_streams: p.open_streams,
                backlog_bytes: p.backlog_bytes,
                backlog_max_bytes: p.backlog_max_bytes,
            })
            .collect(),
        rows: r
            .clusters
            .into_iter()
            .map(|c| ClusterRow {
                name: c.name,
                rate_bytes_per_second: c.rate_bytes_per_second,
                segments: c.segments,
                acked_bytes: c.acked_bytes,
                errors: c.errors,
                lag_p50_ms: c.lag_p50_ms,
                lag_p99_ms: c.lag_p99_ms,
                lag_max_ms: c.lag_max_ms,
                backlog_max_bytes: c.backlog_max_bytes,
            })
            .collect(),
        produced: r.produced_bytes,
        sent: r.sent_bytes,
        acked: r.acked_bytes,
        whole: r.whole_bytes,
        segments_acked: r.segments_acked,
        segments_unacknowledged: r.segments_unacknowledged,
        backlog_max: r.backlog_max_bytes,
        errors,
        aborted: (!r.aborted.is_empty())
            .then(|| walplayer_klio::stats::bounded(&r.aborted).into_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        w: WorkloadArgs,
    }

    #[test]
    fn a_share_crosses_the_wire_into_the_same_workload() {
        let cli = Cli::parse_from([
            "x",
            "--clusters",
            "9",
            "--wal-rate",
            "64KiB/s..4MiB/s",
            "--arrival",
            "poisson",
            "--flush-bytes",
            "1MiB",
            "--duration",
            "90s",
            "--slo",
            "lag.p99<5s",
            "--seed",
            "7",
        ]);
        let local = cli
            .w
            .workload("pg", 0, 16, Duration::from_secs(30))
            .unwrap();
        let spec = spec(&cli.w, &local, 4, 5);
        assert!(spec.search.is_none() && spec.rate_csv.is_empty() && spec.template.is_empty());
        let w = workload_of(&spec, "pg-a", 16, Duration::from_secs(30)).unwrap();
        assert_eq!((w.clusters, w.first_index), (4, 5));
        assert_eq!(w.flush_bytes, 1 << 20);
        assert_eq!(w.duration, Duration::from_secs(90));
        assert_eq!(w.arrival, Arrival::Poisson);
        assert_eq!(w.slos.len(), 1);
        assert_eq!(w.cluster_name(5), "pg-a-0");
        // The same rate for the same global index as a local run.
        assert_eq!(w.pace(6).1, local.pace(6).1);
        let bad = SimulateSpec {
            wal_rate: "fast".into(),
            ..spec.clone()
        };
        assert!(workload_of(&bad, "pg-a", 16, Duration::from_secs(1))
            .unwrap_err()
            .contains("not a size"));
        let none = SimulateSpec {
            duration_ms: 0,
            ..spec
        };
        assert!(workload_of(&none, "pg-a", 16, Duration::from_secs(1))
            .unwrap_err()
            .contains("duration"));
    }

    #[test]
    fn a_search_a_recorded_pace_and_a_template_cross_the_wire() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("pace.csv");
        std::fs::write(&csv, "time,bytes\n100,0\n100.5,16777216\n103.25,33554432\n").unwrap();
        let template = dir.path().join("seg.gz");
        std::fs::write(&template, b"\x1f\x8bnot really gzip").unwrap();
        let cli = Cli::parse_from([
            "x",
            "--rate-file",
            csv.to_str().unwrap(),
            "--template",
            template.to_str().unwrap(),
            "--find-max-clusters",
            "--step",
            "3",
            "--step-duration",
            "20s",
            "--max-clusters",
            "30",
            "--slo",
            "lag.p99<2s",
        ]);
        let local = cli
            .w
            .workload("pg", 0, 16, Duration::from_secs(30))
            .unwrap();
        let spec = spec(&cli.w, &local, 10, 0);
        let w = workload_of(&spec, "pg-a", 16, Duration::from_secs(30)).unwrap();
        assert_eq!(w.search, local.search);
        assert!(
            !w.bare_single,
            "a search names even a lone cluster by index"
        );
        let (Rates::Recorded(sent), Rates::Recorded(read)) = (&w.rates, &local.rates) else {
            panic!("a recorded pace stays recorded");
        };
        assert_eq!(sent.to_csv(), read.to_csv());
        assert_eq!(w.pace(3).0.produced(7.5), local.pace(3).0.produced(7.5));
        let t = w.template.as_ref().unwrap();
        assert_eq!(&t.data[..], b"\x1f\x8bnot really gzip");
        assert_eq!(t.path, template);
        // What a share carries is bounded before it is sent or taken.
        let huge = SimulateSpec {
            template: vec![0u8; MAX_TEMPLATE_SEND_BYTES + 1].into(),
            ..spec.clone()
        };
        let e = workload_of(&huge, "pg-a", 16, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("gzip it"), "{e}");
        // A recorded pace bounds the segments a cluster may plan: every lap
        // its duration touches (48 MiB a lap of 3.25 s).
        let bound = SimulateSpec {
            duration_ms: 10_000,
            ..spec
        };
        assert_eq!(most_bytes(&bound), 5 * (48 << 20));
    }

    fn parts() -> Parts {
        let mut lag = walplayer_klio::stats::new_histogram();
        lag.record(1_000_000).unwrap();
        let mut errors = Errors::default();
        errors.record(FailureKind::Transport, "reset");
        Parts {
            clusters: 1,
            lag: lag.clone(),
            ttfb: lag.clone(),
            schedule: lag,
            timeline: vec![Point {
                t: 1,
                acked_bytes: 5,
                ..Point::default()
            }],
            rows: vec![ClusterRow {
                name: "pg-a".into(),
                rate_bytes_per_second: 1,
                segments: 1,
                acked_bytes: 5,
                errors: 1,
                lag_p50_ms: 1,
                lag_p99_ms: 1,
                lag_max_ms: 1,
                backlog_max_bytes: 9,
            }],
            produced: 5,
            sent: 5,
            acked: 5,
            whole: 5,
            segments_acked: 1,
            segments_unacknowledged: 0,
            backlog_max: 9,
            errors,
            aborted: None,
        }
    }

    #[test]
    fn a_result_crosses_the_wire_and_lies_are_refused() {
        let sent = parts();
        let back = parts_of(result_of(&sent), 1, 10, |n| n == "pg-a").unwrap();
        assert_eq!(back.lag, sent.lag);
        assert_eq!(back.timeline, sent.timeline);
        assert_eq!(back.rows, sent.rows);
        assert_eq!(back.errors, sent.errors);
        assert_eq!(back.acked, 5);
        let e = parts_of(result_of(&sent), 1, 10, |n| n == "pg-b").unwrap_err();
        assert!(e.contains("does not simulate"), "{e}");
        let e = parts_of(result_of(&sent), 0, 10, |_| true).unwrap_err();
        assert!(e.contains("1 cluster rows for 0"), "{e}");
        let e = parts_of(result_of(&sent), 1, 0, |_| true).unwrap_err();
        assert!(e.contains("beyond the run"), "{e}");
        let mut lying = result_of(&sent);
        lying.lag = vec![0x1c, 0x84, 0x93, 0x13, 0xff, 0xff, 0xff, 0xff].into();
        assert!(parts_of(lying, 1, 10, |_| true)
            .unwrap_err()
            .contains("lag histogram"));
    }
}
