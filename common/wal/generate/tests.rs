//! Unit tests of the generator: page headers, payloads, and the loop that
//! writes segment files.

use super::*;
use std::io::Read;

const SEG: u64 = MIB;

fn spec(dir: &Path, count: u64) -> GenerateSpec {
    GenerateSpec {
        dir: dir.to_path_buf(),
        count,
        segment_bytes: SEG,
        timeline: 1,
        start_lsn: 0,
        pg_version: PgVersion::default(),
        gzip: false,
        system_id: 7_000_000_000_000_000_001,
    }
}

fn run(spec: &GenerateSpec, payload: &Payload) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let n = generate(spec, payload, &CancellationToken::new(), &mut |p, b| {
        files.push((p.to_path_buf(), b))
    })
    .unwrap();
    assert_eq!(n, spec.count);
    files
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn names_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(&dir.path().join("a/b"), 3);
    s.segment_bytes = 16 * MIB;
    let files = run(&s, &Payload::synthetic());
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "000000010000000000000000",
            "000000010000000000000001",
            "000000010000000000000002"
        ]
    );
    assert!(files.iter().all(|(_, b)| *b == 16 * MIB));
    let mut listed: Vec<_> = fs::read_dir(dir.path().join("a/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, names, "no temporary files left");
}

#[test]
fn headers_valid_across_log_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), 3);
    s.segment_bytes = 16 * MIB;
    s.start_lsn = 0xFF00_0000;
    s.timeline = 3;
    s.pg_version = PgVersion::V17;
    let files = run(&s, &Payload::synthetic());
    let expect = [
        "0000000300000000000000FF",
        "000000030000000100000000",
        "000000030000000100000001",
    ];
    for ((path, _), want) in files.iter().zip(expect) {
        let name = SegmentName::parse(want).unwrap();
        assert_eq!(path.file_name().unwrap().to_str(), Some(want));
        let data = fs::read(path).unwrap();
        assert_eq!(
            check_page_headers(&data, name, 16 * MIB),
            Ok(PgVersion::V17)
        );
        // The long header only on page 0, checked byte by byte here too.
        assert_eq!(&data[32..40], &[0, 0, 0, 1, 0, 0x20, 0, 0]);
        assert_eq!(&data[24..32], &s.system_id.to_le_bytes());
        for page in data.chunks_exact(PAGE_SIZE).skip(1) {
            assert_eq!(page[2] & 0x02, 0);
        }
    }
}

#[test]
fn every_version_and_position_checks() {
    let payload = Payload::synthetic();
    for version in PgVersion::ALL {
        for lsn in [0, SEG * 7, (5 << 32) + SEG * 3] {
            let name = SegmentName::containing(2, lsn, SEG);
            let mut data = Vec::new();
            write_segment(&mut data, name, SEG, version, 1, &payload).unwrap();
            assert_eq!(data.len() as u64, SEG);
            assert_eq!(check_page_headers(&data, name, SEG), Ok(version));
            let other = name.next(SEG);
            let err = check_page_headers(&data, other, SEG).unwrap_err();
            assert!(
                err.contains("page 0") && err.contains("page address"),
                "{err}"
            );
        }
    }
}

#[test]
fn check_rejects_damage() {
    let name = SegmentName::containing(1, 0, SEG);
    let mut data = Vec::new();
    write_segment(
        &mut data,
        name,
        SEG,
        PgVersion::V15,
        1,
        &Payload::synthetic(),
    )
    .unwrap();
    let mut bad = data.clone();
    bad[5 * PAGE_SIZE] = 0;
    assert!(check_page_headers(&bad, name, SEG)
        .unwrap_err()
        .contains("page 5"));
    let mut bad = data.clone();
    bad[PAGE_SIZE + 2] |= 0x02;
    assert!(check_page_headers(&bad, name, SEG)
        .unwrap_err()
        .contains("long header"));
    let err = check_page_headers(&data[..PAGE_SIZE], name, SEG).unwrap_err();
    assert!(err.contains("bytes"), "{err}");
    let err = check_page_headers(&data, name, 2 * SEG).unwrap_err();
    assert!(err.contains("bytes"), "{err}");
}

#[test]
fn gzip_matches_plain() {
    let dir = tempfile::tempdir().unwrap();
    let payload = Payload::synthetic();
    let mut s = spec(&dir.path().join("plain"), 2);
    s.start_lsn = 40 * SEG;
    let plain = run(&s, &payload);
    s.dir = dir.path().join("gz");
    s.gzip = true;
    let gz = run(&s, &payload);
    for ((p, _), (g, size)) in plain.iter().zip(&gz) {
        assert_eq!(
            g.file_name().unwrap(),
            &*format!("{}.gz", p.file_name().unwrap().to_str().unwrap())
        );
        let compressed = fs::read(g).unwrap();
        assert_eq!(compressed.len() as u64, *size);
        assert!(*size < SEG / 4, "gzip should shrink WAL, got {size}");
        let isize = u32::from_le_bytes(compressed[compressed.len() - 4..].try_into().unwrap());
        assert_eq!(isize as u64, SEG);
        assert!(gunzip(&compressed) == fs::read(p).unwrap());
    }
}

#[test]
fn consecutive_segments_differ() {
    let payload = Payload::synthetic();
    let a = SegmentName::containing(1, 0, SEG);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    write_segment(&mut x, a, SEG, PgVersion::V16, 1, &payload).unwrap();
    write_segment(&mut y, a.next(SEG), SEG, PgVersion::V16, 1, &payload).unwrap();
    assert!(x[PAGE_SIZE..] != y[PAGE_SIZE..]);
}

fn strip_headers(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, page) in data.chunks_exact(PAGE_SIZE).enumerate() {
        out.extend_from_slice(&page[if i == 0 { LONG_HEADER } else { SHORT_HEADER }..]);
    }
    out
}

#[test]
fn template_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(&dir.path().join("tpl"), 1);
    s.start_lsn = 9 * SEG;
    s.pg_version = PgVersion::V15;
    let tpl = run(&s, &Payload::synthetic()).remove(0).0;
    let template = fs::read(&tpl).unwrap();
    let payload = Payload::from_template(&tpl).unwrap();
    assert!(payload.bytes() == &strip_headers(&template)[..]);

    s.dir = dir.path().join("out");
    s.start_lsn = (3 << 32) + 100 * SEG;
    s.timeline = 4;
    s.count = 2;
    s.pg_version = PgVersion::V17;
    for (path, _) in run(&s, &payload) {
        let data = fs::read(&path).unwrap();
        let name = SegmentName::parse(path.file_name().unwrap().to_str().unwrap()).unwrap();
        assert_eq!(check_page_headers(&data, name, SEG), Ok(PgVersion::V17));
        assert!(strip_headers(&data) == payload.bytes());
    }

    // A gzip-compressed template gives the same pool.
    s.dir = dir.path().join("gz");
    s.count = 1;
    s.gzip = true;
    let gz = run(&s, &payload).remove(0).0;
    assert!(Payload::from_template(&gz).unwrap().bytes() == payload.bytes());
}

#[test]
fn small_template_wraps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one-page");
    let name = SegmentName::containing(1, 0, SEG);
    let mut data = Vec::new();
    write_segment(
        &mut data,
        name,
        SEG,
        PgVersion::V16,
        1,
        &Payload::synthetic(),
    )
    .unwrap();
    // Pages past the first may be all zeros, as in a .partial file.
    data.truncate(3 * PAGE_SIZE);
    data[2 * PAGE_SIZE..].fill(0);
    fs::write(&path, &data).unwrap();
    let payload = Payload::from_template(&path).unwrap();
    assert_eq!(
        payload.bytes().len(),
        3 * PAGE_SIZE - LONG_HEADER - 2 * SHORT_HEADER
    );
    let mut out = Vec::new();
    write_segment(&mut out, name.next(SEG), SEG, PgVersion::V16, 1, &payload).unwrap();
    assert_eq!(
        check_page_headers(&out, name.next(SEG), SEG),
        Ok(PgVersion::V16)
    );
}

#[test]
fn bad_templates() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str, data: &[u8]| {
        let path = dir.path().join(name);
        fs::write(&path, data).unwrap();
        let err = Payload::from_template(&path).unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
        err
    };
    let missing = dir.path().join("missing");
    let err = Payload::from_template(&missing).unwrap_err().to_string();
    assert!(
        err.contains("cannot read") && err.contains("missing"),
        "{err}"
    );
    assert!(at("empty", b"").contains("is empty"));
    assert!(at("odd", &[0; 5000]).contains("5000 bytes"));
    let err = at("zeros", &vec![0; 2 * PAGE_SIZE]);
    assert!(
        err.contains("magic 0x0000") && err.contains("0xD113"),
        "{err}"
    );
    let mut page = vec![0; PAGE_SIZE];
    page[..2].copy_from_slice(&0xD106u16.to_le_bytes());
    assert!(at("pg13", &page).contains("0xD106"));
    page[..2].copy_from_slice(&0xD113u16.to_le_bytes());
    assert!(at("short", &page).contains("no long header"));
    page[2] = 0x02;
    let mut two = page.repeat(2);
    two[PAGE_SIZE..PAGE_SIZE + 2].copy_from_slice(&0xD116u16.to_le_bytes());
    let err = at("mixed", &two);
    assert!(err.contains("page 1") && err.contains("0xD116"), "{err}");
    assert!(at("badgz", &[0x1f, 0x8b, 1, 2, 3]).contains("cannot read"));
}

#[test]
fn bad_specs() {
    let dir = tempfile::tempdir().unwrap();
    let payload = Payload::synthetic();
    let fails = |s: &GenerateSpec| {
        generate(s, &payload, &CancellationToken::new(), &mut |_, _| ())
            .unwrap_err()
            .to_string()
    };
    let mut s = spec(dir.path(), 1);
    s.segment_bytes = 16 * MIB;
    s.start_lsn = 0x1_0123_4567;
    let err = fails(&s);
    assert!(
        err.contains("1/1234567") && err.contains("not at a WAL segment boundary"),
        "{err}"
    );
    assert!(err.contains("use 1/1000000"), "{err}");
    s.start_lsn = 0;
    s.segment_bytes = 3 * MIB;
    assert!(fails(&s).contains("1, 2, 4"));
    s.segment_bytes = SEG;
    s.timeline = 0;
    assert!(fails(&s).contains("timeline"));
    s.timeline = 1;
    s.start_lsn = u64::MAX - SEG + 1;
    s.count = 2;
    assert!(fails(&s).contains("past the largest LSN"));
    s.count = 1;
    s.dir = dir.path().join("last");
    assert_eq!(
        run(&s, &payload)[0].0.file_name().unwrap(),
        "00000001FFFFFFFF00000FFF"
    );
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    s.dir = file.join("sub");
    let err = fails(&s);
    assert!(
        err.contains("cannot create directory") && err.contains("file"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        2,
        "nothing else written"
    );
}

/// Synthetic WAL should gzip like real pgbench WAL around a checkpoint
/// (measured 9.7:1; steady state 3.1:1, initial load 14.8:1).
#[test]
fn synthetic_ratio_is_calibrated() {
    let pool = Payload::synthetic();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(pool.bytes()).unwrap();
    let ratio = pool.bytes().len() as f64 / gz.finish().unwrap().len() as f64;
    assert!(
        (7.0..=13.0).contains(&ratio),
        "synthetic WAL gzips {ratio:.2}:1"
    );
    assert!(
        Payload::synthetic().bytes() == pool.bytes(),
        "deterministic"
    );
}

#[test]
fn a_stop_ends_generation_leaving_only_complete_segments() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let mut seen = 0;
    let n = generate(
        &spec(dir.path(), 50),
        &Payload::synthetic(),
        &stop,
        &mut |_, _| {
            seen += 1;
            if seen == 3 {
                stop.cancel();
            }
        },
    )
    .unwrap();
    assert_eq!(n, 3, "stops after the segment during which it was told");
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "no partial or temporary file: {names:?}");
    for name in &names {
        let len = fs::metadata(dir.path().join(name)).unwrap().len();
        assert_eq!(len, SEG, "{name} is a whole segment");
    }
    let none = generate(
        &spec(dir.path(), 5),
        &Payload::synthetic(),
        &stop,
        &mut |_, _| (),
    );
    assert_eq!(none.unwrap(), 0, "a stopped token writes nothing");
}

#[test]
fn a_stop_during_a_segment_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    stop.cancel();
    let name = SegmentName::containing(1, 0, SEG);
    let tmp = dir.path().join("seg.tmp");
    let err = write_file(
        &tmp,
        &spec(dir.path(), 1),
        name,
        &Payload::synthetic(),
        &stop,
    );
    assert!(err.is_err(), "a stopped writer fails the segment");
}

#[test]
fn segment_ranges_are_the_bytes_of_the_whole_segment() {
    let payload = Payload::synthetic();
    let name = SegmentName::containing(3, 5 * SEG, SEG);
    let mut whole = Vec::new();
    write_segment(&mut whole, name, SEG, PgVersion::V15, 42, &payload).unwrap();
    // Cuts inside headers, on page boundaries and across many pages.
    let cuts = [
        0u64,
        1,
        39,
        40,
        41,
        8191,
        8192,
        8200,
        8216,
        100_000,
        524_288,
        SEG - 7,
        SEG,
    ];
    let shape = SegmentShape {
        segment_bytes: SEG,
        pg_version: PgVersion::V15,
        system_id: 42,
    };
    let mut pieces = Vec::new();
    for w in cuts.windows(2) {
        let len = (w[1] - w[0]) as usize;
        segment_range(name, &shape, &payload, w[0], len, &mut pieces).unwrap();
    }
    assert_eq!(pieces.len(), whole.len());
    assert!(pieces == whole, "the ranges differ from the whole segment");
    let err = segment_range(name, &shape, &payload, SEG - 1, 2, &mut pieces);
    assert!(err.unwrap_err().to_string().contains("past the end"));
}
