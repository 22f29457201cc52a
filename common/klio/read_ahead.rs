//! A read-ahead buffer under a server's TLS, holding memory only while it
//! holds unread bytes.
//!
//! rustls asks for about one TLS record (16 KiB) per read, so a server
//! reading its socket directly makes some 130 `recv` calls per 2 MiB block.
//! [`ReadAhead`] reads whatever the socket holds, up to its capacity, in
//! one `recv` and hands it out from memory. Unlike `tokio::io::BufReader`,
//! it allocates the buffer only once the socket is readable (without
//! zeroing it: only the pages `recv` fills are touched) and frees it as
//! soon as it is drained, so a connection that sends nothing holds no
//! buffer: hostile idle peers cost what they cost before. Writes go
//! straight to the socket.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream read through a buffer of up to `capacity` bytes.
pub struct ReadAhead {
    tcp: TcpStream,
    /// Bytes read and not yet handed out, from `pos`; empty and
    /// unallocated between reads.
    buf: Vec<u8>,
    pos: usize,
    capacity: usize,
}

impl ReadAhead {
    /// `tcp` read up to `capacity` bytes at a time.
    pub fn new(tcp: TcpStream, capacity: usize) -> ReadAhead {
        ReadAhead {
            tcp,
            buf: Vec::new(),
            pos: 0,
            capacity,
        }
    }

    /// The socket underneath.
    pub fn get_ref(&self) -> &TcpStream {
        &self.tcp
    }

    /// Reads what the socket holds into a fresh buffer; an empty buffer
    /// means end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            let mut buf = Vec::with_capacity(self.capacity);
            match self.tcp.try_read_buf(&mut buf) {
                Ok(_) => {
                    self.buf = buf;
                    self.pos = 0;
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale; `try_read_buf` cleared it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.buf.len() {
            // A read as large as the buffer gains nothing from it.
            if out.remaining() >= this.capacity {
                return Pin::new(&mut this.tcp).poll_read(cx, out);
            }
            ready!(this.poll_fill(cx))?;
        }
        let n = out.remaining().min(this.buf.len() - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        if this.pos == this.buf.len() {
            // Drained: give the memory back until the socket has more.
            this.buf = Vec::new();
            this.pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ReadAhead {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(capacity: usize) -> (ReadAhead, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (
            ReadAhead::new(accepted.unwrap().0, capacity),
            client.unwrap(),
        )
    }

    /// Every byte arrives once and in order through reads smaller and
    /// larger than the buffer, writes pass through, and a drained buffer
    /// holds no memory.
    #[tokio::test]
    async fn bytes_arrive_whole_in_order_and_a_drained_buffer_is_freed() {
        let (mut ahead, mut peer) = pair(4096).await;
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                peer.write_all(&sent).await.unwrap();
                let mut answer = [0u8; 6];
                peer.read_exact(&mut answer).await.unwrap();
                assert_eq!(&answer, b"thanks");
                peer
            })
        };
        let mut got = Vec::new();
        let mut sizes = [7usize, 1000, 5000, 16].into_iter().cycle();
        while got.len() < sent.len() {
            let mut chunk = vec![0u8; sizes.next().unwrap()];
            let n = ahead.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "end of stream after {} of {} bytes",
                got.len(),
                sent.len()
            );
            got.extend_from_slice(&chunk[..n]);
            assert!(
                ahead.buf.capacity() <= 4096,
                "the buffer outgrew its capacity"
            );
        }
        assert_eq!(got, sent);
        assert_eq!(ahead.buf.capacity(), 0, "a drained buffer is freed");
        ahead.write_all(b"thanks").await.unwrap();
        let peer = writer.await.unwrap();
        drop(peer);
        let mut rest = [0u8; 8];
        assert_eq!(ahead.read(&mut rest).await.unwrap(), 0, "end of stream");
    }
}
