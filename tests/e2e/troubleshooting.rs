//! Bad input tried as a new user would, one row per mistake: the exit
//! status and the message. Each row's command is run and what it printed is
//! compared with the message the README's troubleshooting table shows (the
//! table is made from [`rows::ROWS`] and checked against it, so the table and
//! the tests cannot drift apart). (`bad_input.rs` covers further cases in
//! more depth.)

mod rows;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rows::{table, Row, BEGIN, END, ROWS, YAML};

use crate::util::*;

/// The files and servers the rows refer to, in one test directory.
struct Fixture {
    env: TestEnv,
    paths: BTreeMap<&'static str, PathBuf>,
    sink: SinkProcess,
    /// Held open so the port stays taken.
    busy: std::net::TcpListener,
    /// A copy of `walplayer` that an unprivileged user may run, when this
    /// test runs as root (see [`Fixture::unprivileged`]).
    unprivileged_bin: Option<PathBuf>,
}

impl Fixture {
    fn new() -> Fixture {
        let env = TestEnv::new();
        let wal = env.generate("wal", 1, 1, &[]);
        let sink = env.sink(&env.path("stored"), &[]);
        let mut paths = BTreeMap::new();
        let mk = |name: &str| {
            let p = env.path(name);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        paths.insert("wal", wal);
        paths.insert("empty", mk("empty"));
        paths.insert("dir", mk("a-directory"));
        let zero = mk("zero");
        std::fs::write(zero.join("000000010000000000000001"), b"").unwrap();
        paths.insert("zero", zero);
        let nonwal = mk("notes");
        std::fs::write(nonwal.join("notes.txt"), b"not WAL\n").unwrap();
        paths.insert("nonwal", nonwal);
        let file = env.path("notes.txt");
        std::fs::write(&file, b"not PEM, not YAML: notes\n").unwrap();
        paths.insert("file", file);
        let empty_file = env.path("empty-file");
        std::fs::write(&empty_file, b"").unwrap();
        paths.insert("emptyfile", empty_file);
        paths.insert("missing", env.path("no-such-file"));
        paths.insert("out", env.path("out"));
        paths.insert("certs", env.certs.dir.clone());
        paths.insert("config", env.certs.klio_config.clone());
        let c = &env.certs;
        for (name, path) in [
            ("ca", &c.client.ca),
            ("cert", &c.client.cert),
            ("key", &c.client.key),
            ("sca", &c.server.ca),
            ("scert", &c.server.cert),
            ("skey", &c.server.key),
            ("cca", &c.coordinator.ca),
            ("ccert", &c.coordinator.cert),
            ("ckey", &c.coordinator.key),
            ("acert", &c.agent.cert),
            ("akey", &c.agent.key),
        ] {
            paths.insert(name, path.clone());
        }
        let unreadable = env.path("unreadable.yaml");
        std::fs::copy(&env.certs.klio_config, &unreadable).unwrap();
        std::fs::set_permissions(
            &unreadable,
            std::os::unix::fs::PermissionsExt::from_mode(0o000),
        )
        .unwrap();
        paths.insert("unreadable", unreadable);
        // Root reads a mode 000 file anyway, so as root (CI) that row runs as
        // an unprivileged user: the test directory is opened to it (only the
        // mode 000 file stays closed) and `walplayer` copied where it can be
        // run, whatever the permissions of the directories above the build.
        let unprivileged_bin = is_root().then(|| {
            let dir = env.dir.path();
            let mode = |p: &Path, m: u32| {
                std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m))
                    .unwrap()
            };
            mode(dir, 0o755);
            let bin = env.path("bin");
            std::fs::create_dir_all(&bin).unwrap();
            mode(&bin, 0o755);
            let copy = bin.join("walplayer");
            std::fs::copy(env!("CARGO_BIN_EXE_walplayer"), &copy).unwrap();
            mode(&copy, 0o755);
            copy
        });
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Fixture {
            env,
            paths,
            sink,
            busy,
            unprivileged_bin,
        }
    }

    /// One word of a row's `args`, its placeholder filled in; `{klio}`
    /// gives the working configuration and the test sink's address.
    fn arg(&self, word: &str) -> Vec<String> {
        let path = |p: &Path| p.to_str().unwrap().to_string();
        let mut out = Vec::new();
        let mut rest = word;
        let mut text = String::new();
        while let Some(start) = rest.find('{') {
            text.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closed placeholder") + start;
            let name = &rest[start + 1..end];
            match name {
                "klio" => {
                    out.extend(["--config".into(), path(&self.paths["config"])]);
                    out.extend(["--address".into(), self.sink.address.clone()]);
                }
                "nothing" => {}
                "busy" => text.push_str(&self.busy.local_addr().unwrap().to_string()),
                _ => match name.strip_prefix("yaml:") {
                    Some(y) => text.push_str(&path(&self.env.path(&format!("{y}.yaml")))),
                    None => text.push_str(&path(
                        self.paths
                            .get(name)
                            .unwrap_or_else(|| panic!("unknown placeholder {{{name}}}")),
                    )),
                },
            }
            rest = &rest[end + 1..];
        }
        text.push_str(rest);
        if word != "{klio}" {
            out.push(text);
        }
        out
    }

    /// `walplayer` run as the unprivileged user `nobody` (uid and gid
    /// 65534), with the environment [`TestEnv::walplayer`] gives.
    fn unprivileged(&self, bin: &Path) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(bin);
        cmd.uid(NOBODY).gid(NOBODY);
        let model = self.env.walplayer(&[]);
        for (key, value) in model.get_envs() {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd
    }

    fn command(&self, row: &Row) -> Command {
        let mut words = row.args.split_whitespace();
        let mut cmd = match words.next() {
            Some("walplayer") => match &self.unprivileged_bin {
                Some(bin) if row.args.contains("{unreadable}") => self.unprivileged(bin),
                _ => self.env.walplayer(&[]),
            },
            Some("walplayer-agent") => {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_walplayer-agent"));
                cmd.env("HOME", self.env.dir.path())
                    .env_remove("RUST_LOG")
                    .env_remove("WALPLAYER_COORDINATOR")
                    .env_remove("WALPLAYER_AGENT_NAME");
                cmd
            }
            other => panic!("row {:?}: unknown binary {other:?}", row.example),
        };
        cmd.current_dir(self.env.dir.path());
        for word in words {
            cmd.args(self.arg(word));
        }
        cmd
    }

    /// What each path this row's command names is called in the README's
    /// example: the real path, the example's word. A placeholder after a flag
    /// pairs with the word after the same flag in the example; one in a
    /// position of its own, with the example's word in that position.
    fn shown_as(&self, row: &Row) -> Vec<(String, String)> {
        let example = if row.example.starts_with('`') {
            ""
        } else {
            row.example.split(" (").next().unwrap()
        };
        let shown: Vec<&str> = example.split_whitespace().collect();
        let words: Vec<&str> = row.args.split_whitespace().collect();
        let mut pairs = Vec::new();
        for (i, word) in words.iter().enumerate() {
            if !word.contains('{') || *word == "{klio}" {
                continue;
            }
            let counterpart = match i.checked_sub(1).map(|j| words[j]) {
                Some(flag) if flag.starts_with("--") => shown
                    .iter()
                    .position(|w| *w == flag)
                    .and_then(|j| shown.get(j + 1)),
                _ => shown.get(i).filter(|w| !w.starts_with("--")),
            };
            let real = self.arg(word).concat();
            if let Some(ex) = counterpart.filter(|w| **w != "..." && !real.is_empty()) {
                pairs.push((real, ex.to_string()));
            }
        }
        // Longest first: a directory's path is the start of its files' paths.
        pairs.sort_by_key(|(real, _)| std::cmp::Reverse(real.len()));
        pairs
    }
}

/// The unprivileged user and group a permission row runs as.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `printed` shows the README's text `says`: every piece of it, in
/// order, where `...` stands for anything and `; ` joins what walplayer
/// prints on separate lines (or after a log prefix); any run of white space
/// (the flag parser wraps lines) reads as one space. `None` if it does; the
/// first piece not found otherwise.
fn shows<'a>(printed: &str, says: &'a str) -> Option<&'a str> {
    let printed = printed.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut at = 0;
    for piece in says
        .split("...")
        .flat_map(|part| part.split("; "))
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let spaced = piece.split_whitespace().collect::<Vec<_>>().join(" ");
        match printed[at..].find(&spaced) {
            Some(found) => at += found + spaced.len(),
            None => return Some(piece),
        }
    }
    None
}

/// Runs a row; returns why it failed, naming the row.
fn check(fx: &Fixture, row: &Row) -> Option<String> {
    let out = run(&mut fx.command(row));
    let err = stderr(&out);
    let name = format!("[{}] {}: {}", row.group, row.input, row.example);
    let mut problems = Vec::new();
    if out.status.code() != Some(row.exit) {
        problems.push(format!(
            "exit {:?}, table says {}",
            out.status.code(),
            row.exit
        ));
    }
    // What the user would see, with the example's paths for the test's.
    let mut seen = err.clone();
    for (real, shown) in fx.shown_as(row) {
        seen = seen.replace(&real, &shown);
    }
    if let Some(missing) = shows(&seen, row.says) {
        problems.push(format!(
            "the README shows {:?}, but {missing:?} is not in what was printed",
            row.says
        ));
    }
    if err.contains("panicked") {
        problems.push("panicked".into());
    }
    // A cause is printed once ("Is a directory (os error 21)", not twice).
    if err.matches("(os error").count() > 1 {
        problems.push("an OS error is printed more than once".into());
    }
    (!problems.is_empty()).then(|| {
        format!(
            "{name}\n  {}\n  printed (example paths): {seen}",
            problems.join("\n  ")
        )
    })
}

#[test]
fn every_row_of_the_troubleshooting_table() {
    let fx = Fixture::new();
    for (name, text) in YAML {
        std::fs::write(fx.env.path(&format!("{name}.yaml")), text).unwrap();
    }
    let failures: Vec<String> = ROWS.iter().filter_map(|row| check(&fx, row)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows differ from the README:\n{}",
        failures.len(),
        ROWS.len(),
        failures.join("\n")
    );
    assert!(!fx.sink.log_text().contains("panicked"));
}

#[test]
fn the_check_treats_dots_as_anything_and_semicolons_as_line_breaks() {
    let printed = "WARN skipping ./notes/a: not a WAL file name\nno WAL files in ./notes: nothing to send\n  [possible values: a, b]";
    assert_eq!(
        shows(
            printed,
            "skipping ./notes/a: not a WAL file name; no WAL files in ./notes: nothing to send"
        ),
        None
    );
    assert_eq!(
        shows(
            printed,
            "skipping ...: not a WAL file name; ... nothing to send"
        ),
        None
    );
    assert_eq!(
        shows(printed, "nothing to send; skipping"),
        Some("skipping"),
        "order matters"
    );
    assert_eq!(
        shows(printed, "no WAL files in ./other"),
        Some("no WAL files in ./other")
    );
    assert_eq!(
        shows(printed, "nothing to send [possible values: a, b]"),
        None
    );
}

/// The documented table is the tested one. After changing [`ROWS`], write
/// it into the README with `cargo run --example troubleshooting_table`;
/// this check never writes.
#[test]
fn the_documented_table_is_the_tested_one() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let (_, rest) = doc.split_once(BEGIN).expect("table start marker");
    let (documented, _) = rest.split_once(END).expect("table end marker");
    assert!(
        documented == table(),
        "README.md's troubleshooting table differs from tests/e2e/troubleshooting/rows.rs; \
         after changing the rows run `cargo run --example troubleshooting_table`"
    );
}

/// Whether process `pid` has a handler for SIGINT (`SigCgt` in its status).
fn catches_sigint(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
}

/// Whether a thread of process `pid` is inside open(2) or openat(2).
fn in_open(pid: u32) -> bool {
    let opens: &[&str] = if cfg!(target_arch = "x86_64") {
        &["2", "257"]
    } else if cfg!(target_arch = "aarch64") {
        &["56"]
    } else {
        return true;
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).any(|task| {
        std::fs::read_to_string(task.path().join("syscall"))
            .ok()
            .and_then(|s| s.split_whitespace().next().map(str::to_string))
            .is_some_and(|nr| opens.contains(&nr.as_str()))
    })
}

/// A FIFO named as the configuration blocks in open(2) until something
/// writes to it, as `cat` would; the first Ctrl-C is acknowledged and the
/// second stops walplayer at once with 130.
#[test]
fn a_fifo_as_config_waits_and_two_ctrl_c_stop_it() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let fifo = env.path("config.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let mut cmd = env.walplayer(&["play"]);
    cmd.arg(&wal).arg("--config").arg(&fifo);
    let mut logged = Logged::start(cmd, env.path("play.log"));
    // Until it catches SIGINT and one of its threads is blocked opening
    // the FIFO (both read from /proc), a Ctrl-C would test something else.
    let pid = logged.child.id();
    wait_until(
        "walplayer catches SIGINT and waits in open(2) of the FIFO",
        std::time::Duration::from_secs(30),
        || catches_sigint(pid) && in_open(pid),
    );
    signal(&logged.child, libc::SIGINT);
    logged.wait_line(
        "Ctrl-C again stops at once",
        std::time::Duration::from_secs(10),
    );
    signal(&logged.child, libc::SIGINT);
    let status = logged.wait(std::time::Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{}", logged.text());
    assert!(!logged.text().contains("panicked"), "{}", logged.text());
}
