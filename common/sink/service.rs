//! The sink's WAL service: Put and Get with every rule of the protocol.
//!
//! Each Put stream writes its own `<data>/<cluster>/<wal>~<n>` (`~` is
//! outside Klio's name alphabet, so no WAL name reaches it), flushing (and
//! with `--fsync block`, fsyncing) after every block, refuses the first byte
//! past `segment_size`, and renames the file to its final name, atomically,
//! when exactly `segment_size` bytes arrived: a stored file is always one
//! stream's complete bytes. A short stream is kept as `<wal>~partial`; a
//! rejected or aborted one leaves nothing. Every rejected stream is logged
//! with its reason and counted.
//!
//! For tests, a [`FaultPlan`](crate::faults::FaultPlan) makes the service
//! misbehave (see [`crate::faults`]).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::put_decode::{Block, PutMessage, PutSource};

use crate::faults::{Fault, FaultPlan, Faults};
use crate::metrics::{Rejection, SinkMetrics, StreamEnd};
use walplayer_klio::endpoint::MAX_BLOCK_BYTES;
use walplayer_proto::klio::wal_server::Wal;
use walplayer_proto::klio::{GetRequest, GetResult, PutRequest, PutResult};
use walplayer_wal::walname::{check_cluster_name, has_only_name_chars, is_wal_name};

/// When the sink fsyncs what it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fsync {
    /// After every received block, like Klio.
    Block,
    /// Never (the page cache decides).
    None,
}

/// Where received WAL goes.
#[derive(Debug, Clone)]
pub enum Storage {
    Disk {
        dir: PathBuf,
        fsync: Fsync,
    },
    /// Validate and count, store nothing.
    Discard,
}

/// What the sink has seen; printed when it stops.
#[derive(Debug, Default)]
pub struct SinkTotals {
    pub completed: AtomicU64,
    pub partial: AtomicU64,
    pub rejected: AtomicU64,
    pub aborted: AtomicU64,
    pub bytes: AtomicU64,
    pub reads: AtomicU64,
    pub handshakes_rejected: AtomicU64,
}

impl SinkTotals {
    /// One line for the log.
    pub fn to_text(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{} files complete, {} left partial, {} streams rejected, {} aborted by the client, {} bytes received, {} read back, {} TLS handshakes rejected",
            get(&self.completed),
            get(&self.partial),
            get(&self.rejected),
            get(&self.aborted),
            get(&self.bytes),
            get(&self.reads),
            get(&self.handshakes_rejected)
        )
    }
}

/// The WAL service.
pub struct WalService {
    storage: Storage,
    read_only: bool,
    totals: Arc<SinkTotals>,
    faults: Option<Faults>,
    /// Numbers each stream's temporary file.
    streams: AtomicU64,
    /// Longest wait for a stream's next message.
    idle: Duration,
    /// `--put-log`: one line per Put stream received.
    put_log: Option<PutLog>,
    metrics: SinkMetrics,
}

/// How long a Put stream may stay silent before it is refused: the
/// client's own default `--timeout`, so a healthy client never meets it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

impl WalService {
    /// A service storing into `storage`; a `read_only` one refuses every
    /// Put with FAILED_PRECONDITION, as a read-only Klio server does.
    pub fn new(storage: Storage, read_only: bool) -> WalService {
        WalService {
            storage,
            read_only,
            totals: Arc::default(),
            faults: None,
            streams: AtomicU64::new(0),
            idle: DEFAULT_IDLE_TIMEOUT,
            put_log: None,
            metrics: SinkMetrics::default(),
        }
    }

    /// Writes one JSON line per Put stream received to `log`.
    pub fn with_put_log(mut self, log: std::fs::File) -> WalService {
        self.put_log = Some(PutLog(std::sync::Mutex::new(log)));
        self
    }

    /// Records into `metrics` (served by `--metrics-listen`).
    pub fn with_metrics(mut self, metrics: SinkMetrics) -> WalService {
        self.metrics = metrics;
        self
    }

    /// Injects `plan` into Put streams (tests only); stalled streams are
    /// released when `shutdown` is cancelled.
    pub fn with_faults(mut self, plan: FaultPlan, shutdown: CancellationToken) -> WalService {
        self.faults = Some(Faults::new(plan, shutdown));
        self
    }

    /// Refuses Put streams silent for longer than `idle`.
    pub fn with_idle_timeout(mut self, idle: Duration) -> WalService {
        self.idle = idle;
        self
    }

    /// The running totals.
    pub fn totals(&self) -> Arc<SinkTotals> {
        self.totals.clone()
    }
}

/// Bytes per Get message.
const GET_BLOCK: usize = 1 << 20;

/// The identity every message of one stream repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StreamId {
    cluster: String,
    wal: String,
    size: u64,
}

fn check_names(cluster: &str, wal: &str) -> Result<(), Status> {
    if let Err(e) = check_cluster_name(cluster) {
        return Err(Status::invalid_argument(format!(
            "invalid cluster_name: {e}"
        )));
    }
    if !has_only_name_chars(wal) {
        return Err(Status::invalid_argument(format!(
            "invalid wal_name {wal:?}: only letters, digits, '_', '-' and '.' are allowed"
        )));
    }
    if !is_wal_name(wal) {
        return Err(Status::invalid_argument(format!(
            "invalid wal_name {wal:?}: not a PostgreSQL WAL file name"
        )));
    }
    Ok(())
}

impl StreamId {
    fn of(msg: &PutMessage) -> Result<StreamId, PutFailure> {
        check_names(&msg.cluster_name, &msg.wal_name)
            .map_err(|s| PutFailure::Rejected(Rejection::InvalidName, s))?;
        if msg.segment_size == 0 {
            return Err(PutFailure::Rejected(
                Rejection::InvalidSize,
                Status::invalid_argument("segment_size must be non-zero"),
            ));
        }
        Ok(StreamId {
            cluster: msg.cluster_name.clone(),
            wal: msg.wal_name.clone(),
            size: msg.segment_size,
        })
    }

    fn check_coherent(&self, msg: &PutMessage) -> Result<(), PutFailure> {
        let fields = [
            ("cluster_name", msg.cluster_name != self.cluster),
            ("wal_name", msg.wal_name != self.wal),
            ("segment_size", msg.segment_size != self.size),
        ];
        match fields.iter().find(|(_, differs)| *differs) {
            Some((field, _)) => Err(PutFailure::Rejected(
                Rejection::Incoherent,
                Status::invalid_argument(format!(
                    "incoherent {field} within one stream (first message said {}/{} of {} bytes)",
                    self.cluster, self.wal, self.size
                )),
            )),
            None => Ok(()),
        }
    }
}

/// Separates a WAL name from the rest of a temporary file's name: `~` is
/// outside Klio's name alphabet, so no uploaded WAL (`X.partial` included)
/// can ever collide with a file the sink is still writing.
const TEMP_MARK: char = '~';

/// The file one stream writes: `<cluster>/<wal>~<stream>`, its own however
/// many streams upload the same name at once. Completing it is one atomic
/// rename to `<cluster>/<wal>`; a stream that ends short is kept as
/// `<cluster>/<wal>~partial`; a rejected or aborted stream leaves nothing.
struct Target {
    file: Option<File>,
    temp: PathBuf,
    cluster_dir: PathBuf,
    wal: String,
    /// Fsync after every block, timing each into these metrics.
    fsync: Option<SinkMetrics>,
}

impl Target {
    fn create(
        dir: &Path,
        id: &StreamId,
        stream: u64,
        fsync: Fsync,
        metrics: &SinkMetrics,
    ) -> std::io::Result<Target> {
        let cluster_dir = dir.join(&id.cluster);
        std::fs::create_dir_all(&cluster_dir)?;
        let temp = cluster_dir.join(format!("{}{TEMP_MARK}{stream}", id.wal));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        Ok(Target {
            file: Some(file),
            temp,
            cluster_dir,
            wal: id.wal.clone(),
            fsync: (fsync == Fsync::Block).then(|| metrics.clone()),
        })
    }

    /// Writes the block's pieces as they came, without joining them.
    async fn write(mut self, block: Block) -> std::io::Result<Target> {
        tokio::task::spawn_blocking(move || {
            let file = self.file.as_mut().expect("an open target has its file");
            block.write_to(file)?;
            if let Some(metrics) = &self.fsync {
                let clock = Instant::now();
                file.sync_data()?;
                metrics.fsync(clock.elapsed());
            }
            Ok(self)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Stores the stream's bytes under the WAL name, replacing any earlier
    /// copy whole.
    fn complete(self) -> std::io::Result<PathBuf> {
        let done = self.cluster_dir.join(&self.wal);
        self.rename_to(&done)?;
        Ok(done)
    }

    /// Keeps a short stream's bytes for inspection, outside the WAL names.
    fn keep_partial(self) -> std::io::Result<()> {
        let kept = self
            .cluster_dir
            .join(format!("{}{TEMP_MARK}partial", self.wal));
        self.rename_to(&kept)
    }

    fn rename_to(mut self, to: &Path) -> std::io::Result<()> {
        drop(self.file.take());
        std::fs::rename(&self.temp, to)
    }
}

impl Drop for Target {
    /// A target dropped before it was renamed belongs to a stream that was
    /// rejected or aborted: it must leave nothing behind.
    fn drop(&mut self) {
        if self.file.take().is_some() {
            if let Err(e) = std::fs::remove_file(&self.temp) {
                tracing::warn!("cannot remove {}: {e}", self.temp.display());
            }
        }
    }
}

/// `--put-log`: how clients stream, one JSON line per Put stream that
/// ended (complete or partial): cluster, WAL name, messages, bytes, and when
/// it opened and closed (Unix nanoseconds).
struct PutLog(std::sync::Mutex<std::fs::File>);

impl PutLog {
    fn write(
        &self,
        id: &StreamId,
        end: &PutEnd,
        bytes: u64,
        messages: u64,
        opened: std::time::SystemTime,
    ) {
        let nanos = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        };
        let line = serde_json::json!({
            "cluster": id.cluster,
            "walName": id.wal,
            "complete": matches!(end, PutEnd::Complete),
            "messages": messages,
            "bytes": bytes,
            "openedNs": nanos(opened),
            "closedNs": nanos(std::time::SystemTime::now()),
        });
        let mut file = self.0.lock().expect("put log lock");
        if let Err(e) = writeln!(file, "{line}") {
            tracing::warn!("cannot write --put-log: {e}");
        }
    }
}

/// A Put stream not yet counted; dropped unsettled, it was reset by the
/// client and counts as aborted.
struct Unsettled<'a> {
    totals: &'a SinkTotals,
    peer: &'a str,
    settled: bool,
}

impl Unsettled<'_> {
    /// The stream reached an outcome, which counts itself.
    fn settle(&mut self) {
        self.settled = true;
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.totals.aborted.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("Put stream from {} reset by the client", self.peer);
        }
    }
}

/// How a Put stream ended.
enum PutEnd {
    Complete,
    Partial,
    /// Fault injected: stays partial, answered one byte short.
    ShortWrite,
}

impl WalService {
    async fn receive(
        &self,
        stream: &mut impl PutSource,
        written: &mut u64,
        messages: &mut u64,
    ) -> Result<Option<(StreamId, PutEnd)>, PutFailure> {
        let mut open: Option<Open> = None;
        loop {
            if let Some(faults) = &self.faults {
                faults.before_message().await;
            }
            let Some(msg) = self.next_message(stream).await? else {
                break;
            };
            *messages += 1;
            if self.read_only {
                return Err(PutFailure::Rejected(
                    Rejection::ReadOnly,
                    Status::failed_precondition("server is read-only"),
                ));
            }
            let o = match &mut open {
                None => open.insert(self.open(&msg).await?),
                Some(o) => {
                    o.id.check_coherent(&msg)?;
                    o
                }
            };
            let len = check_block(&msg, *written, o.id.size)?;
            if len == 0 {
                // Nothing to write, so nothing to sync.
                continue;
            }
            if let Some(faults) = &self.faults {
                faults.before_block(o.fault).await;
            }
            if let Some(t) = o.target.take() {
                o.target = Some(t.write(msg.wal_block).await.map_err(|e| {
                    PutFailure::Rejected(
                        Rejection::Storage,
                        Status::internal(format!("cannot write block: {e}")),
                    )
                })?);
            }
            *written += len;
            self.totals.bytes.fetch_add(len, Ordering::Relaxed);
            self.metrics.received(len);
        }
        match open {
            Some(o) => o.close(*written).map(Some),
            None => Ok(None),
        }
    }

    /// The stream's next message; a stream silent for the idle timeout is
    /// refused.
    async fn next_message(
        &self,
        stream: &mut impl PutSource,
    ) -> Result<Option<PutMessage>, PutFailure> {
        match tokio::time::timeout(self.idle, stream.next_message()).await {
            Ok(next) => next.map_err(PutFailure::Aborted),
            Err(_) => Err(PutFailure::Rejected(
                Rejection::IdleTimeout,
                Status::deadline_exceeded(format!(
                    "no message for {}: an idle stream is closed (sink --idle-timeout)",
                    humantime::format_duration(self.idle)
                )),
            )),
        }
    }

    /// Takes a stream's first message: its fault (tests only), its identity
    /// and the file it writes.
    async fn open(&self, first: &PutMessage) -> Result<Open, PutFailure> {
        let mut fault = None;
        if let Some(faults) = &self.faults {
            fault = faults.next_stream();
            if let Some(f) = fault {
                if let Some(status) = faults.strike_early(f).await {
                    return Err(PutFailure::Injected(status));
                }
            }
        }
        let id = StreamId::of(first)?;
        let mut target = None;
        if let Storage::Disk { dir, fsync } = &self.storage {
            let stream = self.streams.fetch_add(1, Ordering::Relaxed);
            target = Some(
                Target::create(dir, &id, stream, *fsync, &self.metrics).map_err(|e| {
                    PutFailure::Rejected(
                        Rejection::Storage,
                        Status::internal(format!(
                            "cannot create a file for {}/{}: {e}",
                            id.cluster, id.wal
                        )),
                    )
                })?,
            );
        }
        Ok(Open { id, target, fault })
    }
}

/// A stream after its first message.
struct Open {
    id: StreamId,
    target: Option<Target>,
    fault: Option<Fault>,
}

impl Open {
    /// The client closed its side after `written` bytes: complete the file,
    /// or keep what came as partial.
    fn close(self, written: u64) -> Result<(StreamId, PutEnd), PutFailure> {
        let Open { id, target, fault } = self;
        let internal = |what: &str, e: std::io::Error| {
            PutFailure::Rejected(
                Rejection::Storage,
                Status::internal(format!("cannot {what} {}/{}: {e}", id.cluster, id.wal)),
            )
        };
        let short_write = fault.is_some_and(|f| f.short_writes());
        if short_write || written != id.size {
            if let Some(t) = target {
                t.keep_partial()
                    .map_err(|e| internal("keep the partial", e))?;
            }
            let end = if short_write {
                PutEnd::ShortWrite
            } else {
                PutEnd::Partial
            };
            return Ok((id, end));
        }
        if let Some(t) = target {
            t.complete().map_err(|e| internal("complete", e))?;
        }
        Ok((id, PutEnd::Complete))
    }
}

/// Checks one message's block against Klio's limit and the declared size;
/// returns its length.
fn check_block(msg: &PutMessage, written: u64, size: u64) -> Result<u64, PutFailure> {
    let len = msg.wal_block.len() as u64;
    if msg.wal_block.len() > MAX_BLOCK_BYTES {
        return Err(PutFailure::Rejected(
            Rejection::BlockTooLarge,
            Status::invalid_argument(format!(
                "block of {len} bytes exceeds the largest block payload ({MAX_BLOCK_BYTES} bytes)"
            )),
        ));
    }
    if written + len > size {
        return Err(PutFailure::Rejected(
            Rejection::PastSegmentSize,
            Status::invalid_argument(format!(
                "the stream sent {} bytes, more than its segment_size of {size}: refused at the first byte past it",
                written + len
            )),
        ));
    }
    Ok(len)
}

enum PutFailure {
    Rejected(Rejection, Status),
    Aborted(Status),
    /// A fault plan made the sink fail this stream.
    Injected(Status),
}

impl WalService {
    /// Serves one Put stream from `peer`, its messages read from `stream`,
    /// whoever decoded them: every Put, through the sink's own decoder
    /// ([`crate::routes`]) or tonic's, takes this one path.
    pub async fn put_stream(
        &self,
        peer: &str,
        mut stream: impl PutSource,
    ) -> Result<PutResult, Status> {
        let _open = self.metrics.stream_opened();
        let (mut written, mut messages) = (0, 0);
        let opened = std::time::SystemTime::now();
        // A client's RST_STREAM while this handler waits on anything but
        // the stream (a block being written, say) makes the server drop
        // this future: the guard still counts that stream as aborted.
        let mut guard = Unsettled {
            totals: &self.totals,
            peer,
            settled: false,
        };
        let received = self.receive(&mut stream, &mut written, &mut messages).await;
        guard.settle();
        if let (Some(log), Ok(Some((id, end)))) = (&self.put_log, &received) {
            log.write(id, end, written, messages, opened);
        }
        match received {
            Ok(Some((id, PutEnd::Complete))) => {
                self.totals.completed.fetch_add(1, Ordering::Relaxed);
                self.metrics.ended(StreamEnd::Complete);
                tracing::debug!(
                    "{}/{} complete ({written} bytes) from {peer}",
                    id.cluster,
                    id.wal
                );
            }
            Ok(Some((id, PutEnd::ShortWrite))) => {
                self.totals.partial.fetch_add(1, Ordering::Relaxed);
                self.metrics.ended(StreamEnd::Partial);
                tracing::warn!(
                    "{}/{} from {peer}: received {written} bytes, answering one byte short (--fault short-write)",
                    id.cluster,
                    id.wal
                );
                written = written.saturating_sub(1);
            }
            Ok(Some((id, PutEnd::Partial))) => {
                self.totals.partial.fetch_add(1, Ordering::Relaxed);
                self.metrics.ended(StreamEnd::Partial);
                tracing::warn!(
                    "{}/{} from {peer} stays partial: {written} of {} bytes",
                    id.cluster,
                    id.wal,
                    id.size
                );
            }
            Ok(None) => {}
            Err(PutFailure::Rejected(reason, status)) => {
                self.totals.rejected.fetch_add(1, Ordering::Relaxed);
                self.metrics.rejected(reason);
                tracing::warn!("rejected a Put stream from {peer}: {}", status.message());
                return Err(status);
            }
            Err(PutFailure::Injected(status)) => {
                self.totals.rejected.fetch_add(1, Ordering::Relaxed);
                self.metrics.rejected(Rejection::Fault);
                tracing::warn!("failing a Put stream from {peer}: {}", status.message());
                return Err(status);
            }
            Err(PutFailure::Aborted(status)) => {
                self.totals.aborted.fetch_add(1, Ordering::Relaxed);
                self.metrics.ended(StreamEnd::Aborted);
                tracing::warn!(
                    "Put stream from {peer} aborted after {written} bytes: {}",
                    status.message()
                );
                return Err(status);
            }
        }
        Ok(PutResult {
            written_size: written,
        })
    }
}

#[tonic::async_trait]
impl Wal for WalService {
    /// The sink routes Put to its own decoder ([`crate::routes`]), so this
    /// runs only when the generated `WalServer` is served alone: tonic's
    /// decoded messages then take the same path.
    async fn put(
        &self,
        request: Request<Streaming<PutRequest>>,
    ) -> Result<Response<PutResult>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown peer".into());
        self.put_stream(&peer, request.into_inner())
            .await
            .map(Response::new)
    }

    type GetStream =
        std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<GetResult, Status>> + Send>>;

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Self::GetStream>, Status> {
        let GetRequest {
            cluster_name,
            wal_name,
        } = request.into_inner();
        check_names(&cluster_name, &wal_name)?;
        let Storage::Disk { dir, .. } = &self.storage else {
            return Err(Status::failed_precondition(
                "this sink discards what it receives (--discard): nothing to read back",
            ));
        };
        let path = dir.join(&cluster_name).join(&wal_name);
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Status::not_found(format!("no WAL file {wal_name} for cluster {cluster_name}"))
            }
            _ => Status::internal(format!("cannot open {cluster_name}/{wal_name}: {e}")),
        })?;
        let size = file
            .metadata()
            .map_err(|e| Status::internal(format!("cannot stat {cluster_name}/{wal_name}: {e}")))?
            .len();
        self.totals.reads.fetch_add(1, Ordering::Relaxed);
        // A stream, not a task: each block is read when the client wants
        // it, so a client that never reads holds no thread, only its file.
        let file = tokio::fs::File::from_std(file);
        let blocks = futures_util::stream::unfold(Some(file), move |file| async move {
            let mut file = file?;
            let mut block = vec![0u8; GET_BLOCK];
            match file.read(&mut block).await {
                Ok(0) => None,
                Ok(n) => {
                    block.truncate(n);
                    let result = GetResult {
                        wal_block: block.into(),
                        segment_size: size,
                    };
                    Some((Ok(result), Some(file)))
                }
                Err(e) => Some((Err(Status::internal(format!("read failed: {e}"))), None)),
            }
        });
        Ok(Response::new(Box::pin(blocks)))
    }
}
