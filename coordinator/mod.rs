//! Coordinator: drives many agents as one run.
//!
//! # Layout
//!
//! - this module: options, binding the control port, and running one run
//!   to its summary.
//! - [`service`]: the gRPC control service; turns sessions into events.
//! - [`run`]: the run loop: the phases (registration, preparation, the
//!   run), what ends them, and the failure; it owns the three below.
//! - `roster`: the agents, by session: who may join, shards in name
//!   order, the start barrier, aborts, lost agents, who is missing.
//! - `results`: what the agents reported: counts per agent and cluster,
//!   the merged histogram, the JSON lines output, the progress display.
//! - `clock`: the phase deadlines, the start instant, the abort grace.
//! - [`plan`]: how a workload splits into one assignment per agent.
//! - [`track`]: which files each cluster must report, one bit per file.
//! - [`summary`]: the merged summary, per agent and per cluster.
//! - [`cli`]: the coordinator's flags and their validation.
//! - [`metrics`]: agents by state and the reported files, for `/metrics`.

pub mod cli;
mod clock;
pub mod metrics;
pub mod plan;
mod results;
mod roster;
pub mod run;
mod search;
pub mod service;
pub mod summary;
pub mod track;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use metrics::CoordinatorMetrics;
pub use run::RunOutcome;
use walplayer_klio::console;
use walplayer_klio::output::{check_writable, print_summary_line, write_summary};
use walplayer_klio::progress::Progress;
use walplayer_klio::transport;
use walplayer_proto::control::control_server::ControlServer;

/// How long agents get to close their sessions after a run, and the
/// server to stop after that.
const SESSION_GRACE: Duration = Duration::from_secs(5);

/// Default control port (next to Klio's 52000).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:52100";

/// Everything a coordinator run needs, validated.
#[derive(Clone)]
pub struct CoordinatorOptions {
    pub agents: usize,
    pub register_timeout: Duration,
    pub ready_timeout: Duration,
    /// An agent silent this long during the run is lost.
    pub agent_timeout: Duration,
    /// Time between releasing the barrier and the start instant.
    pub barrier_delay: Duration,
    /// Agents not finished this long after the start instant are lost;
    /// `None`: [`run::default_run_timeout`] of the planned files.
    pub run_timeout: Option<Duration>,
    pub workload: plan::Workload,
    /// A cluster simulation's objectives and description, when it is one.
    pub simulation: Option<Simulation>,
    pub output: Option<PathBuf>,
    pub summary: Option<PathBuf>,
    /// Mutual TLS on the control channel.
    pub tls: Option<Arc<ServerConfig>>,
}

/// What the coordinator needs of a distributed simulation beyond the
/// shares it sends.
#[derive(Clone, Debug)]
pub struct Simulation {
    /// Judged on the merged results.
    pub slos: Vec<walplayer_simulate::slo::Slo>,
    pub doc: walplayer_simulate::workload::WorkloadDoc,
    /// `--find-max-clusters`: judged step by step as agents report.
    pub search: Option<walplayer_simulate::workload::Search>,
    /// The longest a timeline may be, in seconds.
    pub seconds: u64,
}

/// A coordinator with its control port bound.
pub struct Coordinator {
    listener: TcpListener,
    opts: CoordinatorOptions,
    metrics: CoordinatorMetrics,
}

impl Coordinator {
    /// Binds the control port (port 0 picks a free one).
    pub async fn bind(listen: SocketAddr, opts: CoordinatorOptions) -> Result<Coordinator> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        match (&opts.tls, listen.ip().is_loopback()) {
            (Some(_), _) => tracing::info!("control channel: mutual TLS; only agents with a certificate from --client-ca can join"),
            (None, true) => tracing::info!(
                "control channel without TLS, so on loopback only; give --tls-cert, --tls-key and --client-ca to take agents from other hosts"
            ),
            (None, false) => tracing::warn!(
                "the control channel on {listen} has no TLS: anyone who can reach it can join the run; use --tls-cert, --tls-key and --client-ca"
            ),
        }
        Ok(Coordinator {
            listener,
            opts,
            metrics: CoordinatorMetrics::unregistered(),
        })
    }

    /// Records into `metrics` (served by `--metrics-listen`).
    pub fn with_metrics(mut self, metrics: CoordinatorMetrics) -> Coordinator {
        self.metrics = metrics;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Runs one run to its end; errors are up-front ones (exit status 2).
    pub async fn run(
        self,
        shutdown: CancellationToken,
        progress: Box<dyn Progress>,
    ) -> Result<RunOutcome> {
        check_writable(self.opts.output.as_deref(), "--output")?;
        check_writable(self.opts.summary.as_deref(), "--summary")?;
        let (events_tx, events) = mpsc::channel(4096);
        let stop_server = CancellationToken::new();
        let (incoming, accepting) = transport::incoming(
            self.listener,
            self.opts.tls.clone(),
            stop_server.clone(),
            Arc::new(|| {}),
        );
        let sessions = service::Sessions::default();
        let server = tonic::transport::Server::builder()
            .add_service(
                ControlServer::new(service::ControlService::new(events_tx, sessions.clone()))
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            )
            .serve_with_incoming_shutdown(incoming, stop_server.clone().cancelled_owned());
        let mut server = tokio::spawn(server);
        let outcome = run::Run::new(self.opts.clone(), progress, self.metrics.clone())
            .drive(events, shutdown)
            .await;
        // The loop dropped every downlink: agents see their session end and
        // close theirs; then the server stops.
        sessions.close(SESSION_GRACE).await;
        stop_server.cancel();
        if tokio::time::timeout(SESSION_GRACE, &mut server)
            .await
            .is_err()
        {
            server.abort();
            let _ = server.await;
        }
        accepting.join().await;

        console::say(&outcome.text());
        if let Some(why) = &outcome.failure {
            console::error(&format!("walplayer: run failed: {why}"));
        }
        // The last stdout line, so `kubectl logs` of the Job carries it.
        let document = outcome.document();
        print_summary_line(&document)?;
        if let Some(path) = &self.opts.summary {
            write_summary(path, &document)?;
        }
        Ok(outcome)
    }
}
