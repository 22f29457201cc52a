//! The floor a player is measured against: the same files over mutual TLS
//! with nothing else, neither gRPC nor HTTP/2. `jobs` connections take
//! files in order, as a player's jobs do, read them in blocks with plain
//! reads and write each block to a `tokio_rustls` stream; the server reads
//! and discards, and answers each connection's byte count when the client
//! closes, so the client knows every byte arrived.
//!
//! It runs in the bench's process (the in-process comparison) or as its
//! own processes ([`child_role`]), so that the client's CPU can be measured
//! apart from the server's.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{ensure, Context, Result};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use walplayer::klio::tls;
use walplayer::klio::transport::SOCKET_BUFFER;
use walplayer::wal::source::{self, Segment};

/// Set in a child process's environment to the role it plays.
pub const ROLE: &str = "WALPLAYER_BENCH_RAW_PIPE";

/// Sends `files` over `jobs` connections to the server at `addr`; returns
/// the bytes sent, after checking the server counted every one.
pub async fn send(
    addr: SocketAddr,
    tls: &Arc<ClientConfig>,
    files: &[Segment],
    jobs: usize,
    block: usize,
) -> Result<u64> {
    let queue = Arc::new(Mutex::new(files.iter().cloned().collect::<VecDeque<_>>()));
    let connector = TlsConnector::from(tls.clone());
    let mut clients = JoinSet::new();
    for _ in 0..jobs {
        clients.spawn(client(addr, connector.clone(), queue.clone(), block));
    }
    let (mut sent, mut counted) = (0, 0);
    while let Some(client) = clients.join_next().await {
        let (s, c) = client??;
        sent += s;
        counted += c;
    }
    let total: u64 = files.iter().map(|s| s.size).sum();
    ensure!(
        sent == total && counted == total,
        "raw rustls: sent {sent} and the server counted {counted} of {total} bytes"
    );
    Ok(sent)
}

/// One connection: files from `queue` until it is empty; returns the bytes
/// sent and the server's count of them.
async fn client(
    addr: SocketAddr,
    connector: TlsConnector,
    queue: Arc<Mutex<VecDeque<Segment>>>,
    block: usize,
) -> Result<(u64, u64)> {
    let tcp = TcpStream::connect(addr).await?;
    // The same socket settings the Klio client uses.
    let sock = socket2::SockRef::from(&tcp);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(addr.ip().to_string())?;
    let mut tls = connector.connect(name, tcp).await?;
    let mut buf = vec![0u8; block];
    let mut sent = 0u64;
    loop {
        let Some(segment) = queue.lock().expect("queue lock").pop_front() else {
            break;
        };
        // A plain read: the files are in /dev/shm or the page cache, so this
        // is a copy, the cheapest way to get the bytes, as a baseline should.
        let mut file = File::open(&segment.path)?;
        loop {
            let n = read_full(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            tls.write_all(&buf[..n]).await?;
            sent += n as u64;
        }
    }
    // close_notify, then the server's count and its close_notify: closing
    // with its TLS 1.3 session tickets unread would reset the connection
    // under its last bytes.
    tls.shutdown().await?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await?;
    let counted: [u8; 8] = answer
        .as_slice()
        .try_into()
        .with_context(|| format!("raw server answered {} bytes, not a count", answer.len()))?;
    Ok((sent, u64::from_le_bytes(counted)))
}

/// A mutual-TLS server on loopback that reads and discards.
pub struct Server {
    pub addr: SocketAddr,
    pub accept: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(tls: Arc<ServerConfig>, shutdown: CancellationToken) -> Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(accept(listener, TlsAcceptor::from(tls), shutdown));
        Ok(Server { addr, accept })
    }
}

async fn accept(listener: TcpListener, acceptor: TlsAcceptor, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    eprintln!("raw server: accept failed: {e}");
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            if let Err(e) = discard(acceptor, tcp).await {
                // The client sees the missing count and fails the run.
                eprintln!("raw server: connection failed: {e}");
            }
        });
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Reads to the client's close_notify, then answers the count.
async fn discard(acceptor: TlsAcceptor, tcp: TcpStream) -> std::io::Result<()> {
    let mut tls = acceptor.accept(tcp).await?;
    let mut buf = vec![0u8; 256 << 10];
    let mut received = 0u64;
    loop {
        match tls.read(&mut buf).await? {
            0 => break,
            n => received += n as u64,
        }
    }
    tls.write_all(&received.to_le_bytes()).await?;
    tls.shutdown().await
}

/// Reads until `buf` is full or the file ends.
pub fn read_full(input: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// In a child process started with [`ROLE`] set, plays that role and
/// returns its exit code; `None` in the bench's own process.
///
/// - `server CERT KEY CA`: prints `listening on ADDR`, serves until killed;
/// - `client ADDR CA CERT KEY JOBS BLOCK DIR`: sends DIR's WAL, prints
///   `sent BYTES`.
pub fn child_role() -> Option<i32> {
    let role = std::env::var(ROLE).ok()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("raw pipe {role}: no tokio runtime: {e}");
            return Some(1);
        }
    };
    let done = runtime.block_on(async {
        match (role.as_str(), args.as_slice()) {
            ("server", [cert, key, ca]) => serve_until_killed(cert, key, ca).await,
            ("client", [addr, ca, cert, key, jobs, block, dir]) => {
                let tls = tls::client_config(Path::new(ca), Path::new(cert), Path::new(key))?;
                let files = source::list(Path::new(dir), source::Links::Follow)?.segments;
                let sent = send(addr.parse()?, &tls, &files, jobs.parse()?, block.parse()?).await?;
                println!("sent {sent}");
                Ok(())
            }
            _ => anyhow::bail!("unknown raw pipe role {role:?} with arguments {args:?}"),
        }
    });
    Some(match done {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("raw pipe {role}: {e:#}");
            1
        }
    })
}

async fn serve_until_killed(cert: &str, key: &str, ca: &str) -> Result<()> {
    let tls = tls::server_config(Path::new(cert), Path::new(key), Path::new(ca))?;
    let server = Server::start(tls, CancellationToken::new()).await?;
    println!("listening on {}", server.addr);
    server.accept.await?;
    Ok(())
}
