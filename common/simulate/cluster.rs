//! One simulated cluster sending its WAL as Klio's WAL sender does: one
//! `Put` per segment, opened when the segment's first byte exists and held
//! open while it fills; a block whenever `flush_bytes` have built up, at
//! each `flush_interval` tick when anything is waiting, and when the
//! segment is full; then the stream is closed and its `PutResult` awaited
//! before the next segment's Put opens.
//!
//! The schedule runs on whatever the server does: bytes it produced while a
//! send was blocked are simply sent late, in bigger blocks, and the lag and
//! backlog show it. A failed Put is reopened with backoff and the segment
//! resent from its start; its lag keeps counting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc::{self, Permit};
use tokio_util::sync::CancellationToken;

use walplayer_klio::endpoint::{Client, MAX_BLOCK_BYTES};
use walplayer_klio::put::{self, Piece, PutBody, CHUNK_BYTES};
use walplayer_klio::report::FailureKind;
use walplayer_klio::upload::{backoff, Failure};
use walplayer_wal::generate::{segment_range, Payload, SegmentShape};
use walplayer_wal::walname::SegmentName;

use crate::record::{Cluster, Recorder};
use crate::segments::{SegmentLine, Segments};

/// What every cluster of a run shares.
pub struct Shared {
    pub shape: SegmentShape,
    pub payload: Payload,
    /// Name of every cluster's first segment.
    pub first: SegmentName,
    pub flush_interval: Duration,
    pub flush_bytes: u64,
    /// Longest a block may wait for the transport, or a closed stream for
    /// its answer, before the attempt fails.
    pub timeout: Duration,
    pub recorder: Arc<Recorder>,
    pub segments: Segments,
}

/// How one attempt at a segment ended.
enum Attempt {
    Acked(Instant),
    Failed(Failure),
    /// The run is over (or the segment can never be completed).
    Stopped,
}

/// Runs one cluster until its schedule ends and its last whole segment is
/// answered, or `stop` is cancelled.
pub async fn run(
    cluster: Arc<Cluster>,
    mut client: Client,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let seg = shared.shape.segment_bytes;
    let mut name = shared.first;
    for k in 0u64.. {
        if k > 0 {
            name = name.next(seg);
        }
        let start = k * seg;
        if cluster.limit.is_some_and(|l| start >= l) {
            return;
        }
        // The Put opens when the segment's first byte exists.
        let first_byte = cluster.instant_of(start + 1);
        tokio::select! {
            _ = tokio::time::sleep_until(first_byte.into()) => {}
            _ = stop.cancelled() => return,
        }
        let mut failures = 0u32;
        let opened = std::time::SystemTime::now();
        loop {
            match put_segment(&cluster, &mut client, &shared, name, start, &stop).await {
                Attempt::Acked(at) => {
                    let lag = at.saturating_duration_since(cluster.instant_of(start + seg));
                    cluster.sample_backlog(at);
                    shared.recorder.segment_acked(&cluster, seg, lag);
                    cluster.pace.forget_before(start + seg);
                    shared.segments.write(&SegmentLine {
                        cluster: &cluster.name,
                        wal_name: &name.to_string(),
                        segment: k,
                        start: opened,
                        bytes: seg,
                        attempts: failures + 1,
                        lag,
                    });
                    break;
                }
                Attempt::Stopped => return,
                Attempt::Failed(f) => {
                    failures += 1;
                    shared.recorder.put_failed(&cluster, f.kind, &f.message);
                    tracing::debug!(
                        "{}/{name}: attempt {failures} failed: {}",
                        cluster.name,
                        f.message
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff(failures)) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
    }
}

/// Counts a Put as open while it lives.
struct OpenStream<'a>(&'a Recorder);

impl<'a> OpenStream<'a> {
    fn new(r: &'a Recorder) -> Self {
        r.open_streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenStream(r)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0
            .open_streams
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One Put of segment `name`, whose first byte is byte `start` of the
/// cluster's WAL.
async fn put_segment(
    cluster: &Arc<Cluster>,
    client: &mut Client,
    shared: &Arc<Shared>,
    name: SegmentName,
    start: u64,
    stop: &CancellationToken,
) -> Attempt {
    let _open = OpenStream::new(&shared.recorder);
    let (tx, body) = PutBody::channel(1);
    let opened = Instant::now();
    let call = put::put(client.channel(), body);
    tokio::pin!(call);
    let feeder = feed(cluster, shared, name, start, opened, tx);
    tokio::pin!(feeder);
    let timeout = shared.timeout;
    let fed = tokio::select! {
        answer = &mut call => {
            return match answer {
                Err(status) => Attempt::Failed(Failure::from_status("upload", &status)),
                Ok(r) => Attempt::Failed(Failure::fatal(
                    FailureKind::Mismatch,
                    format!(
                        "server answered (written_size {}) before the segment was complete",
                        r.written_size
                    ),
                )),
            };
        }
        fed = &mut feeder => fed,
        _ = stop.cancelled() => return Attempt::Stopped,
    };
    match fed {
        Fed::Complete => {}
        Fed::Failed(f) => return Attempt::Failed(f),
        // The schedule ends inside this segment: it can never be whole,
        // so its Put is cancelled (the server keeps nothing of it).
        Fed::Never => return Attempt::Stopped,
    }
    let answer = tokio::select! {
        a = tokio::time::timeout(timeout, &mut call) => a,
        _ = stop.cancelled() => return Attempt::Stopped,
    };
    let at = Instant::now();
    let seg = shared.shape.segment_bytes;
    match answer {
        Err(_) => Attempt::Failed(Failure {
            kind: FailureKind::Timeout,
            message: format!(
                "no answer {} after the segment's last block (raise --timeout if the server is just slow)",
                humantime::format_duration(timeout)
            ),
            retryable: true,
        }),
        Ok(Err(status)) => Attempt::Failed(Failure::from_status("upload", &status)),
        Ok(Ok(r)) if r.written_size != seg => Attempt::Failed(Failure::fatal(
            FailureKind::Mismatch,
            format!(
                "incomplete WAL file: server stored {} of the {seg} bytes sent",
                r.written_size
            ),
        )),
        Ok(Ok(_)) => Attempt::Acked(at),
    }
}

/// How feeding a segment's blocks ended.
enum Fed {
    Complete,
    Failed(Failure),
    /// The schedule ends before the segment is full.
    Never,
}

/// Sends segment `name` (cluster bytes `start..start + segment`) as its
/// bytes are produced, each block as one message whose bytes are generated
/// a chunk at a time, only once the stream has taken the chunk before: a
/// cluster the server holds back holds one chunk, not its backlog.
async fn feed(
    cluster: &Cluster,
    shared: &Shared,
    name: SegmentName,
    start: u64,
    opened: Instant,
    tx: mpsc::Sender<Piece>,
) -> Fed {
    let seg = shared.shape.segment_bytes;
    let end = start + seg;
    let interval = shared.flush_interval;
    let max_block = shared.flush_bytes.min(MAX_BLOCK_BYTES as u64);
    let wal_name = name.to_string();
    let mut first = true;
    let mut sent = start;
    // Ticks run from the cluster's start (staggered across clusters); the
    // first is the one after the segment opened.
    let tick_after = |t: Instant| {
        let since = t.saturating_duration_since(cluster.start).as_nanos();
        let step = interval.as_nanos().max(1);
        cluster.start + Duration::from_nanos(((since / step + 1) * step) as u64)
    };
    let mut tick = tick_after(Instant::now());
    while sent < end {
        if cluster.limit.is_some_and(|l| sent >= l) {
            return Fed::Never;
        }
        // Due: the next tick, or the moment a full block (or the rest of
        // the segment) exists, whichever is first.
        let full_at = cluster.instant_of((sent + max_block).min(end));
        let due = tick.min(full_at);
        tokio::time::sleep_until(due.into()).await;
        if due == tick {
            tick = tick_after(due);
        }
        let now = Instant::now();
        let available = cluster.produced(now).min(end);
        while sent < available {
            let len = (available - sent).min(max_block);
            let block_due = due.min(cluster.instant_of(sent + len));
            let mut head = match put::message_head(&cluster.name, &wal_name, seg, len as usize) {
                Ok(head) => Some(head),
                Err(e) => return Fed::Failed(Failure::local(e)),
            };
            let mut done = 0;
            while done < len {
                let slot = match room(shared, &tx).await {
                    Ok(slot) => slot,
                    Err(fed) => return fed,
                };
                let n = (len - done).min(CHUNK_BYTES as u64);
                let now = Instant::now();
                if done == 0 {
                    // The stream took everything before this block: it
                    // goes out now.
                    let late = now.saturating_duration_since(block_due);
                    let ttfb = std::mem::take(&mut first).then(|| now - opened);
                    shared.recorder.block_sent(n, late, ttfb);
                } else {
                    shared.recorder.more_sent(n);
                }
                let head = head.take().unwrap_or_default();
                let mut data = Vec::with_capacity(head.len() + n as usize);
                data.extend_from_slice(&head);
                if let Err(e) = segment_range(
                    name,
                    &shared.shape,
                    &shared.payload,
                    sent + done - start,
                    n as usize,
                    &mut data,
                ) {
                    return Fed::Failed(Failure::local(format!("cannot generate WAL: {e}")));
                }
                slot.send(Piece::Data(Bytes::from(data)));
                done += n;
            }
            sent += len;
        }
    }
    match room(shared, &tx).await {
        Ok(slot) => slot.send(Piece::End),
        Err(fed) => return fed,
    }
    Fed::Complete
}

/// Waits until the stream has taken the piece before, at most the
/// attempt's timeout.
async fn room<'a>(shared: &Shared, tx: &'a mpsc::Sender<Piece>) -> Result<Permit<'a, Piece>, Fed> {
    match tokio::time::timeout(shared.timeout, tx.reserve()).await {
        Ok(Ok(slot)) => Ok(slot),
        // The call ended; its answer says why.
        Ok(Err(_)) => std::future::pending().await,
        Err(_) => Err(Fed::Failed(Failure {
            kind: FailureKind::Timeout,
            message: format!(
                "the server took no block for {} (raise --timeout if it is just slow)",
                humantime::format_duration(shared.timeout)
            ),
            retryable: true,
        })),
    }
}
