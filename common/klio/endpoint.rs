//! Connections to a Klio WAL server: TCP, mutual TLS and HTTP/2 with the
//! protocol's transport settings.
//!
//! TLS is done here with rustls rather than inside tonic, so a failed
//! handshake reaches the user as rustls's own reason, naming the address.

use std::sync::Arc;

use rustls::ClientConfig;

use crate::put::{self, Piece, PutBody};
use crate::transport::{self, ClientTls, CONNECT_TIMEOUT};
pub use crate::transport::{error_chain, status_text};
use tonic::transport::Channel;
use walplayer_proto::klio::wal_client::WalClient;

/// Largest block payload Klio accepts (8 MiB).
pub const MAX_BLOCK_BYTES: usize = 8 << 20;
/// Largest gRPC message either side accepts (8 MiB + 512 KiB).
pub const MAX_MESSAGE_BYTES: usize = (8 << 20) + (512 << 10);

/// A Klio client over one HTTP/2 connection: uploads go through
/// [`crate::put`] on its channel, Get and other calls through the generated
/// client.
#[derive(Clone)]
pub struct Client {
    /// The generated client, for Get (read-back) and plain calls.
    pub wal: WalClient<Channel>,
    channel: Channel,
}

impl Client {
    /// A client on `channel`, with Klio's message limits.
    pub fn new(channel: Channel) -> Client {
        Client {
            wal: WalClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            channel,
        }
    }

    /// The connection, for [`crate::put::put`].
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

/// Where and how to reach one Klio WAL server.
#[derive(Clone)]
pub struct KlioEndpoint {
    address: String,
    tls: ClientTls,
}

impl KlioEndpoint {
    /// Checks the address; nothing connects yet.
    pub fn new(address: &str, tls: Arc<ClientConfig>) -> Result<KlioEndpoint, String> {
        Ok(KlioEndpoint {
            address: address.to_string(),
            tls: ClientTls::for_address(address, tls)?,
        })
    }

    /// The `host:port` this endpoint dials.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Opens one connection (TCP, TLS handshake, HTTP/2) and returns a
    /// client on it. The channel reconnects by itself if it breaks.
    pub async fn connect(&self) -> Result<Client, String> {
        let channel = transport::connect(&self.address, Some(self.tls.clone()), None)
            .await
            .map_err(|e| format!("cannot connect to Klio at {}: {e}", self.address))?;
        Ok(Client::new(channel))
    }

    /// Connects `jobs` clients, one connection each; the first one probes
    /// the server, so a fault that would fail every file is found once.
    pub async fn connect_jobs(&self, jobs: usize) -> Result<Vec<Client>, String> {
        let mut clients = vec![self.probe().await?];
        let rest = futures_util::future::join_all((1..jobs).map(|_| self.connect())).await;
        for client in rest {
            clients.push(client?);
        }
        Ok(clients)
    }

    /// Connects and makes one real call (a Put stream with no block, which
    /// stores nothing), so that a fault that would fail every file (the
    /// server unreachable, TLS rejected either way) is found once, up front.
    pub async fn probe(&self) -> Result<Client, String> {
        let client = self.connect().await?;
        // The same path every upload takes, with no message at all.
        let (tx, empty) = PutBody::channel(1);
        let _ = tx.try_send(Piece::End);
        match tokio::time::timeout(CONNECT_TIMEOUT, put::put(client.channel(), empty)).await {
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
