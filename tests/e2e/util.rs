//! Test helpers: a private directory with certificates, the built binaries
//! with a clean environment, a sink process, bounded waits.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use walplayer::certs::{self, CertSpec, MintedCerts};

/// Longest any one command of a test may run.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// A test's own directory with minted certificates.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub certs: MintedCerts,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs =
            certs::mint(&dir.path().join("certs"), &CertSpec::default()).expect("mint certs");
        TestEnv { dir, certs }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `walplayer ARGS` with no Klio settings inherited and `HOME` inside
    /// the test directory (so no `~/.klio.yaml` leaks in).
    pub fn walplayer(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_walplayer"));
        cmd.args(args)
            .env("HOME", self.dir.path())
            .env_remove("RUST_LOG");
        for var in [
            "CLIENT_CLUSTER_NAME",
            "CLIENT_WAL_ADDRESS",
            "CLIENT_WAL_SERVER_CERT_PATH",
            "CLIENT_WAL_CLIENT_CERT_PATH",
            "CLIENT_WAL_CLIENT_KEY_PATH",
            "WALPLAYER_LOG_FORMAT",
            "WALPLAYER_LOG_LEVEL",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// `walplayer play DIR` against `address` with this env's client
    /// identity, as flags.
    pub fn play(&self, dir: &Path, address: &str, extra: &[&str]) -> Command {
        let c = &self.certs.client;
        let mut cmd = self.play_as(dir, address, &c.ca, &c.cert, &c.key);
        cmd.args(extra);
        cmd
    }

    /// `walplayer play DIR` against `address` trusting `server_ca` and
    /// presenting `cert` and `key`, as cluster `walplayer`.
    pub fn play_as(
        &self,
        dir: &Path,
        address: &str,
        server_ca: &Path,
        cert: &Path,
        key: &Path,
    ) -> Command {
        let mut cmd = self.walplayer(&["play"]);
        cmd.arg(dir)
            .args(["--cluster-name", "walplayer", "--address", address])
            .arg("--server-cert")
            .arg(server_ca)
            .arg("--client-cert")
            .arg(cert)
            .arg("--client-key")
            .arg(key);
        cmd
    }

    /// Generates `count` segments of `mib` MiB into `name`.
    pub fn generate(&self, name: &str, count: u32, mib: u32, extra: &[&str]) -> PathBuf {
        let dir = self.path(name);
        let out = run(self
            .walplayer(&["generate"])
            .arg(&dir)
            .args([
                "--length",
                &count.to_string(),
                "--wal-size",
                &mib.to_string(),
                "--quiet",
            ])
            .args(extra));
        assert_status(&out, 0);
        dir
    }

    /// Starts a sink storing into `data` (fsync off: tests measure nothing).
    pub fn sink(&self, data: &Path, extra: &[&str]) -> SinkProcess {
        let s = &self.certs.server;
        let mut cmd = self.walplayer(&["sink", "--fsync", "none"]);
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.arg("--data").arg(data);
        cmd.arg("--tls-cert")
            .arg(&s.cert)
            .arg("--tls-key")
            .arg(&s.key)
            .arg("--client-ca")
            .arg(&s.ca);
        cmd.args(extra);
        SinkProcess::start(cmd)
    }
}

/// A running `walplayer sink`; killed when dropped.
pub struct SinkProcess {
    pub child: Child,
    pub address: String,
    pub log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl SinkProcess {
    pub fn start(mut cmd: Command) -> SinkProcess {
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("sink.log");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sink");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("sink prints its address within 30 s");
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected sink line {line:?}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        SinkProcess {
            child,
            address,
            log,
            _log_dir: log_dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(&self.child, libc::SIGTERM);
        wait_bounded(&mut self.child, Duration::from_secs(20))
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child we own; no memory is involved.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Waits for `child`, killing it (and failing the test) past `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command to completion within [`COMMAND_LIMIT`], capturing output.
pub fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || read_all(stdout));
    let err_reader = std::thread::spawn(move || read_all(stderr));
    let status = wait_bounded(&mut child, COMMAND_LIMIT);
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn read_all(mut r: impl std::io::Read) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = r.read_to_end(&mut v);
    v
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn assert_status(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// Parses JSON lines.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The per-file records of a run's stdout: every JSON line but the
/// `walplayerSummary` line, which must be the last one when present.
pub fn file_lines(text: &str) -> Vec<serde_json::Value> {
    let mut lines = json_lines(text);
    if lines
        .last()
        .is_some_and(|l| l.get("walplayerSummary").is_some())
    {
        lines.pop();
    }
    for l in &lines {
        assert!(
            l.get("walplayerSummary").is_none(),
            "the summary line is not the last line of stdout:\n{text}"
        );
    }
    lines
}

/// The `walplayerSummary` object of the last stdout line.
pub fn summary_line(text: &str) -> serde_json::Value {
    let last = json_lines(text)
        .pop()
        .unwrap_or_else(|| panic!("no JSON line on stdout: {text:?}"));
    last.get("walplayerSummary")
        .unwrap_or_else(|| panic!("the last stdout line is not the summary: {last}"))
        .clone()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Asserts every WAL file of `sent` is stored byte-identical in `stored`
/// (`.gz` inputs compared decompressed); returns how many.
pub fn assert_stored_identical(sent: &Path, stored: &Path) -> usize {
    let mut n = 0;
    let mut names: Vec<_> = std::fs::read_dir(sent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        if !path.is_file() {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let (wal, data) = match name.strip_suffix(".gz") {
            Some(wal) => {
                let mut d = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()),
                    &mut d,
                )
                .unwrap();
                (wal.to_string(), d)
            }
            None => (name.clone(), std::fs::read(&path).unwrap()),
        };
        if !walplayer::wal::walname::is_wal_name(&wal) {
            continue;
        }
        let stored_data =
            std::fs::read(stored.join(&wal)).unwrap_or_else(|e| panic!("{wal} not stored: {e}"));
        assert!(stored_data == data, "{wal} differs from what was sent");
        n += 1;
    }
    n
}

/// A process whose stderr is copied to a file, with a wait for a line.
pub struct Logged {
    pub child: Child,
    pub log: PathBuf,
    lines: std::sync::mpsc::Receiver<String>,
    /// Copies stderr to `log`; done once the process closed its stderr.
    copying: std::thread::JoinHandle<()>,
}

impl Logged {
    /// Starts `cmd`, copying stderr to `log`.
    pub fn start(mut cmd: Command, log: PathBuf) -> Logged {
        let mut child = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        // Created here, not in the thread: the file exists once this returns.
        let mut out = std::fs::File::create(&log).unwrap();
        let copying = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes());
                let _ = tx.send(line);
            }
        });
        Logged {
            child,
            log,
            lines,
            copying,
        }
    }

    /// Waits (bounded) for a stderr line containing `needle`; returns it.
    pub fn wait_line(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line with {needle:?} within {limit:?}; log:\n{}",
                    self.text()
                ),
            }
        }
    }

    /// Waits (bounded) until every one of `needles` has been in a stderr
    /// line, in any order.
    pub fn wait_lines(&self, needles: &[&str], limit: Duration) {
        let mut left: Vec<&str> = needles.to_vec();
        let deadline = Instant::now() + limit;
        while !left.is_empty() {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(wait) {
                Ok(line) => left.retain(|n| !line.contains(n)),
                Err(_) => panic!(
                    "no lines with {left:?} within {limit:?}; log:\n{}",
                    self.text()
                ),
            }
        }
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `done` until it holds, failing the test with `what` and the
    /// log past `limit`, or at once if the process exits first (a refusal
    /// is then in its log, not a minute's silence).
    pub fn wait_running(&mut self, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.wait(Duration::from_secs(1));
                panic!(
                    "{what}: the process exited ({status}) first; log:\n{}",
                    self.text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}; log:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) for the process to exit and for its last stderr
    /// lines to reach the log, so `text` then holds all of them.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let status = wait_bounded(&mut self.child, limit);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.copying.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        status
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` until it holds, failing the test with `what` past `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) until nothing accepts connections at `address` any
/// more (connections are refused), e.g. after a server was killed.
pub fn wait_refused(address: &str, limit: Duration) {
    let addr: std::net::SocketAddr = address.parse().expect("host:port");
    wait_until(&format!("{address} refusing connections"), limit, || {
        matches!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    });
}

/// Waits (bounded) until the JSON-lines file `path` holds `n` lines.
pub fn wait_for_lines(path: &Path, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    let count = || {
        std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    while count() < n {
        assert!(
            Instant::now() < deadline,
            "{} did not reach {n} lines within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl TestEnv {
    /// Starts `walplayer play` in the background, quiet, with results in
    /// `out.json` and the summary in `summary.json` of the test directory.
    pub fn spawn_play(&self, dir: &Path, address: &str, extra: &[&str]) -> Child {
        self.play(dir, address, &["--quiet"])
            .args(extra)
            .arg("--output")
            .arg(self.path("out.json"))
            .arg("--summary")
            .arg(self.path("summary.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start play")
    }
}
