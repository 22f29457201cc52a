//! What the benchmarks share: the smoke switch, finding the built binary,
//! reading a process's memory from `/proc` and generating WAL to play.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;
use walplayer::wal::generate::{generate, GenerateError, GenerateSpec, Payload, PgVersion};

/// The `walplayer` binary cargo built with this bench, or the one next to
/// it (`target/<profile>/walplayer`).
pub fn walplayer_binary() -> Option<PathBuf> {
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
