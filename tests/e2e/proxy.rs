//! A TCP proxy on loopback that injects transport faults between a client
//! and a sink: refuse, reset after K bytes, stall, or pass through.
//!
//! The mode can change while connections are open, so a test lets the
//! player's up-front probe (and some files) through, then injects the fault.
//! It runs on its own small tokio runtime; dropping the proxy stops it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Reset every open connection now, and every new one as soon as it is
    /// accepted (the client sees "connection reset").
    Refuse,
    /// Neither read nor forward anything, on open connections and new ones,
    /// until the mode changes.
    Stall,
    /// Forward this many more client-to-server bytes (counted over all
    /// connections), then trip: the fault strikes in the middle of whatever
    /// the client was sending, with no race against the test.
    After(u64, Trip),
}

/// What happens when a [`Mode::After`] budget runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trip {
    /// Reset the connection that crossed the mark, then [`Mode::Pass`].
    Reset,
    /// [`Mode::Stall`] from the mark on.
    Stall,
    /// [`Mode::Refuse`] from the mark on.
    Refuse,
}

/// A running proxy; stopped (and its connections reset) when dropped.
pub struct Proxy {
    pub address: String,
    mode: Arc<watch::Sender<Mode>>,
    stop: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: &str, mode: Mode) -> Proxy {
        let upstream: SocketAddr = upstream.parse().expect("upstream is host:port");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("proxy binds");
        let address = listener.local_addr().unwrap().to_string();
        let mode = Arc::new(watch::Sender::new(mode));
        let stop = CancellationToken::new();
        runtime.spawn(accept_loop(listener, upstream, mode.clone(), stop.clone()));
        Proxy {
            address,
            mode,
            stop,
            runtime: Some(runtime),
        }
    }

    /// Switches the mode; open connections follow at once.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode ([`Mode::After`] shows the bytes left).
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    stop: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        if *mode.borrow() == Mode::Refuse {
            reset(client);
            continue;
        }
        let (mode, stop) = (mode.clone(), stop.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                reset(client);
                return;
            };
            tokio::select! {
                _ = forward(client, server, &mode) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Closes `stream` with SO_LINGER 0, so the peer gets a RST, not a FIN.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// How one direction of a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The reader closed its side; the writer was half-closed too.
    Closed,
    /// The fault says to reset the connection.
    Reset,
}

/// Forwards both ways until both sides closed or a fault resets both.
async fn forward(mut client: TcpStream, mut server: TcpStream, mode: &Arc<watch::Sender<Mode>>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let end = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let up = pump(&mut client_read, &mut server_write, mode, true);
        let down = pump(&mut server_read, &mut client_write, mode, false);
        tokio::pin!(up, down);
        tokio::select! {
            end = &mut up => if end == End::Reset { End::Reset } else { down.await },
            end = &mut down => if end == End::Reset { End::Reset } else { up.await },
        }
    };
    if end == End::Reset {
        reset(client);
        reset(server);
    }
}

/// Copies `from` to `to`, obeying the mode; `upstream` is the
/// client-to-server direction, the one [`Mode::After`] counts.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    mode: &Arc<watch::Sender<Mode>>,
    upstream: bool,
) -> End
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut changes = mode.subscribe();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let now = *changes.borrow_and_update();
        match now {
            Mode::Refuse => return End::Reset,
            Mode::Stall => {
                if changes.changed().await.is_err() {
                    return End::Reset;
                }
                continue;
            }
            Mode::Pass | Mode::After(..) => {}
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return End::Closed;
                }
                Ok(n) => n,
            },
            // Re-check the mode before reading on.
            _ = changes.changed() => continue,
        };
        let (allowed, tripped) = if upstream { spend(mode, n) } else { (n, None) };
        let write = to.write_all(&buf[..allowed]);
        let written = tokio::select! {
            w = write => w.is_ok(),
            // A mode change while blocked on the peer: only a refusal matters.
            _ = wait_for_refuse(mode) => return End::Reset,
        };
        if !written || tripped == Some(Trip::Reset) {
            return End::Reset;
        }
        // A stall or refusal is now the mode: the loop obeys it. The bytes
        // past the mark are dropped, which no client can tell from a stall.
    }
}

/// Takes `n` bytes from a [`Mode::After`] budget: how many may be
/// forwarded, and the trip if the budget ran out (the mode has then
/// changed to what the trip says).
fn spend(mode: &watch::Sender<Mode>, n: usize) -> (usize, Option<Trip>) {
    let mut outcome = (n, None);
    mode.send_if_modified(|m| match *m {
        Mode::After(left, trip) if (n as u64) >= left => {
            outcome = (left as usize, Some(trip));
            *m = match trip {
                Trip::Reset => Mode::Pass,
                Trip::Stall => Mode::Stall,
                Trip::Refuse => Mode::Refuse,
            };
            true
        }
        Mode::After(left, trip) => {
            *m = Mode::After(left - n as u64, trip);
            // Only the budget changed: no need to wake every connection.
            false
        }
        _ => false,
    });
    outcome
}

async fn wait_for_refuse(mode: &watch::Sender<Mode>) {
    let mut changes = mode.subscribe();
    let _ = changes.wait_for(|m| *m == Mode::Refuse).await;
}
