//! The sink's gRPC routes: Put through the sink's own decoder
//! ([`crate::put_decode`]), every other path through tonic's generated
//! `WalServer`, as before.
//!
//! Put is the sink's hot path: tonic's `Streaming` would copy every DATA
//! frame into its decode buffer. Here the request body goes to
//! [`PutDecoder`] and its messages to [`WalService::put_stream`], the one
//! path every Put takes; the answer is what tonic sends for a
//! client-streaming call: `application/grpc` headers, one length-prefixed
//! `PutResult`, `grpc-status: 0` in the trailers, or on failure the status
//! as a trailers-only response (`Status::into_http`, as tonic does).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use prost::Message;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tonic::Status;
use walplayer_klio::endpoint::MAX_MESSAGE_BYTES;
use walplayer_klio::put::PUT_PATH;
use walplayer_proto::klio::wal_server::WalServer;
use walplayer_proto::klio::PutResult;

use crate::put_decode::PutDecoder;
use crate::service::WalService;

/// The generated service's path for Put (what clients call).
pub const PUT: &str = PUT_PATH;

/// Put to the sink's decoder, the rest to tonic.
#[derive(Clone)]
pub struct Routes {
    service: Arc<WalService>,
    tonic: WalServer<WalService>,
}

impl Routes {
    /// Routes for `service`, with the message limits the sink takes.
    pub fn new(service: WalService) -> Routes {
        let service = Arc::new(service);
        let tonic = WalServer::from_arc(service.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Routes { service, tonic }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl tower::Service<http::Request<Body>> for Routes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Answer {
        // By path alone, as the generated service routes.
        if request.uri().path() == PUT {
            let service = self.service.clone();
            Box::pin(async move { Ok(put(&service, request).await) })
        } else {
            tower::Service::call(&mut self.tonic, request)
        }
    }
}

/// One Put call, answered as tonic answers a client-streaming call.
async fn put(service: &WalService, request: http::Request<Body>) -> http::Response<Body> {
    if let Err(status) = check_encoding(request.headers()) {
        return status.into_http();
    }
    // What `tonic::Request::remote_addr` reads (connections.rs inserts it).
    let peer = request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
        .map_or_else(|| "unknown peer".to_string(), |a| a.to_string());
    let decoder = PutDecoder::new(request.into_body());
    match service.put_stream(&peer, decoder).await {
        Ok(result) => answer(&result),
        Err(status) => status.into_http(),
    }
}

/// Refuses a request whose messages are compressed, as tonic does for an
/// encoding it was not told to accept (the sink accepts none).
fn check_encoding(headers: &http::HeaderMap) -> Result<(), Status> {
    let Some(encoding) = headers.get("grpc-encoding") else {
        return Ok(());
    };
    if encoding.as_bytes() == b"identity" {
        return Ok(());
    }
    let name = String::from_utf8_lossy(encoding.as_bytes());
    let mut status = Status::unimplemented(format!(
        "Content is compressed with `{name}` which isn't supported (the sink takes only uncompressed messages: turn compression off)"
    ));
    status.metadata_mut().insert(
        "grpc-accept-encoding",
        tonic::metadata::MetadataValue::from_static("identity"),
    );
    Err(status)
}

/// A successful answer: one length-prefixed `PutResult`, then
/// `grpc-status: 0` in the trailers.
fn answer(result: &PutResult) -> http::Response<Body> {
    let len = result.encoded_len();
    let mut message = BytesMut::with_capacity(5 + len);
    message.put_u8(0);
    message.put_u32(len as u32);
    result
        .encode(&mut message)
        .expect("a buffer sized for the message holds it");
    let mut trailers = http::HeaderMap::new();
    trailers.insert(Status::GRPC_STATUS, http::HeaderValue::from_static("0"));
    let frames: [Result<Frame<Bytes>, Infallible>; 2] = [
        Ok(Frame::data(message.freeze())),
        Ok(Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let mut response = http::Response::new(Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_success_is_one_message_then_status_ok_in_the_trailers() {
        let response = answer(&PutResult {
            written_size: 16 << 20,
        });
        assert_eq!(response.headers()["content-type"], "application/grpc");
        assert!(response.headers().get("grpc-status").is_none());
        // Read back by the client's own reader of a Put answer.
        let result = walplayer_klio::put::answer(response).await.unwrap();
        assert_eq!(result.written_size, 16 << 20);

        let collected = answer(&PutResult { written_size: 0 })
            .into_body()
            .collect()
            .await
            .unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(
            &collected.to_bytes()[..],
            &[0, 0, 0, 0, 0],
            "an empty PutResult"
        );
    }

    #[test]
    fn a_compressed_request_is_refused_and_identity_is_not() {
        let mut headers = http::HeaderMap::new();
        assert!(check_encoding(&headers).is_ok());
        headers.insert("grpc-encoding", "identity".parse().unwrap());
        assert!(check_encoding(&headers).is_ok());
        headers.insert("grpc-encoding", "gzip".parse().unwrap());
        let status = check_encoding(&headers).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(status.message().contains("`gzip`"), "{status:?}");
        assert!(
            status.message().contains("turn compression off"),
            "{status:?}"
        );
        assert_eq!(
            status.metadata().get("grpc-accept-encoding").unwrap(),
            "identity"
        );
    }

    fn call(path: &str, frames: Vec<u8>) -> http::Request<Body> {
        let body = http_body_util::Full::new(Bytes::from(frames));
        let mut request = http::Request::new(Body::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = path.parse().unwrap();
        request
            .headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        request
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    fn routes() -> Routes {
        Routes::new(WalService::new(crate::service::Storage::Discard, false))
    }

    #[tokio::test]
    async fn put_goes_to_the_sinks_decoder_and_counts_its_bytes() {
        let mut routes = routes();
        let totals = routes.service.totals();
        let message = walplayer_proto::klio::PutRequest {
            cluster_name: "walplayer".into(),
            wal_name: "000000010000000000000001".into(),
            wal_block: Bytes::from(vec![7u8; 1000]),
            segment_size: 2000,
            send_to_tier2: false,
        };
        let mut frames = framed(&message.encode_to_vec());
        frames.extend_from_slice(&frames.clone());
        let response = tower::Service::call(&mut routes, call(PUT, frames))
            .await
            .unwrap();
        let result = walplayer_klio::put::answer(response).await.unwrap();
        assert_eq!(result.written_size, 2000);
        assert_eq!(
            totals.completed.load(std::sync::atomic::Ordering::Relaxed),
            1
        );

        // A prefix past the limit: RESOURCE_EXHAUSTED is the sink's decoder
        // (tonic's would answer OUT_OF_RANGE).
        let mut huge = vec![0u8];
        huge.extend_from_slice(&(MAX_MESSAGE_BYTES as u32 + 1).to_be_bytes());
        let response = tower::Service::call(&mut routes, call(PUT, huge))
            .await
            .unwrap();
        let status = walplayer_klio::put::answer(response).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert_eq!(totals.aborted.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    /// The generated service served alone (tonic's decoder) reaches the
    /// same `put_stream`: same answers, same texts.
    #[tokio::test]
    async fn tonics_put_takes_the_same_path() {
        let put = |cluster: &str| walplayer_proto::klio::PutRequest {
            cluster_name: cluster.into(),
            wal_name: "000000010000000000000001".into(),
            wal_block: Bytes::from(vec![1u8; 10]),
            segment_size: 10,
            send_to_tier2: false,
        };
        let discard = || WalService::new(crate::service::Storage::Discard, false);
        for cluster in ["walplayer", "bad name"] {
            let frames = framed(&put(cluster).encode_to_vec());
            let mut routes = routes();
            let ours = tower::Service::call(&mut routes, call(PUT, frames.clone()))
                .await
                .unwrap();
            let mut tonic = WalServer::new(discard());
            let theirs = tower::Service::call(&mut tonic, call(PUT, frames))
                .await
                .unwrap();
            let ours = walplayer_klio::put::answer(ours).await;
            let theirs = walplayer_klio::put::answer(theirs).await;
            match (ours, theirs) {
                (Ok(a), Ok(b)) => assert_eq!((a.written_size, b.written_size), (10, 10)),
                (Err(a), Err(b)) => {
                    assert_eq!((a.code(), a.message()), (b.code(), b.message()));
                    assert!(a.message().contains("invalid cluster_name"), "{a:?}");
                }
                (a, b) => panic!("{cluster}: the two paths differ: {a:?} against {b:?}"),
            }
        }
    }

    #[tokio::test]
    async fn other_paths_go_to_tonic() {
        let mut routes = routes();
        let get = walplayer_proto::klio::GetRequest {
            cluster_name: "walplayer".into(),
            wal_name: "000000010000000000000001".into(),
        };
        let request = call("/klio.wal.v1.WAL/Get", framed(&get.encode_to_vec()));
        let response = tower::Service::call(&mut routes, request).await.unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("--discard"), "{status:?}");

        let request = call("/klio.wal.v1.WAL/Nothing", Vec::new());
        let response = tower::Service::call(&mut routes, request).await.unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    }
}
