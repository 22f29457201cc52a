//! Scale and cost of `walplayer simulate` (issue 10): can one process on 2
//! cores hold 2,000 simulated clusters, each on its own TLS connection, at
//! 16 KiB/s each, in at most 512 MiB and with blocks going out at most
//! 50 ms late (p99)? Does a cluster's memory depend on the segment size or
//! on a backlog? And what does a grpc-go client hold per open upload in
//! the same shape?
//!
//! Runs the `walplayer` binary as separate processes on loopback with
//! mutual TLS: `walplayer sink --discard --fsync none`, and `walplayer
//! simulate` measured from outside: peak RSS (`VmHWM`, polled), CPU (user +
//! system, from `wait4`), and its `--summary` (schedule error, lag,
//! segments acknowledged). Memory per cluster is the peak over a 1-cluster
//! run of the same duration, divided by the clusters. The runs:
//!
//! - scale: N clusters (`WALPLAYER_BENCH_CLUSTERS`, default 2000) at
//!   16 KiB/s, 1 MiB segments, 70 s (each cluster completes one segment),
//!   and the same with 16 MiB segments (each Put stays open all run);
//! - backlog: N/20 clusters at 256 KiB/s, 1 MiB segments: the sink keeping
//!   up; the sink process stopped (`SIGSTOP`) from 14 s for 8 s, and for
//!   30 s (more WAL piles up per cluster than a flush, 2 MiB, and than the
//!   kernel's socket buffers hold, so the simulator itself is behind); and
//!   the 30 s stop again with `--flush-bytes 256KiB`, the largest block;
//! - grpc-go: the grpc-go player of `benches/go` (one connection per job)
//!   to the same sink, at `-j N` with 4 KiB blocks every 250 ms (16 KiB/s,
//!   a 320 KiB file each, so N uploads stay open for 20 s), and at `-j 64`
//!   with two 1 MiB blocks per job (the shape of Klio's own ~4 MiB per
//!   job); memory per upload over its run on an empty directory. Skipped,
//!   with the reason, without `go` and the grpc-go sources.
//!
//! Checks every run's work (exit status, no failed Put, every whole
//! segment acknowledged, every file stored by the grpc-go player); asserts
//! nothing about time or memory: the targets are printed beside the
//! figures. `WALPLAYER_BENCH_SMOKE=1`: 20 clusters for 3 s at 512 KiB/s
//! (so segments complete), to check the bench in seconds.
//! `WALPLAYER_BENCH_PARTS=scale,backlog,grpc-go` (default all),
//! `WALPLAYER_BENCH_DURATION` (seconds of WAL per run, default 70),
//! `WALPLAYER_BENCH_BIN` (another `walplayer` binary to run, e.g. a
//! change's before).

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;
use support::{
    build_go, client_flags, go_player, linked_wal, smoke, wait_measured, walplayer_binary,
    walplayer_command, Finished, ServerProcess,
};

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use walplayer::certs::{self, CertSpec, MintedCerts};
use walplayer::wal::walname::MIB;

const CLUSTER: &str = "sim";
/// What issue 10 asks of the 2,000-cluster run.
const TARGET_PEAK_MIB: f64 = 512.0;
const TARGET_SCHEDULE_P99_MS: f64 = 50.0;
const TARGET_GO_RATIO: f64 = 0.1;
const KIB: u64 = 1024;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench simulate_scale: {e:#}");
        std::process::exit(1);
    }
}

/// The sizes of a run, full or smoke.
struct Knobs {
    clusters: u64,
    duration: Duration,
    /// WAL rate of the scale runs, bytes per second.
    rate: u64,
    backlog_clusters: u64,
    backlog_rate: u64,
    /// When the sink is stopped (after the simulator started), and for how
    /// long: briefly, then long enough for more than a flush's worth.
    pause_at: Duration,
    short_pause: Duration,
    pause: Duration,
    go_file_bytes: u64,
    go_big_jobs: usize,
    parts: String,
}

impl Knobs {
    fn from_env() -> Knobs {
        let smoke = smoke();
        let clusters = std::env::var("WALPLAYER_BENCH_CLUSTERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if smoke { 20 } else { 2000 })
            .max(1);
        let seconds = std::env::var("WALPLAYER_BENCH_DURATION")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if smoke { 3 } else { 70 })
            .max(1);
        let duration = Duration::from_secs(seconds);
        Knobs {
            clusters,
            duration,
            rate: if smoke { 512 * KIB } else { 16 * KIB },
            backlog_clusters: (clusters / 20).max(1),
            backlog_rate: if smoke { 512 * KIB } else { 256 * KIB },
            // From 14 s, for 8 s or 30 s, of a 70 s run.
            pause_at: duration.mul_f64(0.2),
            short_pause: duration.mul_f64(0.115),
            pause: duration.mul_f64(0.43),
            // 4 KiB blocks 250 ms apart: 80 blocks hold an upload 20 s.
            go_file_bytes: if smoke { 16 * KIB } else { 320 * KIB },
            go_big_jobs: if smoke { 4 } else { 64 },
            parts: std::env::var("WALPLAYER_BENCH_PARTS").unwrap_or_default(),
        }
    }

    fn part(&self, name: &str) -> bool {
        self.parts.is_empty() || self.parts.split(',').any(|p| p.trim() == name)
    }

    /// Longest one process may run: its schedule, the drain, connecting.
    fn deadline(&self) -> Duration {
        self.duration + Duration::from_secs(30 + 120)
    }
}

fn run() -> Result<()> {
    let knobs = Knobs::from_env();
    let Some(bin) = walplayer_binary() else {
        println!(
            "simulate_scale: skipped: no walplayer binary next to this bench; build it with \
             `cargo build --release --bins` and run again"
        );
        return Ok(());
    };
    let scratch = support::scratch_in_memory("walplayer-bench-simulate-")?;
    let certs = certs::mint(&scratch.path().join("certs"), &CertSpec::default())?;
    let sink = ServerProcess::sink(&bin, &certs, scratch.path())?;
    let env = Env {
        bin,
        certs,
        home: scratch.path().to_path_buf(),
        sink,
        deadline: knobs.deadline(),
    };
    println!(
        "simulate_scale: `walplayer simulate` against `walplayer sink --discard --fsync none` \
         ({}), separate processes on loopback, mutual TLS, one connection per cluster, \
         flush interval 200 ms, {} s of WAL per cluster",
        env.bin.display(),
        knobs.duration.as_secs()
    );
    let base = simulate(&env, &Case::scale("baseline", 1, 1, knobs.rate), &knobs)?;
    let mut rows = vec![Row::of(&base, None)];
    let mut scale = None;
    if knobs.part("scale") {
        let one = simulate(
            &env,
            &Case::scale("scale", knobs.clusters, 1, knobs.rate),
            &knobs,
        )?;
        let sixteen = simulate(
            &env,
            &Case::scale("scale", knobs.clusters, 16, knobs.rate),
            &knobs,
        )?;
        rows.push(Row::of(&one, Some(&base)));
        rows.push(Row::of(&sixteen, Some(&base)));
        scale = Some((rows[1].clone(), rows[2].clone()));
    }
    let mut backlog = None;
    if knobs.part("backlog") {
        let (n, rate) = (knobs.backlog_clusters, knobs.backlog_rate);
        let stopped = |label, length, flush: Option<&'static str>| Case {
            pause: Some((knobs.pause_at, length)),
            flush_bytes: flush,
            ..Case::scale(label, n, 1, rate)
        };
        let cases = [
            Case::scale("keeping up", n, 1, rate),
            stopped("stopped short", knobs.short_pause, None),
            stopped("stopped long", knobs.pause, None),
            stopped("stopped long", knobs.pause, Some("256KiB")),
        ];
        let first = rows.len();
        for case in &cases {
            let m = simulate(&env, case, &knobs)?;
            rows.push(Row::of(&m, Some(&base)));
        }
        backlog = Some(rows[first..].to_vec());
    }
    print_table(&rows);
    let go = if knobs.part("grpc-go") {
        grpc_go(&env, &knobs)?
    } else {
        None
    };
    conclude(scale, backlog, go);
    Ok(())
}

/// What every run shares.
struct Env {
    bin: PathBuf,
    certs: MintedCerts,
    home: PathBuf,
    sink: ServerProcess,
    deadline: Duration,
}

/// One `walplayer simulate` run.
struct Case {
    label: &'static str,
    clusters: u64,
    wal_size_mib: u64,
    rate: u64,
    /// Stop the sink this long after the simulator started, for this long.
    pause: Option<(Duration, Duration)>,
    /// `--flush-bytes`, when not the default 2 MiB.
    flush_bytes: Option<&'static str>,
}

impl Case {
    fn scale(label: &'static str, clusters: u64, wal_size_mib: u64, rate: u64) -> Case {
        Case {
            label,
            clusters,
            wal_size_mib,
            rate,
            pause: None,
            flush_bytes: None,
        }
    }
}

/// What one simulate run measured.
struct Measured {
    label: &'static str,
    clusters: u64,
    wal_size_mib: u64,
    rate: u64,
    flush_bytes: &'static str,
    finished: Finished,
    wall: f64,
    summary: Value,
}

/// Runs `walplayer simulate` for `case` and checks its work.
fn simulate(env: &Env, case: &Case, knobs: &Knobs) -> Result<Measured> {
    let (summary, log) = (env.home.join("summary.json"), env.home.join("simulate.log"));
    let _ = std::fs::remove_file(&summary);
    let mut cmd = walplayer_command(&env.bin, &env.home);
    cmd.args(["simulate", "--quiet"])
        .args(["--clusters", &case.clusters.to_string()])
        .args(["--wal-rate", &format!("{}KiB/s", case.rate / KIB)])
        .args(["--wal-size", &case.wal_size_mib.to_string()])
        .args(["--duration", &format!("{}s", knobs.duration.as_secs())])
        .arg("--summary")
        .arg(&summary);
    client_flags(&mut cmd, &env.certs, CLUSTER, &env.sink.address);
    if let Some(flush) = case.flush_bytes {
        cmd.args(["--flush-bytes", flush]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log)?);
    let what = format!(
        "simulate {} ({} clusters, {} MiB segments)",
        case.label, case.clusters, case.wal_size_mib
    );
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let sink_pid = env.sink.pid();
    let finished = std::thread::scope(|s| {
        if let Some((at, length)) = case.pause {
            // Bounded: always resumes the sink, whatever the simulator does.
            s.spawn(move || {
                std::thread::sleep(at);
                // SAFETY: signalling our own child, the sink.
                unsafe { libc::kill(sink_pid, libc::SIGSTOP) };
                std::thread::sleep(length);
                unsafe { libc::kill(sink_pid, libc::SIGCONT) };
            });
        }
        wait_measured(child, env.deadline)
    })?;
    let wall = start.elapsed().as_secs_f64();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    ensure!(
        finished.status == 0,
        "{what} exited with {}: {}",
        finished.status,
        text()
    );
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(&summary).with_context(|| format!("{what}: no summary"))?,
    )?;
    check(&doc, case, knobs).with_context(|| format!("{what}: {}", text()))?;
    Ok(Measured {
        label: case.label,
        clusters: case.clusters,
        wal_size_mib: case.wal_size_mib,
        rate: case.rate,
        flush_bytes: case.flush_bytes.unwrap_or("2MiB"),
        finished,
        wall,
        summary: doc,
    })
}

/// The run did what it was asked: every cluster, no failed Put, every
/// whole segment acknowledged, and what was produced was sent.
fn check(doc: &Value, case: &Case, knobs: &Knobs) -> Result<()> {
    let n = |key: &str| doc[key].as_u64().unwrap_or(0);
    ensure!(
        n("clusters") == case.clusters,
        "clusters {}",
        doc["clusters"]
    );
    ensure!(n("errorsTotal") == 0, "failed Puts: {}", doc["errors"]);
    let whole_per_cluster = case.rate * knobs.duration.as_secs() / (case.wal_size_mib * MIB);
    ensure!(
        n("segmentsUnacknowledged") == 0 && n("segmentsAcked") >= whole_per_cluster * case.clusters,
        "{} segments acknowledged, {} not, expected {} each of {} clusters",
        n("segmentsAcked"),
        n("segmentsUnacknowledged"),
        whole_per_cluster,
        case.clusters
    );
    // All but the last flush interval's bytes of each cluster went out.
    let produced = n("producedBytes") as f64;
    ensure!(
        n("sentBytes") as f64 >= produced * 0.9 && produced > 0.0,
        "{} of {produced} bytes sent",
        n("sentBytes")
    );
    Ok(())
}

/// A row of the table.
#[derive(Clone)]
struct Row {
    label: &'static str,
    clusters: u64,
    wal_size_mib: u64,
    rate_kib: u64,
    flush_bytes: &'static str,
    peak_mib: f64,
    /// Peak over the 1-cluster baseline, per cluster; `None` for the
    /// baseline itself.
    per_cluster_kib: Option<f64>,
    schedule_p50_ms: f64,
    schedule_p99_ms: f64,
    lag_p99_s: f64,
    backlog_max_mib: f64,
    cpu_s: f64,
    wall_s: f64,
}

impl Row {
    fn of(m: &Measured, base: Option<&Measured>) -> Row {
        let ns = |path: [&str; 2]| m.summary[path[0]][path[1]].as_u64().unwrap_or(0) as f64;
        Row {
            label: m.label,
            clusters: m.clusters,
            wal_size_mib: m.wal_size_mib,
            rate_kib: m.rate / KIB,
            flush_bytes: m.flush_bytes,
            peak_mib: m.finished.peak_kib as f64 / 1024.0,
            per_cluster_kib: base.map(|b| {
                m.finished.peak_kib.saturating_sub(b.finished.peak_kib) as f64 / m.clusters as f64
            }),
            schedule_p50_ms: ns(["scheduleError", "p50Ns"]) / 1e6,
            schedule_p99_ms: ns(["scheduleError", "p99Ns"]) / 1e6,
            lag_p99_s: ns(["lag", "p99Ns"]) / 1e9,
            backlog_max_mib: m.summary["backlogMaxBytes"].as_u64().unwrap_or(0) as f64 / MIB as f64,
            cpu_s: m.finished.cpu,
            wall_s: m.wall,
        }
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<13} {:>8} {:>4} {:>9} {:>6} {:>9} {:>12} {:>10} {:>10} {:>8} {:>11} {:>7} {:>6}",
        "run",
        "clusters",
        "seg",
        "rate",
        "flush",
        "peak RSS",
        "RSS/cluster",
        "sched p50",
        "sched p99",
        "lag p99",
        "backlog max",
        "CPU",
        "wall"
    );
    for r in rows {
        let per = r
            .per_cluster_kib
            .map_or("-".to_string(), |k| format!("{k:.1} KiB"));
        println!(
            "{:<13} {:>8} {:>3}M {:>4}KiB/s {:>6} {:>5.1} MiB {:>12} {:>7.2} ms {:>7.2} ms {:>6.2} s {:>7.2} MiB {:>5.1} s {:>4.0} s",
            r.label,
            r.clusters,
            r.wal_size_mib,
            r.rate_kib,
            r.flush_bytes,
            r.peak_mib,
            per,
            r.schedule_p50_ms,
            r.schedule_p99_ms,
            r.lag_p99_s,
            r.backlog_max_mib,
            r.cpu_s,
            r.wall_s
        );
    }
}

/// grpc-go memory per open upload: (paced at -j N, 1 MiB blocks at -j 64),
/// KiB per job.
struct GoMemory {
    paced_kib: f64,
    big_block_kib: f64,
}

/// The grpc-go player's memory per job in the simulator's shape, and in
/// Klio's own (1 MiB blocks); `None` when it cannot be built.
fn grpc_go(env: &Env, knobs: &Knobs) -> Result<Option<GoMemory>> {
    let go = match build_go() {
        Ok(path) => path,
        Err(reason) => {
            println!("grpc-go comparison: skipped: {reason}");
            return Ok(None);
        }
    };
    let empty = env.home.join("go-empty");
    std::fs::create_dir_all(&empty)?;
    let fixed = go_play(env, &go, &empty, 1, 4, None, 0, 0)?.peak_kib;
    let jobs = knobs.clusters as usize;
    let paced = env.home.join("go-paced");
    linked_wal(&paced, jobs as u64, MIB, knobs.go_file_bytes)?;
    let pace = Duration::from_millis(250);
    let p = go_play(
        env,
        &go,
        &paced,
        jobs,
        4,
        Some(pace),
        jobs as u64,
        knobs.go_file_bytes,
    )?;
    std::fs::remove_dir_all(&paced)?;
    let big = env.home.join("go-1mib");
    let big_jobs = knobs.go_big_jobs;
    linked_wal(&big, big_jobs as u64, 2 * MIB, 2 * MIB)?;
    let b = go_play(
        env,
        &go,
        &big,
        big_jobs,
        1024,
        None,
        big_jobs as u64,
        2 * MIB,
    )?;
    std::fs::remove_dir_all(&big)?;
    let per = |peak: u64, jobs: usize| peak.saturating_sub(fixed) as f64 / jobs as f64;
    let m = GoMemory {
        paced_kib: per(p.peak_kib, jobs),
        big_block_kib: per(b.peak_kib, big_jobs),
    };
    println!(
        "grpc-go player to the same sink, one connection per job: empty directory {:.1} MiB; \
         -j {jobs}, 4 KiB blocks every {pace:?} ({} KiB each, uploads open together): peak \
         {:.1} MiB, {:.1} KiB per open upload, CPU {:.1} s; -j {big_jobs}, 1 MiB blocks: peak \
         {:.1} MiB, {:.1} KiB per upload",
        fixed as f64 / 1024.0,
        knobs.go_file_bytes / KIB,
        p.peak_kib as f64 / 1024.0,
        m.paced_kib,
        p.cpu,
        b.peak_kib as f64 / 1024.0,
        m.big_block_kib
    );
    Ok(Some(m))
}

/// Runs the grpc-go player on `dir` and checks every file was stored.
#[allow(clippy::too_many_arguments)]
fn go_play(
    env: &Env,
    go: &Path,
    dir: &Path,
    jobs: usize,
    block_kib: usize,
    pace: Option<Duration>,
    files: u64,
    file_bytes: u64,
) -> Result<Finished> {
    let (out, log) = (env.home.join("go.out"), env.home.join("go.log"));
    let mut cmd = go_player(go, &env.certs, CLUSTER, &env.sink.address, jobs, block_kib);
    if let Some(pace) = pace {
        cmd.args(["-pace", &format!("{}ms", pace.as_millis())]);
    }
    cmd.arg(dir)
        .stdin(Stdio::null())
        .stdout(File::create(&out)?)
        .stderr(File::create(&log)?);
    let what = format!("the grpc-go player -j {jobs} -block {block_kib}");
    let finished = wait_measured(
        cmd.spawn()
            .with_context(|| format!("cannot start {what}"))?,
        env.deadline,
    )?;
    let text = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    ensure!(
        finished.status == 0,
        "{what} exited with {}: {}",
        finished.status,
        text(&log)
    );
    // "files N bytes B seconds S cipher C"
    let line = text(&out);
    let expected = format!("files {files} bytes {} ", files * file_bytes);
    ensure!(
        line.starts_with(&expected),
        "{what}: acknowledged {line:?}, expected {expected:?}"
    );
    Ok(finished)
}

/// The ratios the issue asks about, and the targets beside them.
fn conclude(scale: Option<(Row, Row)>, backlog: Option<Vec<Row>>, go: Option<GoMemory>) {
    println!("conclusion (ratios; the absolute figures move with the machine's load):");
    if let Some((one, sixteen)) = &scale {
        let meets = |ok: bool| if ok { "meets" } else { "MISSES" };
        println!(
            "  {} clusters: peak {:.1} MiB ({} the {TARGET_PEAK_MIB} MiB target), schedule \
             error p99 {:.2} ms ({} the {TARGET_SCHEDULE_P99_MS} ms target)",
            one.clusters,
            one.peak_mib,
            meets(one.peak_mib <= TARGET_PEAK_MIB),
            one.schedule_p99_ms,
            meets(one.schedule_p99_ms <= TARGET_SCHEDULE_P99_MS)
        );
        println!(
            "  memory per cluster, 16 MiB / 1 MiB segments: {:.2}x",
            ratio(sixteen.per_cluster_kib, one.per_cluster_kib)
        );
    }
    if let Some([up, short, long, small]) = backlog.as_deref() {
        let per = |r: &Row| {
            format!(
                "{}, flush {} (backlog max {:.1} MiB)",
                r.label, r.flush_bytes, r.backlog_max_mib
            )
        };
        for (a, b) in [(short, up), (long, up), (long, short), (small, long)] {
            println!(
                "  memory per cluster, {} / {}: {:.2}x",
                per(a),
                per(b),
                ratio(a.per_cluster_kib, b.per_cluster_kib)
            );
        }
    }
    if let (Some((one, _)), Some(go)) = (&scale, &go) {
        let r = ratio(one.per_cluster_kib, Some(go.paced_kib));
        println!(
            "  memory per simulated cluster / grpc-go per open upload (4 KiB blocks, paced): \
             {r:.3}x (target <= {TARGET_GO_RATIO}x); / grpc-go per upload with 1 MiB blocks: \
             {:.3}x",
            ratio(one.per_cluster_kib, Some(go.big_block_kib))
        );
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => a / b,
        _ => f64::NAN,
    }
}
