//! What every binary does before and around its command: parsing the
//! command line, the signals that stop a run, and the error text a user
//! sees. Logging itself is [`crate::logs`].

use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::logs::{self, LogArgs, LogFormat};
use walplayer_klio::exit::Exit;

/// Parses the command line. A usage error is printed as clap prints it,
/// or, when JSON logs were asked for (`--log-format json` or
/// `WALPLAYER_LOG_FORMAT=json`), as JSON records, so stderr stays JSON
/// even then; exit status 2. Help and version go to stdout as usual.
pub fn parse_args<P: clap::Parser>() -> P {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match P::try_parse_from(&args) {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() || !json_asked(&args) => e.exit(),
        Err(e) => {
            let json = LogArgs {
                log_format: LogFormat::Json,
                ..LogArgs::default()
            };
            logs::init(&json, true);
            walplayer_klio::console::error(&e.render().to_string());
            std::process::exit(Exit::Usage.code().into())
        }
    }
}

/// Whether the raw arguments or the environment ask for JSON logs.
fn json_asked(args: &[std::ffi::OsString]) -> bool {
    let mut words = args.iter().filter_map(|a| a.to_str());
    let mut asked = std::env::var("WALPLAYER_LOG_FORMAT").is_ok_and(|v| v == "json");
    while let Some(word) = words.next() {
        match word {
            "--log-format=json" => asked = true,
            "--log-format=text" => asked = false,
            "--log-format" => asked = words.next() == Some("json"),
            _ => {}
        }
    }
    asked
}

/// Runs `command` with the signals wired up: the first Ctrl-C or SIGTERM
/// cancels `shutdown`, the second calls `now`, which the binary gives (it
/// alone ends the process). The watcher runs on a worker thread, so it
/// acts even while the command is stuck in a blocking call (an open(2) of
/// a FIFO named as a certificate or configuration file); it is stopped and
/// joined when the command ends.
pub async fn with_signals<T>(
    shutdown: CancellationToken,
    now: fn() -> !,
    command: impl Future<Output = T>,
) -> T {
    let signals = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            second_signal(shutdown).await;
            now()
        }
    });
    let result = command.await;
    signals.abort();
    let _ = signals.await;
    result
}

/// Cancels `token` on the first Ctrl-C or SIGTERM and returns on the
/// second.
async fn second_signal(token: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::warn!("interrupted: starting no new file; writing what finished and the summary (Ctrl-C again stops at once)"),
        _ = next_sigterm(&mut term) => tracing::warn!("terminated: starting no new file (a second signal stops at once)"),
    }
    token.cancel();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = next_sigterm(&mut term) => {}
    }
    walplayer_klio::console::warn(
        "second signal: stopping at once; results already written are kept",
    );
}

async fn next_sigterm(term: &mut Option<tokio::signal::unix::Signal>) {
    match term.as_mut() {
        Some(t) => {
            t.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// The error and its causes on one line, each cause once: many messages
/// already end with their cause, which `{:#}` would print a second time.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
