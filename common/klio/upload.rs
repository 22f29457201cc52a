//! Uploader: one Put stream per file, blocks read off the disk as they are
//! sent; retries with backoff; optional read-back verification.
//!
//! A reader task reads the file a chunk ([`CHUNK_BYTES`]) at a time
//! ([`crate::file_read`]: on the runtime's thread when the read cannot wait
//! on a disk, else on a blocking thread) and hands the chunks to the Put
//! stream ([`crate::put`]) through a channel of one, as parts of messages of
//! the chosen block size. It reads a chunk only once the channel has room
//! for it, so a job holds a chunk or two plus what HTTP/2 has not written
//! yet, whatever the block and file sizes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::endpoint::{status_text, Client};
use crate::file_read::SegmentInput;
use crate::metrics::ClientMetrics;
use crate::put::{self, Piece, PutBody, CHUNK_BYTES};
use crate::report::{FailureKind, FileReport, Outcome};
use crate::verify;
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
    let (tx, body) = PutBody::channel(1);
    let reader = {
        let (segment, cluster, block, digest, counter) = (
            segment.clone(),
            work.cluster.clone(),
            settings.block.bytes(),
            settings.verify,
            sent_bytes.clone(),
        );
        tokio::spawn(
            async move { read_blocks(&segment, &cluster, block, digest, &counter, tx).await },
        )
    };
    let call = put::put(client.channel(), body);
    tokio::pin!(call);
    tokio::pin!(reader);
    let rejected = |s: tonic::Status| Failure::from_status("upload", &s);
    let sent = tokio::select! {
        read = &mut reader => match read {
            Ok(Ok(sent)) => sent,
            // The reader dropped its sender without ending the stream, so
            // the stream is reset, never ended with a short message.
            Ok(Err(failure)) => return Err(failure),
            Err(e) => return Err(Failure::local(format!("reader task failed: {e}"))),
        },
        answer = &mut call => {
            // The server answered before we finished sending; whatever the
            // reader did, the answer decides.
            let answer = answer.map_err(rejected)?;
            return match reader.await {
                Ok(Ok(sent)) => check_written(answer.written_size, sent),
                Ok(Err(failure)) => Err(failure),
                Err(e) => Err(Failure::local(format!("reader task failed: {e}"))),
            };
        }
    };
    let answer = call.await.map_err(rejected)?;
    check_written(answer.written_size, sent)
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

/// Reads `segment` and sends it as messages of `block` bytes, each one's
/// head first, then its bytes a chunk at a time as they are read; returns
/// what was sent. The stream ends cleanly only once the file held exactly
/// its size: a shorter or longer file, or a read error, drops the sender
/// without [`Piece::End`], which resets the stream.
async fn read_blocks(
    segment: &Segment,
    cluster: &str,
    block: usize,
    digest: bool,
    sent_bytes: &SentBytes,
    tx: mpsc::Sender<Piece>,
) -> Result<Sent, Failure> {
    let mut input = SegmentInput::open(segment)
        .map_err(|e| Failure::local(format!("cannot open file: {e}")))?;
    let mut hasher = digest.then(|| ring::digest::Context::new(&ring::digest::SHA256));
    let mut sent = 0u64;
    // The call ended (the server answered early): it has the say.
    let answered = |sent| Sent {
        bytes: sent,
        digest: None,
    };
    while sent < segment.size {
        let len = (segment.size - sent).min(block as u64) as usize;
        let mut head = Some(
            put::message_head(cluster, &segment.wal_name, segment.size, len)
                .map_err(Failure::local)?,
        );
        let mut left = len;
        while left > 0 {
            // Wait for room before reading, not after: a chunk read ahead
            // while the one before still waits is memory held for no gain
            // (the read is much faster than the send).
            let Ok(slot) = tx.reserve().await else {
                return Ok(answered(sent));
            };
            let n = left.min(CHUNK_BYTES);
            let head = head.take().unwrap_or_default();
            // The block's first chunk carries its head, so a message starts
            // in one piece.
            let mut chunk = Vec::with_capacity(head.len() + n);
            chunk.extend_from_slice(&head);
            let (chunk, got) = input.read(chunk, n).await;
            let got = got.map_err(|e| Failure::local(segment.read_error(&e)))?;
            if got < n {
                return Err(Failure::local(
                    segment.length_mismatch(Some(sent + got as u64)),
                ));
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk[head.len()..]);
            }
            slot.send(Piece::Data(Bytes::from(chunk)));
            sent_bytes.add(n as u64);
            sent += n as u64;
            left -= n;
        }
    }
    // Reading on to the end also checks a gzip file's trailers.
    match input.read(Vec::new(), 1).await {
        (_, Ok(0)) => {}
        (_, Ok(_)) => return Err(Failure::local(segment.length_mismatch(None))),
        (_, Err(e)) => return Err(Failure::local(segment.read_error(&e))),
    }
    let Ok(slot) = tx.reserve().await else {
        return Ok(answered(sent));
    };
    slot.send(Piece::End);
    Ok(Sent {
        bytes: sent,
        digest: hasher.map(|h| h.finish()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use walplayer_proto::klio::PutRequest;

    /// What `read_blocks` sends of a file claimed to hold `size` bytes, in
    /// blocks of `block`, and how it ended.
    async fn pieces_of(
        data: &[u8],
        size: u64,
        block: usize,
    ) -> (Result<Sent, Failure>, Vec<Piece>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000000010000000000000001");
        std::fs::write(&path, data).unwrap();
        let segment = Segment {
            path,
            wal_name: "000000010000000000000001".into(),
            size,
            gzip: false,
            unreadable: None,
        };
        let (tx, mut rx) = mpsc::channel(1);
        let counted = SentBytes {
            total: SentCounter::default(),
            metric: Counter::default(),
        };
        let reader =
            tokio::spawn(
                async move { read_blocks(&segment, "c", block, true, &counted, tx).await },
            );
        let mut pieces = Vec::new();
        while let Some(piece) = rx.recv().await {
            pieces.push(piece);
        }
        (reader.await.unwrap(), pieces)
    }

    /// The messages in `pieces`, and whether they ended with `End`.
    fn messages(pieces: &[Piece]) -> (Vec<PutRequest>, bool) {
        let mut stream = Vec::new();
        let mut ended = false;
        for piece in pieces {
            match piece {
                Piece::Data(bytes) => stream.extend_from_slice(bytes),
                Piece::End => ended = true,
            }
        }
        let mut out = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            assert_eq!(rest[0], 0);
            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            out.push(prost::Message::decode(&rest[5..5 + len]).unwrap());
            rest = &rest[5 + len..];
        }
        (out, ended)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_goes_out_as_whole_blocks_in_chunks_and_ends_cleanly() {
        let data: Vec<u8> = (0..(3 * CHUNK_BYTES as u32 + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        let block = CHUNK_BYTES * 5 / 4;
        let (sent, pieces) = pieces_of(&data, data.len() as u64, block).await;
        let sent = sent.unwrap();
        assert_eq!(sent.bytes, data.len() as u64);
        let digest = ring::digest::digest(&ring::digest::SHA256, &data);
        assert_eq!(sent.digest.unwrap().as_ref(), digest.as_ref());
        assert!(pieces.len() > 4, "blocks are sent in chunks");
        assert!(pieces.iter().all(|p| match p {
            Piece::Data(b) => b.len() <= CHUNK_BYTES + 128,
            Piece::End => true,
        }));
        let (messages, ended) = messages(&pieces);
        assert!(ended);
        let sizes: Vec<usize> = messages.iter().map(|m| m.wal_block.len()).collect();
        assert_eq!(sizes, [block, block, data.len() - 2 * block]);
        let joined: Vec<u8> = messages.iter().flat_map(|m| m.wal_block.to_vec()).collect();
        assert_eq!(joined, data);
        assert!(messages.iter().all(|m| m.cluster_name == "c"
            && m.wal_name == "000000010000000000000001"
            && m.segment_size == data.len() as u64));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_that_changed_size_never_ends_its_stream() {
        let data = vec![7u8; CHUNK_BYTES + 10];
        for (size, says) in [
            (
                data.len() as u64 + 10,
                "file changed size while being sent: 262154 bytes instead of 262164",
            ),
            (
                data.len() as u64 - 10,
                "file changed size while being sent: more bytes instead of 262144",
            ),
            (
                data.len() as u64 - CHUNK_BYTES as u64,
                "more bytes instead of 10",
            ),
        ] {
            let (sent, pieces) = pieces_of(&data, size, CHUNK_BYTES * 2).await;
            let failure = sent.unwrap_err();
            assert_eq!(failure.kind, FailureKind::LocalFile);
            assert!(failure.message.contains(says), "{}", failure.message);
            assert!(
                !pieces.iter().any(|p| matches!(p, Piece::End)),
                "the stream must be reset, not ended"
            );
        }
    }

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
