//! How close does `walplayer sink --fsync block` get to the disk's own
//! fdatasync rate, for the same block size?
//!
//! On one filesystem (a temporary directory under cargo's target directory,
//! never `/dev/shm`), for blocks of 1 and 2 MiB and 1 and 4 writers, in
//! alternating rounds:
//!
//! - disk: a plain loop per writer, as the sink does per stream: create a
//!   file, then write a block and `fdatasync` it until the segment is full,
//!   rename it; the writers run at once, each on its own segments.
//! - sink: a `walplayer sink --data DIR` process storing there, with
//!   `--fsync block` and `--fsync none`, fed by `walplayer play -j N
//!   --block-size B` from WAL on `/dev/shm` (mutual TLS on loopback).
//!
//! Each run moves the same segments; the time is the wall time of the loop,
//! or of the `play` process (start-up and connections included). Prints
//! blocks/s and MiB/s, medians over rounds, and the sink over the disk.
//! Checks that every file was stored with its size; asserts nothing about
//! time. Skipped, with the reason, when the `walplayer` binary is not built.
//!
//! `WALPLAYER_BENCH_SEGMENTS` (16 MiB segments per run, default 8),
//! `WALPLAYER_BENCH_ROUNDS` (default 3),
//! `WALPLAYER_BENCH_SMOKE=1` (2 segments, one round: checks the bench).

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;
use support::{
    client_flags, rounds, segments, sink_command, spawn_listening, wait_measured, walplayer_binary,
    walplayer_command,
};

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use walplayer::certs::{self, CertSpec, MintedCerts};
use walplayer::wal::walname::MIB;

const SEGMENT_BYTES: u64 = 16 * MIB;
const BLOCKS_KIB: [usize; 2] = [1024, 2048];
const JOBS: [usize; 2] = [1, 4];
const ROUNDS: usize = 3;
/// Longest one run may take.
const RUN_DEADLINE: Duration = Duration::from_secs(5 * 60);

fn main() {
    if let Err(e) = run() {
        eprintln!("bench sink_fsync: {e:#}");
        std::process::exit(1);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Writer {
    /// The plain write + fdatasync loop.
    Disk,
    /// `walplayer sink --fsync block`.
    SinkBlock,
    /// `walplayer sink --fsync none`: what the sink costs without syncing.
    SinkNone,
}

impl Writer {
    const ALL: [Writer; 3] = [Writer::Disk, Writer::SinkBlock, Writer::SinkNone];

    fn name(self) -> &'static str {
        match self {
            Writer::Disk => "write + fdatasync loop",
            Writer::SinkBlock => "sink --fsync block",
            Writer::SinkNone => "sink --fsync none",
        }
    }
}

fn run() -> Result<()> {
    let Some(walplayer) = walplayer_binary() else {
        println!(
            "sink_fsync: skipped: no walplayer binary next to this bench; build it with \
             `cargo build --release --bins` and run again"
        );
        return Ok(());
    };
    let count = segments(8, 2).max(1);
    let rounds = std::env::var("WALPLAYER_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(rounds(ROUNDS))
        .max(1);
    // The disk under test: where cargo keeps its own temporary files.
    let disk = tempfile::Builder::new()
        .prefix("sink-fsync-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .context("cannot create a directory under the target directory")?;
    let memory = support::scratch_in_memory("walplayer-bench-sink-fsync-")?;
    let minted = certs::mint(&memory.path().join("certs"), &CertSpec::default())?;
    let wal = memory.path().join("wal");
    support::generate_wal(&wal, count, SEGMENT_BYTES)?;
    let bytes = count * SEGMENT_BYTES;
    println!(
        "sink_fsync: {count} x 16 MiB per run, stored in {}, medians of {rounds} alternating rounds",
        disk.path().display()
    );
    let mut out = String::new();
    for block_kib in BLOCKS_KIB {
        for jobs in JOBS {
            // [writer] -> seconds per run
            let mut seconds = vec![Vec::new(); Writer::ALL.len()];
            for round in 0..rounds {
                let mut order: Vec<usize> = (0..Writer::ALL.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for w in order {
                    let dir = disk.path().join("data");
                    let took = match Writer::ALL[w] {
                        Writer::Disk => disk_loop(&dir, count, jobs, block_kib)?,
                        writer => {
                            let sink =
                                Stored::new(&walplayer, &minted, memory.path(), &dir, writer)?;
                            sink.play(&wal, count, jobs, block_kib)?
                        }
                    };
                    std::fs::remove_dir_all(&dir)?;
                    seconds[w].push(took);
                }
            }
            let _ = writeln!(out, "block {block_kib} KiB, -j {jobs}:");
            let blocks = bytes as f64 / (block_kib as f64 * 1024.0);
            let disk_s = median(&seconds[0]);
            for (w, writer) in Writer::ALL.iter().enumerate() {
                let s = median(&seconds[w]);
                let _ = writeln!(
                    out,
                    "  {:<24} {:>8.1} blocks/s {:>8.1} MiB/s   {:.2}x the loop",
                    writer.name(),
                    blocks / s,
                    bytes as f64 / MIB as f64 / s,
                    disk_s / s
                );
            }
        }
    }
    print!("{out}");
    Ok(())
}

/// `jobs` writers at once, each writing its share of `count` segments as
/// the sink does; returns the wall seconds.
fn disk_loop(dir: &Path, count: u64, jobs: usize, block_kib: usize) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let block: Vec<u8> = (0..block_kib * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let start = Instant::now();
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..jobs)
            .map(|j| {
                let block = &block;
                scope.spawn(move || -> Result<()> {
                    for segment in (j as u64..count).step_by(jobs) {
                        write_segment(dir, segment, block)?;
                        ensure!(
                            start.elapsed() < RUN_DEADLINE,
                            "the disk loop took over {RUN_DEADLINE:?}"
                        );
                    }
                    Ok(())
                })
            })
            .collect();
        writers
            .into_iter()
            .try_for_each(|w| w.join().expect("a disk writer panicked"))
    })?;
    Ok(start.elapsed().as_secs_f64())
}

/// One segment as a sink stream writes it: its own file, a block and an
/// fdatasync at a time, renamed when full.
fn write_segment(dir: &Path, segment: u64, block: &[u8]) -> Result<()> {
    let temp = dir.join(format!("{segment:024X}~0"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)?;
    let mut written = 0;
    while written < SEGMENT_BYTES {
        let n = block.len().min((SEGMENT_BYTES - written) as usize);
        file.write_all(&block[..n])?;
        file.sync_data()?;
        written += n as u64;
    }
    drop(file);
    std::fs::rename(&temp, dir.join(format!("{segment:024X}")))?;
    Ok(())
}

/// A `walplayer sink` process storing into `data`; killed when dropped.
struct Stored {
    child: Child,
    address: String,
    data: PathBuf,
    bin: PathBuf,
    certs: MintedCerts,
    home: PathBuf,
}

impl Stored {
    fn new(
        bin: &Path,
        certs: &MintedCerts,
        home: &Path,
        data: &Path,
        writer: Writer,
    ) -> Result<Stored> {
        let fsync = if writer == Writer::SinkBlock {
            "block"
        } else {
            "none"
        };
        let mut cmd = sink_command(bin, home, certs, &["--fsync", fsync]);
        cmd.arg("--data").arg(data);
        let (child, address) = spawn_listening(&mut cmd, "walplayer sink", &home.join("sink.log"))?;
        Ok(Stored {
            child,
            address,
            data: data.to_path_buf(),
            bin: bin.to_path_buf(),
            certs: certs.clone(),
            home: home.to_path_buf(),
        })
    }

    /// Plays `wal` to this sink; returns the `play` process's wall seconds
    /// after checking every file was stored whole.
    fn play(&self, wal: &Path, count: u64, jobs: usize, block_kib: usize) -> Result<f64> {
        let log = self.home.join("play.log");
        let mut cmd = walplayer_command(&self.bin, &self.home);
        client_flags(
            cmd.arg("play").arg(wal),
            &self.certs,
            certs::DEFAULT_CLUSTER,
            &self.address,
        )
        .args(["-j", &jobs.to_string()])
        .args(["--block-size", &block_kib.to_string()])
        .args(["--output", "/dev/null", "--quiet", "--retries", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
        let start = Instant::now();
        let finished = wait_measured(
            cmd.spawn().context("cannot start walplayer play")?,
            RUN_DEADLINE,
        )?;
        let took = start.elapsed().as_secs_f64();
        ensure!(
            finished.status == 0,
            "play -j {jobs} exited with {}: {}",
            finished.status,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let stored = std::fs::read_dir(self.data.join(certs::DEFAULT_CLUSTER))?
            .filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.len() == SEGMENT_BYTES)
            .count() as u64;
        ensure!(
            stored == count,
            "the sink stored {stored} of {count} segments whole"
        );
        Ok(took)
    }
}

impl Drop for Stored {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
