//! Uploader: one Put stream per file, blocks read off the disk as they are
//! sent.
//!
//! A blocking reader thread fills blocks of the chosen size and hands them
//! to the gRPC stream through a channel of one, so a job never holds more
//! than a couple of blocks in memory, whatever the file size.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::common::klio::{status_text, Client};
use crate::common::report::FileReport;
use crate::common::source::Segment;
use crate::proto::klio::PutRequest;

/// How every file of a run is uploaded.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Payload bytes per PutRequest.
    pub block_bytes: usize,
    /// Longest one file may take, end to end.
    pub timeout: Duration,
}

/// One file to upload, as one cluster.
#[derive(Debug, Clone)]
pub struct Work {
    pub segment: Segment,
    pub cluster: String,
}

/// Uploads one file and reports what happened; never fails otherwise.
pub async fn upload(client: &mut Client, work: &Work, settings: &UploadSettings) -> FileReport {
    let start = SystemTime::now();
    let clock = Instant::now();
    let result = match tokio::time::timeout(settings.timeout, send(client, work, settings)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "timed out after {} (raise --timeout if the server is just slow)",
            humantime::format_duration(settings.timeout)
        )),
    };
    let elapsed = clock.elapsed();
    finish(work, start, elapsed, result)
}

/// The report of a file whose upload ended with `result` (bytes stored or
/// an error).
pub fn finish(
    work: &Work,
    start: SystemTime,
    elapsed: Duration,
    result: Result<u64, String>,
) -> FileReport {
    let (bytes, error) = match result {
        Ok(bytes) => (bytes, String::new()),
        Err(error) => (0, error),
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
        error,
    }
}

/// Why the reader stopped early; it keeps the sender alive so the stream is
/// cancelled, not ended cleanly, when the upload is dropped.
struct ReadFailure {
    message: String,
    _keep_open: mpsc::Sender<PutRequest>,
}

async fn send(client: &mut Client, work: &Work, settings: &UploadSettings) -> Result<u64, String> {
    let segment = &work.segment;
    if segment.size == 0 {
        return Err("file is empty: Klio needs a non-zero segment_size, nothing was sent".into());
    }
    let (tx, rx) = mpsc::channel(1);
    let reader = {
        let (segment, cluster, block) =
            (segment.clone(), work.cluster.clone(), settings.block_bytes);
        tokio::task::spawn_blocking(move || read_blocks(&segment, &cluster, block, tx))
    };
    let call = client.put(ReceiverStream::new(rx));
    tokio::pin!(call);
    tokio::pin!(reader);
    let sent = tokio::select! {
        read = &mut reader => match read {
            Ok(Ok(sent)) => sent,
            // Dropping `call` here resets the stream before the sender goes.
            Ok(Err(failure)) => return Err(failure.message),
            Err(e) => return Err(format!("reader thread failed: {e}")),
        },
        answer = &mut call => {
            // The server answered before we finished sending; whatever the
            // reader did, the answer decides.
            let answer = answer.map_err(|s| format!("server rejected the upload: {}", status_text(&s)))?;
            return match reader.await {
                Ok(Ok(sent)) => check_written(answer.into_inner().written_size, sent),
                Ok(Err(failure)) => Err(failure.message),
                Err(e) => Err(format!("reader thread failed: {e}")),
            };
        }
    };
    let answer = call
        .await
        .map_err(|s| format!("server rejected the upload: {}", status_text(&s)))?;
    check_written(answer.into_inner().written_size, sent)
}

fn check_written(written: u64, sent: u64) -> Result<u64, String> {
    if written != sent {
        return Err(format!(
            "incomplete WAL file: server stored {written} of the {sent} bytes sent"
        ));
    }
    Ok(written)
}

/// Reads `segment` in blocks and sends them; returns the bytes sent.
fn read_blocks(
    segment: &Segment,
    cluster: &str,
    block: usize,
    tx: mpsc::Sender<PutRequest>,
) -> Result<u64, ReadFailure> {
    let fail = |message: String, tx: mpsc::Sender<PutRequest>| ReadFailure {
        message,
        _keep_open: tx,
    };
    let mut input = match open(&segment.path, segment.gzip) {
        Ok(input) => input,
        Err(e) => return Err(fail(format!("cannot open file: {e}"), tx)),
    };
    let mut sent = 0u64;
    loop {
        let mut buf = vec![0u8; block];
        let n = match read_full(&mut input, &mut buf) {
            Ok(n) => n,
            Err(e) if segment.gzip && e.to_string().contains("checksum") => {
                return Err(fail(
                    "gzip trailer (CRC or size) does not match the decompressed data: the file is damaged".into(),
                    tx,
                ))
            }
            Err(e) if segment.gzip => return Err(fail(format!("gzip data is corrupt: {e}"), tx)),
            Err(e) => return Err(fail(format!("cannot read file: {e}"), tx)),
        };
        if n == 0 {
            break;
        }
        sent += n as u64;
        if sent > segment.size {
            return Err(fail(length_mismatch(segment, None), tx));
        }
        buf.truncate(n);
        let request = PutRequest {
            cluster_name: cluster.to_string(),
            wal_name: segment.wal_name.clone(),
            wal_block: Bytes::from(buf),
            segment_size: segment.size,
            send_to_tier2: false,
        };
        if tx.blocking_send(request).is_err() {
            // The call ended (the server answered early); it has the say.
            return Ok(sent);
        }
        if n < block {
            break;
        }
    }
    if sent != segment.size {
        return Err(fail(length_mismatch(segment, Some(sent)), tx));
    }
    Ok(sent)
}

fn length_mismatch(segment: &Segment, read: Option<u64>) -> String {
    let read = match read {
        Some(n) => format!("{n} bytes"),
        None => "more bytes".to_string(),
    };
    if segment.gzip {
        format!(
            "decompressed length differs from the gzip trailer: {read} instead of {} (file is damaged or not one gzip member)",
            segment.size
        )
    } else {
        format!(
            "file changed size while being sent: {read} instead of {}",
            segment.size
        )
    }
}

fn open(path: &Path, gzip: bool) -> std::io::Result<Box<dyn Read + Send>> {
    let file = File::open(path)?;
    Ok(if gzip {
        Box::new(flate2::read::GzDecoder::new(BufReader::with_capacity(
            256 << 10,
            file,
        )))
    } else {
        Box::new(file)
    })
}

/// Reads until `buf` is full or the input ends.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
