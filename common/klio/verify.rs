//! Read-back verification: Get a stored file and compare it with what was
//! sent, byte for byte against the file and by SHA-256 against the bytes
//! streamed, so a mismatch says where the copies part.

use std::io::Read as _;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::endpoint::Client;
use crate::report::FailureKind;
use crate::upload::{Failure, Sent, Work};
use walplayer_proto::klio::GetRequest;
use walplayer_wal::source::Segment;

/// What the comparison of a stored copy found.
struct Compared {
    received: u64,
    first_difference: Option<u64>,
    digest: ring::digest::Digest,
}

/// Reads the file back with Get and checks it against `sent`.
pub async fn read_back(client: &mut Client, work: &Work, sent: &Sent) -> Result<(), Failure> {
    let request = GetRequest {
        cluster_name: work.cluster.clone(),
        wal_name: work.segment.wal_name.clone(),
    };
    let mut stream = client
        .wal
        .get(request)
        .await
        .map_err(|s| Failure::from_status("read-back of the file (--verify)", &s))?
        .into_inner();
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    let segment = work.segment.clone();
    let comparer = tokio::task::spawn_blocking(move || compare(&segment, rx));
    let mut declared = None;
    loop {
        match stream.message().await {
            Ok(Some(block)) => {
                declared.get_or_insert(block.segment_size);
                if tx.send(block.wal_block).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(s) => return Err(Failure::from_status("read-back of the file (--verify)", &s)),
        }
    }
    drop(tx);
    let compared = comparer
        .await
        .map_err(|e| Failure::local(format!("verification thread failed: {e}")))?
        .map_err(Failure::local)?;
    judge(sent, declared, &compared)
}

fn judge(sent: &Sent, declared: Option<u64>, c: &Compared) -> Result<(), Failure> {
    let failed = |what: String| {
        Err(Failure::fatal(
            FailureKind::Mismatch,
            format!("verification failed: {what}"),
        ))
    };
    if let Some(offset) = c.first_difference {
        return failed(format!(
            "the stored copy differs from the file from byte {offset} on (stored {} bytes, sent {})",
            c.received, sent.bytes
        ));
    }
    if c.received != sent.bytes {
        return failed(format!(
            "the server returned {} bytes, {} were sent",
            c.received, sent.bytes
        ));
    }
    if let Some(size) = declared.filter(|d| *d != sent.bytes) {
        return failed(format!(
            "the server reports a segment_size of {size}, {} were sent",
            sent.bytes
        ));
    }
    if let Some(d) = &sent.digest {
        if d.as_ref() != c.digest.as_ref() {
            return failed("the stored copy matches the file now but not what was sent: the file changed on disk during the run".into());
        }
    }
    Ok(())
}

/// Compares received blocks with the local file; blocking.
fn compare(segment: &Segment, mut rx: mpsc::Receiver<Bytes>) -> Result<Compared, String> {
    let mut local = segment
        .open()
        .map_err(|e| format!("verification: cannot open file: {e}"))?;
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    let mut received = 0u64;
    let mut first_difference = None;
    let mut mine = Vec::new();
    while let Some(block) = rx.blocking_recv() {
        hasher.update(&block);
        if first_difference.is_none() {
            mine.clear();
            std::io::Read::take(&mut local, block.len() as u64)
                .read_to_end(&mut mine)
                .map_err(|e| format!("verification: {}", segment.read_error(&e)))?;
            if let Some(i) = mine.iter().zip(block.iter()).position(|(a, b)| a != b) {
                first_difference = Some(received + i as u64);
            } else if mine.len() < block.len() {
                first_difference = Some(received + mine.len() as u64);
            }
        }
        received += block.len() as u64;
    }
    if first_difference.is_none() {
        // The stored copy may be shorter than the file.
        let mut rest = [0u8; 1];
        if std::io::Read::read(&mut local, &mut rest).map_err(|e| format!("verification: {e}"))? > 0
        {
            first_difference = Some(received);
        }
    }
    Ok(Compared {
        received,
        first_difference,
        digest: hasher.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(b: &[u8]) -> ring::digest::Digest {
        ring::digest::digest(&ring::digest::SHA256, b)
    }

    #[test]
    fn judgements_say_what_differs() {
        let sent = Sent {
            bytes: 4,
            digest: Some(digest(b"abcd")),
        };
        let ok = Compared {
            received: 4,
            first_difference: None,
            digest: digest(b"abcd"),
        };
        assert!(judge(&sent, Some(4), &ok).is_ok());
        let diff = Compared {
            received: 4,
            first_difference: Some(2),
            digest: digest(b"abXd"),
        };
        assert!(judge(&sent, Some(4), &diff)
            .unwrap_err()
            .message
            .contains("from byte 2"));
        let short = Compared {
            received: 3,
            first_difference: None,
            digest: digest(b"abc"),
        };
        assert!(judge(&sent, Some(4), &short)
            .unwrap_err()
            .message
            .contains("returned 3 bytes"));
        assert!(judge(&sent, Some(5), &ok)
            .unwrap_err()
            .message
            .contains("segment_size of 5"));
        let changed = Compared {
            received: 4,
            first_difference: None,
            digest: digest(b"zzzz"),
        };
        assert!(judge(&sent, Some(4), &changed)
            .unwrap_err()
            .message
            .contains("changed on disk"));
    }
}
