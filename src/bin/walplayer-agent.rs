//! `walplayer-agent`: a long-lived member of distributed runs. Parses
//! arguments and calls the library.

use std::process::ExitCode;

use clap::Parser;

use walplayer::agent::cli::{run, AgentArgs};
use walplayer::common::cli::init_logging;

#[derive(Parser)]
#[command(
    name = "walplayer-agent",
    version,
    about = "Join walplayer coordinator runs: generate or read a shard of WAL and play it to Klio"
)]
struct Args {
    #[command(flatten)]
    agent: AgentArgs,
}

fn main() -> ExitCode {
    walplayer::common::alloc::tune();
    let args = Args::parse();
    init_logging(true);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    ExitCode::from(runtime.block_on(run(args.agent)) as u8)
}
