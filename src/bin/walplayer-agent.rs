//! `walplayer-agent`: not implemented yet. It says so and exits non-zero
//! rather than pretend to work.

fn main() -> std::process::ExitCode {
    eprintln!("walplayer-agent: distributed runs are not implemented yet; use `walplayer play` on one machine");
    std::process::ExitCode::from(2)
}
