//! What the benchmarks share: the smoke switch, finding the built binary
//! and reading a process's memory from `/proc`.

use std::path::PathBuf;

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
