//! Agent: one member of a distributed run.
//!
//! # Layout
//!
//! - this module: the agent's life: dial the coordinator (retrying with
//!   backoff while it is not up), run one session, and go back to waiting
//!   for the next run (or exit with `--once`).
//! - [`session`]: one run on the control stream: register, prepare the
//!   shard, hold at the start barrier, play through the common pipeline and
//!   stream every report back.
//! - [`spec`]: an assignment checked once against the agent's bounds.
//! - [`shard`]: which files this agent plays, as which clusters.
//! - [`health`]: gRPC health for Kubernetes probes.
//! - [`cli`]: the agent's flags and start-up (shared by `walplayer-agent`
//!   and `walplayer agent`).

pub mod cli;
pub mod health;
pub mod session;
pub mod shard;
pub mod spec;

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use session::SessionEnd;
use walplayer_klio::config::KlioConfig;
use walplayer_klio::exit::Exit;
use walplayer_klio::flags::KlioArgs;
use walplayer_klio::transport::{self, ClientTls, Keepalive};
use walplayer_proto::control::control_client::ControlClient;

/// How the agent notices a coordinator that vanished without closing.
pub const CONTROL_KEEPALIVE: Keepalive = Keepalive {
    interval: Duration::from_secs(5),
    timeout: Duration::from_secs(10),
};

/// Longest wait between two attempts to reach the coordinator.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Everything an agent needs, validated.
#[derive(Clone)]
pub struct AgentOptions {
    pub coordinator: String,
    pub name: String,
    pub data_dir: PathBuf,
    pub once: bool,
    /// Klio settings, resolved again for every run (certificates rotate).
    pub klio: KlioArgs,
    pub control_tls: Option<ClientTls>,
    pub limits: spec::Limits,
    pub health: Option<health::Health>,
}

/// The host name, which is the pod name in a StatefulSet.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Resolves the agent's Klio settings now, so a bad configuration is
/// reported before registering (and readiness says so).
pub fn resolve_klio(opts: &AgentOptions) -> Result<KlioConfig, String> {
    let config = opts.klio.resolve().map_err(|e| e.to_string())?;
    walplayer_klio::tls::client_config(&config.server_ca, &config.client_cert, &config.client_key)
        .map_err(|e| e.to_string())?;
    Ok(config)
}

/// Runs the agent until `shutdown` (or after one run with `--once`).
/// Returns the exit status.
pub async fn run(opts: AgentOptions, shutdown: CancellationToken) -> Exit {
    let mut backoff = Duration::from_millis(200);
    let mut waiting_logged = false;
    loop {
        if shutdown.is_cancelled() {
            return Exit::Ok;
        }
        let ready = resolve_klio(&opts);
        if let Some(h) = &opts.health {
            h.set_ready(ready.is_ok()).await;
        }
        if let Err(e) = &ready {
            tracing::error!("cannot run: {e}");
            if opts.once {
                return Exit::Usage;
            }
            sleep_or_stop(MAX_BACKOFF, &shutdown).await;
            continue;
        }
        let channel = match transport::connect(
            &opts.coordinator,
            opts.control_tls.clone(),
            Some(CONTROL_KEEPALIVE),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                if !waiting_logged {
                    tracing::info!("waiting for the coordinator at {} ({e})", opts.coordinator);
                    waiting_logged = true;
                }
                sleep_or_stop(backoff, &shutdown).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        waiting_logged = false;
        let client = ControlClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let end = session::run(&opts, client, shutdown.clone()).await;
        match &end {
            SessionEnd::Finished => {
                tracing::info!("run finished; waiting for the next one");
                backoff = Duration::from_millis(200);
                if opts.once {
                    return Exit::Ok;
                }
            }
            SessionEnd::Refused(reason) => {
                tracing::warn!("the coordinator refused this agent: {reason}");
                if opts.once {
                    return Exit::Lost;
                }
                sleep_or_stop(MAX_BACKOFF, &shutdown).await;
            }
            SessionEnd::Failed(reason) => {
                tracing::error!("run failed on this agent: {reason}");
                if opts.once {
                    return Exit::FilesFailed;
                }
            }
            SessionEnd::CoordinatorLost(reason) => {
                tracing::warn!("lost the coordinator: {reason}; uploads stopped");
                if opts.once {
                    return Exit::Lost;
                }
                sleep_or_stop(backoff, &shutdown).await;
            }
            SessionEnd::Stopped => return Exit::Ok,
        }
    }
}

async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.cancelled() => {}
    }
}
