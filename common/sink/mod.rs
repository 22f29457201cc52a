//! Sink: a Klio-compatible WAL server for tests, demos and calibration.
//!
//! The sink sits beside the coordinator and agent layers: it uses the Klio
//! client crate's transport and limits and the WAL format's name rules.
//!
//! - [`service`]: the WAL service (Put and Get) with the protocol's rules.
//! - [`routes`]: Put to the sink's own decoder, Get (and the rest) to tonic.
//! - [`put_decode`]: a Put request body read into messages whose blocks are
//!   slices of the received frames, never copied.
//! - [`faults`]: test-only misbehaviour, compiled with the `faults` feature.
//! - [`metrics`]: the sink's Prometheus metrics.
//! - [`connections`]: serving each connection, closing those that hold no
//!   stream for the idle timeout.
//! - this module: the listener, mutual TLS on every connection, the
//!   HTTP/2 settings, shutdown and the totals printed at the end.

pub mod connections;
pub mod faults;
pub mod metrics;
pub mod put_decode;
pub mod routes;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use faults::{Fault, FaultArgs, FaultPlan};
pub use metrics::SinkMetrics;
pub use service::{Fsync, SinkTotals, Storage, WalService, DEFAULT_IDLE_TIMEOUT};
use walplayer_klio::transport::{self, CONNECTION_WINDOW, STREAM_WINDOW};

/// Largest HTTP/2 frame the sink accepts: fewer, larger DATA frames for
/// multi-MiB blocks (16 KiB, the HTTP/2 default, costs a frame per TLS record).
const MAX_FRAME: u32 = 1 << 20;

/// Most streams one connection may hold open at once: a client that opens
/// more waits, instead of holding the sink's memory and files.
const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// Everything the sink needs to run.
pub struct SinkSettings {
    pub tls: Arc<ServerConfig>,
    pub storage: Storage,
    /// Refuse every upload, as a read-only Klio server does.
    pub read_only: bool,
}

/// A sink bound to its address, not yet serving.
pub struct Sink {
    listener: TcpListener,
    settings: SinkSettings,
    faults: Option<FaultPlan>,
    idle: Duration,
    idle_connection: Duration,
    put_log: Option<std::fs::File>,
    metrics: SinkMetrics,
    max_connections: Option<usize>,
}

impl Sink {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, settings: SinkSettings) -> std::io::Result<Sink> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Sink {
            listener,
            settings,
            faults: None,
            idle: DEFAULT_IDLE_TIMEOUT,
            idle_connection: DEFAULT_IDLE_TIMEOUT,
            put_log: None,
            metrics: SinkMetrics::default(),
            max_connections: None,
        })
    }

    /// Makes the service inject `plan` into Put streams (tests only).
    pub fn with_faults(mut self, plan: Option<FaultPlan>) -> Sink {
        self.faults = plan;
        self
    }

    /// Refuses Put streams silent for longer than `idle` (default 5 min,
    /// the client's own default timeout).
    pub fn with_idle_timeout(mut self, idle: Duration) -> Sink {
        self.idle = idle;
        self
    }

    /// Closes a connection that has held no stream for `idle` (default
    /// 5 min, as for a silent stream), HTTP/2 PINGs or not.
    pub fn with_idle_connection_timeout(mut self, idle: Duration) -> Sink {
        self.idle_connection = idle;
        self
    }

    /// Writes one JSON line per Put stream received to `log` (`--put-log`).
    pub fn with_put_log(mut self, log: Option<std::fs::File>) -> Sink {
        self.put_log = log;
        self
    }

    /// Records into `metrics` (served by `--metrics-listen`).
    pub fn with_metrics(mut self, metrics: SinkMetrics) -> Sink {
        self.metrics = metrics;
        self
    }

    /// Holds at most `max` connections at once; one more is closed at once
    /// and logged (unlimited unless set).
    pub fn with_max_connections(mut self, max: usize) -> Sink {
        self.max_connections = Some(max);
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, then returns the totals.
    pub async fn serve(self, shutdown: CancellationToken) -> Arc<SinkTotals> {
        let mut service = WalService::new(self.settings.storage, self.settings.read_only)
            .with_idle_timeout(self.idle)
            .with_metrics(self.metrics.clone());
        if let Some(plan) = self.faults {
            service = service.with_faults(plan, shutdown.clone());
        }
        if let Some(log) = self.put_log {
            service = service.with_put_log(log);
        }
        let totals = service.totals();
        let refused: Arc<dyn Fn() + Send + Sync> = {
            let (totals, metrics) = (totals.clone(), self.metrics.clone());
            Arc::new(move || {
                totals.handshakes_rejected.fetch_add(1, Ordering::Relaxed);
                metrics.handshake_rejected();
            })
        };
        let limit = self.max_connections.map(|max| transport::ConnectionLimit {
            max,
            flag: "--max-connections",
        });
        let (incoming, accepting) = transport::incoming_limited(
            self.listener,
            Some(self.settings.tls),
            shutdown.clone(),
            refused,
            limit,
        );
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            // A peer that vanished without closing is found and dropped.
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        let serving = connections::Serving {
            service: routes::Routes::new(service),
            http2,
            idle: self.idle_connection,
        };
        connections::serve(incoming, serving, shutdown.clone()).await;
        shutdown.cancel();
        accepting.join().await;
        totals
    }
}

/// Where the sink keeps what it receives.
pub fn storage(data: Option<PathBuf>, fsync: Fsync) -> Storage {
    match data {
        Some(dir) => Storage::Disk { dir, fsync },
        None => Storage::Discard,
    }
}
