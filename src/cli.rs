//! What every binary does before and around its command: logging to
//! stderr, the signals that stop a run, and the error text a user sees.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// Initializes logging to stderr; `RUST_LOG` overrides the level.
pub fn init_logging(with_time: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,h2=warn,hyper=warn,tower=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if with_time {
        builder.init();
    } else {
        builder.without_time().init();
    }
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
    eprintln!("second signal: stopping at once; results already written are kept");
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
