//! What the benchmarks share: the smoke switch, finding the built binary,
//! running `walplayer` and the grpc-go baseline as measured processes
//! (peak RSS from `/proc`, CPU from `wait4`), and generating WAL to play.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio_util::sync::CancellationToken;
use walplayer::certs::MintedCerts;
use walplayer::wal::generate::{generate, GenerateError, GenerateSpec, Payload, PgVersion};

pub mod raw_pipe;

/// The `walplayer` binary cargo built with this bench, or the one next to
/// it (`target/<profile>/walplayer`); `WALPLAYER_BENCH_BIN` names another.
pub fn walplayer_binary() -> Option<PathBuf> {
    // Another build of walplayer to measure (e.g. main's, for a before).
    if let Some(bin) = std::env::var_os("WALPLAYER_BENCH_BIN") {
        return Some(PathBuf::from(bin)).filter(|p| p.is_file());
    }
    let built = option_env!("CARGO_BIN_EXE_walplayer").map(PathBuf::from);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("walplayer")));
    [built, beside].into_iter().flatten().find(|p| p.is_file())
}

/// A `Vm...:` line (`key` like `"VmHWM:"`) of a `/proc/PID/status` text, in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `WALPLAYER_BENCH_SMOKE` set: a run of seconds, not minutes, so that CI
/// runs each bench's own checks (`cargo test --benches`); its figures mean
/// nothing.
pub fn smoke() -> bool {
    std::env::var_os("WALPLAYER_BENCH_SMOKE").is_some()
}

/// Rounds to alternate: `full`, or one in a smoke run.
pub fn rounds(full: usize) -> usize {
    if smoke() {
        1
    } else {
        full
    }
}

/// `WALPLAYER_BENCH_SEGMENTS`, else `full`, or `smoke` segments in a smoke run.
pub fn segments(full: u64, smoke_segments: u64) -> u64 {
    std::env::var("WALPLAYER_BENCH_SEGMENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if smoke() { smoke_segments } else { full })
}

/// Writes `count` synthetic segments of `segment_bytes` into `dir`.
pub fn generate_wal(dir: &Path, count: u64, segment_bytes: u64) -> Result<(), GenerateError> {
    let spec = GenerateSpec {
        dir: dir.to_path_buf(),
        count,
        segment_bytes,
        timeline: 1,
        start_lsn: 0,
        pg_version: PgVersion::default(),
        gzip: false,
        system_id: 7_400_000_000_000_000_000,
    };
    generate(
        &spec,
        &Payload::synthetic(),
        &CancellationToken::new(),
        &mut |_, _| (),
    )?;
    Ok(())
}

/// A temporary directory on tmpfs (`/dev/shm`) when there is one, so the
/// disk is not what a bench measures.
pub fn scratch_in_memory(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    let root = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&root)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot create a directory in {}: {e}", root.display()),
            )
        })
}

/// `walplayer` (`bin`) with no Klio settings inherited, and `home` as HOME
/// so no `~/.klio.yaml` is read.
pub fn walplayer_command(bin: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("HOME", home).env_remove("RUST_LOG");
    for var in [
        "CLIENT_CLUSTER_NAME",
        "CLIENT_WAL_ADDRESS",
        "CLIENT_WAL_SERVER_CERT_PATH",
        "CLIENT_WAL_CLIENT_CERT_PATH",
        "CLIENT_WAL_CLIENT_KEY_PATH",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `walplayer sink` of `bin` on a free loopback port with the minted server
/// certificate, and `args` (storage, fsync).
pub fn sink_command(bin: &Path, home: &Path, certs: &MintedCerts, args: &[&str]) -> Command {
    let s = &certs.server;
    let mut cmd = walplayer_command(bin, home);
    cmd.args(["sink", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--tls-cert")
        .arg(&s.cert)
        .arg("--tls-key")
        .arg(&s.key)
        .arg("--client-ca")
        .arg(&s.ca);
    cmd
}

/// Adds what a `play` or `simulate` of `cluster` needs to reach the sink at
/// `address` with the minted client certificate.
pub fn client_flags<'c>(
    cmd: &'c mut Command,
    certs: &MintedCerts,
    cluster: &str,
    address: &str,
) -> &'c mut Command {
    let c = &certs.client;
    cmd.args(["--cluster-name", cluster, "--address", address])
        .arg("--server-cert")
        .arg(&c.ca)
        .arg("--client-cert")
        .arg(&c.cert)
        .arg("--client-key")
        .arg(&c.key)
}

/// The grpc-go baseline's player (`go`, from [`build_go`]) sending as
/// `cluster` to `address` with `jobs` jobs and blocks of `block_kib`, with
/// the minted client certificate; its options and directory go after.
pub fn go_player(
    go: &Path,
    certs: &MintedCerts,
    cluster: &str,
    address: &str,
    jobs: usize,
    block_kib: usize,
) -> Command {
    let c = &certs.client;
    let mut cmd = Command::new(go);
    cmd.args(["play", "-addr", address])
        .arg("-ca")
        .arg(&c.ca)
        .arg("-cert")
        .arg(&c.cert)
        .arg("-key")
        .arg(&c.key)
        .args(["-cluster", cluster, "-j", &jobs.to_string()])
        .args(["-block", &block_kib.to_string()]);
    cmd
}

/// Starts a server `cmd` whose first line on stdout is `listening on
/// ADDR` (stderr goes to `log`); returns it and ADDR.
pub fn spawn_listening(cmd: &mut Command, what: &str, log: &Path) -> Result<(Child, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(log)?)
        .spawn()
        .with_context(|| format!("cannot start the {what}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the {what} printed no address within 30 s");
        }
    };
    match line.trim().strip_prefix("listening on ") {
        Some(address) => Ok((child, address.to_string())),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the {what} said {line:?}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        }
    }
}

/// A server process on loopback that printed its address; killed when
/// dropped.
pub struct ServerProcess {
    pub child: Child,
    pub address: String,
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `cmd` (see [`spawn_listening`]), its stderr into `log`.
    pub fn start(cmd: &mut Command, what: &str, log: PathBuf) -> Result<ServerProcess> {
        let (child, address) = spawn_listening(cmd, what, &log)?;
        Ok(ServerProcess {
            child,
            address,
            log,
        })
    }

    /// `walplayer sink --discard --fsync none` of `bin` with the minted
    /// server certificate; its log is `scratch/sink.log`.
    pub fn sink(bin: &Path, certs: &MintedCerts, scratch: &Path) -> Result<ServerProcess> {
        let mut cmd = sink_command(bin, scratch, certs, &["--discard", "--fsync", "none"]);
        ServerProcess::start(&mut cmd, "walplayer sink", scratch.join("sink.log"))
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a measured child process ended.
pub struct Finished {
    pub status: i32,
    /// user + system seconds, from `wait4`.
    pub cpu: f64,
    /// Of which system seconds.
    pub sys: f64,
    /// Peak RSS in KiB, polled from `/proc/PID/status` (`VmHWM`); not
    /// `ru_maxrss`, which Linux carries over from the forking process.
    pub peak_kib: u64,
}

/// Waits for `child` with `wait4`, polling its peak RSS; kills it past
/// `limit`.
pub fn wait_measured(child: Child, limit: Duration) -> Result<Finished> {
    let pid = child.id() as i32;
    let status_file = format!("/proc/{pid}/status");
    let start = Instant::now();
    let mut peak_kib = 0;
    loop {
        // Gone once the process has exited: the last value read stands.
        if let Some(kib) = std::fs::read_to_string(&status_file)
            .ok()
            .as_deref()
            .and_then(|s| status_kib(s, "VmHWM:"))
        {
            peak_kib = peak_kib.max(kib);
        }
        let mut status = 0;
        // SAFETY: plain FFI call on our own child; both out-pointers are
        // valid for the call. `child` is never waited through std.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            };
            return Ok(Finished {
                status: code,
                cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime),
                sys: seconds(usage.ru_stime),
                peak_kib,
            });
        }
        ensure!(reaped == 0, "wait4: {}", std::io::Error::last_os_error());
        if start.elapsed() > limit {
            // SAFETY: signalling our own child; then reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            bail!("a measured process did not finish within {limit:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `MemAvailable` of `/proc/meminfo`, KiB.
pub fn mem_available_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    status_kib(&text, "MemAvailable:")
}

/// A directory of `count` WAL names, all hard links of one generated
/// segment of `segment_bytes` cut to `file_bytes`: as many files as
/// wanted, in no more memory than one.
pub fn linked_wal(dir: &Path, count: u64, segment_bytes: u64, file_bytes: u64) -> Result<()> {
    let seed = dir.with_extension("seed");
    generate_wal(&seed, 1, segment_bytes)?;
    let first = std::fs::read_dir(&seed)?
        .next()
        .context("generate wrote nothing")??
        .path();
    if file_bytes < segment_bytes {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&first)?
            .set_len(file_bytes)?;
    }
    std::fs::create_dir_all(dir)?;
    for i in 0..count {
        let name = format!("{:08X}{:08X}{:08X}", 1, i >> 8, i & 0xff);
        std::fs::hard_link(&first, dir.join(name))?;
    }
    std::fs::remove_dir_all(&seed)?;
    Ok(())
}

/// Builds the grpc-go baseline (`benches/go`: a player and a discarding
/// server with Klio's transport settings) into the target directory with
/// Debian's `golang-go` and `golang-google-grpc-dev`, offline (GOPATH mode,
/// nothing fetched); the error is the reason to skip.
pub fn build_go() -> std::result::Result<PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/go");
    if !source.join("main.go").is_file() {
        return Err(format!("no grpc-go sources in {}", source.display()));
    }
    match Command::new("go").arg("version").output() {
        Ok(out) if out.status.success() => {}
        _ => return Err("no `go` on PATH (Debian: apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev)".into()),
    }
    let gopath = std::env::var("WALPLAYER_BENCH_GOPATH")
        .or_else(|_| std::env::var("GOPATH"))
        .unwrap_or_else(|_| "/usr/share/gocode".to_string());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("klio-go-bench");
    let built = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(".")
        .current_dir(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", &gopath)
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .output()
        .map_err(|e| format!("cannot run go build: {e}"))?;
    if !built.status.success() {
        return Err(format!(
            "go build of {} failed with GOPATH={gopath} (Debian: apt-get install \
             golang-google-grpc-dev golang-google-protobuf-dev): {}",
            source.display(),
            String::from_utf8_lossy(&built.stderr).trim()
        ));
    }
    Ok(out)
}

/// user + system seconds of a running process, all threads.
pub fn process_cpu(pid: i32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th, stime the 13th.
    let rest = stat.rsplit_once(") ").context("unreadable /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> { Ok(fields.get(i).context("short stat")?.parse()?) };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// `WALPLAYER_BENCH_PARTS` (comma-separated) names `part`, or is unset.
pub fn part(name: &str) -> bool {
    let parts = std::env::var("WALPLAYER_BENCH_PARTS").unwrap_or_default();
    parts.is_empty() || parts.split(',').any(|p| p.trim() == name)
}
