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
pub mod simulation;
pub mod spec;

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use session::SessionEnd;
use walplayer_klio::config::KlioConfig;
use walplayer_klio::exit::Exit;
use walplayer_klio::flags::KlioArgs;
use walplayer_klio::metrics::ClientMetrics;
use walplayer_klio::transport::{self, ClientTls, Keepalive};
use walplayer_proto::control::control_client::ControlClient;

/// How the agent notices a coordinator that vanished without closing.
pub const CONTROL_KEEPALIVE: Keepalive = Keepalive {
    interval: Duration::from_secs(5),
    timeout: Duration::from_secs(10),
};

/// Wait after a refusal or an unusable configuration before trying again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// First wait between two attempts to reach the coordinator; it doubles up
/// to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(200);

/// Longest wait between two attempts to reach the coordinator. Agents
/// usually start before it (Kubernetes starts the StatefulSet and the Job
/// together), so this bounds how long after the coordinator's start they
/// register.
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// How often an agent still waiting for the coordinator says so at info
/// level (every attempt is logged at debug).
const WAITING_REPORT: Duration = Duration::from_secs(10);

/// The wait before the next attempt to reach the coordinator: `backoff`
/// less a random part of up to half of it, so that agents started together
/// do not dial in lockstep.
fn jittered(backoff: Duration) -> Duration {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut byte = [0u8; 1];
    let fraction = match SystemRandom::new().fill(&mut byte) {
        Ok(()) => f64::from(byte[0]) / 255.0,
        Err(_) => 0.5,
    };
    backoff.mul_f64(1.0 - 0.5 * fraction)
}

/// Attempts at reaching the coordinator since the last success.
struct Dialing {
    backoff: Duration,
    attempts: u32,
    since: Option<tokio::time::Instant>,
    reported: Option<tokio::time::Instant>,
}

impl Dialing {
    fn new() -> Self {
        Dialing {
            backoff: RECONNECT_FIRST,
            attempts: 0,
            since: None,
            reported: None,
        }
    }

    /// Logs a failed attempt and returns how long to wait before the next.
    fn failed(&mut self, coordinator: &str, error: &str) -> Duration {
        let now = tokio::time::Instant::now();
        self.attempts += 1;
        let since = *self.since.get_or_insert(now);
        let wait = jittered(self.backoff);
        self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
        tracing::debug!(
            "attempt {} to reach the coordinator at {coordinator} failed ({error}); next in {} ms",
            self.attempts,
            wait.as_millis()
        );
        if self
            .reported
            .is_none_or(|at| now.duration_since(at) >= WAITING_REPORT)
        {
            self.reported = Some(now);
            tracing::info!(
                "waiting for the coordinator at {coordinator}: {} attempts in {}s, retrying \
                 every {}s at most; last: {error}",
                self.attempts,
                now.duration_since(since).as_secs(),
                RECONNECT_MAX.as_secs()
            );
        }
        wait
    }

    /// Notes a connection; says how long it took if there was waiting.
    fn connected(&mut self, coordinator: &str) {
        if let Some(since) = self.since {
            tracing::info!(
                "reached the coordinator at {coordinator} after {} attempts in {:.1}s",
                self.attempts + 1,
                since.elapsed().as_secs_f64()
            );
        }
        *self = Dialing::new();
    }
}

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
    /// Files, bytes and upload times of every run, for `/metrics`.
    pub metrics: ClientMetrics,
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
    let mut dialing = Dialing::new();
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
                let wait = dialing.failed(&opts.coordinator, &e);
                sleep_or_stop(wait, &shutdown).await;
                continue;
            }
        };
        dialing.connected(&opts.coordinator);
        let client = ControlClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let end = session::run(&opts, client, shutdown.clone()).await;
        match &end {
            SessionEnd::Finished if opts.once => {
                tracing::info!("run finished");
                return Exit::Ok;
            }
            SessionEnd::Finished => tracing::info!("run finished; waiting for the next one"),
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
                sleep_or_stop(jittered(RECONNECT_FIRST), &shutdown).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_grow_to_a_few_seconds_and_no_further() {
        let mut dialing = Dialing::new();
        let waits: Vec<Duration> = (0..20)
            .map(|_| dialing.failed("coordinator:52100", "connection refused"))
            .collect();
        assert!(
            waits[0] <= RECONNECT_FIRST,
            "first wait {:?} is longer than {RECONNECT_FIRST:?}",
            waits[0]
        );
        for wait in &waits {
            assert!(
                *wait <= RECONNECT_MAX,
                "a wait of {wait:?} is longer than {RECONNECT_MAX:?}"
            );
        }
        // Past the cap every wait is between half of it and all of it.
        for wait in &waits[10..] {
            assert!(
                *wait >= RECONNECT_MAX / 2,
                "a wait of {wait:?} after the cap"
            );
        }
        assert!(
            waits[10..].iter().any(|w| *w != waits[10]),
            "no jitter: every wait is {:?}",
            waits[10]
        );
        dialing.connected("coordinator:52100");
        assert_eq!(dialing.attempts, 0);
        assert_eq!(dialing.backoff, RECONNECT_FIRST);
    }
}
