//! Real PostgreSQL WAL, made with initdb and pgbench, played and stored
//! byte-identical.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Runs a PostgreSQL tool as the `postgres` user when we are root (the
/// server refuses to run as root).
fn pg(tool: &str, args: &[&str]) -> Command {
    let bin = Path::new(PG_BIN).join(tool);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin).args(args);
        cmd
    } else {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        cmd
    }
}

fn pg_ok(tool: &str, args: &[&str]) {
    let out = run(&mut pg(tool, args));
    assert_status(&out, 0);
}

struct Server {
    data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = run(&mut pg(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        ));
    }
}

#[test]
fn real_postgres_wal_is_stored_byte_identical() {
    if !Path::new(PG_BIN).join("initdb").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL 15 must be installed in CI (.ci/run does it)"
        );
        // Straight to stderr: the harness hides eprintln! of passing tests.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIPPED real_postgres_wal: no PostgreSQL in {PG_BIN}\n").as_bytes(),
        );
        return;
    }
    let env = TestEnv::new();
    let pg_root = env.path("pg");
    std::fs::create_dir(&pg_root).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let out = run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&pg_root));
        assert_status(&out, 0);
        let out = run(Command::new("chmod").args(["a+x"]).arg(env.dir.path()));
        assert_status(&out, 0);
    }
    let data = pg_root.join("data");
    let sock = pg_root.to_str().unwrap();
    pg_ok(
        "initdb",
        &[
            "-D",
            data.to_str().unwrap(),
            "--no-sync",
            "-U",
            "postgres",
            "--auth=trust",
        ],
    );
    let opts = format!("-k {sock} -p 54329 -c listen_addresses= -c fsync=off -c max_wal_size=64MB");
    pg_ok(
        "pg_ctl",
        &[
            "-D",
            data.to_str().unwrap(),
            "-o",
            &opts,
            "-l",
            pg_root.join("log").to_str().unwrap(),
            "-w",
            "start",
        ],
    );
    let server = Server { data: data.clone() };
    pg_ok(
        "pgbench",
        &[
            "-h", sock, "-p", "54329", "-U", "postgres", "-i", "-s", "3", "postgres",
        ],
    );
    pg_ok(
        "pgbench",
        &[
            "-h", sock, "-p", "54329", "-U", "postgres", "-c", "2", "-t", "1500", "postgres",
        ],
    );
    pg_ok(
        "psql",
        &[
            "-h",
            sock,
            "-p",
            "54329",
            "-U",
            "postgres",
            "-c",
            "select pg_switch_wal()",
            "postgres",
        ],
    );
    drop(server);

    // Copy the segments out (the server's files belong to postgres).
    let wal = env.path("wal");
    std::fs::create_dir(&wal).unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(data.join("pg_wal")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if walplayer::wal::walname::is_wal_name(&name) && path.is_file() {
            std::fs::copy(&path, wal.join(&name)).unwrap();
            copied += 1;
        }
    }
    assert!(copied >= 2, "pgbench made {copied} segments");

    let stored = env.path("stored");
    let sink = env.sink(&stored, &[]);
    let out = run(&mut env.play(&wal, &sink.address, &["-j", "2"]));
    assert_status(&out, 0);
    assert_eq!(file_lines(&stdout(&out)).len(), copied);
    assert_eq!(
        assert_stored_identical(&wal, &stored.join("walplayer")),
        copied
    );

    // A real segment works as a generator template, and the generated WAL
    // carries real page headers for its own positions.
    let template = std::fs::read_dir(&wal)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let gen = env.path("gen");
    let out = run(env
        .walplayer(&[
            "generate",
            "--length",
            "2",
            "--quiet",
            "--pg-version",
            "15",
            "--template",
        ])
        .arg(&template)
        .arg(&gen));
    assert_status(&out, 0);
    for name in ["000000010000000000000000", "000000010000000000000001"] {
        let bytes = std::fs::read(gen.join(name)).unwrap();
        let seg = walplayer::wal::walname::SegmentName::parse(name).unwrap();
        let v = walplayer::wal::generate::check_page_headers(&bytes, seg, 16 << 20).unwrap();
        assert_eq!(v, walplayer::wal::generate::PgVersion::V15);
    }
}
