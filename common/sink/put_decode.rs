//! Reading a Put request body into Put messages without copying a block.
//!
//! tonic's `Streaming` copies every HTTP/2 DATA frame into its own decode
//! buffer before prost decodes a message. Here the frames h2 hands over (each
//! already a `Bytes`) are queued as they are; once a whole gRPC message has
//! arrived, its fields are read by a cursor over those pieces and the block
//! comes out as slices of them ([`Block`]), so its bytes reach the file (or
//! the discard counter) without a copy in user space. Small fields (names, a
//! varint) may straddle pieces and are copied, as prost would.
//!
//! It answers bad input as tonic and prost would, with texts that say what
//! to do: a compressed message, a message past [`MAX_MESSAGE_BYTES`] (refused
//! from its prefix, before its bytes are buffered), a malformed field, or a
//! body that ends inside a message (the client's stream ended early).

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use tonic::Status;
use walplayer_klio::endpoint::MAX_MESSAGE_BYTES;

/// The gRPC prefix: a compressed flag, then the message's length.
const PREFIX_BYTES: usize = 5;

/// How deep unknown groups may nest before a message is refused (prost's
/// recursion limit).
const MAX_GROUP_DEPTH: u32 = 100;

/// One block's bytes: slices of the frames that carried them, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Block {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Block {
    /// A block of one piece.
    pub fn whole(bytes: Bytes) -> Block {
        let len = bytes.len();
        Block {
            pieces: if len == 0 { Vec::new() } else { vec![bytes] },
            len,
        }
    }

    /// Bytes in the block.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the block holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, none of them empty.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.len += piece.len();
            self.pieces.push(piece);
        }
    }

    /// Writes every piece to `out`, as few calls as the writer allows,
    /// without joining them.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = self.pieces.iter().map(|p| IoSlice::new(p)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match out.write_vectored(slices) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "failed to write the whole block",
                    ))
                }
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// One Put message as the sink uses it: `PutRequest` with its block as
/// pieces (`send_to_tier2` is read and not kept: the sink has one tier).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PutMessage {
    pub cluster_name: String,
    pub wal_name: String,
    pub segment_size: u64,
    pub wal_block: Block,
}

impl From<walplayer_proto::klio::PutRequest> for PutMessage {
    fn from(request: walplayer_proto::klio::PutRequest) -> PutMessage {
        PutMessage {
            cluster_name: request.cluster_name,
            wal_name: request.wal_name,
            segment_size: request.segment_size,
            wal_block: Block::whole(request.wal_block),
        }
    }
}

/// Where a Put stream's messages come from: the request body read here
/// ([`PutDecoder`]), or tonic's `Streaming` when the generated service is
/// called directly.
pub trait PutSource: Send {
    /// The next message; `None` once the client closed its side cleanly.
    fn next_message(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<PutMessage>, Status>> + Send;
}

impl PutSource for tonic::Streaming<walplayer_proto::klio::PutRequest> {
    async fn next_message(&mut self) -> Result<Option<PutMessage>, Status> {
        Ok(self.message().await?.map(PutMessage::from))
    }
}

/// Reads a Put request body frame by frame and yields its messages.
pub struct PutDecoder<B> {
    body: B,
    /// Frames received and not yet handed out, none empty.
    queued: VecDeque<Bytes>,
    queued_len: usize,
    /// The length of the message being received, once its prefix was read.
    message_len: Option<usize>,
    /// The body ended (or failed): nothing more will come.
    done: bool,
}

impl<B> PutDecoder<B>
where
    B: Body<Data = Bytes> + Unpin + Send,
    B::Error: Into<tonic::codegen::StdError>,
{
    /// A decoder of `body`.
    pub fn new(body: B) -> PutDecoder<B> {
        PutDecoder {
            body,
            queued: VecDeque::new(),
            queued_len: 0,
            message_len: None,
            done: false,
        }
    }

    /// The next message; `None` once the body ended after a whole message.
    pub async fn next(&mut self) -> Result<Option<PutMessage>, Status> {
        loop {
            if self.message_len.is_none() && self.queued_len >= PREFIX_BYTES {
                self.message_len = Some(self.read_prefix()?);
            }
            if let Some(len) = self.message_len {
                if self.queued_len >= len {
                    self.message_len = None;
                    let pieces = self.take(len);
                    return decode_put(&pieces).map(Some);
                }
            }
            if self.done {
                return self.ended();
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    // Trailers carry nothing for a Put request: skipped.
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            self.queued_len += data.len();
                            self.queued.push_back(data);
                        }
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Err(Status::from_error(e.into()));
                }
                None => self.done = true,
            }
        }
    }

    /// The body ended: cleanly between messages, or inside one.
    fn ended(&self) -> Result<Option<PutMessage>, Status> {
        match (self.message_len, self.queued_len) {
            (None, 0) => Ok(None),
            (None, got) => Err(Status::internal(format!(
                "Unexpected EOF decoding stream: the client's stream ended inside a gRPC message prefix ({got} of {PREFIX_BYTES} bytes); it stopped mid-upload and nothing of the message was kept"
            ))),
            (Some(len), got) => Err(Status::internal(format!(
                "Unexpected EOF decoding stream: the client's stream ended inside a message ({got} of its {len} bytes); it stopped mid-upload and nothing of the message was kept"
            ))),
        }
    }

    /// Reads and checks the 5-byte prefix; returns the message's length.
    fn read_prefix(&mut self) -> Result<usize, Status> {
        let mut prefix = [0u8; PREFIX_BYTES];
        let mut got = 0;
        for piece in self.take(PREFIX_BYTES) {
            prefix[got..got + piece.len()].copy_from_slice(&piece);
            got += piece.len();
        }
        match prefix[0] {
            0 => {}
            1 => {
                return Err(Status::internal(
                    "protocol error: received message with compressed-flag but no grpc-encoding was specified (the sink accepts no compression: send messages uncompressed)",
                ))
            }
            f => {
                return Err(Status::internal(format!(
                    "protocol error: received message with invalid compression flag: {f} (valid flags are 0 and 1), while sending request"
                )))
            }
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > MAX_MESSAGE_BYTES {
            return Err(Status::resource_exhausted(format!(
                "a Put message of {len} bytes is past the largest the sink takes ({MAX_MESSAGE_BYTES} bytes): send smaller blocks"
            )));
        }
        Ok(len)
    }

    /// The next `len` queued bytes, as slices of the queued frames.
    fn take(&mut self, mut len: usize) -> Vec<Bytes> {
        self.queued_len -= len;
        let mut pieces = Vec::new();
        while len > 0 {
            let front = self.queued.front_mut().expect("taking only what is queued");
            if front.len() <= len {
                len -= front.len();
                pieces.push(self.queued.pop_front().expect("a front piece"));
            } else {
                pieces.push(front.split_to(len));
                len = 0;
            }
        }
        pieces
    }
}

impl<B> PutSource for PutDecoder<B>
where
    B: Body<Data = Bytes> + Unpin + Send,
    B::Error: Into<tonic::codegen::StdError>,
{
    async fn next_message(&mut self) -> Result<Option<PutMessage>, Status> {
        self.next().await
    }
}

/// A malformed message, as tonic reports prost's decode errors (INTERNAL).
fn malformed(what: impl std::fmt::Display) -> Status {
    Status::internal(format!(
        "failed to decode Protobuf message: PutRequest {what}; the client sent a malformed Put message"
    ))
}

/// Protobuf's wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// Decodes one whole message held in `pieces`.
fn decode_put(pieces: &[Bytes]) -> Result<PutMessage, Status> {
    let mut cursor = Cursor::new(pieces);
    let mut message = PutMessage::default();
    while cursor.remaining() > 0 {
        let (field, wire) = cursor.key()?;
        let expect = |expected: u8, name: &str| {
            if wire == expected {
                Ok(())
            } else {
                Err(malformed(format!(
                    "field {name} ({field}): invalid wire type: {wire} (expected {expected})"
                )))
            }
        };
        match field {
            1 => {
                expect(LENGTH_DELIMITED, "cluster_name")?;
                message.cluster_name = cursor.string("cluster_name")?;
            }
            2 => {
                expect(LENGTH_DELIMITED, "wal_name")?;
                message.wal_name = cursor.string("wal_name")?;
            }
            3 => {
                expect(LENGTH_DELIMITED, "wal_block")?;
                let len = cursor.length("wal_block")?;
                message.wal_block = cursor.slices(len);
            }
            4 => {
                expect(VARINT, "segment_size")?;
                message.segment_size = cursor.varint("segment_size")?;
            }
            7 => {
                expect(VARINT, "send_to_tier2")?;
                cursor.varint("send_to_tier2")?;
            }
            _ => cursor.skip(field, wire, 0)?,
        }
    }
    Ok(message)
}

/// Reads fields across the pieces of one message.
struct Cursor<'a> {
    pieces: &'a [Bytes],
    /// Offset into `pieces[0]`.
    at: usize,
    remaining: usize,
}

impl<'a> Cursor<'a> {
    fn new(pieces: &'a [Bytes]) -> Cursor<'a> {
        Cursor {
            pieces,
            at: 0,
            remaining: pieces.iter().map(Bytes::len).sum(),
        }
    }

    fn remaining(&self) -> usize {
        self.remaining
    }

    fn byte(&mut self) -> Option<u8> {
        while let Some(piece) = self.pieces.first() {
            if self.at < piece.len() {
                let b = piece[self.at];
                self.advance(1);
                return Some(b);
            }
            self.pieces = &self.pieces[1..];
            self.at = 0;
        }
        None
    }

    fn advance(&mut self, mut n: usize) {
        self.remaining -= n;
        while n > 0 {
            let left = self.pieces[0].len() - self.at;
            if n < left {
                self.at += n;
                return;
            }
            n -= left;
            self.pieces = &self.pieces[1..];
            self.at = 0;
        }
    }

    /// A varint, as prost reads one: at most 10 bytes, the tenth at most 1.
    fn varint(&mut self, field: &str) -> Result<u64, Status> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(b) = self.byte() else {
                return Err(malformed(format!(
                    "field {field}: buffer underflow (the message ends inside a varint)"
                )));
            };
            if i == 9 && b > 1 {
                break;
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(malformed(format!("field {field}: invalid varint")))
    }

    fn key(&mut self) -> Result<(u32, u8), Status> {
        let key = self.varint("key")?;
        if key > u64::from(u32::MAX) {
            return Err(malformed(format!("invalid key value: {key}")));
        }
        let wire = (key & 7) as u8;
        if wire > FIXED32 {
            return Err(malformed(format!("invalid wire type value: {wire}")));
        }
        let field = (key >> 3) as u32;
        if field == 0 {
            return Err(malformed("invalid tag value: 0"));
        }
        Ok((field, wire))
    }

    /// A length-delimited field's length, checked against what is left.
    fn length(&mut self, field: &str) -> Result<usize, Status> {
        let len = self.varint(field)?;
        if len > self.remaining as u64 {
            return Err(malformed(format!(
                "field {field}: buffer underflow (a length of {len} bytes, {} left in the message)",
                self.remaining
            )));
        }
        Ok(len as usize)
    }

    /// The next `len` bytes as slices of the pieces: no copy.
    fn slices(&mut self, mut len: usize) -> Block {
        let mut block = Block::default();
        self.remaining -= len;
        while len > 0 {
            let piece = &self.pieces[0];
            let take = len.min(piece.len() - self.at);
            block.push(piece.slice(self.at..self.at + take));
            len -= take;
            self.at += take;
            if self.at == piece.len() {
                self.pieces = &self.pieces[1..];
                self.at = 0;
            }
        }
        block
    }

    fn string(&mut self, field: &str) -> Result<String, Status> {
        let len = self.length(field)?;
        let block = self.slices(len);
        let mut bytes = Vec::with_capacity(len);
        for piece in block.pieces() {
            bytes.extend_from_slice(piece);
        }
        String::from_utf8(bytes).map_err(|_| {
            malformed(format!(
                "field {field}: invalid string value: data is not UTF-8 encoded"
            ))
        })
    }

    /// Skips an unknown field by its wire type.
    fn skip(&mut self, field: u32, wire: u8, depth: u32) -> Result<(), Status> {
        let name = format!("unknown field {field}");
        let fixed = |cursor: &mut Cursor<'_>, n: usize| {
            if cursor.remaining < n {
                return Err(malformed(format!("{name}: buffer underflow")));
            }
            cursor.advance(n);
            Ok(())
        };
        match wire {
            VARINT => self.varint(&name).map(drop),
            FIXED64 => fixed(self, 8),
            FIXED32 => fixed(self, 4),
            LENGTH_DELIMITED => {
                let len = self.length(&name)?;
                self.advance(len);
                Ok(())
            }
            START_GROUP => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(malformed("recursion limit reached"));
                }
                loop {
                    if self.remaining == 0 {
                        return Err(malformed(format!("{name}: the group has no end")));
                    }
                    let (inner, inner_wire) = self.key()?;
                    if inner_wire == END_GROUP {
                        if inner != field {
                            return Err(malformed(format!(
                                "{name}: unexpected end group tag {inner}"
                            )));
                        }
                        return Ok(());
                    }
                    self.skip(inner, inner_wire, depth + 1)?;
                }
            }
            _ => Err(malformed(format!("{name}: unexpected end group tag"))),
        }
    }
}

#[cfg(test)]
#[path = "put_decode_tests.rs"]
mod tests;
