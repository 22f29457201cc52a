//! Serving accepted connections: one HTTP/2 connection per client, with
//! the sink's HTTP/2 settings, and each connection's open streams counted
//! so a connection that holds no stream for the idle timeout is closed.
//!
//! hyper has no such setting, and HTTP/2 PINGs count as traffic to its
//! keepalive: a peer that finished TLS and HTTP/2 and then only pings would
//! hold its place under `--max-connections` forever. Here every request
//! holds a [`StreamGuard`] until its response body ends or is dropped; a
//! watcher per connection starts GOAWAY (hyper's graceful shutdown) once no
//! stream has been open for the timeout, and drops the connection if the
//! peer does not close it within [`CLOSE_GRACE`].

use std::convert::Infallible;
use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::ServiceExt;

use walplayer_klio::transport::Accepted;

/// How long a connection told to go away may take to close before it is
/// dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// What every connection is served with.
#[derive(Clone)]
pub struct Serving<S> {
    /// The gRPC routes, shared by every connection.
    pub service: S,
    pub http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    /// A connection with no stream open for this long is closed.
    pub idle: Duration,
}

/// Streams open on one connection, and how many ever started: a change
/// of either restarts the connection's idle clock.
#[derive(Clone, Copy, Default)]
struct StreamCount {
    open: usize,
    started: u64,
}

/// One stream's place in its connection's count, given back when the
/// response body ends or is dropped.
struct StreamGuard(watch::Sender<StreamCount>);

impl StreamGuard {
    fn open(count: &watch::Sender<StreamCount>) -> StreamGuard {
        count.send_modify(|c| {
            c.open += 1;
            c.started += 1;
        });
        StreamGuard(count.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.send_modify(|c| c.open -= 1);
    }
}

/// Serves each connection `incoming` yields until `shutdown` is cancelled,
/// then tells every connection to go away and waits for them to close.
pub async fn serve<S>(
    incoming: impl futures_util::Stream<Item = std::io::Result<Accepted>>,
    serving: Serving<S>,
    shutdown: CancellationToken,
) where
    S: tower::Service<hyper::Request<Body>, Response = hyper::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut incoming = pin!(incoming);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(accepted)) => accepted,
                Some(Err(e)) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    continue;
                }
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.cancelled() => break,
        };
        connections.spawn(connection(accepted, serving.clone(), shutdown.clone()));
    }
    shutdown.cancel();
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until it closes, is idle with no stream for
/// `serving.idle`, or `shutdown` is cancelled.
async fn connection<S>(accepted: Accepted, serving: Serving<S>, shutdown: CancellationToken)
where
    S: tower::Service<hyper::Request<Body>, Response = hyper::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let info: TcpConnectInfo = accepted.connect_info();
    let peer = info
        .remote_addr
        .map_or_else(|| "unknown peer".to_string(), |a| a.to_string());
    let (count, watching) = watch::channel(StreamCount::default());
    let service = serving.service;
    let requests = hyper::service::service_fn(move |request: hyper::Request<_>| {
        let guard = StreamGuard::open(&count);
        let mut request = request.map(Body::new);
        // What `Request::remote_addr` reads, as tonic's own server inserts it.
        request.extensions_mut().insert(info.clone());
        let call = service.clone().oneshot(request);
        async move {
            let response = call.await?;
            // The body owns the guard: the stream counts as open until
            // the body has been sent whole, or dropped by a reset.
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _held = &guard;
                    frame
                }))
            }))
        }
    });
    let mut conn = pin!(serving
        .http2
        .serve_connection(TokioIo::new(accepted), requests));
    let mut idle = pin!(idle_for(watching, serving.idle));
    // Set once GOAWAY went out for idleness: past it, the connection is
    // dropped whether the peer closed it or not.
    let mut drop_at: Option<tokio::time::Instant> = None;
    let mut stopping = false;
    loop {
        let grace = async {
            match drop_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!("connection from {peer} ended: {e}");
                }
                return;
            }
            _ = &mut idle, if drop_at.is_none() && !stopping => {
                tracing::info!(
                    "closing the connection from {peer}: no stream open for {} (--idle-connection-timeout)",
                    humantime::format_duration(serving.idle)
                );
                conn.as_mut().graceful_shutdown();
                drop_at = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            _ = shutdown.cancelled(), if !stopping => {
                // Streams in flight may finish; the connection then closes.
                stopping = true;
                if drop_at.is_none() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = grace => {
                tracing::info!(
                    "dropping the connection from {peer}: still open {CLOSE_GRACE:?} after GOAWAY"
                );
                return;
            }
        }
    }
}

/// Resolves once no stream has been open, and none started, for `idle`.
async fn idle_for(mut count: watch::Receiver<StreamCount>, idle: Duration) {
    loop {
        let open = count.borrow_and_update().open;
        if open > 0 {
            if count.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        }
        match tokio::time::timeout(idle, count.changed()).await {
            Err(_) => return,
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return std::future::pending().await,
        }
    }
}
