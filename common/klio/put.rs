//! One Put stream, written without tonic's codec so a block is never
//! copied on its way to HTTP/2.
//!
//! tonic's encoder copies every message into its own buffer (prost copies
//! the `Bytes` block field). Here each message goes out as a small head,
//! [`message_head`] (the 5-byte gRPC prefix, every field but the block, then
//! the block field's key and length: protobuf does not care about field
//! order), followed by the block's own bytes in as many pieces as the
//! sender likes; h2 frames slices of them as they are. A gRPC message may
//! span any number of DATA frames, so a block can be sent while it is read,
//! a chunk at a time, and a job holds a chunk or two, not whole blocks.
//!
//! The request carries the headers the generated client sends; the answer
//! is read by tonic's own decoder, so statuses, trailers and limits behave
//! exactly as through the generated `WalClient::put`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tower::{Service, ServiceExt};
use walplayer_proto::klio::{PutRequest, PutResult};

use crate::endpoint::MAX_MESSAGE_BYTES;

/// The Put method's path, as the generated client calls it.
pub const PUT_PATH: &str = "/klio.wal.v1.WAL/Put";

/// Bytes of a block handed to the stream at once: what a job holds per
/// piece, whatever the block size.
pub const CHUNK_BYTES: usize = 256 << 10;

/// The `wal_block` field's key: field 3, length-delimited.
const BLOCK_KEY: u8 = (3 << 3) | 2;

/// The start of one Put message whose block is `block_len` bytes: the gRPC
/// prefix (not compressed, the message's length), every other field, and
/// the block field's key and length. The block's bytes follow it.
pub fn message_head(
    cluster: &str,
    wal_name: &str,
    segment_size: u64,
    block_len: usize,
) -> Result<Bytes, String> {
    let fields = PutRequest {
        cluster_name: cluster.to_string(),
        wal_name: wal_name.to_string(),
        wal_block: Bytes::new(),
        segment_size,
        send_to_tier2: false,
    };
    let len_field = prost::length_delimiter_len(block_len);
    let message = fields.encoded_len() + 1 + len_field + block_len;
    if message > MAX_MESSAGE_BYTES {
        return Err(format!(
            "a Put message of {message} bytes is past the {MAX_MESSAGE_BYTES} bytes a Klio server takes: use smaller blocks"
        ));
    }
    let mut head = BytesMut::with_capacity(5 + message - block_len);
    head.put_u8(0);
    head.put_u32(message as u32);
    fields
        .encode(&mut head)
        .map_err(|e| format!("cannot encode a Put message: {e}"))?;
    head.put_u8(BLOCK_KEY);
    prost::encode_length_delimiter(block_len, &mut head)
        .map_err(|e| format!("cannot encode a Put message: {e}"))?;
    Ok(head.freeze())
}

/// What the sender of a stream hands to its body.
#[derive(Debug)]
pub enum Piece {
    /// Bytes of the stream: heads and block bytes, in order.
    Data(Bytes),
    /// Every message was sent: the stream ends cleanly.
    End,
}

/// The request body of one Put: the pieces its sender hands over, in
/// order. It ends cleanly only on [`Piece::End`]; a sender that goes away
/// without it (a read failed, the attempt was dropped) resets the stream,
/// so the server never takes a short message as a whole one.
#[derive(Debug)]
pub struct PutBody {
    pieces: mpsc::Receiver<Piece>,
    ended: bool,
}

/// The error that resets a stream whose sender went away before its end.
#[derive(Debug, thiserror::Error)]
#[error("the Put stream was abandoned before its end")]
pub struct Abandoned;

impl PutBody {
    /// A body and the sender that feeds it, holding at most `room` pieces
    /// the transport has not taken yet.
    pub fn channel(room: usize) -> (mpsc::Sender<Piece>, PutBody) {
        let (tx, rx) = mpsc::channel(room);
        (
            tx,
            PutBody {
                pieces: rx,
                ended: false,
            },
        )
    }
}

impl Body for PutBody {
    type Data = Bytes;
    type Error = Abandoned;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Abandoned>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.pieces.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Piece::Data(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Piece::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(Some(Err(Abandoned))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// Makes one Put call on `channel` with `body` and returns the server's
/// answer; a status made by the transport carries its cause, as through
/// the generated client.
pub async fn put(channel: &Channel, body: PutBody) -> Result<PutResult, tonic::Status> {
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(PUT_PATH)
        .version(http::Version::HTTP_2)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(tonic::body::Body::new(body))
        .map_err(|e| tonic::Status::internal(format!("cannot build the Put request: {e}")))?;
    let mut channel = channel.clone();
    let ready = channel.ready().await.map_err(|e| {
        tonic::Status::unknown(format!(
            "Service was not ready: {}",
            tonic::codegen::StdError::from(e)
        ))
    })?;
    let response = ready
        .call(request)
        .await
        .map_err(|e| tonic::Status::from_error(Box::new(e)))?;
    answer(response).await
}

/// The one `PutResult` of a Put's response, read as tonic reads a
/// client-streaming call's answer: a status in the headers (trailers-only)
/// or the trailers wins; otherwise exactly one message, checked against
/// its prefix, uncompressed, at most [`MAX_MESSAGE_BYTES`].
pub async fn answer<B>(response: http::Response<B>) -> Result<PutResult, tonic::Status>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let decoder = tonic_prost::ProstDecoder::<PutResult>::default();
    let status_code = response.status();
    let trailers_only = tonic::Status::from_header_map(response.headers());
    let mut stream = match trailers_only {
        Some(status) if status.code() != tonic::Code::Ok => return Err(status),
        Some(_) => tonic::Streaming::new_empty(decoder, response.into_body()),
        None => tonic::Streaming::new_response(
            decoder,
            response.into_body(),
            status_code,
            None,
            Some(MAX_MESSAGE_BYTES),
        ),
    };
    let message = stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::internal("Missing response message."))?;
    stream.trailers().await?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// One whole message: its head, then its block in `pieces` parts.
    fn message(cluster: &str, wal: &str, size: u64, block: &[u8], pieces: usize) -> Vec<u8> {
        let mut out = message_head(cluster, wal, size, block.len())
            .unwrap()
            .to_vec();
        for part in block.chunks(block.len().div_ceil(pieces.max(1)).max(1)) {
            out.extend_from_slice(part);
        }
        out
    }

    fn decoded(bytes: &[u8]) -> PutRequest {
        assert_eq!(bytes[0], 0, "not compressed");
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        assert_eq!(
            len,
            bytes.len() - 5,
            "the prefix declares the whole message"
        );
        PutRequest::decode(&bytes[5..]).unwrap()
    }

    #[test]
    fn head_and_block_decode_as_the_same_put_request() {
        let block: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        for (cluster, wal, size, len) in [
            (
                "walplayer",
                "000000010000000000000001",
                16u64 << 20,
                300_000,
            ),
            ("", "", 1, 1),
            ("a-b_c.d", "00000002.history", u64::MAX, 127),
            (
                "x".repeat(200).as_str(),
                "0000000100000000000000FF.partial",
                128,
                128,
            ),
            ("c", "000000010000000000000002", 16 << 20, 0),
        ] {
            let bytes = message(cluster, wal, size, &block[..len], 3);
            let expected = PutRequest {
                cluster_name: cluster.to_string(),
                wal_name: wal.to_string(),
                wal_block: Bytes::copy_from_slice(&block[..len]),
                segment_size: size,
                send_to_tier2: false,
            };
            assert_eq!(decoded(&bytes), expected, "{cluster:?} {wal:?} {len}");
            // The same length as prost's own encoding, bar field order.
            assert_eq!(
                bytes.len(),
                5 + expected.encoded_len() + usize::from(len == 0) * 2
            );
        }
    }

    #[test]
    fn a_message_past_the_limit_is_refused_before_anything_is_sent() {
        let err = message_head("c", "000000010000000000000001", 1, MAX_MESSAGE_BYTES).unwrap_err();
        assert!(err.contains("use smaller blocks"), "{err}");
        assert!(message_head("c", "000000010000000000000001", 1, 8 << 20).is_ok());
    }

    #[tokio::test]
    async fn the_body_ends_cleanly_only_on_end() {
        let (tx, body) = PutBody::channel(4);
        tx.send(Piece::Data(Bytes::from_static(b"ab")))
            .await
            .unwrap();
        tx.send(Piece::End).await.unwrap();
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"ab");

        let (tx, body) = PutBody::channel(4);
        tx.send(Piece::Data(Bytes::from_static(b"ab")))
            .await
            .unwrap();
        drop(tx);
        assert!(body.collect().await.is_err(), "a dropped sender must reset");
    }

    type TestBody = http_body_util::StreamBody<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>,
        >,
    >;

    fn response(
        headers: &[(&str, &str)],
        body: Vec<u8>,
        trailers: &[(&str, &str)],
    ) -> http::Response<TestBody> {
        let mut frames = Vec::new();
        if !body.is_empty() {
            frames.push(Ok(Frame::data(Bytes::from(body))));
        }
        if !trailers.is_empty() {
            let mut map = http::HeaderMap::new();
            for (k, v) in trailers {
                map.insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            frames.push(Ok(Frame::trailers(map)));
        }
        let mut builder = http::Response::builder().status(200);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder
            .body(http_body_util::StreamBody::new(futures_util::stream::iter(
                frames,
            )))
            .unwrap()
    }

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    const GRPC: (&str, &str) = ("content-type", "application/grpc");

    #[tokio::test]
    async fn a_good_answer_is_its_written_size() {
        let result = PutResult { written_size: 42 }.encode_to_vec();
        let ok = response(&[GRPC], framed(0, &result), &[("grpc-status", "0")]);
        assert_eq!(answer(ok).await.unwrap().written_size, 42);
    }

    #[tokio::test]
    async fn a_trailers_only_error_is_the_servers_status() {
        let refused = response(
            &[GRPC, ("grpc-status", "3"), ("grpc-message", "bad%20name")],
            Vec::new(),
            &[],
        );
        let status = answer(refused).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "bad name");
        let trailer = response(
            &[GRPC],
            Vec::new(),
            &[("grpc-status", "9"), ("grpc-message", "ro")],
        );
        let status = answer(trailer).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn a_broken_answer_is_refused() {
        let result = PutResult { written_size: 1 }.encode_to_vec();
        let ok = [("grpc-status", "0")];
        // Compressed although no encoding was agreed.
        let status = answer(response(&[GRPC], framed(1, &result), &ok))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal, "{status}");
        assert!(status.message().contains("compressed-flag"), "{status}");
        // A flag that is neither 0 nor 1.
        let status = answer(response(&[GRPC], framed(7, &result), &ok))
            .await
            .unwrap_err();
        assert!(status.message().contains("compression flag"), "{status}");
        // A prefix declaring more than the largest message.
        let mut huge = vec![0u8];
        huge.extend_from_slice(&(MAX_MESSAGE_BYTES as u32 + 1).to_be_bytes());
        let status = answer(response(&[GRPC], huge, &ok)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status}");
        // A prefix declaring more than the body holds.
        let mut short = framed(0, &result);
        short[4] += 10;
        assert!(answer(response(&[GRPC], short, &ok)).await.is_err());
        // Not protobuf.
        let status = answer(response(&[GRPC], framed(0, &[0xff; 3]), &ok))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal, "{status}");
        // No message at all, status OK.
        let status = answer(response(&[GRPC], Vec::new(), &ok))
            .await
            .unwrap_err();
        assert_eq!(status.message(), "Missing response message.");
        // Not gRPC: an HTTP error without a status, as from a proxy.
        let mut proxy = response(&[], Vec::new(), &[]);
        *proxy.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        let status = answer(proxy).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
        // ... with a body that is not gRPC either: refused, not decoded.
        let mut page = response(&[], b"<html>".to_vec(), &[]);
        *page.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        let status = answer(page).await.unwrap_err();
        assert!(status.message().contains("503"), "{status}");
    }
}
