//! The README's Guarantees table names, for each promise, the tests that
//! prove it. This checks that every name is a test that exists and is not
//! ignored; `.ci/guarantees-ran` checks in CI's log that each one ran and
//! passed.
//!
//! Names are those `cargo test` prints: `play::...` for this test binary,
//! `coordinator::track::tests::...` for the library's unit tests; a name
//! ending in `::*` stands for every test under that module (at least one).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// The test names in the "proved by" column of the Guarantees table.
fn named_tests(readme: &str) -> Vec<String> {
    let (_, section) = readme
        .split_once("\n## Guarantees\n")
        .expect("a Guarantees section");
    let section = section.split("\n## ").next().unwrap();
    let mut names = Vec::new();
    for row in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        let Some(proved_by) = cells.get(1) else {
            continue;
        };
        for (i, piece) in proved_by.split('`').enumerate() {
            if i % 2 == 1 {
                names.push(piece.to_string());
            }
        }
    }
    names
}

/// `(tests, ignored)` that the libtest binary `exe` lists.
fn listed(exe: &Path) -> (Vec<String>, Vec<String>) {
    let list = |extra: &[&str]| -> Vec<String> {
        let out = run(Command::new(exe)
            .args(["--list", "--format", "terse"])
            .args(extra));
        assert_status(&out, 0);
        stdout(&out)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_string)
            .collect()
    };
    (list(&[]), list(&["--ignored"]))
}

/// The other libtest binaries beside this one (the library's unit tests
/// among them): `deps/<crate>-<hash>` executables. A stale one, left by an
/// earlier build with other settings, can only add names; that each named
/// test ran is checked on CI's log by `.ci/guarantees-ran`.
fn sibling_test_binaries() -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let me = std::env::current_exe().unwrap();
    let me_crate = crate_of(&me).unwrap_or_default();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(me.parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        let Some(krate) = crate_of(&path) else {
            continue;
        };
        let meta = std::fs::metadata(&path).unwrap();
        if krate == me_crate || !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        // Only libtest binaries: the built programs and the benches (their
        // own `main`, which `--list` would run) do not carry its runner.
        let bytes = std::fs::read(&path).unwrap_or_default();
        if bytes.windows(17).any(|w| w == b"RUST_TEST_THREADS") {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// `name` of a `deps/name-0123456789abcdef` file without extension.
fn crate_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let (name, hash) = file.rsplit_once('-')?;
    (hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit())).then(|| name.to_string())
}

#[test]
fn every_test_the_guarantees_table_names_exists_and_runs() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let names = named_tests(&readme);
    assert!(names.len() >= 10, "too few names found: {names:?}");

    let (mut tests, mut ignored) = listed(&std::env::current_exe().unwrap());
    let siblings = sibling_test_binaries();
    for exe in &siblings {
        let (t, i) = listed(exe);
        tests.extend(t);
        ignored.extend(i);
    }
    let mut problems = Vec::new();
    for name in &names {
        let matches: Vec<&String> = match name.strip_suffix("::*") {
            Some(module) => tests
                .iter()
                .filter(|t| t.starts_with(&format!("{module}::")))
                .collect(),
            None => tests.iter().filter(|t| *t == name).collect(),
        };
        if matches.is_empty() {
            problems.push(format!("{name}: no such test"));
        }
        for m in matches {
            if ignored.contains(m) {
                problems.push(format!("{m}: ignored, so it never runs"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the Guarantees table names tests that do not prove anything (test binaries read: this one and {siblings:?}; \
         unit tests are found only once built, as `cargo test` does):\n{}",
        problems.join("\n")
    );
}
