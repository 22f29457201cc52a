//! Connections to a Klio WAL server: TCP, mutual TLS and HTTP/2 with the
//! protocol's transport settings.
//!
//! TLS is done here with rustls rather than inside tonic, so a failed
//! handshake reaches the user as rustls's own reason, naming the address.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::common::config::split_address;
use crate::proto::klio::wal_client::WalClient;

/// Largest block payload Klio accepts (8 MiB).
pub const MAX_BLOCK_BYTES: usize = 8 << 20;
/// Largest gRPC message either side accepts (8 MiB + 512 KiB).
pub const MAX_MESSAGE_BYTES: usize = (8 << 20) + (512 << 10);
/// HTTP/2 initial stream window (16 MiB).
pub const STREAM_WINDOW: u32 = 16 << 20;
/// HTTP/2 initial connection window (64 MiB).
pub const CONNECTION_WINDOW: u32 = 64 << 20;
/// Socket read/write buffer hint (1 MiB).
pub const SOCKET_BUFFER: usize = 1 << 20;
/// How long establishing one connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A Klio client over one HTTP/2 connection.
pub type Client = WalClient<Channel>;

/// Where and how to reach one Klio WAL server.
#[derive(Clone)]
pub struct KlioEndpoint {
    address: String,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
}

impl KlioEndpoint {
    /// Checks the address; nothing connects yet.
    pub fn new(address: &str, tls: Arc<ClientConfig>) -> Result<KlioEndpoint, String> {
        let (host, _) = split_address(address)?;
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
        Ok(KlioEndpoint {
            address: address.to_string(),
            server_name,
            tls,
        })
    }

    /// The `host:port` this endpoint dials.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Opens one connection (TCP, TLS handshake, HTTP/2) and returns a
    /// client on it. The channel reconnects by itself if it breaks.
    pub async fn connect(&self) -> Result<Client, String> {
        let uri: Uri = format!("http://{}", self.address)
            .parse()
            .map_err(|e| format!("{}: not a usable address: {e}", self.address))?;
        let endpoint = Endpoint::from(uri)
            .connect_timeout(CONNECT_TIMEOUT)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .tcp_nodelay(true);
        let address = self.address.clone();
        let server_name = self.server_name.clone();
        let connector = TlsConnector::from(self.tls.clone());
        let connect = tower::service_fn(move |_: Uri| {
            let (address, server_name, connector) =
                (address.clone(), server_name.clone(), connector.clone());
            async move {
                let tcp = TcpStream::connect(&address).await?;
                tune_socket(&tcp);
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        });
        let channel = endpoint
            .connect_with_connector(connect)
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to Klio at {}: {}",
                    self.address,
                    error_chain(&e)
                )
            })?;
        Ok(WalClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Connects and makes one real call (a Put stream with no block, which
    /// stores nothing), so that a fault that would fail every file (the
    /// server unreachable, TLS rejected either way) is found once, up front.
    pub async fn probe(&self) -> Result<Client, String> {
        let mut client = self.connect().await?;
        let empty = tokio_stream::iter(Vec::<crate::proto::klio::PutRequest>::new());
        match tokio::time::timeout(CONNECT_TIMEOUT, client.put(empty)).await {
            Err(_) => Err(format!(
                "Klio at {} accepted the connection but did not answer within {:?}",
                self.address, CONNECT_TIMEOUT
            )),
            Ok(Ok(_)) => Ok(client),
            // The service answered: the transport and TLS work.
            Ok(Err(status)) if answered_by_service(&status) => Ok(client),
            Ok(Err(status)) => Err(refusal(&self.address, &status)),
        }
    }
}

/// Explains a probe that failed below the service, after our side of the
/// TLS handshake succeeded. With TLS 1.3 a server refuses a client
/// certificate only then, so the refusal shows up as an alert, a reset or
/// a closed connection on the first call.
fn refusal(address: &str, status: &tonic::Status) -> String {
    format!(
        "Klio at {address} refused the connection: {}; the server ended the connection after the TLS \
         handshake, which is how it refuses a client certificate: check that the client certificate \
         (client_cert_path) is signed by a CA the server trusts, is not expired and allows client \
         authentication",
        status_text(status)
    )
}

fn tune_socket(tcp: &TcpStream) {
    let sock = socket2::SockRef::from(tcp);
    // Hints only: the kernel may clamp them, and a failure is not an error.
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = tcp.set_nodelay(true);
}

/// Whether a status came from the remote service rather than from the
/// transport under it.
fn answered_by_service(status: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(
        status.code(),
        InvalidArgument
            | FailedPrecondition
            | NotFound
            | AlreadyExists
            | PermissionDenied
            | Unauthenticated
            | OutOfRange
            | Unimplemented
            | ResourceExhausted
            | Aborted
    ) && std::error::Error::source(status).is_none()
}

/// A gRPC status as one line: code, message and the causes under it.
pub fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let line = e.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = e.source();
    }
    text
}

/// An error and all its causes, joined with `: `, without repeats.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
