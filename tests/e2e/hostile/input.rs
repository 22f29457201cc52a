//! Damaged or hostile input on disk: a file with a WAL name is never
//! silently skipped, and an agent never reads through a link out of its
//! data directory.

use crate::distributed::Cluster;
use crate::util::*;

#[test]
fn a_wal_named_file_that_cannot_be_read_fails_with_its_own_record() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 2, 1, &[]);
    // Seven bytes of garbage under a WAL name: no gzip trailer to read.
    std::fs::write(wal.join("00000001000000000000000B.gz"), b"garbage").unwrap();
    let data = env.path("data");
    let sink = env.sink(&data, &[]);
    let summary = env.path("summary.json");
    let out = run(env.play(&wal, &sink.address, &["--summary"]).arg(&summary));
    assert_status(&out, 1);
    let lines = file_lines(&stdout(&out));
    assert_eq!(lines.len(), 3, "one record per WAL-named file");
    let bad = lines
        .iter()
        .find(|l| l["walName"] == "00000001000000000000000B")
        .expect("the damaged file has a record");
    let error = bad["error"].as_str().unwrap();
    assert!(
        error.contains("not a usable gzip file") && error.contains("nothing was sent"),
        "{error}"
    );
    assert_eq!(bad["errorKind"], "local-file");
    let s = read_json(&summary);
    assert_eq!(
        (s["filesOk"].as_u64(), s["filesFailed"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(s["filesSkipped"], 0, "a WAL name is never skipped");
}

#[test]
fn an_agent_never_reads_through_a_link_out_of_its_data_dir() {
    let c = Cluster::new();
    let outside = c.env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"not for klio").unwrap();
    let data = c.env.path("agent-linked");
    std::fs::create_dir_all(&data).unwrap();
    let wal = c.env.generate("wal", 1, 1, &[]);
    for f in std::fs::read_dir(&wal).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
    }
    std::os::unix::fs::symlink(
        outside.join("secret"),
        data.join("000000010000000000000009"),
    )
    .unwrap();
    let (mut coord, addr) = c.coordinator(&["--agents", "1", "--source", "dir"]);
    let mut agent = c.agent("linked", &addr, &["--once"]);
    assert_eq!(
        coord.wait(COMMAND_LIMIT).code(),
        Some(0),
        "{}",
        coord.text()
    );
    assert_eq!(
        agent.wait(COMMAND_LIMIT).code(),
        Some(0),
        "{}",
        agent.text()
    );
    let stored: Vec<String> = c.stored().into_iter().map(|(_, name)| name).collect();
    assert_eq!(
        stored,
        ["000000010000000000000000"],
        "the link was not followed"
    );
    assert!(agent.text().contains("symbolic link"), "{}", agent.text());
}

/// Issue item 4: a `.gz` of two gzip members of one segment (as `cat a.gz
/// b.gz` makes, and `gunzip` restores whole) is sent whole: the stored file
/// is what `gunzip` gives, read back identical with `--verify`.
#[test]
fn a_gzip_file_of_two_members_is_stored_whole_and_verified() {
    use std::io::Write;
    let env = TestEnv::new();
    let plain = env.generate("plain", 1, 1, &[]);
    let name = "000000010000000000000000";
    let segment = std::fs::read(plain.join(name)).unwrap();
    let gzip = |part: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(part).unwrap();
        gz.finish().unwrap()
    };
    let cut = segment.len() / 2 + 12_345;
    let mut two = gzip(&segment[..cut]);
    two.extend(gzip(&segment[cut..]));
    let wal = env.path("wal");
    std::fs::create_dir_all(&wal).unwrap();
    std::fs::write(wal.join(format!("{name}.gz")), &two).unwrap();

    let data = env.path("data");
    let sink = env.sink(&data, &[]);
    let out = run(&mut env.play(&wal, &sink.address, &["--verify"]));
    assert_status(&out, 0);
    let lines = file_lines(&stdout(&out));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["error"], "", "{}", lines[0]);
    assert_eq!(lines[0]["bytes"], segment.len() as u64);
    assert_eq!(
        std::fs::read(data.join("walplayer").join(name)).unwrap(),
        segment
    );
}
