//! Writes the README's troubleshooting table from the rows the end-to-end
//! test runs (`tests/e2e/troubleshooting/rows.rs`). Run it after changing a
//! row: `cargo run --example troubleshooting_table`. CI never runs it; the
//! test `troubleshooting::the_documented_table_is_the_tested_one` only
//! checks that the README holds what this would write.

#[allow(dead_code)]
#[path = "../tests/e2e/troubleshooting/rows.rs"]
mod rows;

use std::path::Path;

fn main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let doc = std::fs::read_to_string(&path).expect("read README.md");
    let (head, rest) = doc.split_once(rows::BEGIN).expect("table start marker");
    let (_, tail) = rest.split_once(rows::END).expect("table end marker");
    let new = format!("{head}{}{}{}{tail}", rows::BEGIN, rows::table(), rows::END);
    if new == doc {
        println!("README.md: the troubleshooting table is up to date");
    } else {
        std::fs::write(&path, new).expect("write README.md");
        println!("README.md: troubleshooting table written");
    }
}
