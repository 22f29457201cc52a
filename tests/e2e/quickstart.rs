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

/// Under a read-only root file system (Kubernetes' readOnlyRootFilesystem)
/// the default temporary directory is unusable: the error says where it
/// tried and how to choose another, and `--work-dir` is used and cleaned.
#[test]
fn quickstart_names_an_unusable_temporary_directory_and_uses_work_dir() {
    let env = TestEnv::new();
    let missing = env.path("no-such-dir");
    let out = run(env
        .walplayer(&[
            "quickstart",
            "--files",
            "2",
            "--wal-size",
            "1",
            "--agents",
            "1",
        ])
        .env("TMPDIR", &missing));
    assert_status(&out, 2);
    let err = stderr(&out);
    for needle in [missing.to_str().unwrap(), "from TMPDIR", "--work-dir DIR"] {
        assert!(err.contains(needle), "the error lacks {needle:?}:\n{err}");
    }

    let work = env.path("work");
    std::fs::create_dir(&work).unwrap();
    let out = run(env
        .walplayer(&[
            "quickstart",
            "--files",
            "2",
            "--wal-size",
            "1",
            "--agents",
            "1",
        ])
        .arg("--work-dir")
        .arg(&work)
        .env("TMPDIR", &missing));
    assert_status(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("working in {}", work.display())),
        "quickstart did not work in --work-dir:\n{err}"
    );
    assert!(err.contains("2 files stored, 0 failed"), "{err}");
    assert_eq!(
        std::fs::read_dir(&work).unwrap().count(),
        0,
        "quickstart left entries in --work-dir"
    );
}
