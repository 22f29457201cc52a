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
    rounds, segments, smoke, wait_measured, walplayer_binary, walplayer_command, Finished,
    SinkProcess,
};

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use walplayer::certs::{self, CertSpec, MintedCerts};
use walplayer::klio::endpoint::KlioEndpoint;
use walplayer::klio::pipeline::Pipeline;
use walplayer::klio::tls;
use walplayer::klio::transport::SOCKET_BUFFER;
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(speed(&certs, &files))?;
    std::fs::remove_dir_all(&wal).context("cannot remove the speed rounds' WAL")?;
    memory(&certs, scratch.path())
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
    let mut raw = RawServer::start(server_tls, shutdown.clone()).await?;

    let rounds = compare(&endpoint, &mut raw, &client_tls, files).await;
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
    raw: &mut RawServer,
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

/// One raw transfer: `jobs` connections take files in order, as the
/// pipeline's jobs do, and write them in blocks; ends when the server has
/// read every byte.
async fn raw_round(
    server: &mut RawServer,
    tls: &Arc<ClientConfig>,
    files: &[Segment],
    jobs: usize,
) -> Result<f64> {
    let start = Instant::now();
    let queue = Arc::new(Mutex::new(files.iter().cloned().collect::<VecDeque<_>>()));
    let connector = TlsConnector::from(tls.clone());
    let mut clients = JoinSet::new();
    for _ in 0..jobs {
        clients.spawn(raw_client(server.addr, connector.clone(), queue.clone()));
    }
    let (mut sent, mut received) = (0, 0);
    while let Some(client) = clients.join_next().await {
        sent += client??;
    }
    for _ in 0..jobs {
        received += server
            .finished
            .recv()
            .await
            .context("the raw server stopped")??;
    }
    let seconds = start.elapsed().as_secs_f64();
    let total: u64 = files.iter().map(|s| s.size).sum();
    ensure!(
        sent == total && received == total,
        "raw rustls: sent {sent} and received {received} of {total} bytes"
    );
    Ok(seconds)
}

async fn raw_client(
    addr: SocketAddr,
    connector: TlsConnector,
    queue: Arc<Mutex<VecDeque<Segment>>>,
) -> Result<u64> {
    let tcp = TcpStream::connect(addr).await?;
    // The same socket settings the Klio client uses.
    let sock = socket2::SockRef::from(&tcp);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(addr.ip().to_string())?;
    let mut tls = connector.connect(name, tcp).await?;
    let mut block = vec![0u8; BLOCK_BYTES];
    let mut sent = 0u64;
    loop {
        let Some(segment) = queue.lock().expect("queue lock").pop_front() else {
            break;
        };
        // A plain read: the files are in /dev/shm or the page cache, so this
        // is a copy, the cheapest way to get the bytes, as a baseline should.
        let mut file = File::open(&segment.path)?;
        loop {
            let n = read_full(&mut file, &mut block)?;
            if n == 0 {
                break;
            }
            tls.write_all(&block[..n]).await?;
            sent += n as u64;
        }
    }
    // close_notify, then read to the server's: closing with its TLS 1.3
    // session tickets unread would reset the connection under its last bytes.
    tls.shutdown().await?;
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).await?;
    Ok(sent)
}

/// A mutual-TLS server that reads and discards; each connection's byte
/// count arrives on `finished` when the client closes.
struct RawServer {
    addr: SocketAddr,
    finished: mpsc::UnboundedReceiver<std::io::Result<u64>>,
    accept: tokio::task::JoinHandle<()>,
}

impl RawServer {
    async fn start(tls: Arc<ServerConfig>, shutdown: CancellationToken) -> Result<RawServer> {
        let listener = TcpListener::bind(LOOPBACK).await?;
        let addr = listener.local_addr()?;
        let (tx, finished) = mpsc::unbounded_channel();
        let accept = tokio::spawn(raw_accept(listener, TlsAcceptor::from(tls), tx, shutdown));
        Ok(RawServer {
            addr,
            finished,
            accept,
        })
    }
}

async fn raw_accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    finished: mpsc::UnboundedSender<std::io::Result<u64>>,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    eprintln!("raw server: accept failed: {e}");
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, finished) = (acceptor.clone(), finished.clone());
        connections.spawn(async move {
            let _ = finished.send(discard(acceptor, tcp).await);
        });
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

async fn discard(acceptor: TlsAcceptor, tcp: TcpStream) -> std::io::Result<u64> {
    let mut tls = acceptor.accept(tcp).await?;
    let mut buf = vec![0u8; 256 << 10];
    let mut received = 0u64;
    loop {
        match tls.read(&mut buf).await? {
            0 => break,
            n => received += n as u64,
        }
    }
    tls.shutdown().await?;
    Ok(received)
}

// ---------------------------------------------------------------- memory

/// Peak RSS of `walplayer play` on directories of different shapes, with
/// different jobs and block sizes.
fn memory(certs: &MintedCerts, scratch: &Path) -> Result<()> {
    let Some(bin) = walplayer_binary() else {
        // A smoke run is there to run every check: a skip would hide one.
        ensure!(!smoke(), "memory: no walplayer binary next to this bench");
        println!(
            "memory: skipped: no walplayer binary next to this bench; build it with \
             `cargo build --release --bins` and run again"
        );
        return Ok(());
    };
    let sink = SinkProcess::start(&bin, certs, scratch)?;
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
            let peak = play_peak_kib(&bin, certs, &sink.address, &play, scratch)
                .with_context(|| format!("memory run {run}"))?;
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

/// One `walplayer play` of the memory runs.
struct PlayRun<'a> {
    dir: &'a Path,
    files: u64,
    jobs: usize,
    block_kib: usize,
}

/// Runs `walplayer play` and returns its peak RSS in KiB, after checking
/// that every file was stored.
fn play_peak_kib(
    bin: &Path,
    certs: &MintedCerts,
    address: &str,
    run: &PlayRun,
    scratch: &Path,
) -> Result<u64> {
    let files = run.files;
    let c = &certs.client;
    let (summary, log) = (scratch.join("summary.json"), scratch.join("play.log"));
    let child = walplayer_command(bin, scratch)
        .arg("play")
        .arg(run.dir)
        .args(["--cluster-name", CLUSTER, "--address", address])
        .arg("--server-cert")
        .arg(&c.ca)
        .arg("--client-cert")
        .arg(&c.cert)
        .arg("--client-key")
        .arg(&c.key)
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
    let Finished {
        status, peak_kib, ..
    } = wait_measured(child, PHASE_DEADLINE)?;
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
    Ok(peak_kib)
}

// ---------------------------------------------------------------- helpers

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

/// Reads until `buf` is full or the file ends.
fn read_full(input: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}
