//! The sink's Prometheus metrics: bytes received, fsync time, streams open
//! and how streams ended, rejections by reason. Served by
//! [`walplayer_klio::metrics::serve`] (`walplayer sink --metrics-listen`).

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use walplayer_klio::metrics::{Histogram, Registry, SHORT_SECONDS_BUCKETS};

/// Why the sink refused a Put stream (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// `--read-only`: every upload is refused.
    ReadOnly,
    /// A cluster or WAL name Klio would refuse.
    InvalidName,
    /// `segment_size` of zero.
    InvalidSize,
    /// A message whose name or size differs from the stream's first.
    Incoherent,
    /// A block over Klio's 8 MiB.
    BlockTooLarge,
    /// More bytes than `segment_size`.
    PastSegmentSize,
    /// No message for `--idle-timeout`.
    IdleTimeout,
    /// The sink could not create, write or rename the file.
    Storage,
    /// Injected by a test's fault plan.
    Fault,
}

impl Rejection {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [Rejection; 9] = [
        Rejection::ReadOnly,
        Rejection::InvalidName,
        Rejection::InvalidSize,
        Rejection::Incoherent,
        Rejection::BlockTooLarge,
        Rejection::PastSegmentSize,
        Rejection::IdleTimeout,
        Rejection::Storage,
        Rejection::Fault,
    ];

    /// The label value (`read-only`, `past-segment-size`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Rejection::ReadOnly => "read-only",
            Rejection::InvalidName => "invalid-name",
            Rejection::InvalidSize => "invalid-size",
            Rejection::Incoherent => "incoherent",
            Rejection::BlockTooLarge => "block-too-large",
            Rejection::PastSegmentSize => "past-segment-size",
            Rejection::IdleTimeout => "idle-timeout",
            Rejection::Storage => "storage",
            Rejection::Fault => "fault",
        }
    }
}

/// How a Put stream ended (the `end` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamEnd {
    Complete,
    Partial,
    Rejected,
    Aborted,
}

impl StreamEnd {
    const ALL: [StreamEnd; 4] = [
        StreamEnd::Complete,
        StreamEnd::Partial,
        StreamEnd::Rejected,
        StreamEnd::Aborted,
    ];

    fn name(self) -> &'static str {
        match self {
            StreamEnd::Complete => "complete",
            StreamEnd::Partial => "partial",
            StreamEnd::Rejected => "rejected",
            StreamEnd::Aborted => "aborted",
        }
    }
}

/// One `key="value"` label of a static value.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Label(&'static str, &'static str);

impl EncodeLabelSet for Label {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        (self.0, self.1).encode(encoder.encode_label())
    }
}

/// The sink's metric handles; cheap to clone, every clone records into the
/// same series.
#[derive(Clone, Debug)]
pub struct SinkMetrics {
    received: Counter,
    fsync: Histogram,
    open: Gauge,
    ends: Family<Label, Counter>,
    rejections: Family<Label, Counter>,
    handshakes_rejected: Counter,
}

impl Default for SinkMetrics {
    fn default() -> SinkMetrics {
        let m = SinkMetrics {
            received: Counter::default(),
            fsync: Histogram::new(SHORT_SECONDS_BUCKETS),
            open: Gauge::default(),
            ends: Family::default(),
            rejections: Family::default(),
            handshakes_rejected: Counter::default(),
        };
        // Every series exists from the start, at 0.
        for end in StreamEnd::ALL {
            let _ = m.ends.get_or_create(&Label("end", end.name()));
        }
        for reason in Rejection::ALL {
            let _ = m.rejections.get_or_create(&Label("reason", reason.name()));
        }
        m
    }
}

impl SinkMetrics {
    /// Registers the sink's families in `registry`.
    pub fn register(registry: &mut Registry) -> SinkMetrics {
        let m = SinkMetrics::default();
        registry.register(
            "walplayer_sink_received_bytes",
            "WAL bytes received in Put streams",
            m.received.clone(),
        );
        registry.register(
            "walplayer_sink_fsync_seconds",
            "Time of each fsync after a block (--fsync block)",
            m.fsync.clone(),
        );
        registry.register(
            "walplayer_sink_streams_open",
            "Put streams open now",
            m.open.clone(),
        );
        registry.register(
            "walplayer_sink_streams",
            "Put streams ended, by how (complete, partial, rejected, aborted by the client)",
            m.ends.clone(),
        );
        registry.register(
            "walplayer_sink_rejections",
            "Put streams the sink refused, by reason",
            m.rejections.clone(),
        );
        registry.register(
            "walplayer_sink_handshakes_rejected",
            "TLS handshakes refused (no or a wrong client certificate)",
            m.handshakes_rejected.clone(),
        );
        m
    }

    pub(crate) fn received(&self, bytes: u64) {
        self.received.inc_by(bytes);
    }

    pub(crate) fn fsync(&self, took: Duration) {
        self.fsync.observe(took);
    }

    /// A stream opened; it counts as open until the guard is dropped.
    pub(crate) fn stream_opened(&self) -> OpenStream {
        self.open.inc();
        OpenStream(self.open.clone())
    }

    pub(crate) fn ended(&self, end: StreamEnd) {
        self.ends.get_or_create(&Label("end", end.name())).inc();
    }

    pub(crate) fn rejected(&self, reason: Rejection) {
        self.ended(StreamEnd::Rejected);
        self.rejections
            .get_or_create(&Label("reason", reason.name()))
            .inc();
    }

    pub(crate) fn handshake_rejected(&self) {
        self.handshakes_rejected.inc();
    }
}

/// Counts a stream as open while it lives.
pub(crate) struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}
