//! Does playing cost much more than moving the bytes, and does memory stay
//! bounded by jobs × block size?
//!
//! Speed: plays WAL with the library to the in-process sink (discarding)
//! over mutual TLS on loopback, and compares it with a raw rustls transfer
//! of the same files (same certificates, same block size, same number of
//! connections, files taken in the same order) in the same run. Rounds
//! alternate the two; medians are printed with their ratio.
//!
//! Memory: runs the `walplayer` binary (`play -j 4 --block-size 2048`) on an
//! empty directory, on many small files and on a few large ones, against a
//! `walplayer sink --discard` process, and prints each run's peak RSS.
//!
//! `WALPLAYER_BENCH_SEGMENTS` (default 64) sets how many 16 MiB segments a
//! speed round sends. WAL lives on `/dev/shm` when present, so the disk is
//! not what is measured. Asserts that every byte arrived, never anything
//! about time; every phase has a deadline. `WALPLAYER_BENCH_SMOKE=1`: 2
//! segments, one round, small memory runs, to run the checks (CI does).

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;
use support::{
    client_flags, part, process_cpu, raw_pipe, rounds, segments, smoke, wait_measured,
    walplayer_binary, walplayer_command, Finished, ServerProcess,
};

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rustls::ClientConfig;
use tokio_util::sync::CancellationToken;

use walplayer::certs::{self, CertSpec, MintedCerts};
use walplayer::klio::endpoint::KlioEndpoint;
use walplayer::klio::pipeline::Pipeline;
use walplayer::klio::tls;
use walplayer::klio::upload::{UploadSettings, Work};
use walplayer::sink::{self, Fsync, Sink, SinkSettings};
use walplayer::wal::source::{self, Segment};
use walplayer::wal::walname::MIB;

const SEGMENT_BYTES: u64 = 16 * MIB;
const BLOCK_BYTES: usize = 2 << 20;
const ROUNDS: usize = 5;
const JOBS: [usize; 2] = [1, 4];
/// Longest any one phase (a round, a memory run) may take.
const PHASE_DEADLINE: Duration = Duration::from_secs(5 * 60);
const LOOPBACK: &str = "127.0.0.1:0";
const CLUSTER: &str = certs::DEFAULT_CLUSTER;
/// One directory of the memory runs: files, MiB per file, and the
/// (jobs, block KiB) it is played with.
type MemoryCase = (u64, u64, &'static [(usize, usize)]);
/// The memory runs; the first run with files is the reference.
const MEMORY_CASES: [MemoryCase; 4] = [
    (0, 16, &[(4, 2048)]),
    (16, 16, &[(4, 2048), (1, 2048), (4, 512)]),
    (2000, 1, &[(4, 2048)]),
    (16, 64, &[(4, 2048)]),
];
/// The memory runs of a smoke run: the same code, a few small files.
const SMOKE_MEMORY_CASES: [MemoryCase; 2] = [(0, 1, &[(2, 256)]), (8, 1, &[(2, 256)])];

fn main() {
    walplayer::alloc::tune();
    // The raw pipe's client or server, started by `apart` below.
    if let Some(code) = raw_pipe::child_role() {
        std::process::exit(code);
    }
    // Errors come back here, so the temporary directories (a GiB or more in
    // /dev/shm) are removed before the process exits.
    if let Err(e) = run() {
        eprintln!("bench play: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let segments = segments(64, 2);
    let scratch = support::scratch_in_memory("walplayer-bench-play-")?;
    let certs = certs::mint(&scratch.path().join("certs"), &CertSpec::default())?;
    let wal = scratch.path().join("wal");
    support::generate_wal(&wal, segments, SEGMENT_BYTES)?;
    let files = source::list(&wal, source::Links::Follow)?.segments;
    println!(
        "play: {segments} segments of 16 MiB in {}, block {} KiB, median of {} alternating rounds",
        scratch.path().parent().unwrap_or(scratch.path()).display(),
        BLOCK_BYTES / 1024,
        rounds(ROUNDS)
    );
    if part("speed") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?;
        runtime.block_on(speed(&certs, &files))?;
    }
    if part("apart") {
        apart(&certs, scratch.path(), &wal, &files)?;
    }
    std::fs::remove_dir_all(&wal).context("cannot remove the speed rounds' WAL")?;
    if part("memory") {
        memory(&certs, scratch.path())?;
    }
    Ok(())
}

// ---------------------------------------------------------------- speed

/// Alternating rounds of the raw baseline and of the pipeline, per jobs
/// value, against servers in this process.
async fn speed(certs: &MintedCerts, files: &[Segment]) -> Result<()> {
    let (s, c) = (&certs.server, &certs.client);
    let server_tls = tls::server_config(&s.cert, &s.key, &s.ca)?;
    let client_tls = tls::client_config(&c.ca, &c.cert, &c.key)?;
    let shutdown = CancellationToken::new();
    let settings = SinkSettings {
        tls: server_tls.clone(),
        storage: sink::storage(None, Fsync::None),
        read_only: false,
    };
    let sink = Sink::bind(LOOPBACK.parse()?, settings).await?;
    let endpoint = KlioEndpoint::new(&sink.local_addr().to_string(), client_tls.clone())
        .map_err(anyhow::Error::msg)?;
    let sink = tokio::spawn(sink.serve(shutdown.clone()));
    let raw = raw_pipe::Server::start(server_tls, shutdown.clone()).await?;

    let rounds = compare(&endpoint, &raw, &client_tls, files).await;
    shutdown.cancel();
    let totals = deadline("stopping the sink", async { Ok(sink.await?) }).await?;
    deadline("stopping the raw server", async { Ok(raw.accept.await?) }).await?;
    rounds?;
    let runs = (support::rounds(ROUNDS) * JOBS.len()) as u64;
    let total: u64 = files.iter().map(|s| s.size).sum();
    let stored = totals.bytes.load(std::sync::atomic::Ordering::Relaxed);
    ensure!(
        stored == runs * total,
        "the sink received {stored} bytes, expected {}",
        runs * total
    );
    Ok(())
}

async fn compare(
    endpoint: &KlioEndpoint,
    raw: &raw_pipe::Server,
    client_tls: &Arc<ClientConfig>,
    files: &[Segment],
) -> Result<()> {
    let mib = files.iter().map(|s| s.size).sum::<u64>() as f64 / MIB as f64;
    for jobs in JOBS {
        let (mut played, mut baseline) = (Vec::new(), Vec::new());
        for round in 1..=rounds(ROUNDS) {
            let phase = format!("raw rustls -j{jobs}, round {round}");
            baseline.push(deadline(&phase, raw_round(raw, client_tls, files, jobs)).await?);
            let phase = format!("play -j{jobs}, round {round}");
            played.push(deadline(&phase, play_round(endpoint, files, jobs)).await?);
        }
        let (p, r) = (mib / median(played), mib / median(baseline));
        println!(
            "play -j{jobs}: {p:.0} MiB/s, raw rustls {r:.0} MiB/s, ratio {:.2}",
            p / r
        );
    }
    Ok(())
}

/// One pipeline run, connections included; returns its seconds.
async fn play_round(endpoint: &KlioEndpoint, files: &[Segment], jobs: usize) -> Result<f64> {
    let start = Instant::now();
    let clients = endpoint
        .connect_jobs(jobs)
        .await
        .map_err(anyhow::Error::msg)?;
    let work = files
        .iter()
        .map(|segment| Work {
            segment: segment.clone(),
            cluster: CLUSTER.to_string(),
        })
        .collect();
    let settings = UploadSettings {
        block: walplayer::klio::settings::BlockSize::from_kib((BLOCK_BYTES / 1024) as u64)
            .expect("a constant Klio block size"),
        timeout: PHASE_DEADLINE,
        retries: 0,
        verify: false,
    };
    let mut pipeline = Pipeline::start(
        work,
        clients,
        settings,
        walplayer::klio::metrics::ClientMetrics::unregistered(),
        CancellationToken::new(),
    );
    let (mut reports, mut stored) = (0, 0);
    while let Some(report) = pipeline.reports.recv().await {
        ensure!(
            report.ok(),
            "{}: {}",
            report.wal_name,
            report.outcome.error_text()
        );
        reports += 1;
        stored += report.bytes;
    }
    pipeline.join().await;
    let seconds = start.elapsed().as_secs_f64();
    check_all_sent("play", files, reports, stored)?;
    Ok(seconds)
}

/// One raw transfer of `files`; returns its seconds.
async fn raw_round(
    server: &raw_pipe::Server,
    tls: &Arc<ClientConfig>,
    files: &[Segment],
    jobs: usize,
) -> Result<f64> {
    let start = Instant::now();
    raw_pipe::send(server.addr, tls, files, jobs, BLOCK_BYTES).await?;
    Ok(start.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------- apart

/// Client and server as separate processes, so each one's CPU is its own:
/// `walplayer play` to `walplayer sink --discard`, and the raw pipe's
/// client to its server, in alternating rounds (with
/// `WALPLAYER_BENCH_BEFORE=PATH`, that binary's play to its own sink too:
/// a change's before and after). Per run: the client's CPU (user + system,
/// `wait4`), the server's over the run (`/proc`), each per GiB moved, and
/// throughput (bytes / the client's wall time).
fn apart(certs: &MintedCerts, scratch: &Path, wal: &Path, files: &[Segment]) -> Result<()> {
    let Some(bin) = built_walplayer("apart")? else {
        return Ok(());
    };
    let s = &certs.server;
    let mut raw = Command::new(std::env::current_exe()?);
    raw.env(raw_pipe::ROLE, "server")
        .arg(&s.cert)
        .arg(&s.key)
        .arg(&s.ca);
    let raw = ServerProcess::start(&mut raw, "raw pipe server", scratch.join("raw-server.log"))?;
    // (name, walplayer binary and its sink), the raw pipe first.
    let mut pairs = vec![("raw", None), ("play", Some(bin.clone()))];
    if let Some(before) = std::env::var_os("WALPLAYER_BENCH_BEFORE") {
        pairs.push(("before", Some(before.into())));
    }
    let sinks = pairs
        .iter()
        .map(|(name, bin)| match bin {
            Some(bin) => {
                let home = scratch.join(name);
                std::fs::create_dir_all(&home)?;
                ServerProcess::sink(bin, certs, &home).map(Some)
            }
            None => Ok(None),
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes: u64 = files.iter().map(|s| s.size).sum();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    println!(
        "apart: client and server as separate processes, {} files, block {} KiB, \
         medians of {} alternating rounds; CPU per GiB is user+sys of that process alone",
        files.len(),
        BLOCK_BYTES / 1024,
        rounds(ROUNDS)
    );
    for jobs in JOBS {
        let mut runs = vec![Vec::new(); pairs.len()];
        for round in 0..rounds(ROUNDS) {
            let mut order: Vec<usize> = (0..pairs.len()).collect();
            // Alternate which goes first.
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let (name, bin) = &pairs[i];
                let run = match (bin, &sinks[i]) {
                    (Some(bin), Some(sink)) => {
                        let run = PlayRun {
                            dir: wal,
                            files: files.len() as u64,
                            jobs,
                            block_kib: BLOCK_BYTES / 1024,
                        };
                        measured(sink, || {
                            play_process(bin, certs, &sink.address, &run, scratch)
                        })
                    }
                    _ => raw_process(certs, &raw, wal, jobs, scratch),
                };
                runs[i].push(run.with_context(|| format!("{name} -j{jobs}, apart"))?);
            }
        }
        let medians: Vec<Apart> = runs.iter().map(|r| Apart::median(r, gib)).collect();
        for ((name, _), m) in pairs.iter().zip(&medians) {
            println!(
                "  -j{jobs}: {name:<6} {:>5.0} MiB/s, client {:.3} s/GiB (system {:.3}), \
                 server {:.3} s/GiB",
                m.mib_s, m.client, m.client_sys, m.server
            );
        }
        let r = medians[0];
        for ((name, _), p) in pairs.iter().zip(&medians).skip(1) {
            println!(
                "  -j{jobs}: {name} / raw: client CPU per GiB {:.2}x (user {:.2}x, system {:.2}x), \
                 server CPU per GiB {:.2}x, throughput {:.2}x",
                p.client / r.client,
                (p.client - p.client_sys) / (r.client - r.client_sys),
                p.client_sys / r.client_sys,
                p.server / r.server,
                p.mib_s / r.mib_s
            );
        }
        if let [_, after, before] = medians[..] {
            println!(
                "  -j{jobs}: play / before: client CPU per GiB {:.2}x, server CPU per GiB {:.2}x, \
                 throughput {:.2}x",
                after.client / before.client,
                after.server / before.server,
                after.mib_s / before.mib_s
            );
        }
    }
    Ok(())
}

/// One separate-process run, in seconds.
#[derive(Clone, Copy)]
struct Run {
    wall: f64,
    client: f64,
    client_sys: f64,
    server: f64,
}

/// Medians of runs, per GiB.
#[derive(Clone, Copy)]
struct Apart {
    mib_s: f64,
    client: f64,
    client_sys: f64,
    server: f64,
}

impl Apart {
    /// Medians of each figure over `runs` of `gib` each, per GiB.
    fn median(runs: &[Run], gib: f64) -> Apart {
        let of = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
        Apart {
            mib_s: gib * 1024.0 / of(|r| r.wall),
            client: of(|r| r.client) / gib,
            client_sys: of(|r| r.client_sys) / gib,
            server: of(|r| r.server) / gib,
        }
    }
}

/// Runs a client against `server`, measuring both.
fn measured(server: &ServerProcess, client: impl FnOnce() -> Result<Finished>) -> Result<Run> {
    let before = process_cpu(server.pid())?;
    let start = Instant::now();
    let finished = client()?;
    Ok(Run {
        wall: start.elapsed().as_secs_f64(),
        client: finished.cpu,
        client_sys: finished.sys,
        server: process_cpu(server.pid())? - before,
    })
}

/// The raw pipe's client process sending `wal` to `server`.
fn raw_process(
    certs: &MintedCerts,
    server: &ServerProcess,
    wal: &Path,
    jobs: usize,
    scratch: &Path,
) -> Result<Run> {
    let c = &certs.client;
    let log = scratch.join("raw-client.log");
    measured(server, || {
        let child = Command::new(std::env::current_exe()?)
            .env(raw_pipe::ROLE, "client")
            .arg(&server.address)
            .arg(&c.ca)
            .arg(&c.cert)
            .arg(&c.key)
            .arg(jobs.to_string())
            .arg(BLOCK_BYTES.to_string())
            .arg(wal)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .context("cannot start the raw pipe's client")?;
        let finished = wait_measured(child, PHASE_DEADLINE)?;
        ensure!(
            finished.status == 0,
            "the raw pipe's client exited with {}: {}",
            finished.status,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Ok(finished)
    })
}

// ---------------------------------------------------------------- memory

/// Peak RSS of `walplayer play` on directories of different shapes, with
/// different jobs and block sizes.
fn memory(certs: &MintedCerts, scratch: &Path) -> Result<()> {
    let Some(bin) = built_walplayer("memory")? else {
        return Ok(());
    };
    let sink = ServerProcess::sink(&bin, certs, scratch)?;
    println!("memory: peak RSS of walplayer play (growth = over the empty directory's run)");
    let (mut empty_kib, mut reference) = (None, None);
    let cases: &[MemoryCase] = if smoke() {
        &SMOKE_MEMORY_CASES
    } else {
        &MEMORY_CASES
    };
    for &(count, mib, runs) in cases {
        let dir = scratch.join(format!("memory-{count}x{mib}"));
        std::fs::create_dir_all(&dir)?;
        support::generate_wal(&dir, count, mib * MIB)?;
        for &(jobs, block_kib) in runs {
            let label = match count {
                0 => "empty directory".to_string(),
                _ => format!("{count} files of {mib} MiB"),
            };
            let run = format!("-j{jobs} --block-size {block_kib}, {label}");
            let play = PlayRun {
                dir: &dir,
                files: count,
                jobs,
                block_kib,
            };
            let peak = play_process(&bin, certs, &sink.address, &play, scratch)
                .with_context(|| format!("memory run {run}"))?
                .peak_kib;
            let base = *empty_kib.get_or_insert(peak);
            let growth = peak.saturating_sub(base);
            let mib_of = |kib: u64| kib as f64 / 1024.0;
            if count == 0 {
                println!("  {run}: {:.1} MiB", mib_of(peak));
                continue;
            }
            let first = *reference.get_or_insert(growth.max(1));
            println!(
                "  {run}: {:.1} MiB, growth {:.1} MiB = {:.1} x jobs x block, {:.2} x the first",
                mib_of(peak),
                mib_of(growth),
                mib_of(growth) / (jobs * block_kib) as f64 * 1024.0,
                growth as f64 / first as f64
            );
        }
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// One `walplayer play` process.
struct PlayRun<'a> {
    dir: &'a Path,
    files: u64,
    jobs: usize,
    block_kib: usize,
}

/// Runs `walplayer play` and returns how it ended (CPU, peak RSS), after
/// checking that every file was stored.
fn play_process(
    bin: &Path,
    certs: &MintedCerts,
    address: &str,
    run: &PlayRun,
    scratch: &Path,
) -> Result<Finished> {
    let files = run.files;
    let (summary, log) = (scratch.join("summary.json"), scratch.join("play.log"));
    let mut cmd = walplayer_command(bin, scratch);
    let child = client_flags(cmd.arg("play").arg(run.dir), certs, CLUSTER, address)
        .args(["-j", &run.jobs.to_string()])
        .args(["--block-size", &run.block_kib.to_string()])
        .args(["--output", "/dev/null", "--quiet"])
        .arg("--summary")
        .arg(&summary)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log)?)
        .spawn()
        .context("cannot start walplayer play")?;
    let finished = wait_measured(child, PHASE_DEADLINE)?;
    let status = finished.status;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    ensure!(
        status == 0,
        "walplayer play exited with {status}: {}",
        log_text()
    );
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary)?)?;
    ensure!(
        doc["filesOk"] == files && doc["filesFailed"] == 0,
        "walplayer play stored {} of {files} files: {}",
        doc["filesOk"],
        log_text()
    );
    Ok(finished)
}

// ---------------------------------------------------------------- helpers

/// The `walplayer` binary the `part` runs, or `None` after saying why it
/// is skipped; a smoke run is there to run every check, so there a missing
/// binary is an error.
fn built_walplayer(part: &str) -> Result<Option<std::path::PathBuf>> {
    let bin = walplayer_binary();
    if bin.is_none() {
        ensure!(!smoke(), "{part}: no walplayer binary next to this bench");
        println!(
            "{part}: skipped: no walplayer binary next to this bench; build it with \
             `cargo build --release --bins` and run again"
        );
    }
    Ok(bin)
}

/// Runs one phase, giving up with a message after [`PHASE_DEADLINE`].
async fn deadline<T>(phase: &str, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(PHASE_DEADLINE, work).await {
        Ok(result) => result.with_context(|| phase.to_string()),
        Err(_) => bail!("{phase}: did not finish within {PHASE_DEADLINE:?}; aborting"),
    }
}

fn check_all_sent(what: &str, files: &[Segment], reports: usize, stored: u64) -> Result<()> {
    let total: u64 = files.iter().map(|s| s.size).sum();
    ensure!(
        reports == files.len() && stored == total,
        "{what}: {reports} of {} files reported, {stored} of {total} bytes stored",
        files.len()
    );
    Ok(())
}

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}
