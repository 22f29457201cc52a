//! A hostile or unlucky client of the sink: names that look like the sink's
//! own temporary files, two streams for one WAL name, more bytes than
//! declared. The stored file is always exactly one stream's complete bytes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use walplayer::certs::{self, CertSpec};
use walplayer::klio::endpoint::{Client, KlioEndpoint};
use walplayer::klio::tls;
use walplayer::proto::klio::PutRequest;
use walplayer::sink::{self, Fsync, Sink, SinkSettings};

const X: &str = "000000010000000000000007";

struct Sunk {
    data: PathBuf,
    endpoint: KlioEndpoint,
    stop: CancellationToken,
    /// The sink's totals, once it stopped.
    served: tokio::task::JoinHandle<std::sync::Arc<sink::SinkTotals>>,
    _dir: tempfile::TempDir,
}

async fn sink() -> Sunk {
    sink_idle(sink::DEFAULT_IDLE_TIMEOUT).await
}

async fn sink_idle(idle: std::time::Duration) -> Sunk {
    let dir = tempfile::tempdir().unwrap();
    let minted = certs::mint(&dir.path().join("certs"), &CertSpec::default()).unwrap();
    let data = dir.path().join("data");
    let settings = SinkSettings {
        tls: tls::server_config(&minted.server.cert, &minted.server.key, &minted.server.ca)
            .unwrap(),
        storage: sink::storage(Some(data.clone()), Fsync::None),
        read_only: false,
    };
    let bound = Sink::bind(SocketAddr::from(([127, 0, 0, 1], 0)), settings)
        .await
        .unwrap();
    let addr = bound.local_addr().to_string();
    let stop = CancellationToken::new();
    let served = tokio::spawn(bound.with_idle_timeout(idle).serve(stop.clone()));
    let client_tls =
        tls::client_config(&minted.client.ca, &minted.client.cert, &minted.client.key).unwrap();
    let endpoint = KlioEndpoint::new(&addr, client_tls).unwrap();
    Sunk {
        data,
        endpoint,
        stop,
        served,
        _dir: dir,
    }
}

fn block(wal: &str, size: u64, data: &[u8]) -> PutRequest {
    PutRequest {
        cluster_name: "c".into(),
        wal_name: wal.into(),
        wal_block: Bytes::copy_from_slice(data),
        segment_size: size,
        send_to_tier2: false,
    }
}

/// A Put stream the test feeds block by block.
struct OpenPut {
    tx: mpsc::Sender<PutRequest>,
    call: tokio::task::JoinHandle<Result<u64, tonic::Status>>,
}

fn open(client: &Client) -> OpenPut {
    let (tx, rx) = mpsc::channel(4);
    let mut client = client.clone();
    let call = tokio::spawn(async move {
        client
            .wal
            .put(ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner().written_size)
    });
    OpenPut { tx, call }
}

impl OpenPut {
    async fn send(&self, m: PutRequest) {
        self.tx.send(m).await.unwrap();
    }

    async fn close(self) -> Result<u64, tonic::Status> {
        drop(self.tx);
        self.call.await.unwrap()
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn put(client: &mut Client, msgs: Vec<PutRequest>) -> Result<u64, tonic::Status> {
    client
        .wal
        .put(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner().written_size)
}

/// Issue item: `X.partial` is itself a WAL name; the sink's files in
/// progress must never be mistaken for it, nor it for them.
#[tokio::test]
async fn a_wal_named_like_a_partial_file_is_its_own_file() {
    let s = sink().await;
    let mut client = s.endpoint.connect().await.unwrap();
    let partial = format!("{X}.partial");
    assert_eq!(
        put(&mut client, vec![block(&partial, 4, b"PPPP")])
            .await
            .unwrap(),
        4
    );
    // X, sent while X.partial exists, and X.partial again while X is open.
    let x = open(&client);
    x.send(block(X, 8, b"xxxx")).await;
    assert_eq!(
        put(&mut client, vec![block(&partial, 3, b"QQQ")])
            .await
            .unwrap(),
        3
    );
    x.send(block(X, 8, b"yyyy")).await;
    assert_eq!(x.close().await.unwrap(), 8);
    let c = s.data.join("c");
    assert_eq!(std::fs::read(c.join(X)).unwrap(), b"xxxxyyyy");
    assert_eq!(std::fs::read(c.join(&partial)).unwrap(), b"QQQ");
    assert_eq!(
        names(&c),
        [X.to_string(), partial],
        "no file of the sink's own is left"
    );
    s.stop.cancel();
}

/// Two streams for one WAL name: whichever completes last is stored, whole;
/// the bytes of the two never mix, and a rejected stream touches nothing.
#[tokio::test]
async fn two_streams_for_one_name_never_mix() {
    let s = sink().await;
    let client = s.endpoint.connect().await.unwrap();
    let a = open(&client);
    let b = open(&client);
    a.send(block(X, 8, b"AAAA")).await;
    b.send(block(X, 8, b"BBBB")).await;
    b.send(block(X, 8, b"bbbb")).await;
    assert_eq!(b.close().await.unwrap(), 8);
    let c = s.data.join("c");
    assert_eq!(std::fs::read(c.join(X)).unwrap(), b"BBBBbbbb");
    // A third stream, rejected half-way (incoherent size), leaves nothing.
    let bad = open(&client);
    bad.send(block(X, 8, b"ZZZZ")).await;
    bad.send(block(X, 9, b"ZZZZ")).await;
    let refused = bad.close().await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(std::fs::read(c.join(X)).unwrap(), b"BBBBbbbb");
    a.send(block(X, 8, b"aaaa")).await;
    assert_eq!(a.close().await.unwrap(), 8);
    assert_eq!(
        std::fs::read(c.join(X)).unwrap(),
        b"AAAAaaaa",
        "the last to complete wins, whole"
    );
    assert_eq!(names(&c), [X.to_string()]);
    s.stop.cancel();
}

/// A client that resets its Put stream (RST_STREAM, here by dropping the
/// call mid-file) leaves nothing and counts once as aborted, never as a
/// partial file: whether the reset reaches the sink's Put decoder as a
/// body error or makes the server drop the handler.
#[tokio::test]
async fn a_put_stream_reset_by_the_client_counts_as_aborted() {
    let s = sink().await;
    let client = s.endpoint.connect().await.unwrap();
    let cut = open(&client);
    cut.send(block(X, 8, b"AAAA")).await;
    let c = s.data.join("c");
    // Bounded: the first block's file appears, then the reset removes it.
    let mut seen = false;
    for _ in 0..600 {
        if !names(&c).is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "the stream's file never appeared");
    cut.call.abort();
    let mut gone = false;
    for _ in 0..600 {
        if names(&c).is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the reset stream left {:?}", names(&c));
    // The connection still serves a whole upload after the reset.
    let mut again = client.clone();
    assert_eq!(
        put(&mut again, vec![block(X, 4, b"BBBB")]).await.unwrap(),
        4
    );
    s.stop.cancel();
    let totals = s.served.await.unwrap();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (
            get(&totals.aborted),
            get(&totals.partial),
            get(&totals.completed)
        ),
        (1, 0, 1),
        "{}",
        totals.to_text()
    );
}

/// Bytes past the declared `segment_size` are refused at the first one,
/// naming both numbers; nothing is stored.
#[tokio::test]
async fn bytes_past_segment_size_are_refused() {
    let s = sink().await;
    let mut client = s.endpoint.connect().await.unwrap();
    let refused = put(&mut client, vec![block(X, 10, &[7u8; 100])])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("100 bytes") && refused.message().contains("segment_size of 10"),
        "{}",
        refused.message()
    );
    // One byte declared, then a flood: refused at the second block.
    let flood = open(&client);
    flood.send(block(X, 1, b"1")).await;
    for _ in 0..3 {
        if flood.tx.send(block(X, 1, &[0u8; 1 << 20])).await.is_err() {
            break;
        }
    }
    let refused = flood.close().await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        names(&s.data.join("c")).is_empty(),
        "nothing stored or left"
    );
    s.stop.cancel();
}

/// Get streams whose client never reads hold no thread of the sink: a
/// well-behaved upload still goes through while 600 of them are open
/// (before, each held a blocking thread, and the pool of 512 ran out).
#[tokio::test]
async fn unread_get_streams_do_not_lock_out_an_upload() {
    let s = sink().await;
    let mut client = s.endpoint.connect().await.unwrap();
    let big = vec![5u8; 4 << 20];
    let blocks: Vec<PutRequest> = big.chunks(1 << 20).map(|c| block(X, 4 << 20, c)).collect();
    assert_eq!(put(&mut client, blocks).await.unwrap(), 4 << 20);
    // 600 readers over a few connections, none of which reads a byte.
    let mut readers = Vec::new();
    let mut held = Vec::new();
    for _ in 0..6 {
        readers.push(s.endpoint.connect().await.unwrap());
    }
    for i in 0..600 {
        let n = readers.len();
        let reader = &mut readers[i % n];
        let request = walplayer::proto::klio::GetRequest {
            cluster_name: "c".into(),
            wal_name: X.into(),
        };
        held.push(reader.wal.get(request).await.unwrap().into_inner());
    }
    let y = "000000010000000000000008";
    let upload = put(&mut client, vec![block(y, 3, b"abc")]);
    let written = tokio::time::timeout(std::time::Duration::from_secs(30), upload)
        .await
        .expect("a good upload is not locked out by unread Get streams")
        .unwrap();
    assert_eq!(written, 3);
    assert_eq!(std::fs::read(s.data.join("c").join(y)).unwrap(), b"abc");
    drop(held);
    s.stop.cancel();
}

/// A Put stream that goes silent is refused after the idle timeout, and
/// leaves nothing; a stream that keeps sending is not affected.
#[tokio::test]
async fn an_idle_put_stream_is_refused_and_leaves_nothing() {
    let s = sink_idle(std::time::Duration::from_millis(500)).await;
    let client = s.endpoint.connect().await.unwrap();
    let silent = open(&client);
    silent.send(block(X, 8, b"abcd")).await;
    let refused = tokio::time::timeout(std::time::Duration::from_secs(30), silent.call)
        .await
        .expect("the sink ends an idle stream by itself")
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::DeadlineExceeded, "{refused:?}");
    assert!(
        refused.message().contains("idle-timeout"),
        "{}",
        refused.message()
    );
    assert!(
        names(&s.data.join("c")).is_empty(),
        "nothing stored or left"
    );
    // Blocks arriving faster than the timeout keep a stream alive.
    let busy = open(&client);
    for part in [b"ab", b"cd", b"ef", b"gh"] {
        busy.send(block(X, 8, part)).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(busy.close().await.unwrap(), 8);
    s.stop.cancel();
}

/// Issue item 9: every Put stream of a client that dies mid-upload counts
/// once as aborted, also when the cut comes while the sink is writing a
/// block, which makes the server drop the handler instead of
/// telling it (the sink said "2 aborted by the client" after 6).
#[test]
fn every_cut_put_stream_counts_once_as_aborted() {
    const JOBS: usize = 6;
    let env = crate::util::TestEnv::new();
    let wal = env.generate("wal", JOBS as u32, 64, &[]);
    let data = env.path("data");
    let mut sink = env.sink(&data, &[]);
    let mut play = env
        .play(
            &wal,
            &sink.address,
            &["-j", "6", "--block-size", "64", "--quiet"],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cluster = data.join("walplayer");
    let count = || std::fs::read_dir(&cluster).map(|d| d.count()).unwrap_or(0);
    let limit = std::time::Duration::from_secs(60);
    crate::util::wait_until("every job has a stream open", limit, || count() == JOBS);
    crate::util::signal(&play, libc::SIGKILL);
    let _ = play.wait();
    crate::util::wait_until("the cut streams leave nothing", limit, || count() == 0);
    sink.terminate();
    let log = sink.log_text();
    assert!(
        log.contains(&format!(
            "0 files complete, 0 left partial, 0 streams rejected, {JOBS} aborted by the client"
        )),
        "{log}"
    );
}

/// Reads from a raw connection until the sink closes it; `false` if it is
/// still open after `limit`.
fn closed_within(tcp: &mut std::net::TcpStream, limit: std::time::Duration) -> bool {
    use std::io::Read;
    tcp.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// Issue item 13: a connection that never starts its TLS handshake is
/// closed by the sink after the handshake timeout (10 s), and logged.
#[test]
fn a_connection_that_never_handshakes_is_closed() {
    let env = crate::util::TestEnv::new();
    let mut sink = env.sink(&env.path("data"), &[]);
    let mut idle = std::net::TcpStream::connect(&sink.address).unwrap();
    assert!(
        closed_within(&mut idle, std::time::Duration::from_secs(60)),
        "the sink keeps a connection that never handshakes"
    );
    sink.terminate();
    let log = sink.log_text();
    assert!(log.contains("timed out after 10s"), "{log}");
}

/// Issue item 13: over `--max-connections`, a new connection is closed at
/// once and the refusal logged with the limit and what to do; a good
/// client uploads once the others close.
#[test]
fn connections_over_the_cap_are_closed_and_a_good_client_uploads_once_others_close() {
    let env = crate::util::TestEnv::new();
    let wal = env.generate("wal", 2, 1, &[]);
    let mut sink = env.sink(&env.path("data"), &["--max-connections", "4"]);
    let hogs: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(&sink.address).unwrap())
        .collect();
    // Each is accepted in turn; the fifth finds every place taken.
    let limit = std::time::Duration::from_secs(30);
    crate::util::wait_until("the sink holds four connections", limit, || {
        let mut probe = std::net::TcpStream::connect(&sink.address).unwrap();
        closed_within(&mut probe, std::time::Duration::from_millis(500))
    });
    crate::util::wait_until("the refusal is logged", limit, || {
        sink.log_text().contains(
            "already holding 4 (--max-connections 4); raise --max-connections (and the open-files limit)",
        )
    });
    drop(hogs);
    let out = crate::util::run(&mut env.play(&wal, &sink.address, &[]));
    crate::util::assert_status(&out, 0);
    sink.terminate();
}

/// A raw HTTP/2 connection with a valid client certificate: TLS, the
/// HTTP/2 handshake, and nothing else unless the test asks.
async fn raw_http2(
    env: &crate::util::TestEnv,
    address: &str,
) -> (
    h2::PingPong,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
    h2::client::SendRequest<Bytes>,
) {
    let c = &env.certs.client;
    let config = tls::client_config(&c.ca, &c.cert, &c.key).unwrap();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("the sink takes a valid client certificate");
    let (send, mut connection) = h2::client::handshake(stream).await.unwrap();
    let pings = connection.ping_pong().expect("the first ping_pong");
    (pings, tokio::spawn(connection), send)
}

/// Issue 9 item 13: a connection that finished TLS and HTTP/2 but opens no
/// stream is closed after `--idle-connection-timeout` (GOAWAY, then close)
/// and logged, though it keeps pinging; a connection whose one stream stays
/// open longer than that, its blocks further apart than the timeout, is
/// not, and its file is stored whole.
#[test]
fn a_connection_with_no_stream_is_closed_though_it_pings_and_one_with_a_stream_is_not() {
    let env = crate::util::TestEnv::new();
    let data = env.path("data");
    let mut sink = env.sink(&data, &["--idle-connection-timeout", "1s"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (mut pings, driven, _send) = raw_http2(&env, &sink.address).await;
        // Pings every 200 ms, bounded: the sink must end the connection.
        let (mut pongs, mut refused) = (0, false);
        for _ in 0..150 {
            if pings.ping(h2::Ping::opaque()).await.is_err() {
                refused = true;
                break;
            }
            pongs += 1;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert!(
            pongs > 0,
            "the sink answered no PING: not a live connection"
        );
        assert!(refused, "the connection still answers PINGs after 30 s");
        // GOAWAY then close; a PING sent as the socket closes may end the
        // client's side with a broken pipe instead of a clean end.
        tokio::time::timeout(std::time::Duration::from_secs(30), driven)
            .await
            .expect("the sink closes a connection with no stream, pinging or not")
            .unwrap()
            .ok();

        // One stream open across gaps longer than the connection timeout.
        let c = &env.certs.client;
        let config = tls::client_config(&c.ca, &c.cert, &c.key).unwrap();
        let endpoint = KlioEndpoint::new(&sink.address, config).unwrap();
        let client = endpoint.connect().await.unwrap();
        let patient = open(&client);
        for part in [b"ab", b"cd", b"ef"] {
            patient.send(block(X, 6, part)).await;
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        }
        assert_eq!(patient.close().await.unwrap(), 6);
    });
    assert_eq!(std::fs::read(data.join("c").join(X)).unwrap(), b"abcdef");
    sink.terminate();
    let log = sink.log_text();
    assert!(
        log.contains("no stream open for 1s (--idle-connection-timeout)"),
        "{log}"
    );
}
