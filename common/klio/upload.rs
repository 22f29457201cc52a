//! Uploader: one Put stream per file, blocks read off the disk as they are
//! sent; retries with backoff; optional read-back verification.
//!
//! A blocking reader thread fills blocks of the chosen size and hands them
//! to the gRPC stream through a channel of one. It reads a block only once
//! the channel has room for it, so a job holds the block being read or
//! waiting, and the one tonic is encoding, whatever the file size.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::endpoint::{status_text, Client};
use crate::metrics::ClientMetrics;
use crate::report::{FailureKind, FileReport, Outcome};
use crate::verify;
use walplayer_proto::klio::PutRequest;
use walplayer_wal::source::Segment;

pub use crate::settings::UploadSettings;

/// One file to upload, as one cluster.
#[derive(Debug, Clone)]
pub struct Work {
    pub segment: Segment,
    pub cluster: String,
}

/// A failed attempt: its kind, what happened, and whether trying again
/// may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    pub retryable: bool,
}

impl Failure {
    /// A failure that another attempt cannot fix (bad input, refusal).
    pub fn fatal(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            retryable: false,
        }
    }

    /// The local file cannot be sent as it is.
    pub fn local(message: impl Into<String>) -> Failure {
        Failure::fatal(FailureKind::LocalFile, message)
    }

    /// A failed call during `action` (e.g. "upload"): a status the server
    /// answered is a refusal; one made by the transport under it (reset,
    /// refused, closed) is a broken connection, said as such. Classified by
    /// its code for retrying.
    pub fn from_status(action: &str, status: &tonic::Status) -> Failure {
        use tonic::Code::*;
        let retryable = matches!(
            status.code(),
            Unavailable
                | Unknown
                | Cancelled
                | DeadlineExceeded
                | ResourceExhausted
                | Aborted
                | Internal
        );
        // A status with a cause under it was made by the transport, not
        // answered by the server.
        let (kind, message) = if std::error::Error::source(status).is_some() {
            (
                FailureKind::Transport,
                format!(
                    "the connection to the server failed during the {action}: {}",
                    status_text(status)
                ),
            )
        } else {
            (
                FailureKind::Refused,
                format!("server rejected the {action}: {}", status_text(status)),
            )
        };
        Failure {
            kind,
            message,
            retryable,
        }
    }
}

/// What one successful attempt sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub bytes: u64,
    /// SHA-256 of the bytes sent, when verifying.
    pub digest: Option<ring::digest::Digest>,
}

/// Wait before attempt `n + 1` (n >= 1): 250 ms doubling, at most 5 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << n.saturating_sub(1).min(10)))
        .min(Duration::from_secs(5))
}

/// Bytes put on the wire so far, by every job of a pipeline: bumped per
/// block as it is handed to the stream, read once a second for the
/// timeline.
pub type SentCounter = Arc<AtomicU64>;

/// Where a block's bytes are counted once sent: the pipeline's total (the
/// timeline) and the Prometheus counter.
#[derive(Clone)]
struct SentBytes {
    total: SentCounter,
    metric: Counter,
}

impl SentBytes {
    fn add(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
        self.metric.inc_by(n);
    }
}

/// Uploads one file, retrying passing failures, and reports what happened.
/// Never fails otherwise: every outcome is a report. Each block sent is
/// counted into `metrics` as it goes.
pub async fn upload(
    client: &mut Client,
    work: &Work,
    settings: &UploadSettings,
    metrics: &ClientMetrics,
) -> FileReport {
    upload_counted(client, work, settings, metrics, &SentCounter::default()).await
}

/// [`upload`], adding every block sent to `sent` too.
pub async fn upload_counted(
    client: &mut Client,
    work: &Work,
    settings: &UploadSettings,
    metrics: &ClientMetrics,
    sent: &SentCounter,
) -> FileReport {
    let sent_bytes = SentBytes {
        total: sent.clone(),
        metric: metrics.bytes_sent(&work.cluster),
    };
    let start = SystemTime::now();
    let clock = Instant::now();
    let mut retries = Vec::new();
    let result = loop {
        let attempt = tokio::time::timeout(
            settings.timeout,
            attempt(client, work, settings, &sent_bytes),
        )
        .await;
        let failure = match attempt {
            Ok(Ok(sent)) => break Ok(sent.bytes),
            Ok(Err(failure)) => failure,
            Err(_) => Failure {
                kind: FailureKind::Timeout,
                message: format!(
                    "timed out after {} (raise --timeout if the server is just slow)",
                    humantime::format_duration(settings.timeout)
                ),
                retryable: true,
            },
        };
        if !failure.retryable || retries.len() as u32 >= settings.retries {
            break Err(failure);
        }
        retries.push(failure.message);
        tokio::time::sleep(backoff(retries.len() as u32)).await;
    };
    let mut report = finish(work, start, clock.elapsed(), result);
    report.verified = settings.verify && report.ok();
    report.retries = retries;
    report
}

async fn attempt(
    client: &mut Client,
    work: &Work,
    settings: &UploadSettings,
    sent_bytes: &SentBytes,
) -> Result<Sent, Failure> {
    let sent = send(client, work, settings, sent_bytes).await?;
    if settings.verify {
        verify::read_back(client, work, &sent).await?;
    }
    Ok(sent)
}

/// The report of a file whose upload ended with `result` (bytes stored or
/// a failure), on its first attempt.
pub fn finish(
    work: &Work,
    start: SystemTime,
    elapsed: Duration,
    result: Result<u64, Failure>,
) -> FileReport {
    let (bytes, outcome) = match result {
        Ok(bytes) => (bytes, Outcome::Stored),
        Err(f) => (0, Outcome::failed(f.kind, f.message)),
    };
    FileReport {
        wal_full_path: work.segment.path.display().to_string(),
        cluster: work.cluster.clone(),
        wal_name: work.segment.wal_name.clone(),
        agent: None,
        start,
        end: start + elapsed,
        elapsed,
        bytes,
        outcome,
        retries: Vec::new(),
        verified: false,
        simulated: None,
    }
}

/// Why the reader stopped early; it keeps the sender alive so the stream is
/// cancelled, not ended cleanly, when the upload is dropped.
struct ReadFailure {
    failure: Failure,
    _keep_open: mpsc::Sender<PutRequest>,
}

async fn send(
    client: &mut Client,
    work: &Work,
    settings: &UploadSettings,
    sent_bytes: &SentBytes,
) -> Result<Sent, Failure> {
    let segment = &work.segment;
    if let Some(why) = &segment.unreadable {
        return Err(Failure::local(format!("{why}; nothing was sent")));
    }
    if segment.size == 0 {
        return Err(Failure::local(
            "file is empty: Klio needs a non-zero segment_size, nothing was sent",
        ));
    }
    let (tx, rx) = mpsc::channel(1);
    let reader = {
        let (segment, cluster, block, digest, counter) = (
            segment.clone(),
            work.cluster.clone(),
            settings.block.bytes(),
            settings.verify,
            sent_bytes.clone(),
        );
        tokio::task::spawn_blocking(move || {
            read_blocks(&segment, &cluster, block, digest, &counter, tx)
        })
    };
    let call = client.put(ReceiverStream::new(rx));
    tokio::pin!(call);
    tokio::pin!(reader);
    let rejected = |s: tonic::Status| Failure::from_status("upload", &s);
    let sent = tokio::select! {
        read = &mut reader => match read {
            Ok(Ok(sent)) => sent,
            // Dropping `call` here resets the stream before the sender goes.
            Ok(Err(failure)) => return Err(failure.failure),
            Err(e) => return Err(Failure::local(format!("reader thread failed: {e}"))),
        },
        answer = &mut call => {
            // The server answered before we finished sending; whatever the
            // reader did, the answer decides.
            let answer = answer.map_err(rejected)?;
            return match reader.await {
                Ok(Ok(sent)) => check_written(answer.into_inner().written_size, sent),
                Ok(Err(failure)) => Err(failure.failure),
                Err(e) => Err(Failure::local(format!("reader thread failed: {e}"))),
            };
        }
    };
    let answer = call.await.map_err(rejected)?;
    check_written(answer.into_inner().written_size, sent)
}

fn check_written(written: u64, sent: Sent) -> Result<Sent, Failure> {
    if written != sent.bytes {
        return Err(Failure::fatal(
            FailureKind::Mismatch,
            format!(
                "incomplete WAL file: server stored {written} of the {} bytes sent",
                sent.bytes
            ),
        ));
    }
    Ok(sent)
}

/// Reads `segment` in blocks and sends them; returns what was sent.
fn read_blocks(
    segment: &Segment,
    cluster: &str,
    block: usize,
    digest: bool,
    sent_bytes: &SentBytes,
    tx: mpsc::Sender<PutRequest>,
) -> Result<Sent, ReadFailure> {
    let fail = |message: String, tx: mpsc::Sender<PutRequest>| ReadFailure {
        failure: Failure::local(message),
        _keep_open: tx,
    };
    let mut input = match segment.open() {
        Ok(input) => input,
        Err(e) => return Err(fail(format!("cannot open file: {e}"), tx)),
    };
    let mut hasher = digest.then(|| ring::digest::Context::new(&ring::digest::SHA256));
    let mut sent = 0u64;
    // Blocking threads of the pool run inside the runtime's context.
    let runtime = tokio::runtime::Handle::current();
    loop {
        // Wait for room before reading, not after: a block read ahead while
        // the previous one still waits in the channel is one more block per
        // job held in memory, for no gain (the read is much faster than
        // the send).
        let Ok(slot) = runtime.block_on(tx.clone().reserve_owned()) else {
            // The call ended (the server answered early); it has the say.
            return Ok(Sent {
                bytes: sent,
                digest: None,
            });
        };
        let mut buf = Vec::with_capacity(block);
        let n = match (&mut input).take(block as u64).read_to_end(&mut buf) {
            Ok(n) => n,
            Err(e) => return Err(fail(segment.read_error(&e), tx)),
        };
        if n == 0 {
            break;
        }
        sent += n as u64;
        if sent > segment.size {
            return Err(fail(segment.length_mismatch(None), tx));
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&buf);
        }
        let request = PutRequest {
            cluster_name: cluster.to_string(),
            wal_name: segment.wal_name.clone(),
            wal_block: Bytes::from(buf),
            segment_size: segment.size,
            send_to_tier2: false,
        };
        drop(slot.send(request));
        sent_bytes.add(n as u64);
        if n < block {
            break;
        }
    }
    if sent != segment.size {
        return Err(fail(segment.length_mismatch(Some(sent)), tx));
    }
    Ok(Sent {
        bytes: sent,
        digest: hasher.map(|h| h.finish()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_bounded() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(5), Duration::from_secs(4));
        assert_eq!(backoff(6), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn statuses_are_classified() {
        let f = Failure::from_status("upload", &tonic::Status::unavailable("down"));
        assert!(f.retryable);
        assert_eq!(f.kind, FailureKind::Refused);
        assert_eq!(f.message, "server rejected the upload: Unavailable: down");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let broken = Failure::from_status("upload", &tonic::Status::from_error(Box::new(io)));
        assert!(broken.retryable);
        assert_eq!(broken.kind, FailureKind::Transport);
        let text = &broken.message;
        assert!(
            text.starts_with("the connection to the server failed during the upload"),
            "{text}"
        );
        assert!(!Failure::from_status("x", &tonic::Status::invalid_argument("bad")).retryable);
        assert!(!Failure::from_status("x", &tonic::Status::failed_precondition("ro")).retryable);
    }
}
