//! Does the coordinator's memory stay flat as results grow, and what does
//! one result cost it?
//!
//! Runs the `walplayer coordinator` binary on loopback and drives it with
//! simulated agents in this process: each is one control session (Register,
//! Ready with its cluster plans, Start, a FileResult per file with varied
//! times, names in order and a few errors, a Beat every second, Finished
//! with a real histogram), many sessions sharing a few HTTP/2 connections.
//! No WAL is moved: only the coordinator's side of a run is exercised.
//!
//! Four runs in this process: a baseline (10 agents × 10,000 files), the
//! full run (1,000 agents × 1,000 files) and the same million results from
//! 100 agents and from the baseline's 10, which tell per-agent memory from
//! per-result memory. Each prints the coordinator's peak RSS and CPU time
//! (its own, from the kernel) and the ratios over the baseline. Asserts that every result was counted,
//! never anything about time; every run has a deadline.
//!
//! `WALPLAYER_BENCH_SMOKE=1` divides every run's files by 100, to check the
//! bench itself quickly (the numbers then mean little).

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;
use support::{smoke, status_kib, walplayer_binary};

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

use walplayer::klio::report::from_unix_nanos;
use walplayer::klio::stats::{encode_histogram, new_histogram};
use walplayer::proto::control::agent_message::Body as Up;
use walplayer::proto::control::control_client::ControlClient;
use walplayer::proto::control::coordinator_message::Body as Down;
use walplayer::proto::control::{
    AgentMessage, Beat, ClusterHistogram, ClusterPlan, CoordinatorMessage, FailureKind, FileResult,
    Finished, Ready, Register,
};
use walplayer::wal::walname::{SegmentName, MIB};

/// One run: its name, agents and files per agent.
#[derive(Clone, Copy)]
struct Case {
    label: &'static str,
    agents: usize,
    files: u64,
}

/// The baseline first; ratios are over it. The last has the baseline's
/// agents and ten times its results: memory per result alone.
const CASES: [Case; 4] = [
    Case {
        label: "baseline",
        agents: 10,
        files: 10_000,
    },
    Case {
        label: "full",
        agents: 1_000,
        files: 1_000,
    },
    Case {
        label: "fewer agents",
        agents: 100,
        files: 10_000,
    },
    Case {
        label: "baseline agents",
        agents: 10,
        files: 100_000,
    },
];
/// HTTP/2 connections the sessions share. At most the baseline's agents,
/// so every run has as many connections, and as much flow-control buffer in
/// the coordinator.
const CONNECTIONS: usize = 8;
/// `--wal-size 1`: segment names advance by one per file.
const SEGMENT_BYTES: u64 = MIB;
const FIRST_SEGMENT: &str = "000000010000000000000000";
/// Failed files per thousand, spread by the hash of each file.
const FAILED_PER_THOUSAND: u64 = 2;
const ERRORS: [&str; 2] = [
    "simulated: stream reset by the Klio server",
    "simulated: deadline exceeded after 30s",
];
/// Histograms (a few hundred KiB each) being built at once, so 1,000
/// finishing agents do not hold 1,000 of them.
const HISTOGRAM_BUILDERS: usize = 4;
const BEAT_EVERY: Duration = Duration::from_secs(1);
/// Longest any run may take, start to summary.
const RUN_DEADLINE: Duration = Duration::from_secs(10 * 60);
/// How often the coordinator's peak RSS is read.
const POLL_EVERY: Duration = Duration::from_millis(50);

fn main() {
    if let Err(e) = run() {
        eprintln!("bench coordinator_scale: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let Some(bin) = walplayer_binary() else {
        bail!(
            "no walplayer binary next to this bench: build it with \
             `cargo build --release --bins` and run again"
        );
    };
    let scratch = tempfile::Builder::new()
        .prefix("walplayer-bench-coordinator-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    println!(
        "coordinator scale: simulated agents over {CONNECTIONS} HTTP/2 connections on loopback; \
         coordinator's peak RSS (VmHWM) and CPU (user + system, from wait4)"
    );
    let smoke = smoke();
    let mut measured: Vec<Measured> = Vec::new();
    for case in &CASES {
        let case = &Case {
            files: if smoke { case.files / 100 } else { case.files },
            ..*case
        };
        let m = measure(&runtime, &bin, scratch.path(), case)
            .with_context(|| format!("{} run", case.label))?;
        m.print();
        measured.push(m);
    }
    let base = &measured[0];
    for m in &measured[1..] {
        println!(
            "{} / {}: results {:.0}x, agents {:.0}x; peak RSS {:.2}, peak RSS over the idle \
             coordinator {:.2}, CPU per 100k results {:.2} (after the barrier {:.2})",
            m.label,
            base.label,
            m.results as f64 / base.results as f64,
            m.agents as f64 / base.agents as f64,
            m.peak_kib as f64 / base.peak_kib as f64,
            m.growth_kib() as f64 / base.growth_kib().max(1) as f64,
            m.cpu_per_100k(m.cpu) / base.cpu_per_100k(base.cpu),
            m.cpu_per_100k(m.cpu_running) / base.cpu_per_100k(base.cpu_running),
        );
    }
    Ok(())
}

/// What one run measured.
struct Measured {
    label: &'static str,
    agents: usize,
    results: u64,
    /// Coordinator's VmHWM, KiB.
    peak_kib: u64,
    /// Its RSS once listening, before any agent: the fixed cost.
    idle_kib: u64,
    /// Its CPU over the whole run, and from the start barrier on.
    cpu: Duration,
    cpu_running: Duration,
    wall: Duration,
    /// From the start barrier to the last agent's stream closing.
    wall_running: Duration,
}

impl Measured {
    fn cpu_per_100k(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() / self.results as f64 * 100_000.0
    }

    fn growth_kib(&self) -> u64 {
        self.peak_kib.saturating_sub(self.idle_kib)
    }

    fn print(&self) {
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "{}: {} agents x {} files = {} results: peak RSS {:.1} MiB (idle {:.1} MiB), \
             CPU {:.2} s ({:.2} s after the barrier), {:.3} s per 100k results \
             ({:.3} s after the barrier); wall {:.1} s ({:.1} s after the barrier)",
            self.label,
            self.agents,
            self.results / self.agents as u64,
            self.results,
            mib(self.peak_kib),
            mib(self.idle_kib),
            self.cpu.as_secs_f64(),
            self.cpu_running.as_secs_f64(),
            self.cpu_per_100k(self.cpu),
            self.cpu_per_100k(self.cpu_running),
            self.wall.as_secs_f64(),
            self.wall_running.as_secs_f64(),
        );
    }
}

/// One coordinator run driven by `case.agents` simulated agents.
fn measure(
    runtime: &tokio::runtime::Runtime,
    bin: &Path,
    scratch: &Path,
    case: &Case,
) -> Result<Measured> {
    let summary = scratch.join(format!("summary-{}.json", case.agents));
    let started = Instant::now();
    let mut coordinator = CoordinatorProcess::start(bin, scratch, case, &summary)?;
    let pid = coordinator.pid;
    let idle_kib = read_proc(pid, "status")
        .as_deref()
        .and_then(|s| status_kib(s, "VmRSS:"))
        .unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, parent_hwm) = (stop.clone(), coordinator.parent_hwm_kib);
        std::thread::spawn(move || watch(pid, parent_hwm, &stop))
    };
    coordinator.reaped_by_watcher = true;
    let drive = runtime.block_on(async {
        match tokio::time::timeout(RUN_DEADLINE, drive(coordinator.address, case, pid)).await {
            Ok(result) => result,
            Err(_) => bail!("the agents did not finish within {RUN_DEADLINE:?}"),
        }
    });
    if drive.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    let exit = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the watcher thread panicked"))?;
    let log = || coordinator.log_tail();
    let driven = drive.with_context(|| format!("coordinator said: {}", log()))?;
    let exit = exit.with_context(|| format!("coordinator said: {}", log()))?;
    let results = case.agents as u64 * case.files;
    check_summary(&summary, case, driven.failed, exit.code).with_context(log)?;
    Ok(Measured {
        label: case.label,
        agents: case.agents,
        results,
        peak_kib: exit.peak_kib,
        idle_kib,
        cpu: exit.cpu,
        cpu_running: exit.cpu.saturating_sub(driven.cpu_at_barrier),
        wall: started.elapsed(),
        wall_running: driven.running,
    })
}

// ---------------------------------------------------------------- agents

/// What the agents of one run saw.
struct Driven {
    /// Files they reported as failed.
    failed: u64,
    /// The coordinator's CPU when the last agent got Start.
    cpu_at_barrier: Duration,
    running: Duration,
}

/// Shared by the agents of one run.
struct Shared {
    agents: usize,
    coordinator: i32,
    started: AtomicUsize,
    cpu_at_barrier_us: AtomicU64,
    barrier_at: Mutex<Option<Instant>>,
    histograms: Semaphore,
}

/// Runs every simulated agent to the end of its session.
async fn drive(address: SocketAddr, case: &Case, coordinator: i32) -> Result<Driven> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))?;
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS.min(case.agents) {
        channels.push(endpoint.connect().await.context("cannot connect")?);
    }
    let shared = Arc::new(Shared {
        agents: case.agents,
        coordinator,
        started: AtomicUsize::new(0),
        cpu_at_barrier_us: AtomicU64::new(0),
        barrier_at: Mutex::new(None),
        histograms: Semaphore::new(HISTOGRAM_BUILDERS),
    });
    let mut agents = JoinSet::new();
    for index in 0..case.agents {
        let client = ControlClient::new(channels[index % channels.len()].clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        agents.spawn(agent(client, index, shared.clone()));
    }
    let mut failed = 0;
    while let Some(joined) = agents.join_next().await {
        failed += joined.context("an agent task panicked")??;
    }
    let barrier = shared.barrier_at.lock().expect("barrier lock").take();
    Ok(Driven {
        failed,
        cpu_at_barrier: Duration::from_micros(shared.cpu_at_barrier_us.load(Ordering::Relaxed)),
        running: barrier.map(|t| t.elapsed()).unwrap_or_default(),
    })
}

/// One simulated agent; returns how many files it reported as failed.
async fn agent(
    mut client: ControlClient<Channel>,
    index: usize,
    shared: Arc<Shared>,
) -> Result<u64> {
    let name = format!("sim-{index:05}");
    let (up, rx) = mpsc::channel::<AgentMessage>(256);
    let send = |body: Up| {
        let up = up.clone();
        async move {
            up.send(AgentMessage { body: Some(body) })
                .await
                .map_err(|_| anyhow::anyhow!("the control stream closed"))
        }
    };
    send(Up::Register(Register {
        name: name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        capabilities: vec!["generate".into()],
        free_bytes: 1 << 40,
    }))
    .await?;
    let mut down = client
        .session(ReceiverStream::new(rx))
        .await
        .with_context(|| format!("{name}: session refused"))?
        .into_inner();
    let assignment = match next(&mut down).await? {
        Down::Assignment(a) => a,
        other => bail!("{name}: expected an assignment, got {other:?}"),
    };
    let plans: Vec<ClusterPlan> = assignment
        .segments_per_cluster
        .iter()
        .enumerate()
        .map(|(i, &count)| ClusterPlan {
            // Named as real agents name their clusters.
            cluster: if assignment.clusters == 1 {
                format!("scale-{name}")
            } else {
                format!("scale-{name}-{i}")
            },
            first_segment: FIRST_SEGMENT.into(),
            count,
            segment_bytes: SEGMENT_BYTES,
            wal_names: Vec::new(),
        })
        .collect();
    let files: u64 = plans.iter().map(|p| p.count).sum();
    send(Up::Ready(Ready {
        files,
        bytes: files * SEGMENT_BYTES,
        clusters: plans.clone(),
    }))
    .await?;
    let start_ns = match next(&mut down).await? {
        Down::Start(s) => s.start_unix_nanos,
        other => bail!("{name}: expected Start, got {other:?}"),
    };
    shared.started();
    if let Ok(wait) = from_unix_nanos(start_ns).duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }

    // The files, as fast as the coordinator takes them.
    let (mut clock_ns, mut failed, mut done, mut bytes) = (start_ns, 0, 0, 0);
    let beat = |done: u64, bytes: u64| {
        Up::Beat(Beat {
            files_done: done,
            bytes_done: bytes,
            started_unix_nanos: start_ns,
        })
    };
    send(beat(0, 0)).await?;
    let mut last_beat = Instant::now();
    for (c, plan) in plans.iter().enumerate() {
        let mut segment = SegmentName::parse(FIRST_SEGMENT).expect("a valid constant");
        for k in 0..plan.count {
            let file = SimFile::of(index, c, k);
            let wal_name = segment.to_string();
            send(Up::File(FileResult {
                wal_full_path: format!("{name}/{wal_name}"),
                cluster: plan.cluster.clone(),
                wal_name,
                start_unix_nanos: clock_ns,
                end_unix_nanos: clock_ns + file.elapsed_ns as i64,
                elapsed_ns: file.elapsed_ns,
                bytes: file.bytes(),
                error: file.error().to_string(),
                retries: Vec::new(),
                verified: false,
                error_kind: if file.failed {
                    FailureKind::Transport as i32
                } else {
                    FailureKind::Unspecified as i32
                },
                ..Default::default()
            }))
            .await?;
            clock_ns += file.elapsed_ns as i64;
            failed += u64::from(file.failed);
            done += 1;
            bytes += file.bytes();
            segment = segment.next(SEGMENT_BYTES);
            if last_beat.elapsed() >= BEAT_EVERY {
                send(beat(done, bytes)).await?;
                last_beat = Instant::now();
            }
        }
    }
    let finished = {
        let _permit = shared.histograms.acquire().await?;
        finished(index, &plans, start_ns, clock_ns)
    };
    send(Up::Finished(finished)).await?;
    // The coordinator closes the session once it has taken Finished.
    if let Some(msg) = down.message().await.with_context(|| name.clone())? {
        bail!("{name}: unexpected message after Finished: {msg:?}");
    }
    Ok(failed)
}

/// Finished with the exact histograms of the files sent, rebuilt from
/// their seeds rather than kept during the run.
fn finished(index: usize, plans: &[ClusterPlan], start_ns: i64, end_ns: i64) -> Finished {
    let mut all = new_histogram();
    let mut clusters = Vec::new();
    for (c, plan) in plans.iter().enumerate() {
        let mut one = new_histogram();
        for k in 0..plan.count {
            one.saturating_record(SimFile::of(index, c, k).elapsed_ns);
        }
        all.add(&one).expect("same bounds");
        clusters.push(ClusterHistogram {
            cluster: plan.cluster.clone(),
            histogram: encode_histogram(&one).into(),
        });
    }
    Finished {
        histogram: encode_histogram(&all).into(),
        clusters,
        started_unix_nanos: start_ns,
        ended_unix_nanos: end_ns,
        files_skipped: 0,
        simulation: None,
    }
}

impl Shared {
    /// Counts an agent past the barrier; the last one reads the
    /// coordinator's CPU so far (registration and assignment).
    fn started(&self) {
        if self.started.fetch_add(1, Ordering::AcqRel) + 1 == self.agents {
            let cpu = proc_cpu(self.coordinator).unwrap_or_default();
            self.cpu_at_barrier_us
                .store(cpu.as_micros() as u64, Ordering::Relaxed);
            *self.barrier_at.lock().expect("barrier lock") = Some(Instant::now());
        }
    }
}

async fn next(down: &mut Streaming<CoordinatorMessage>) -> Result<Down> {
    match down.message().await? {
        Some(CoordinatorMessage { body: Some(body) }) => Ok(body),
        Some(_) => bail!("an empty message from the coordinator"),
        None => bail!("the coordinator closed the session"),
    }
}

/// One simulated file: its time (1 to 500 ms) and whether it failed, a
/// function of where it is, so the histogram can be rebuilt.
struct SimFile {
    elapsed_ns: u64,
    failed: bool,
    error: usize,
}

impl SimFile {
    fn of(agent: usize, cluster: usize, k: u64) -> SimFile {
        let h = splitmix64(((agent as u64) << 40) ^ ((cluster as u64) << 32) ^ k);
        SimFile {
            elapsed_ns: 1_000_000 + h % 499_000_000,
            failed: (h >> 32) % 1000 < FAILED_PER_THOUSAND,
            error: ((h >> 48) % ERRORS.len() as u64) as usize,
        }
    }

    fn bytes(&self) -> u64 {
        if self.failed {
            0
        } else {
            SEGMENT_BYTES
        }
    }

    fn error(&self) -> &'static str {
        if self.failed {
            ERRORS[self.error]
        } else {
            ""
        }
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------- coordinator

/// A `walplayer coordinator` process; killed and reaped when dropped unless
/// the watcher owns its end.
struct CoordinatorProcess {
    pid: i32,
    address: SocketAddr,
    /// This process's VmHWM once the child was started: the child's
    /// `ru_maxrss` starts from it (Linux carries it across the exec).
    parent_hwm_kib: u64,
    log: Arc<Mutex<VecDeque<String>>>,
    reaped_by_watcher: bool,
}

/// Coordinator log lines kept for error messages.
const LOG_LINES_KEPT: usize = 20;

impl CoordinatorProcess {
    fn start(bin: &Path, home: &Path, case: &Case, summary: &Path) -> Result<CoordinatorProcess> {
        let mut child = Command::new(bin)
            .env("HOME", home)
            .env_remove("RUST_LOG")
            .args(["coordinator", "--listen", "127.0.0.1:0"])
            .args(["--agents", &case.agents.to_string()])
            .args(["--length-per-agent", &case.files.to_string()])
            .args(["--wal-size", "1", "--output", "/dev/null", "--quiet"])
            .arg("--summary")
            .arg(summary)
            .args(["--register-timeout", "5m", "--ready-timeout", "5m"])
            .args(["--agent-timeout", "60s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start walplayer coordinator")?;
        let parent_hwm_kib = read_proc(std::process::id() as i32, "status")
            .as_deref()
            .and_then(|s| status_kib(s, "VmHWM:"))
            .unwrap_or(u64::MAX);
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            // Drains stderr to the end, or the coordinator would block on it.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = line.split("coordinator listening on ").nth(1) {
                        let _ = tx.send(addr.trim().to_string());
                    }
                    let mut log = log.lock().expect("log lock");
                    if log.len() == LOG_LINES_KEPT {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        // From here on, dropping kills and reaps the child.
        let mut process = CoordinatorProcess {
            pid: child.id() as i32,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            parent_hwm_kib,
            log,
            reaped_by_watcher: false,
        };
        drop(child);
        let address = rx.recv_timeout(Duration::from_secs(30)).with_context(|| {
            format!(
                "the coordinator printed no address within 30 s: {}",
                process.log_tail()
            )
        })?;
        process.address = address
            .parse()
            .with_context(|| format!("the coordinator printed the address {address:?}"))?;
        Ok(process)
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().expect("log lock");
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        if !self.reaped_by_watcher {
            // SAFETY: our own child, not yet reaped.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// How the coordinator ended.
struct Exit {
    code: i32,
    peak_kib: u64,
    cpu: Duration,
}

/// Polls the coordinator's VmHWM until it exits, then reaps it with wait4
/// for its exact CPU time. Kills it when `stop` is set or past the deadline.
fn watch(pid: i32, parent_hwm_kib: u64, stop: &AtomicBool) -> Result<Exit> {
    let begun = Instant::now();
    let mut peak_kib = 0;
    loop {
        // Gone once the process has exited: the last value read stands.
        if let Some(kib) = read_proc(pid, "status")
            .as_deref()
            .and_then(|s| status_kib(s, "VmHWM:"))
        {
            peak_kib = peak_kib.max(kib);
        }
        let mut status = 0;
        // SAFETY: plain syscall on our own child; rusage is written by it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            // The last VmHWM poll may be up to POLL_EVERY old; ru_maxrss is
            // exact but starts from the parent's peak, so it only counts
            // when above it.
            let maxrss = usage.ru_maxrss as u64;
            if maxrss > parent_hwm_kib {
                peak_kib = peak_kib.max(maxrss);
            }
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            };
            return Ok(Exit {
                code,
                peak_kib,
                cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
            });
        }
        ensure!(reaped == 0, "wait4: {}", std::io::Error::last_os_error());
        let late = begun.elapsed() > RUN_DEADLINE + Duration::from_secs(60);
        if late || stop.load(Ordering::Relaxed) {
            // SAFETY: our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            bail!("killed the coordinator (the run failed or passed its deadline)");
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Checks the coordinator's summary: every result counted once, none
/// unreported, every agent finished.
fn check_summary(path: &Path, case: &Case, failed: u64, code: i32) -> Result<()> {
    let text = std::fs::read_to_string(path).context("no summary file")?;
    let doc: serde_json::Value = serde_json::from_str(&text).context("summary is not JSON")?;
    let count = |key: &str| doc[key].as_u64().unwrap_or(u64::MAX);
    let results = case.agents as u64 * case.files;
    ensure!(
        count("filesOk") + count("filesFailed") == results && count("filesFailed") == failed,
        "the summary counts {} ok and {} failed of {results} results ({failed} failed)",
        doc["filesOk"],
        doc["filesFailed"]
    );
    ensure!(
        count("filesUnreported") == 0,
        "{} files unreported",
        doc["filesUnreported"]
    );
    let agents = doc["agents"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let finished = agents.iter().filter(|a| a["state"] == "finished").count();
    ensure!(
        agents.len() == case.agents && finished == case.agents,
        "{} agents in the summary, {finished} finished, of {}",
        agents.len(),
        case.agents
    );
    // Exit status 1: the run had failed files, as planned.
    let expected = if failed > 0 { 1 } else { 0 };
    ensure!(
        code == expected,
        "the coordinator exited with {code}, expected {expected}"
    );
    Ok(())
}

// ---------------------------------------------------------------- helpers

fn read_proc(pid: i32, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()
}

/// User + system CPU of a live process so far, from `/proc/PID/stat`.
fn proc_cpu(pid: i32) -> Option<Duration> {
    let stat = read_proc(pid, "stat")?;
    // Fields after the command name, which may hold spaces: utime and
    // stime are the 14th and 15th of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}
