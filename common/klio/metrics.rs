//! Prometheus metrics: the families every walplayer process registers, a
//! histogram recorded with atomics, and the `/metrics` endpoint.
//!
//! Built on `prometheus-client` (the official Rust client); the exposition
//! is OpenMetrics text, which Prometheus scrapes natively.
//!
//! # Use
//!
//! ```ignore
//! use walplayer_klio::metrics::{self, Registry, SimulationMetrics};
//!
//! let mut registry = Registry::default();           // one per process
//! let sim = SimulationMetrics::register(&mut registry);
//! let server = metrics::serve(addr, registry, "--metrics-listen").await?; // before the run
//! // hot path: each call is one or two atomic operations, no allocation
//! sim.produced_bytes(8192);
//! sim.segment_lag(Duration::from_millis(40));
//! sim.set_backlog_bytes(1 << 20);
//! sim.set_open_streams(12);
//! // ...
//! server.stop().await;                              // joins the server task
//! ```
//!
//! Every handle ([`ClientMetrics`], [`SimulationMetrics`], [`Histogram`])
//! is a few `Arc`s: clone it into every task that records. Register
//! everything before [`serve`]: the registry is frozen then.
//!
//! Labels are bounded: a failure kind, an outcome, an agent state; a
//! cluster label only when asked for (`--metrics-cluster-labels`), never a
//! file name.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder, MetricEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::report::{FailureKind, FileReport, Outcome};

pub use prometheus_client::registry::Registry;

/// The content type of the exposition (OpenMetrics text 1.0.0).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of upload and lag histograms: 1 ms to 10 min.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Upper bounds (seconds) of fsync and other short-operation histograms:
/// 10 µs to 10 s.
pub const SHORT_SECONDS_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A histogram of durations kept in atomics: an observation is a search
/// over the bounds and two atomic adds, with no lock and no allocation.
/// Cheap to clone; every clone records into the same buckets.
#[derive(Clone)]
pub struct Histogram {
    inner: Arc<HistogramInner>,
}

struct HistogramInner {
    bounds: &'static [f64],
    /// One count per bound, then one for +Inf (not cumulative).
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds in seconds (ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            inner: Arc::new(HistogramInner {
                bounds,
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let i = self.inner.bounds.partition_point(|b| *b < seconds);
        self.inner.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new(SECONDS_BUCKETS)
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .finish()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let counts: Vec<u64> = self
            .inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let buckets: Vec<(f64, u64)> = self
            .inner
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(counts.iter().copied())
            .collect();
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            sum,
            counts.iter().sum(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Labels of `walplayer_files_total`: outcome, the failure kind on a
/// failure, and the cluster only with `--metrics-cluster-labels`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct FileLabels {
    outcome: &'static str,
    kind: Option<&'static str>,
    cluster: Option<String>,
}

impl EncodeLabelSet for FileLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        label(encoder, "outcome", self.outcome)?;
        if let Some(kind) = self.kind {
            label(encoder, "kind", kind)?;
        }
        ClusterLabel(self.cluster.clone()).encode(encoder)
    }
}

/// A cluster label, or none when cluster labels are off.
#[derive(Clone, Debug, Hash, PartialEq, Eq, Default)]
struct ClusterLabel(Option<String>);

impl EncodeLabelSet for ClusterLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        match &self.0 {
            Some(cluster) => label(encoder, "cluster", cluster),
            None => Ok(()),
        }
    }
}

/// Writes one `key="value"` label.
fn label(encoder: &mut LabelSetEncoder, key: &str, value: &str) -> Result<(), fmt::Error> {
    EncodeLabel::encode(&(key, value), encoder.encode_label())
}

fn cluster_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

/// What a client process records: `walplayer play` and the agent, through
/// the shared report loop and the uploader.
#[derive(Clone, Debug)]
pub struct ClientMetrics {
    cluster_labels: bool,
    files: Family<FileLabels, Counter>,
    bytes_sent: Family<ClusterLabel, Counter>,
    bytes_stored: Family<ClusterLabel, Counter>,
    upload_seconds: Family<ClusterLabel, Histogram, fn() -> Histogram>,
}

impl ClientMetrics {
    /// Registers the client families in `registry`; `cluster_labels` adds
    /// a `cluster` label to each (one series per cluster: use it only with
    /// a bounded number of clusters).
    pub fn register(registry: &mut Registry, cluster_labels: bool) -> ClientMetrics {
        let m = ClientMetrics::register_reports(registry, cluster_labels);
        registry.register(
            "walplayer_bytes_sent",
            "Bytes handed to Put streams, block by block (failed attempts and retries included)",
            m.bytes_sent.clone(),
        );
        m
    }

    /// Registers only the families fed by reports (files, bytes stored,
    /// upload time), for a process that counts reports but sends nothing
    /// itself: the coordinator.
    pub fn register_reports(registry: &mut Registry, cluster_labels: bool) -> ClientMetrics {
        let m = ClientMetrics::new(cluster_labels);
        registry.register(
            "walplayer_files",
            "WAL files finished, by outcome (stored or failed) and failure kind",
            m.files.clone(),
        );
        registry.register(
            "walplayer_bytes_stored",
            "Bytes of WAL files stored, as the server acknowledged them (the summary's bytes)",
            m.bytes_stored.clone(),
        );
        registry.register(
            "walplayer_upload_seconds",
            "Time per WAL file, first attempt to outcome (retries and verification included)",
            m.upload_seconds.clone(),
        );
        m
    }

    /// Handles recording into families nobody serves (no `--metrics-listen`).
    pub fn unregistered() -> ClientMetrics {
        ClientMetrics::new(false)
    }

    fn new(cluster_labels: bool) -> ClientMetrics {
        let m = ClientMetrics {
            cluster_labels,
            files: Family::default(),
            bytes_sent: Family::default(),
            bytes_stored: Family::default(),
            upload_seconds: Family::new_with_constructor(cluster_histogram),
        };
        if !cluster_labels {
            // Every series exists from the start, at 0, so rate() and
            // increase() see the first file.
            let _ = m.files.get_or_create(&file_labels(&Outcome::Stored, None));
            for kind in FailureKind::ALL {
                let outcome = Outcome::failed(kind, String::new());
                let _ = m.files.get_or_create(&file_labels(&outcome, None));
            }
            let _ = m.bytes_sent.get_or_create(&ClusterLabel(None));
            let _ = m.bytes_stored.get_or_create(&ClusterLabel(None));
            let _ = m.upload_seconds.get_or_create(&ClusterLabel(None));
        }
        m
    }

    fn cluster(&self, cluster: &str) -> ClusterLabel {
        ClusterLabel(self.cluster_labels.then(|| cluster.to_string()))
    }

    /// The counter of bytes sent as `cluster`: take it once per file, then
    /// add each block to it ([`Counter::inc_by`] is one atomic add).
    pub fn bytes_sent(&self, cluster: &str) -> Counter {
        self.bytes_sent
            .get_or_create(&self.cluster(cluster))
            .clone()
    }

    /// Counts one finished file.
    pub fn file(&self, report: &FileReport) {
        let cluster = self.cluster_labels.then(|| report.cluster.clone());
        self.files
            .get_or_create(&file_labels(&report.outcome, cluster))
            .inc();
        let label = ClusterLabel(self.cluster_labels.then(|| report.cluster.clone()));
        if report.ok() {
            self.bytes_stored.get_or_create(&label).inc_by(report.bytes);
        }
        self.upload_seconds
            .get_or_create(&label)
            .observe(report.elapsed);
    }
}

fn file_labels(outcome: &Outcome, cluster: Option<String>) -> FileLabels {
    FileLabels {
        outcome: if outcome.kind().is_some() {
            "failed"
        } else {
            "stored"
        },
        kind: outcome.kind().map(FailureKind::name),
        cluster,
    }
}

/// What a cluster simulation records. Each method is one or two atomic
/// operations, with no lock and no allocation.
#[derive(Clone, Debug)]
pub struct SimulationMetrics {
    lag: Histogram,
    backlog: Gauge,
    open_streams: Gauge,
    produced: Counter,
}

impl SimulationMetrics {
    /// Registers `walplayer_segment_lag_seconds`, `walplayer_backlog_bytes`,
    /// `walplayer_open_streams` and `walplayer_produced_bytes_total`.
    pub fn register(registry: &mut Registry) -> SimulationMetrics {
        let m = SimulationMetrics {
            lag: Histogram::new(SECONDS_BUCKETS),
            backlog: Gauge::default(),
            open_streams: Gauge::default(),
            produced: Counter::default(),
        };
        registry.register(
            "walplayer_segment_lag_seconds",
            "Time from a segment being complete (produced) to the server storing it",
            m.lag.clone(),
        );
        registry.register(
            "walplayer_backlog_bytes",
            "Bytes produced and not yet stored",
            m.backlog.clone(),
        );
        registry.register(
            "walplayer_open_streams",
            "Put streams open now",
            m.open_streams.clone(),
        );
        registry.register(
            "walplayer_produced_bytes",
            "WAL bytes the simulated clusters produced",
            m.produced.clone(),
        );
        m
    }

    /// A segment was stored `lag` after it was complete.
    pub fn segment_lag(&self, lag: Duration) {
        self.lag.observe(lag);
    }

    /// Sets the bytes produced and not yet stored.
    pub fn set_backlog_bytes(&self, bytes: u64) {
        self.backlog.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Sets the number of Put streams open now.
    pub fn set_open_streams(&self, streams: u64) {
        self.open_streams
            .set(i64::try_from(streams).unwrap_or(i64::MAX));
    }

    /// Adds bytes the simulated clusters produced.
    pub fn produced_bytes(&self, bytes: u64) {
        self.produced.inc_by(bytes);
    }
}

/// The registry's exposition, as served on `/metrics`.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; a metric's encoder could only
    // fail on a histogram without buckets, which none of ours is.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!("cannot encode metrics: {e}");
    }
    text
}

/// Most scrapes served at once; more wait for the listener.
const MAX_CONNECTIONS: usize = 16;

/// Longest wait for a scraper's request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the metrics endpoint cannot start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {flag} {addr}: {source} (pick a free port, e.g. {flag} 0.0.0.0:9464)")]
pub struct BindError {
    pub flag: &'static str,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// The running `/metrics` endpoint; [`MetricsServer::stop`] ends and joins it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The address actually bound (port 0 picks a free one).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits until the server is gone.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// `--metrics-hold`: keeps serving for `hold` after a run, so the last
    /// counts can be scraped (`shutdown` ends the wait), then stops.
    pub async fn hold_then_stop(self, hold: Option<Duration>, shutdown: &CancellationToken) {
        if let Some(hold) = hold {
            tracing::info!(
                "run over; serving /metrics on {} for {} more (--metrics-hold; Ctrl-C ends it)",
                self.local_addr(),
                humantime::format_duration(hold)
            );
            tokio::select! {
                _ = tokio::time::sleep(hold) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        self.stop().await;
    }
}

/// Serves `registry` as `GET /metrics` over HTTP/1.1 on `addr` until
/// [`MetricsServer::stop`]. `flag` names the flag in a bind error.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    flag: &'static str,
) -> Result<MetricsServer, BindError> {
    let listener =
        TcpListener::bind(addr)
            .await
            .map_err(|source| BindError { flag, addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| BindError { flag, addr, source })?;
    tracing::info!("metrics on http://{addr}/metrics");
    let stop = CancellationToken::new();
    let task = tokio::spawn(accept(listener, Arc::new(registry), stop.clone()));
    Ok(MetricsServer { addr, stop, task })
}

async fn accept(listener: TcpListener, registry: Arc<Registry>, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        // Finished connections are reaped as they end.
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            tokio::select! {
                _ = connections.join_next() => continue,
                _ = stop.cancelled() => break,
            }
        }
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, not spin.
                    tracing::warn!("metrics endpoint: cannot accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let registry = registry.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &registry)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
    connections.shutdown().await;
}

fn respond<B>(req: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            res.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        res
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            reply(StatusCode::OK, CONTENT_TYPE, encode(registry))
        }
        (_, "/metrics") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET /metrics\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: metrics are at /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Outcome;
    use std::time::SystemTime;

    fn report(outcome: Outcome, bytes: u64, cluster: &str) -> FileReport {
        FileReport {
            wal_full_path: "/wal/000000010000000000000001".into(),
            cluster: cluster.into(),
            wal_name: "000000010000000000000001".into(),
            agent: None,
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH,
            elapsed: Duration::from_millis(30),
            bytes,
            outcome,
            retries: Vec::new(),
            verified: false,
            simulated: None,
        }
    }

    #[test]
    fn histogram_buckets_count_each_observation_once() {
        let h = Histogram::new(&[0.01, 1.0]);
        h.observe(Duration::from_millis(10)); // on the bound: le="0.01"
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5)); // +Inf only
        let mut r = Registry::default();
        r.register("t_seconds", "t", h.clone());
        let text = encode(&r);
        assert!(text.contains("t_seconds_bucket{le=\"0.01\"} 1\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"1.0\"} 2\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_count 3\n"), "{text}");
        assert!(text.contains("t_seconds_sum 5.51\n"), "{text}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn client_metrics_count_files_by_outcome_and_kind() {
        let mut r = Registry::default();
        let m = ClientMetrics::register(&mut r, false);
        m.file(&report(Outcome::Stored, 100, "a"));
        m.file(&report(Outcome::Stored, 50, "b"));
        m.file(&report(
            Outcome::failed(FailureKind::Timeout, "slow"),
            0,
            "a",
        ));
        m.bytes_sent("a").inc_by(170);
        let text = encode(&r);
        assert!(
            text.contains("walplayer_files_total{outcome=\"stored\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("walplayer_files_total{outcome=\"failed\",kind=\"timeout\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("walplayer_files_total{outcome=\"failed\",kind=\"local-file\"} 0\n"),
            "every kind exists from the start: {text}"
        );
        assert!(
            text.contains("walplayer_bytes_stored_total 150\n"),
            "{text}"
        );
        assert!(text.contains("walplayer_bytes_sent_total 170\n"), "{text}");
        assert!(
            text.contains("walplayer_upload_seconds_count 3\n"),
            "{text}"
        );
        assert!(
            !text.contains("cluster="),
            "no cluster label unless asked: {text}"
        );
    }

    #[test]
    fn cluster_labels_only_when_asked() {
        let mut r = Registry::default();
        let m = ClientMetrics::register(&mut r, true);
        m.file(&report(Outcome::Stored, 100, "pg-a"));
        let text = encode(&r);
        assert!(
            text.contains("walplayer_files_total{outcome=\"stored\",cluster=\"pg-a\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("walplayer_upload_seconds_count{cluster=\"pg-a\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn simulation_metrics_are_registered_under_their_names() {
        let mut r = Registry::default();
        let sim = SimulationMetrics::register(&mut r);
        sim.produced_bytes(8192);
        sim.produced_bytes(8192);
        sim.segment_lag(Duration::from_millis(40));
        sim.set_backlog_bytes(4096);
        sim.set_open_streams(3);
        let text = encode(&r);
        for line in [
            "walplayer_produced_bytes_total 16384\n",
            "walplayer_backlog_bytes 4096\n",
            "walplayer_open_streams 3\n",
            "walplayer_segment_lag_seconds_count 1\n",
            "walplayer_segment_lag_seconds_bucket{le=\"0.05\"} 1\n",
            "walplayer_segment_lag_seconds_bucket{le=\"0.025\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing: {text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[tokio::test]
    async fn serves_metrics_and_names_the_flag_when_the_port_is_taken() {
        let mut r = Registry::default();
        let sim = SimulationMetrics::register(&mut r);
        sim.produced_bytes(7);
        let server = serve("127.0.0.1:0".parse().unwrap(), r, "--metrics-listen")
            .await
            .unwrap();
        let addr = server.local_addr();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).await.unwrap();
            text
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("application/openmetrics-text"), "{ok}");
        assert!(ok.contains("walplayer_produced_bytes_total 7\n"), "{ok}");
        assert!(get("/").await.starts_with("HTTP/1.1 404"));

        let taken = serve(addr, Registry::default(), "--metrics-listen")
            .await
            .err()
            .expect("the port is taken");
        let text = taken.to_string();
        assert!(
            text.starts_with(&format!("cannot listen on --metrics-listen {addr}: ")),
            "{text}"
        );
        server.stop().await;
    }
}
