//! How close is walplayer to what grpc-go does with the same settings?
//!
//! Builds a small grpc-go player and a discarding grpc-go server
//! (`benches/go/`, Klio's transport settings) with Debian's `golang-go` and
//! `golang-google-grpc-dev`, offline (GOPATH mode, no module downloads), and
//! runs, as separate processes on loopback with mutual TLS, files on
//! `/dev/shm`:
//!
//! - speed: every client (`walplayer play`, the grpc-go player, and the
//!   grpc-go player held to AES-256-GCM so the cipher matches rustls's
//!   choice) against every server (`walplayer sink --discard --fsync none`,
//!   the grpc-go server) at `-j 1`, `-j 4` and `-j 64`, in alternating
//!   rounds. Per run: throughput (bytes / the client process's wall time),
//!   the client process's CPU (user + system, from `wait4`) and the server
//!   process's CPU over the run (`/proc/PID/stat`), each per GiB moved.
//!   Medians over rounds, and ratios between runs of the same round set
//!   (the machines are noisy: compare ratios, not MiB/s).
//! - memory: peak RSS (`VmHWM`, polled) of each player at `-j 1`, `-j 64`
//!   and `-j 256` with 1 MiB and 8 MiB blocks, each job sending one file of
//!   two blocks (hard links of one file), and a fit of
//!   `peak ~= fixed + jobs x block x k`.
//!
//! Skipped, with the reason printed, when `go` or the grpc-go sources are
//! missing or the `walplayer` binary is not built. Checks that every byte
//! was acknowledged; asserts nothing about time.
//!
//! Environment: `WALPLAYER_BENCH_SEGMENTS` (16 MiB files of the `-j 1` and
//! `-j 4` runs, default 16; `-j 64` sends the same bytes as 4 x as many 4 MiB
//! files), `WALPLAYER_BENCH_ROUNDS` (default 5), `WALPLAYER_BENCH_SMOKE=1`
//! (a few files, one round, small memory runs: checks the bench in seconds),
//! `WALPLAYER_BENCH_PARTS=speed,memory` (default both),
//! `WALPLAYER_BENCH_BEFORE=PATH` (another `walplayer` binary, played in the
//! same rounds: a change's before and after),
//! `WALPLAYER_BENCH_SINK_BEFORE=PATH` (another `walplayer` binary whose
//! sink is a third server in the same rounds: a sink change's before and
//! after),
//! `WALPLAYER_BENCH_GOPATH` (default: `$GOPATH`, else Debian's
//! `/usr/share/gocode`).

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;
use support::{
    build_go, client_flags, go_player, linked_wal, mem_available_kib, process_cpu, sink_command,
    spawn_listening, wait_measured, walplayer_binary, walplayer_command,
};

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use walplayer::certs::{self, CertSpec, MintedCerts};
use walplayer::wal::walname::MIB;

const CLUSTER: &str = certs::DEFAULT_CLUSTER;
const LOOPBACK: &str = "127.0.0.1:0";
const BLOCK_KIB: usize = 2048;
/// Longest one client run (or the Go build) may take.
const RUN_DEADLINE: Duration = Duration::from_secs(5 * 60);
const GIB: f64 = (1u64 << 30) as f64;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench grpc_go: {e:#}");
        std::process::exit(1);
    }
}

struct Knobs {
    segments: u64,
    rounds: usize,
    speed_jobs: Vec<usize>,
    memory_jobs: Vec<usize>,
    memory_blocks_kib: Vec<usize>,
    speed: bool,
    memory: bool,
}

impl Knobs {
    fn from_env() -> Knobs {
        let smoke = std::env::var("WALPLAYER_BENCH_SMOKE").is_ok_and(|v| v == "1");
        let number = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(default)
        };
        Knobs {
            segments: number("WALPLAYER_BENCH_SEGMENTS", if smoke { 2 } else { 16 }).max(1),
            rounds: number("WALPLAYER_BENCH_ROUNDS", if smoke { 1 } else { 5 }).max(1) as usize,
            speed_jobs: if smoke { vec![1, 4] } else { vec![1, 4, 64] },
            memory_jobs: if smoke { vec![1, 4] } else { vec![1, 64, 256] },
            memory_blocks_kib: if smoke { vec![1024] } else { vec![1024, 8192] },
            speed: support::part("speed"),
            memory: support::part("memory"),
        }
    }
}

fn run() -> Result<()> {
    let knobs = Knobs::from_env();
    let Some(walplayer) = walplayer_binary() else {
        println!(
            "grpc_go: skipped: no walplayer binary next to this bench; build it with \
             `cargo build --release --bins` and run again"
        );
        return Ok(());
    };
    let go_bench = match build_go() {
        Ok(path) => path,
        Err(reason) => {
            println!("grpc_go: skipped: {reason}");
            return Ok(());
        }
    };
    let scratch = support::scratch_in_memory("walplayer-bench-grpc-go-")?;
    let certs = certs::mint(&scratch.path().join("certs"), &CertSpec::default())?;
    let bins = Bins {
        walplayer,
        go: go_bench,
        certs,
        home: scratch.path().to_path_buf(),
        before: std::env::var_os("WALPLAYER_BENCH_BEFORE").map(PathBuf::from),
        sink_before: std::env::var_os("WALPLAYER_BENCH_SINK_BEFORE").map(PathBuf::from),
    };
    let mut servers = vec![
        Server::start(&bins, ServerKind::Walplayer, scratch.path())?,
        Server::start(&bins, ServerKind::Go, scratch.path())?,
    ];
    if bins.sink_before.is_some() {
        servers.push(Server::start(
            &bins,
            ServerKind::WalplayerBefore,
            scratch.path(),
        )?);
    }
    if knobs.speed {
        speed(&bins, &servers, &knobs, scratch.path())?;
    }
    if knobs.memory {
        memory(&bins, &servers[0], &knobs, scratch.path())?;
    }
    for server in &mut servers {
        server.stop()?;
    }
    Ok(())
}

// ---------------------------------------------------------------- processes

struct Bins {
    walplayer: PathBuf,
    go: PathBuf,
    certs: MintedCerts,
    /// HOME for walplayer, so no ~/.klio.yaml is read.
    home: PathBuf,
    /// `WALPLAYER_BENCH_BEFORE`: a `walplayer` binary to compare with.
    before: Option<PathBuf>,
    /// `WALPLAYER_BENCH_SINK_BEFORE`: a `walplayer` binary whose sink is
    /// compared with this one's.
    sink_before: Option<PathBuf>,
}

impl Bins {
    /// The clients of every round: walplayer first, the grpc-go players
    /// last (the ratios are printed against each of them).
    fn clients(&self) -> Vec<ClientKind> {
        let mut clients = vec![ClientKind::Walplayer];
        if self.before.is_some() {
            clients.push(ClientKind::WalplayerBefore);
        }
        clients.extend([ClientKind::Go, ClientKind::GoAes256]);
        clients
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ServerKind {
    Walplayer,
    Go,
    /// The sink of `WALPLAYER_BENCH_SINK_BEFORE`, always last.
    WalplayerBefore,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::Walplayer => "walplayer sink",
            ServerKind::Go => "grpc-go server",
            ServerKind::WalplayerBefore => "sink (before)",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ClientKind {
    Walplayer,
    /// Another `walplayer` binary (`WALPLAYER_BENCH_BEFORE`): a change's
    /// before and after, measured in the same rounds.
    WalplayerBefore,
    Go,
    /// The grpc-go player held to TLS 1.2 with ECDHE-ECDSA-AES256-GCM: Go's
    /// TLS 1.3 client prefers AES-128-GCM and cannot be told otherwise,
    /// while rustls prefers AES-256-GCM.
    GoAes256,
}

impl ClientKind {
    fn name(self) -> &'static str {
        match self {
            ClientKind::Walplayer => "walplayer play",
            ClientKind::WalplayerBefore => "play (before)",
            ClientKind::Go => "grpc-go player",
            ClientKind::GoAes256 => "grpc-go, AES-256",
        }
    }
}

/// A server process, killed when dropped.
struct Server {
    kind: ServerKind,
    child: Child,
    address: String,
    log: PathBuf,
}

impl Server {
    fn start(bins: &Bins, kind: ServerKind, scratch: &Path) -> Result<Server> {
        let s = &bins.certs.server;
        let log = scratch.join(format!("{kind:?}-server.log"));
        let mut cmd = match kind {
            ServerKind::Walplayer | ServerKind::WalplayerBefore => {
                let bin = match (&bins.sink_before, kind) {
                    (Some(bin), ServerKind::WalplayerBefore) => bin,
                    _ => &bins.walplayer,
                };
                let discard = ["--discard", "--fsync", "none"];
                let mut cmd = sink_command(bin, &bins.home, &bins.certs, &discard);
                cmd.env("RUST_LOG", "info");
                cmd
            }
            ServerKind::Go => {
                let mut cmd = Command::new(&bins.go);
                cmd.args(["server", "-listen", LOOPBACK])
                    .arg("-cert")
                    .arg(&s.cert)
                    .arg("-key")
                    .arg(&s.key)
                    .arg("-ca")
                    .arg(&s.ca);
                cmd
            }
        };
        let (child, address) = spawn_listening(&mut cmd, kind.name(), &log)?;
        Ok(Server {
            kind,
            child,
            address,
            log,
        })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (bounded) and checks it stopped cleanly.
    fn stop(&mut self) -> Result<()> {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Some(status) = self.child.try_wait()? {
                ensure!(
                    status.success(),
                    "the {} exited with {status}: {}",
                    self.kind.name(),
                    self.log_text()
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("the {} did not stop within 30 s", self.kind.name())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `walplayer` (or the `before` binary) with no Klio settings inherited.
fn walplayer(bins: &Bins, before: bool) -> Command {
    let bin = match (&bins.before, before) {
        (Some(bin), true) => bin,
        _ => &bins.walplayer,
    };
    walplayer_command(bin, &bins.home)
}

/// One client run: what to send, where, how.
struct Play<'a> {
    client: ClientKind,
    server: &'a Server,
    dir: &'a Path,
    files: u64,
    bytes: u64,
    jobs: usize,
    block_kib: usize,
}

/// What one client run measured.
#[derive(Clone, Debug)]
struct Measured {
    wall: f64,
    client_cpu: f64,
    server_cpu: f64,
    peak_kib: u64,
    cipher: Option<String>,
}

/// Runs one client to the end and checks that every byte was acknowledged.
fn play(bins: &Bins, run: &Play, scratch: &Path) -> Result<Measured> {
    let (out, log) = (scratch.join("client.out"), scratch.join("client.log"));
    let summary = scratch.join("summary.json");
    let mut cmd = match run.client {
        ClientKind::Walplayer | ClientKind::WalplayerBefore => {
            let mut cmd = walplayer(bins, run.client == ClientKind::WalplayerBefore);
            let address = &run.server.address;
            client_flags(cmd.arg("play").arg(run.dir), &bins.certs, CLUSTER, address)
                .args(["-j", &run.jobs.to_string()])
                .args(["--block-size", &run.block_kib.to_string()])
                .args(["--output", "/dev/null", "--quiet", "--retries", "0"])
                .arg("--summary")
                .arg(&summary);
            cmd
        }
        ClientKind::Go | ClientKind::GoAes256 => {
            let address = &run.server.address;
            let mut cmd = go_player(
                &bins.go,
                &bins.certs,
                CLUSTER,
                address,
                run.jobs,
                run.block_kib,
            );
            if run.client == ClientKind::GoAes256 {
                cmd.arg("-aes256");
            }
            cmd.arg(run.dir);
            cmd
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out)?)
        .stderr(File::create(&log)?);
    let server_before = process_cpu(run.server.pid())?;
    let log_before = std::fs::metadata(&run.server.log).map_or(0, |m| m.len() as usize);
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", run.client.name()))?;
    let finished = wait_measured(child, RUN_DEADLINE)?;
    let wall = start.elapsed().as_secs_f64();
    let server_cpu = process_cpu(run.server.pid())? - server_before;
    let text = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let what = format!(
        "{} -j{} to the {}",
        run.client.name(),
        run.jobs,
        run.server.kind.name()
    );
    ensure!(
        finished.status == 0,
        "{what} exited with {}: {}{}",
        finished.status,
        text(&out),
        text(&log)
    );
    // The grpc-go server logs each connection's cipher suite; rustls at
    // both ends agrees on its first choice.
    let mut cipher = match (run.server.kind, run.client) {
        (ServerKind::Go, _) => run.server.log_text().get(log_before..).and_then(|new| {
            new.lines()
                .find_map(|l| l.strip_prefix("cipher "))
                .and_then(|l| l.split_whitespace().next())
                .map(str::to_string)
        }),
        (
            ServerKind::Walplayer | ServerKind::WalplayerBefore,
            ClientKind::Walplayer | ClientKind::WalplayerBefore,
        ) => Some("TLS13_AES_256_GCM_SHA384 (rustls both ends)".to_string()),
        _ => None,
    };
    match run.client {
        ClientKind::Walplayer | ClientKind::WalplayerBefore => {
            let doc: serde_json::Value = serde_json::from_str(&text(&summary))?;
            ensure!(
                doc["filesOk"] == run.files && doc["filesFailed"] == 0,
                "{what}: {} of {} files stored: {}",
                doc["filesOk"],
                run.files,
                text(&log)
            );
        }
        ClientKind::Go | ClientKind::GoAes256 => {
            // "files N bytes B seconds S cipher C"
            let line = text(&out);
            let words: Vec<&str> = line.split_whitespace().collect();
            let field = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
                    .copied()
            };
            let (files, bytes) = (field("files"), field("bytes"));
            ensure!(
                files == Some(run.files.to_string().as_str())
                    && bytes == Some(run.bytes.to_string().as_str()),
                "{what}: acknowledged {line:?}, expected {} files and {} bytes",
                run.files,
                run.bytes
            );
            cipher = cipher.or_else(|| field("cipher").map(str::to_string));
        }
    }
    Ok(Measured {
        wall,
        client_cpu: finished.cpu,
        server_cpu,
        peak_kib: finished.peak_kib,
        cipher,
    })
}

// ---------------------------------------------------------------- data

// ---------------------------------------------------------------- speed

fn speed(bins: &Bins, servers: &[Server], knobs: &Knobs, scratch: &Path) -> Result<()> {
    let n = knobs.segments;
    let (large, small) = (scratch.join("wal-16"), scratch.join("wal-4"));
    support::generate_wal(&large, n, 16 * MIB)?;
    support::generate_wal(&small, 4 * n, 4 * MIB)?;
    let bytes = n * 16 * MIB;
    println!(
        "speed: {n} x 16 MiB (-j 64: {} x 4 MiB), block {BLOCK_KIB} KiB, files on {}, \
         medians of {} alternating rounds; CPU is user+sys of that process alone",
        4 * n,
        scratch.display(),
        knobs.rounds
    );
    for &jobs in &knobs.speed_jobs {
        let (dir, files) = if jobs >= 64 {
            (&small, 4 * n)
        } else {
            (&large, n)
        };
        // [server][client] -> runs
        let clients = bins.clients();
        let mut runs = vec![vec![Vec::<Measured>::new(); clients.len()]; servers.len()];
        for round in 0..knobs.rounds {
            // Alternate the order, so neither side always goes first.
            let mut order: Vec<(usize, usize)> = (0..servers.len())
                .flat_map(|s| (0..clients.len()).map(move |c| (s, c)))
                .collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for (s, c) in order {
                let run = Play {
                    client: clients[c],
                    server: &servers[s],
                    dir,
                    files,
                    bytes,
                    jobs,
                    block_kib: BLOCK_KIB,
                };
                runs[s][c].push(play(bins, &run, scratch)?);
            }
        }
        let table: Vec<Vec<Summary>> = runs
            .iter()
            .map(|per_client| per_client.iter().map(|r| Summary::of(r, bytes)).collect())
            .collect();
        print!("{}", speed_table(jobs, servers, &clients, &table));
    }
    std::fs::remove_dir_all(&large)?;
    std::fs::remove_dir_all(&small)?;
    Ok(())
}

/// Medians of one (client, server) pair's runs.
#[derive(Clone)]
struct Summary {
    mib_s: f64,
    client_s_gib: f64,
    server_s_gib: f64,
    cipher: String,
}

impl Summary {
    fn of(runs: &[Measured], bytes: u64) -> Summary {
        let gib = bytes as f64 / GIB;
        Summary {
            mib_s: median(runs.iter().map(|r| bytes as f64 / MIB as f64 / r.wall)),
            client_s_gib: median(runs.iter().map(|r| r.client_cpu / gib)),
            server_s_gib: median(runs.iter().map(|r| r.server_cpu / gib)),
            cipher: runs
                .first()
                .and_then(|r| r.cipher.clone())
                .unwrap_or_else(|| "?".to_string()),
        }
    }
}

fn speed_table(
    jobs: usize,
    servers: &[Server],
    clients: &[ClientKind],
    t: &[Vec<Summary>],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "-j {jobs}:");
    let _ = writeln!(
        out,
        "  {:<18} {:<16} {:>8} {:>14} {:>14}  cipher",
        "client", "server", "MiB/s", "client s/GiB", "server s/GiB"
    );
    for (s, server) in servers.iter().enumerate() {
        for (c, client) in clients.iter().enumerate() {
            let m = &t[s][c];
            let _ = writeln!(
                out,
                "  {:<18} {:<16} {:>8.0} {:>14.3} {:>14.3}  {}",
                client.name(),
                server.kind.name(),
                m.mib_s,
                m.client_s_gib,
                m.server_s_gib,
                m.cipher
            );
        }
    }
    // Clients against the same server: walplayer over each grpc-go player.
    for (s, server) in servers.iter().enumerate() {
        for c in 1..clients.len() {
            let (w, g) = (&t[s][0], &t[s][c]);
            let _ = writeln!(
                out,
                "  play / {} against the {}: throughput {:.2}x, client CPU per GiB {:.2}x",
                clients[c].name(),
                server.kind.name(),
                w.mib_s / g.mib_s,
                w.client_s_gib / g.client_s_gib
            );
        }
    }
    // Servers with the same client: walplayer sink over the grpc-go server,
    // and over `WALPLAYER_BENCH_SINK_BEFORE`'s sink when there is one.
    for (s, server) in servers.iter().enumerate().skip(1) {
        for (c, client) in clients.iter().enumerate() {
            let (w, other) = (&t[0][c], &t[s][c]);
            let _ = writeln!(
                out,
                "  sink / {} with {}: throughput {:.2}x, server CPU per GiB {:.2}x",
                server.kind.name(),
                client.name(),
                w.mib_s / other.mib_s,
                w.server_s_gib / other.server_s_gib
            );
        }
    }
    out
}

// ---------------------------------------------------------------- memory

/// Peak RSS of each player per (jobs, block), and the fit.
fn memory(bins: &Bins, sink: &Server, knobs: &Knobs, scratch: &Path) -> Result<()> {
    let available = mem_available_kib().unwrap_or(0);
    println!(
        "memory: peak RSS (VmHWM) playing to the walplayer sink; each job sends one file \
         of two blocks; growth over the empty directory's run"
    );
    let empty = scratch.join("memory-empty");
    std::fs::create_dir_all(&empty)?;
    let mut players = vec![ClientKind::Walplayer];
    if bins.before.is_some() {
        players.push(ClientKind::WalplayerBefore);
    }
    players.push(ClientKind::Go);
    for client in players {
        let run = Play {
            client,
            server: sink,
            dir: &empty,
            files: 0,
            bytes: 0,
            jobs: 1,
            block_kib: BLOCK_KIB,
        };
        let fixed = play(bins, &run, scratch)?.peak_kib;
        println!(
            "  {}: empty directory {:.1} MiB",
            client.name(),
            fixed as f64 / 1024.0
        );
        let mut points = Vec::new();
        for &block_kib in &knobs.memory_blocks_kib {
            for &jobs in &knobs.memory_jobs {
                let load_kib = (jobs * block_kib) as u64;
                // Bounded: skip a run that could take more than two thirds
                // of what the machine has free (k has been seen at 4 to 6).
                if available > 0 && load_kib * 6 > available / 3 * 2 {
                    println!(
                        "  {} -j {jobs} block {block_kib} KiB: skipped, could need {:.1} GiB \
                         of the {:.1} GiB available",
                        client.name(),
                        (load_kib * 6) as f64 / (1 << 20) as f64,
                        available as f64 / (1 << 20) as f64
                    );
                    continue;
                }
                let dir = scratch.join(format!("memory-{jobs}x{block_kib}"));
                let file_bytes = 2 * block_kib as u64 * 1024;
                linked_wal(&dir, jobs as u64, file_bytes, file_bytes)?;
                let run = Play {
                    client,
                    server: sink,
                    dir: &dir,
                    files: jobs as u64,
                    bytes: jobs as u64 * file_bytes,
                    jobs,
                    block_kib,
                };
                let peak = play(bins, &run, scratch)?.peak_kib;
                std::fs::remove_dir_all(&dir)?;
                let growth = peak.saturating_sub(fixed) as f64;
                println!(
                    "  {} -j {jobs} block {block_kib} KiB: peak {:.1} MiB, growth {:.1} MiB \
                     = {:.2} x jobs x block",
                    client.name(),
                    peak as f64 / 1024.0,
                    growth / 1024.0,
                    growth / load_kib as f64
                );
                points.push((load_kib as f64, peak as f64));
            }
        }
        if let Some((fixed_fit, k)) = fit(&points) {
            println!(
                "  {}: least-squares fit peak ~= {:.1} MiB + jobs x block x {k:.2}",
                client.name(),
                fixed_fit / 1024.0
            );
        }
    }
    Ok(())
}

/// Least-squares line through (x, y): (intercept, slope).
fn fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((my - slope * mx, slope))
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
