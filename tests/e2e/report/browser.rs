//! Headless Chromium, run as this machine allows (no sandbox, no GPU, no
//! network of its own), and the few things the tests read from the DOM
//! it dumps after the page's scripts ran.

use std::path::Path;
use std::process::Command;

use crate::util::*;

/// The Chromium binary, if one runs here.
pub fn find() -> Option<&'static str> {
    let out = Command::new("chromium").arg("--version").output().ok()?;
    out.status.success().then_some("chromium")
}

/// Says why a browser test did not run. Under CI that is a failure
/// (`.ci/run` installs Chromium); elsewhere it goes straight to stderr, as
/// the harness hides `eprintln!` of passing tests.
pub fn skipped(test: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run {test} (.ci/run installs chromium), but: {why}"
    );
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED {test}: {why}\n").as_bytes(),
    );
}

/// `chromium --headless ... ARGS file://PAGE` with a fresh profile under
/// `env`; returns its stdout.
fn chromium(env: &TestEnv, page: &Path, args: &[&str]) -> Vec<u8> {
    let profile = tempfile::tempdir_in(env.dir.path()).unwrap();
    let out = run(Command::new(find().expect("chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display())));
    assert_status(&out, 0);
    out.stdout
}

/// The page's DOM after its scripts ran.
pub fn dump_dom(env: &TestEnv, page: &Path) -> String {
    String::from_utf8(chromium(env, page, &["--dump-dom"])).unwrap()
}

/// A 1200x2000 screenshot of the page into `png`.
pub fn screenshot(env: &TestEnv, page: &Path, png: &Path) {
    chromium(
        env,
        page,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,2000",
        ],
    );
}

/// The opening tag of the element with `id`.
pub fn tag_with_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in the DOM"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

/// The value of attribute `name` in `tag`.
pub fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = start + tag[start..].find('"')?;
    Some(tag[start..end].to_string())
}

/// The markup inside the element with `id` (up to its closing `</tag>`,
/// so not for elements nested in their own kind).
pub fn inner<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = tag_with_id(dom, id);
    let name = open[1..].split([' ', '>']).next().unwrap();
    let start = dom.find(open).unwrap() + open.len();
    let end = start + dom[start..].find(&format!("</{name}>")).unwrap();
    &dom[start..end]
}

/// Every opening tag `<name ...>` in `markup`.
pub fn tags<'a>(markup: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name} ");
    markup
        .match_indices(&open)
        .map(|(at, _)| &markup[at..=at + markup[at..].find('>').unwrap()])
        .collect()
}
