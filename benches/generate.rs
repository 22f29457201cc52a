//! Is generation bound by the disk? Compares `generate()` with a plain
//! sequential write of the same bytes, on each filesystem we can reach.
//!
//! Filesystems: `/dev/shm` if present, the temporary directory, and
//! `WALPLAYER_BENCH_DIR` if set. `WALPLAYER_BENCH_SEGMENTS` (default 32)
//! sets how many 16 MiB segments each round writes. Prints medians of
//! alternating rounds; asserts nothing about time, but checks after each
//! round that what was timed wrote exactly the expected segments.
//! `WALPLAYER_BENCH_SMOKE=1`: 2 segments, one round (CI runs it so).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;
use support::{rounds, segments};

use walplayer::wal::generate::{generate, write_segment, GenerateSpec, Payload, PgVersion};
use walplayer::wal::walname::{SegmentName, MIB};

const SEGMENT_BYTES: u64 = 16 * MIB;
const ROUNDS: usize = 5;
const CHUNK: usize = MIB as usize;

fn main() {
    let segments = segments(32, 2);
    let payload = Payload::synthetic();
    let template = |dir: PathBuf| GenerateSpec {
        dir,
        count: segments,
        segment_bytes: SEGMENT_BYTES,
        timeline: 1,
        start_lsn: 0,
        pg_version: PgVersion::default(),
        gzip: false,
        system_id: 7_400_000_000_000_000_000,
    };
    let expected = pregenerate(&template(PathBuf::new()), &payload);

    let mut filesystems = Vec::new();
    if Path::new("/dev/shm").is_dir() {
        filesystems.push(PathBuf::from("/dev/shm"));
    }
    filesystems.push(std::env::temp_dir());
    if let Some(dir) = std::env::var_os("WALPLAYER_BENCH_DIR") {
        filesystems.push(PathBuf::from(dir));
    }

    let total = (segments * SEGMENT_BYTES) as f64 / MIB as f64;
    for fs_root in filesystems {
        let root = fs_root.join(format!("walplayer-bench-{}", std::process::id()));
        let (mut baseline, mut generated) = (Vec::new(), Vec::new());
        for _ in 0..rounds(ROUNDS) {
            let dir = root.join("baseline");
            baseline.push(time(|| write_plain(&dir, &expected)));
            verify(&dir, &expected);
            remove(&dir);
            let dir = root.join("generate");
            let spec = template(dir.clone());
            generated.push(time(|| {
                generate(
                    &spec,
                    &payload,
                    &tokio_util::sync::CancellationToken::new(),
                    &mut |_, _| (),
                )
                .expect("generate");
            }));
            verify(&dir, &expected);
            remove(&dir);
        }
        remove(&root);
        let (g, b) = (total / median(generated), total / median(baseline));
        println!(
            "generate {}: {g:.0} MiB/s, baseline {b:.0} MiB/s, ratio {:.2}",
            fs_root.display(),
            g / b
        );
    }
}

/// The exact bytes `generate` writes, named, held in memory.
fn pregenerate(spec: &GenerateSpec, payload: &Payload) -> Vec<(String, Vec<u8>)> {
    let mut name = SegmentName::containing(spec.timeline, spec.start_lsn, SEGMENT_BYTES);
    (0..spec.count)
        .map(|i| {
            if i > 0 {
                name = name.next(SEGMENT_BYTES);
            }
            let mut data = Vec::with_capacity(SEGMENT_BYTES as usize);
            write_segment(
                &mut data,
                name,
                SEGMENT_BYTES,
                spec.pg_version,
                spec.system_id,
                payload,
            )
            .expect("write to memory");
            (name.to_string(), data)
        })
        .collect()
}

/// The baseline: one file per segment, written in 1 MiB `write_all`s.
fn write_plain(dir: &Path, segments: &[(String, Vec<u8>)]) {
    fs::create_dir_all(dir).expect("create baseline directory");
    for (name, data) in segments {
        let mut file = File::create(dir.join(name)).expect("create baseline file");
        for chunk in data.chunks(CHUNK) {
            file.write_all(chunk).expect("write baseline file");
        }
    }
}

/// Panics unless `dir` holds exactly the `expected` segments, byte for
/// byte: a round that wrote something else measured nothing.
fn verify(dir: &Path, expected: &[(String, Vec<u8>)]) {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read the round's directory")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .into_string()
                .unwrap()
        })
        .collect();
    names.sort();
    let wanted: Vec<&String> = expected.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names.iter().collect::<Vec<_>>(),
        wanted,
        "{}",
        dir.display()
    );
    for (name, data) in expected {
        let written = fs::read(dir.join(name)).expect("read a written segment");
        assert!(
            written == *data,
            "{}/{name} differs from the expected segment",
            dir.display()
        );
    }
}

fn time(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().max(Duration::from_nanos(1)).as_secs_f64()
}

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

fn remove(dir: &Path) {
    if dir.exists() {
        fs::remove_dir_all(dir).expect("remove bench files");
    }
}
