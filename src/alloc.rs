//! Allocator tuning for streaming large blocks.
//!
//! Every block is a fresh buffer of up to 8 MiB (read, encoded, framed,
//! decoded). glibc serves such sizes with mmap and returns them with munmap,
//! so every block pays page faults on memory it touched a moment ago.
//! Raising the mmap and trim thresholds keeps those buffers in the heap for
//! reuse; memory stays bounded by the blocks in flight.

/// Largest allocation kept in the heap instead of mmap (a block plus its
/// gRPC framing, with room).
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free heap kept before it is returned to the system.
const TRIM_THRESHOLD: i32 = 256 << 20;

/// Applies the tuning; call first thing in `main`, before threads start.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocator parameters; it is
    // called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
