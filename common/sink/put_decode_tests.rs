use super::*;

use futures_util::{FutureExt, StreamExt};
use http_body::Frame;
use prost::Message;
use tonic::Code;
use walplayer_proto::klio::PutRequest;

type Frames = Vec<Result<Frame<Bytes>, Status>>;
type TestBody = http_body_util::StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Status>>>,
>;

fn body(frames: Frames) -> TestBody {
    http_body_util::StreamBody::new(futures_util::stream::iter(frames))
}

/// A body of `bytes` cut at `cuts` (offsets, ascending).
fn cut(bytes: &[u8], cuts: &[usize]) -> TestBody {
    let mut frames = Vec::new();
    let mut from = 0;
    for &at in cuts.iter().chain([bytes.len()].iter()) {
        frames.push(Ok(Frame::data(Bytes::copy_from_slice(&bytes[from..at]))));
        from = at;
    }
    body(frames)
}

/// `message` with its gRPC prefix.
fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn request(cluster: &str, wal: &str, size: u64, block: &[u8]) -> PutRequest {
    PutRequest {
        cluster_name: cluster.into(),
        wal_name: wal.into(),
        wal_block: Bytes::copy_from_slice(block),
        segment_size: size,
        send_to_tier2: true,
    }
}

fn joined(block: &Block) -> Vec<u8> {
    let mut out = Vec::new();
    block.write_to(&mut out).unwrap();
    out
}

/// Every message of `body`, or the first error.
async fn all(body: TestBody) -> Result<Vec<PutMessage>, Status> {
    let mut decoder = PutDecoder::new(body);
    let mut out = Vec::new();
    while let Some(m) = decoder.next().await? {
        out.push(m);
    }
    Ok(out)
}

fn expect_one(result: Result<Vec<PutMessage>, Status>, expected: &PutRequest, what: &str) {
    let messages = result.unwrap_or_else(|e| panic!("{what}: {e:?}"));
    assert_eq!(messages.len(), 1, "{what}");
    let m = &messages[0];
    assert_eq!(m.cluster_name, expected.cluster_name, "{what}");
    assert_eq!(m.wal_name, expected.wal_name, "{what}");
    assert_eq!(m.segment_size, expected.segment_size, "{what}");
    assert_eq!(joined(&m.wal_block), expected.wal_block, "{what}");
    assert_eq!(m.wal_block.len(), expected.wal_block.len(), "{what}");
    assert!(m.wal_block.pieces().iter().all(|p| !p.is_empty()), "{what}");
}

#[tokio::test]
async fn a_small_message_split_at_every_byte_decodes_the_same() {
    let expected = request(
        "walplayer",
        "000000010000000000000001",
        16 << 20,
        b"0123456789abcdef",
    );
    let bytes = framed(0, &expected.encode_to_vec());
    for at in 0..=bytes.len() {
        expect_one(
            all(cut(&bytes, &[at])).await,
            &expected,
            &format!("cut at {at}"),
        );
    }
    let every: Vec<usize> = (1..bytes.len()).collect();
    expect_one(
        all(cut(&bytes, &every)).await,
        &expected,
        "a frame per byte",
    );
}

#[tokio::test]
async fn messages_in_one_frame_or_across_frames_come_out_in_order() {
    let sent: Vec<PutRequest> = (0..5u8)
        .map(|i| {
            request(
                "c",
                "000000010000000000000002",
                100,
                &vec![i; usize::from(i) * 7],
            )
        })
        .collect();
    let bytes: Vec<u8> = sent
        .iter()
        .flat_map(|m| framed(0, &m.encode_to_vec()))
        .collect();
    for cuts in [
        vec![],
        vec![3, 20, 21, 60],
        (1..bytes.len()).step_by(4).collect(),
    ] {
        let got = all(cut(&bytes, &cuts)).await.unwrap();
        assert_eq!(got.len(), sent.len(), "{cuts:?}");
        for (g, s) in got.iter().zip(&sent) {
            assert_eq!(joined(&g.wal_block), s.wal_block, "{cuts:?}");
            assert_eq!(g.segment_size, 100);
        }
    }
}

#[tokio::test]
async fn the_block_is_slices_of_the_frames_not_a_copy() {
    let block: Vec<u8> = (0..10_000u32).map(|i| (i * 31) as u8).collect();
    let bytes = framed(
        0,
        &request("c", "000000010000000000000003", 1 << 20, &block).encode_to_vec(),
    );
    let frames: Vec<Bytes> = [0, 40, 3000, 7000, bytes.len()]
        .windows(2)
        .map(|w| Bytes::copy_from_slice(&bytes[w[0]..w[1]]))
        .collect();
    let within = |p: &Bytes| {
        frames.iter().any(|f| {
            let range = f.as_ptr() as usize..f.as_ptr() as usize + f.len();
            range.contains(&(p.as_ptr() as usize)) && p.as_ptr() as usize + p.len() <= range.end
        })
    };
    let got = all(body(
        frames.iter().cloned().map(|f| Ok(Frame::data(f))).collect(),
    ))
    .await
    .unwrap();
    let pieces = got[0].wal_block.pieces();
    // The block (bytes 37..10037) spans all four frames.
    assert_eq!(pieces.len(), 4, "one piece per frame the block spans");
    assert!(
        pieces.iter().all(within),
        "every piece points into a received frame"
    );
    assert_eq!(joined(&got[0].wal_block), block);
}

#[tokio::test]
async fn an_empty_block_or_none_at_all_is_an_empty_block() {
    let empty = request("c", "000000010000000000000004", 8, b"");
    // prost leaves an empty bytes field out; a client may also send it.
    let mut explicit = empty.encode_to_vec();
    explicit.extend_from_slice(&[3 << 3 | 2, 0]);
    for message in [empty.encode_to_vec(), explicit] {
        let got = all(cut(&framed(0, &message), &[])).await.unwrap();
        assert!(got[0].wal_block.is_empty());
        assert!(got[0].wal_block.pieces().is_empty());
        assert_eq!(got[0].wal_name, "000000010000000000000004");
    }
    // An empty message: every field at its default.
    let got = all(cut(&framed(0, &[]), &[])).await.unwrap();
    assert_eq!(got, vec![PutMessage::default()]);
}

#[tokio::test]
async fn unknown_fields_are_skipped_and_a_repeated_field_keeps_its_last_value() {
    let mut message = Vec::new();
    // Unknown varint (field 9), fixed64 (10), fixed32 (11), bytes (12) and
    // a group (13) holding a nested group and a varint.
    message.extend_from_slice(&[9 << 3, 0xff, 0x01]);
    message.extend_from_slice(&[10 << 3 | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
    message.extend_from_slice(&[11 << 3 | 5, 1, 2, 3, 4]);
    message.extend_from_slice(&[12 << 3 | 2, 3, b'x', b'y', b'z']);
    message.extend_from_slice(&[
        13 << 3 | 3,
        14 << 3 | 3,
        15 << 3,
        5,
        14 << 3 | 4,
        13 << 3 | 4,
    ]);
    message.extend_from_slice(
        &request("first", "000000010000000000000001", 1, b"old").encode_to_vec(),
    );
    // The reserved fields 5 and 6 are unknown too.
    message.extend_from_slice(&[5 << 3, 1, 6 << 3 | 2, 0]);
    let last = request("last", "000000010000000000000005", 4096, b"new block");
    message.extend_from_slice(&last.encode_to_vec());
    let bytes = framed(0, &message);
    for at in [0, 7, 20, bytes.len() / 2, bytes.len() - 1] {
        expect_one(
            all(cut(&bytes, &[at])).await,
            &last,
            &format!("cut at {at}"),
        );
    }
}

#[tokio::test]
async fn a_message_past_the_limit_is_refused_from_its_prefix() {
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&(MAX_MESSAGE_BYTES as u32 + 1).to_be_bytes());
    // The prefix, then a body that never sends more: the refusal comes
    // without waiting for (or buffering) the message.
    let frames =
        futures_util::stream::iter(vec![Ok::<_, Status>(Frame::data(Bytes::from(prefix)))])
            .chain(futures_util::stream::pending());
    let mut decoder = PutDecoder::new(http_body_util::StreamBody::new(frames));
    let status = decoder
        .next()
        .now_or_never()
        .expect("refused at once")
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("{} bytes", MAX_MESSAGE_BYTES + 1)),
        "{status:?}"
    );
    assert!(
        status.message().contains("send smaller blocks"),
        "{status:?}"
    );

    // The largest allowed prefix is accepted (and waits for its bytes).
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&(MAX_MESSAGE_BYTES as u32).to_be_bytes());
    let frames =
        futures_util::stream::iter(vec![Ok::<_, Status>(Frame::data(Bytes::from(prefix)))])
            .chain(futures_util::stream::pending());
    let mut decoder = PutDecoder::new(http_body_util::StreamBody::new(frames));
    assert!(
        decoder.next().now_or_never().is_none(),
        "waits for the message"
    );
}

#[tokio::test]
async fn a_compressed_message_is_refused_as_tonic_does() {
    let message = request("c", "000000010000000000000001", 1, b"x").encode_to_vec();
    let status = all(cut(&framed(1, &message), &[2])).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status
            .message()
            .contains("compressed-flag but no grpc-encoding"),
        "{status:?}"
    );
    assert!(
        status.message().contains("send messages uncompressed"),
        "{status:?}"
    );
    let status = all(cut(&framed(7, &message), &[])).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status.message().contains("invalid compression flag: 7"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_body_that_ends_inside_a_message_is_an_error() {
    let one = framed(
        0,
        &request("c", "000000010000000000000001", 9, b"abc").encode_to_vec(),
    );
    let mut two = one.clone();
    two.extend_from_slice(&one);
    for end in one.len() + 1..two.len() {
        let status = all(cut(&two[..end], &[one.len() / 2])).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "end at {end}: {status:?}");
        assert!(
            status.message().contains("stopped mid-upload"),
            "end at {end}: {status:?}"
        );
    }
    // Ending right after a message is a clean end.
    assert_eq!(all(cut(&one, &[])).await.unwrap().len(), 1);
    assert!(all(body(Vec::new())).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_body_error_is_the_streams_error() {
    let one = framed(
        0,
        &request("c", "000000010000000000000001", 9, b"abc").encode_to_vec(),
    );
    let frames = vec![
        Ok(Frame::data(Bytes::copy_from_slice(&one[..4]))),
        Err(Status::cancelled("reset by the client")),
    ];
    let status = all(body(frames)).await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled);
    assert_eq!(status.message(), "reset by the client");
}

#[tokio::test]
async fn a_trailers_frame_is_skipped() {
    let expected = request("c", "000000010000000000000001", 9, b"abc");
    let frames = vec![
        Ok(Frame::data(Bytes::from(framed(
            0,
            &expected.encode_to_vec(),
        )))),
        Ok(Frame::trailers(http::HeaderMap::new())),
    ];
    expect_one(all(body(frames)).await, &expected, "with trailers");
}

#[tokio::test]
async fn malformed_fields_are_refused_with_what_is_wrong() {
    let cases: [(&[u8], &str); 9] = [
        (
            &[
                4 << 3,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0x02,
            ],
            "invalid varint",
        ),
        (&[4 << 3, 0x80], "ends inside a varint"),
        (&[1 << 3 | 2, 10, b'a'], "a length of 10 bytes, 1 left"),
        (&[2 << 3 | 2, 2, 0xc3, 0x28], "not UTF-8"),
        (
            &[4 << 3 | 2, 0],
            "segment_size (4): invalid wire type: 2 (expected 0)",
        ),
        (
            &[3 << 3, 0],
            "wal_block (3): invalid wire type: 0 (expected 2)",
        ),
        (&[0, 0], "invalid tag value: 0"),
        (&[9 << 3 | 6], "invalid wire type value: 6"),
        (&[9 << 3 | 4], "unexpected end group tag"),
    ];
    for (message, text) in cases {
        let status = all(cut(&framed(0, message), &[6])).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{text}: {status:?}");
        assert!(status.message().contains(text), "{text}: {status:?}");
        assert!(
            status.message().contains("malformed Put message"),
            "{text}: {status:?}"
        );
    }
    // An unclosed group, and groups nested past the limit.
    let status = all(cut(&framed(0, &[9 << 3 | 3, 1 << 3, 1]), &[]))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("the group has no end"),
        "{status:?}"
    );
    let deep = vec![9 << 3 | 3; 200];
    let status = all(cut(&framed(0, &deep), &[])).await.unwrap_err();
    assert!(status.message().contains("recursion limit"), "{status:?}");
}

/// Takes at most 3 bytes per call, as a short write would.
struct Trickle(Vec<u8>);

impl std::io::Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(3);
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        self.write(first)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_block_is_written_whole_through_short_writes() {
    let mut block = Block::default();
    for piece in [&b"abcde"[..], b"", b"f", b"ghijklmnop"] {
        block.push(Bytes::copy_from_slice(piece));
    }
    assert_eq!(block.pieces().len(), 3, "empty pieces are not kept");
    let mut out = Trickle(Vec::new());
    block.write_to(&mut out).unwrap();
    assert_eq!(out.0, b"abcdefghijklmnop");
    assert_eq!(block.len(), 16);
}
