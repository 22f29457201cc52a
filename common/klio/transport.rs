//! Transport under every gRPC channel walplayer opens or serves: TCP with
//! the protocol's buffer and window settings, and rustls when configured.
//!
//! TLS is done here rather than inside tonic, so a failed handshake reaches
//! the user as rustls's own reason, and the server side can log every
//! refused client by address.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::split_address;

/// HTTP/2 initial stream window (16 MiB).
pub const STREAM_WINDOW: u32 = 16 << 20;
/// HTTP/2 initial connection window (64 MiB).
pub const CONNECTION_WINDOW: u32 = 64 << 20;
/// Socket read/write buffer hint (1 MiB).
pub const SOCKET_BUFFER: usize = 1 << 20;
/// How long establishing one connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to finish its TLS handshake with us.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS for one outgoing connection: the config and the name to verify.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl ClientTls {
    /// TLS to `address`'s host with `config`.
    pub fn for_address(address: &str, config: Arc<ClientConfig>) -> Result<ClientTls, String> {
        let (host, _) = split_address(address)?;
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
        Ok(ClientTls {
            config,
            server_name,
        })
    }
}

/// HTTP/2 keepalive for long-lived channels, so a peer that vanished
/// without closing is noticed in bounded time.
#[derive(Clone, Copy, Debug)]
pub struct Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Opens one HTTP/2 connection to `address` (TCP, then TLS if given); the
/// error is the cause alone, for the caller to say what it was connecting to.
pub async fn connect(
    address: &str,
    tls: Option<ClientTls>,
    keepalive: Option<Keepalive>,
) -> Result<Channel, String> {
    let uri: Uri = format!("http://{address}")
        .parse()
        .map_err(|e| format!("{address}: not a usable address: {e}"))?;
    let mut endpoint = Endpoint::from(uri)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .tcp_nodelay(true);
    if let Some(k) = keepalive {
        endpoint = endpoint
            .http2_keep_alive_interval(k.interval)
            .keep_alive_timeout(k.timeout)
            .keep_alive_while_idle(true);
    }
    let target = address.to_string();
    let connector = tower::service_fn(move |_: Uri| {
        let (target, tls) = (target.clone(), tls.clone());
        async move {
            // Our own bound on TCP connect and TLS handshake, so a timeout
            // is known by its kind, not by a library's words.
            let dial = async {
                let tcp = TcpStream::connect(&target).await?;
                tune_socket(&tcp);
                Ok::<_, std::io::Error>(match tls {
                    Some(tls) => {
                        let s = TlsConnector::from(tls.config)
                            .connect(tls.server_name, tcp)
                            .await?;
                        Stream::ClientTls(Box::new(s))
                    }
                    None => Stream::Plain(tcp),
                })
            };
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, dial)
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            if timed_out(&e) {
                format!("timed out: no answer within {CONNECT_TIMEOUT:?} (TCP connect and TLS handshake)")
            } else {
                error_chain(&e)
            }
        })
}

/// Whether `e` or a cause under it is our connect timeout.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

fn tune_socket(tcp: &TcpStream) {
    let sock = socket2::SockRef::from(tcp);
    // Hints only: the kernel may clamp them, and a failure is not an error.
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = tcp.set_nodelay(true);
}

/// Accepted connections for `Server::serve_with_incoming_shutdown`: TLS
/// handshakes run beside the accept loop, and each refused client is logged
/// (and counted through `on_refused`) instead of reaching the service.
///
/// The accept loop ends when `shutdown` is cancelled, aborting handshakes
/// still running; await the returned [`Accepting`] after the server stopped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    shutdown: CancellationToken,
    on_refused: Arc<dyn Fn() + Send + Sync>,
) -> (ReceiverStream<std::io::Result<Accepted>>, Accepting) {
    incoming_limited(listener, tls, shutdown, on_refused, None)
}

/// Most connections a server holds at once (handshaking or served), and
/// the flag that sets it, for the log line.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimit {
    pub max: usize,
    pub flag: &'static str,
}

/// How often, at most, refusals over the limit are logged.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts connections refused over the limit and logs them once per burst.
struct Refusals {
    limit: ConnectionLimit,
    unlogged: u64,
    logged_at: Option<tokio::time::Instant>,
}

impl Refusals {
    fn refuse(&mut self) {
        self.unlogged += 1;
        let now = tokio::time::Instant::now();
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            "refused {} connection(s): already holding {} ({} {}); raise {} (and the open-files limit) if these are real clients, or find the peers holding idle connections",
            self.unlogged,
            self.limit.max,
            self.limit.flag,
            self.limit.max,
            self.limit.flag
        );
        self.unlogged = 0;
        self.logged_at = Some(now);
    }
}

/// [`incoming`] holding at most `limit` connections: one more is closed at
/// once, and the refusals are logged once per burst.
pub fn incoming_limited(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    shutdown: CancellationToken,
    on_refused: Arc<dyn Fn() + Send + Sync>,
    limit: Option<ConnectionLimit>,
) -> (ReceiverStream<std::io::Result<Accepted>>, Accepting) {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = limit.map(|l| Arc::new(tokio::sync::Semaphore::new(l.max)));
    let mut refusals = limit.map(|limit| Refusals {
        limit,
        unlogged: 0,
        logged_at: None,
    });
    let task = tokio::spawn(async move {
        let mut handshakes = JoinSet::new();
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors, say: wait a little
                        // rather than spin, but stay stoppable.
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                            _ = shutdown.cancelled() => return,
                        }
                    }
                },
                Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
                _ = shutdown.cancelled() => return,
            };
            let slot = match &slots {
                None => None,
                Some(slots) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => Some(slot),
                    Err(_) => {
                        drop(tcp);
                        if let Some(r) = refusals.as_mut() {
                            r.refuse();
                        }
                        continue;
                    }
                },
            };
            tune_socket(&tcp);
            let Some(acceptor) = acceptor.clone() else {
                let accepted = Accepted {
                    stream: Stream::Plain(tcp),
                    _slot: slot,
                };
                if tx.send(Ok(accepted)).await.is_err() {
                    return;
                }
                continue;
            };
            let (tx, on_refused) = (tx.clone(), on_refused.clone());
            handshakes.spawn(async move {
                // No read buffer under rustls: a 256 KiB one saved the
                // server recv calls but cost the sending client more CPU
                // and throughput than it saved (BENCHMARKS.md, "The client
                // alone against the raw pipe's client").
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let accepted = Accepted {
                            stream: Stream::ServerTls(Box::new(tls)),
                            _slot: slot,
                        };
                        let _ = tx.send(Ok(accepted)).await;
                    }
                    Ok(Err(e)) => {
                        on_refused();
                        tracing::warn!("TLS handshake with {peer} rejected: {e}");
                    }
                    Err(_) => {
                        on_refused();
                        tracing::warn!(
                            "TLS handshake with {peer} timed out after {HANDSHAKE_TIMEOUT:?}"
                        );
                    }
                }
            });
        }
    });
    (ReceiverStream::new(rx), Accepting(task))
}

/// The accept loop of [`incoming`].
pub struct Accepting(tokio::task::JoinHandle<()>);

impl Accepting {
    /// Waits for the accept loop, which ends once its `shutdown` is
    /// cancelled.
    pub async fn join(self) {
        let _ = self.0.await;
    }
}

/// A connection a server accepted, holding its place under the
/// connection limit until it closes.
pub struct Accepted {
    stream: Stream,
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Connected for Accepted {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// One connection, plain or TLS, either side.
pub enum Stream {
    Plain(TcpStream),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::ClientTls(s) => s.get_ref().0,
            Stream::ServerTls(s) => s.get_ref().0,
        }
    }
}

impl Connected for Stream {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.tcp().local_addr().ok(),
            remote_addr: self.tcp().peer_addr().ok(),
        }
    }
}

macro_rules! each_stream {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => $e,
            Stream::ClientTls($s) => $e,
            Stream::ServerTls($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each_stream!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each_stream!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_stream!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_stream!(self, s => Pin::new(s).poll_shutdown(cx))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each_stream!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::ClientTls(s) => s.is_write_vectored(),
            Stream::ServerTls(s) => s.is_write_vectored(),
        }
    }
}

/// A gRPC status as one line: code, message and the causes under it.
pub fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        append_causes(&mut text, Some(source));
    }
    text
}

/// An error and all its causes, joined with `: `, without repeats.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    append_causes(&mut text, e.source());
    text
}

fn append_causes(text: &mut String, mut source: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
}
