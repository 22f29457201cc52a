//! What the benchmarks share: finding the built binary and reading a
//! process's memory from `/proc`.

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
