//! The sink follows every rule of the protocol facts, checked in process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use walplayer::certs::{self, CertSpec};
use walplayer::klio::endpoint::{Client, KlioEndpoint};
use walplayer::klio::tls;
use walplayer::proto::klio::{GetRequest, PutRequest};
use walplayer::sink::{self, Fsync, Sink, SinkMetrics, SinkSettings, SinkTotals};

struct Running {
    client: Client,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::sync::Arc<SinkTotals>>,
}

async fn start(dir: &Path, discard: bool) -> Running {
    start_with(dir, discard, SinkMetrics::default()).await
}

async fn start_with(dir: &Path, discard: bool, metrics: SinkMetrics) -> Running {
    let minted = certs::mint(&dir.join("certs"), &CertSpec::default()).unwrap();
    let settings = SinkSettings {
        tls: tls::server_config(&minted.server.cert, &minted.server.key, &minted.server.ca)
            .unwrap(),
        storage: sink::storage(
            if discard {
                None
            } else {
                Some(dir.join("data"))
            },
            Fsync::Block,
        ),
        read_only: false,
    };
    let sink = Sink::bind(SocketAddr::from(([127, 0, 0, 1], 0)), settings)
        .await
        .unwrap();
    let sink = sink.with_metrics(metrics);
    let addr = sink.local_addr().to_string();
    let stop = CancellationToken::new();
    let task = tokio::spawn(sink.serve(stop.clone()));
    let client_tls =
        tls::client_config(&minted.client.ca, &minted.client.cert, &minted.client.key).unwrap();
    let client = KlioEndpoint::new(&addr, client_tls)
        .unwrap()
        .probe()
        .await
        .unwrap();
    Running { client, stop, task }
}

impl Running {
    async fn stop(self) -> std::sync::Arc<SinkTotals> {
        self.stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(20), self.task)
            .await
            .expect("sink stops within 20 s")
            .unwrap()
    }
}

fn block(cluster: &str, wal: &str, size: u64, data: &[u8]) -> PutRequest {
    PutRequest {
        cluster_name: cluster.into(),
        wal_name: wal.into(),
        wal_block: Bytes::copy_from_slice(data),
        segment_size: size,
        send_to_tier2: false,
    }
}

async fn put(client: &mut Client, msgs: Vec<PutRequest>) -> Result<u64, tonic::Status> {
    client
        .wal
        .put(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner().written_size)
}

const WAL: &str = "000000010000000000000001";

#[tokio::test]
async fn complete_partial_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), false).await;
    let data = dir.path().join("data/c1");

    let written = put(
        &mut s.client,
        vec![block("c1", WAL, 6, b"abc"), block("c1", WAL, 6, b"def")],
    )
    .await
    .unwrap();
    assert_eq!(written, 6);
    assert_eq!(std::fs::read(data.join(WAL)).unwrap(), b"abcdef");
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&data), [WAL], "a complete upload leaves only the WAL");

    // Fewer bytes than segment_size: reported, and kept partial under a
    // name no WAL name can take.
    let short = "000000010000000000000002";
    assert_eq!(
        put(&mut s.client, vec![block("c1", short, 10, b"abc")])
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        std::fs::read(data.join(format!("{short}~partial"))).unwrap(),
        b"abc"
    );
    assert!(!data.join(short).exists());
    assert!(!data.join(format!("{short}.partial")).exists());

    // No block at all: written_size 0.
    assert_eq!(put(&mut s.client, vec![]).await.unwrap(), 0);

    let mut stream = s
        .client
        .wal
        .get(GetRequest {
            cluster_name: "c1".into(),
            wal_name: WAL.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        assert_eq!(m.segment_size, 6);
        got.extend_from_slice(&m.wal_block);
    }
    assert_eq!(got, b"abcdef");
    let missing = s
        .client
        .wal
        .get(GetRequest {
            cluster_name: "c1".into(),
            wal_name: "000000010000000000000009".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let totals = s.stop().await;
    assert_eq!(totals.completed.load(Ordering::Relaxed), 1);
    assert_eq!(totals.partial.load(Ordering::Relaxed), 1);
    assert_eq!(totals.reads.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn invalid_streams_are_rejected_with_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), false).await;
    let cases = vec![
        (
            vec![block("c", "README", 3, b"abc")],
            "not a PostgreSQL WAL file name",
        ),
        (vec![block("a/b", WAL, 3, b"abc")], "invalid cluster_name"),
        (vec![block("..", WAL, 3, b"abc")], "invalid cluster_name"),
        (
            vec![block("c", "0000000100000000000000/1", 3, b"abc")],
            "invalid wal_name",
        ),
        (
            vec![block("c", WAL, 0, b"abc")],
            "segment_size must be non-zero",
        ),
        (
            vec![
                block("c", WAL, 6, b"abc"),
                block("c", "000000010000000000000002", 6, b"def"),
            ],
            "incoherent wal_name",
        ),
        (
            vec![block("c", WAL, 6, b"abc"), block("d", WAL, 6, b"def")],
            "incoherent cluster_name",
        ),
        (
            vec![block("c", WAL, 6, b"abc"), block("c", WAL, 7, b"def")],
            "incoherent segment_size",
        ),
    ];
    let n = cases.len() as u64;
    for (msgs, needle) in cases {
        let e = put(&mut s.client, msgs).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{needle}: {e:?}");
        assert!(e.message().contains(needle), "{needle}: {}", e.message());
    }
    assert!(
        !dir.path().join("data/c").join(WAL).exists(),
        "nothing rejected is completed"
    );
    let totals = s.stop().await;
    assert_eq!(totals.rejected.load(Ordering::Relaxed), n);
}

#[tokio::test]
async fn discard_counts_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), true).await;
    assert_eq!(
        put(&mut s.client, vec![block("c", WAL, 3, b"abc")])
            .await
            .unwrap(),
        3
    );
    let e = s
        .client
        .wal
        .get(GetRequest {
            cluster_name: "c".into(),
            wal_name: WAL.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(!dir.path().join("data").exists());
    let totals = s.stop().await;
    assert_eq!(totals.completed.load(Ordering::Relaxed), 1);
    assert_eq!(totals.bytes.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn verification_names_the_first_differing_byte() {
    use walplayer::klio::upload::{upload, Sent, UploadSettings, Work};
    use walplayer::klio::verify::read_back;
    use walplayer::wal::source::Segment;

    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), false).await;
    let file = dir.path().join(WAL);
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let work = Work {
        segment: Segment {
            path: file,
            wal_name: WAL.into(),
            size: content.len() as u64,
            gzip: false,
            unreadable: None,
        },
        cluster: "v".into(),
    };
    let settings = UploadSettings {
        block: walplayer::klio::settings::BlockSize::from_kib(64).unwrap(),
        timeout: std::time::Duration::from_secs(30),
        retries: 0,
        verify: true,
    };
    let metrics = walplayer::klio::metrics::ClientMetrics::unregistered();
    let report = upload(&mut s.client, &work, &settings, &metrics).await;
    assert!(report.ok() && report.verified, "{report:?}");

    // Damage the stored copy: verification must say where.
    let stored = dir.path().join("data/v").join(WAL);
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[123_456] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let sent = Sent {
        bytes: content.len() as u64,
        digest: Some(ring::digest::digest(&ring::digest::SHA256, &content)),
    };
    let e = read_back(&mut s.client, &work, &sent).await.unwrap_err();
    assert!(
        e.message.contains("differs from the file from byte 123456"),
        "{}",
        e.message
    );
    assert!(!e.retryable);

    // A stored copy that is too short.
    std::fs::write(&stored, &content[..1000]).unwrap();
    let e = read_back(&mut s.client, &work, &sent).await.unwrap_err();
    assert!(e.message.contains("from byte 1000"), "{}", e.message);
    s.stop().await;
}

/// Scrapes `/metrics` at `addr` off the runtime's threads.
async fn scrape(addr: &str) -> crate::metrics::Metrics {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || crate::metrics::Metrics::scrape(&addr))
        .await
        .unwrap()
}

#[tokio::test]
async fn metrics_count_bytes_fsyncs_open_streams_and_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = walplayer::klio::metrics::Registry::default();
    let metrics = SinkMetrics::register(&mut registry);
    let server = walplayer::klio::metrics::serve(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        registry,
        "--metrics-listen",
    )
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let mut s = start_with(dir.path(), false, metrics).await;

    // Complete in two blocks, each fsynced (the sink runs --fsync block).
    let written = put(
        &mut s.client,
        vec![block("c1", WAL, 6, b"abc"), block("c1", WAL, 6, b"def")],
    )
    .await
    .unwrap();
    assert_eq!(written, 6);
    let past = "000000010000000000000002";
    assert!(put(&mut s.client, vec![block("c1", past, 2, b"abc")])
        .await
        .is_err());
    assert!(put(&mut s.client, vec![block("c1", "nope", 3, b"abc")])
        .await
        .is_err());

    // A stream the client holds open is counted as open until it ends.
    let held = "000000010000000000000003";
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(block("c1", held, 6, b"abc")).await.unwrap();
    let mut client = s.client.clone();
    let call = tokio::spawn(async move {
        client
            .wal
            .put(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner().written_size)
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let m = scrape(&addr).await;
        if m.value("walplayer_sink_streams_open", &[]) == 1.0
            && m.value("walplayer_sink_received_bytes_total", &[]) == 9.0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the held stream is not counted open:\n{}",
            m.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(tx);
    assert_eq!(call.await.unwrap().unwrap(), 3, "kept partial");

    let m = scrape(&addr).await;
    assert_eq!(m.value("walplayer_sink_streams_open", &[]), 0.0);
    assert_eq!(m.value("walplayer_sink_received_bytes_total", &[]), 9.0);
    assert_eq!(m.value("walplayer_sink_fsync_seconds_count", &[]), 3.0);
    for (end, n) in [
        ("complete", 1.0),
        ("partial", 1.0),
        ("rejected", 2.0),
        ("aborted", 0.0),
    ] {
        assert_eq!(
            m.value("walplayer_sink_streams_total", &[("end", end)]),
            n,
            "{end}"
        );
    }
    for (reason, n) in [
        ("past-segment-size", 1.0),
        ("invalid-name", 1.0),
        ("read-only", 0.0),
        ("idle-timeout", 0.0),
    ] {
        assert_eq!(
            m.value("walplayer_sink_rejections_total", &[("reason", reason)]),
            n,
            "{reason}"
        );
    }
    s.stop().await;
    server.stop().await;
}
