//! Sink: a Klio-compatible WAL server for tests, demos and calibration.
//!
//! - [`service`]: the WAL service (Put and Get) with the protocol's rules.
//! - this module: the listener, mutual TLS on every connection, the
//!   HTTP/2 settings, shutdown and the totals printed at the end.

pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::transport::Server;

use crate::common::klio::{CONNECTION_WINDOW, MAX_MESSAGE_BYTES, STREAM_WINDOW};
use crate::proto::klio::wal_server::WalServer;
pub use service::{Fsync, SinkTotals, Storage, WalService};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the sink needs to run.
pub struct SinkSettings {
    pub tls: Arc<ServerConfig>,
    pub storage: Storage,
    /// Refuse every upload, as a read-only Klio server does.
    pub read_only: bool,
}

/// A sink bound to its address, not yet serving.
pub struct Sink {
    listener: TcpListener,
    settings: SinkSettings,
}

impl Sink {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, settings: SinkSettings) -> std::io::Result<Sink> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Sink { listener, settings })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, then returns the totals.
    pub async fn serve(
        self,
        shutdown: CancellationToken,
    ) -> Result<Arc<SinkTotals>, tonic::transport::Error> {
        let service = WalService::new(self.settings.storage, self.settings.read_only);
        let totals = service.totals();
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(self.settings.tls);
        let accept_loop = tokio::spawn(accept(
            self.listener,
            acceptor,
            tx,
            shutdown.clone(),
            totals.clone(),
        ));
        let result = Server::builder()
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .tcp_nodelay(true)
            .add_service(
                WalServer::new(service)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(
                ReceiverStream::new(rx),
                shutdown.clone().cancelled_owned(),
            )
            .await;
        shutdown.cancel();
        let _ = accept_loop.await;
        result.map(|_| totals)
    }
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    connections: mpsc::Sender<std::io::Result<TlsConnection>>,
    shutdown: CancellationToken,
    totals: Arc<SinkTotals>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, connections, totals) =
            (acceptor.clone(), connections.clone(), totals.clone());
        // Handshakes run beside the accept loop: a slow client delays no one.
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = connections
                        .send(Ok(TlsConnection { inner: tls, peer }))
                        .await;
                }
                Ok(Err(e)) => {
                    totals.handshakes_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("TLS handshake with {peer} rejected: {e}");
                }
                Err(_) => {
                    totals.handshakes_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "TLS handshake with {peer} timed out after {HANDSHAKE_TIMEOUT:?}"
                    );
                }
            }
        });
    }
}

/// One accepted, handshaken client connection.
struct TlsConnection {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
}

impl Connected for TlsConnection {
    type ConnectInfo = SocketAddr;
    fn connect_info(&self) -> SocketAddr {
        self.peer
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Where the sink keeps what it receives.
pub fn storage(data: Option<PathBuf>, fsync: Fsync) -> Storage {
    match data {
        Some(dir) => Storage::Disk { dir, fsync },
        None => Storage::Discard,
    }
}
