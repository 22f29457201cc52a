//! The README's first command works with nothing configured.

use crate::util::*;

#[test]
fn quickstart_runs_a_distributed_demo_and_cleans_up() {
    let env = TestEnv::new();
    let tmp = env.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = run(env
        .walplayer(&[
            "quickstart",
            "--files",
            "6",
            "--wal-size",
            "1",
            "--agents",
            "2",
        ])
        .env("TMPDIR", &tmp));
    assert_status(&out, 0);
    let err = stderr(&out);
    for needle in [
        "6 files stored, 0 failed",
        "6 files read back and verified identical",
        "2 agents (0 lost), 4 clusters",
        "6 stored files checked",
    ] {
        assert!(
            err.contains(needle),
            "quickstart output lacks {needle:?}:\n{err}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(
        left.is_empty(),
        "quickstart left {} entries in its temporary directory",
        left.len()
    );
}
