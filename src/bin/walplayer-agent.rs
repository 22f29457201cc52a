//! `walplayer-agent`: a long-lived member of distributed runs. Parses
//! arguments and calls the library.

use std::process::ExitCode;

use clap::Parser;

use tokio_util::sync::CancellationToken;

use walplayer::agent::cli::{run, AgentArgs};
use walplayer::cli::{parse_args, with_signals};
use walplayer::klio::exit::Exit;
use walplayer::logs::{self, LogArgs};

#[derive(Parser)]
#[command(
    name = "walplayer-agent",
    version,
    about = "Join walplayer coordinator runs: generate or read a shard of WAL and play it to Klio"
)]
struct Args {
    #[command(flatten)]
    agent: AgentArgs,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> ExitCode {
    walplayer::alloc::tune();
    let args: Args = parse_args();
    logs::init(&args.log, true);
    walplayer::limits::raise_open_files();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    let shutdown = CancellationToken::new();
    let exit = runtime.block_on(with_signals(
        shutdown.clone(),
        exit_now,
        run(args.agent, shutdown.clone()),
    ));
    exit.into()
}

/// A second signal: stop at once, keeping what was already written.
fn exit_now() -> ! {
    std::process::exit(Exit::Interrupted.code().into())
}
