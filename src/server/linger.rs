//! Lingering close: a connection's socket outlives hyper's use of it, so the
//! client can finish sending a body the server answered without reading.
//!
//! When a handler answers before the request body has arrived (a 401, 404 or
//! 405 on headers alone, a 413 past the size limit), hyper drains only what is
//! already buffered, writes the answer and closes. Closing a socket with unread
//! bytes makes the kernel send a reset, and a client still writing its body gets
//! "broken pipe" instead of the answer that was sent. Like nginx's
//! `lingering_close`, the socket is handed back when hyper is done with it: its
//! write side is already shut (the client has the answer and an end of stream),
//! and whatever the client still sends is read and dropped, for at most
//! [`LINGER_TIME`] and [`LINGER_BYTES`], until the client closes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// The longest a closed connection keeps reading what its client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// The most bytes a closed connection reads (and drops) before closing anyway.
pub const LINGER_BYTES: usize = 4 << 20;

/// A TCP stream that, when dropped, hands itself back through `back`.
pub struct Lingering {
    /// `Some` from construction until `drop`, the only place that takes it.
    stream: Option<TcpStream>,
    back: Option<oneshot::Sender<TcpStream>>,
}

/// Wraps `stream`; the receiver gets it back once the wrapper is dropped.
pub fn wrap(stream: TcpStream) -> (Lingering, oneshot::Receiver<TcpStream>) {
    let (tx, rx) = oneshot::channel();
    let l = Lingering {
        stream: Some(stream),
        back: Some(tx),
    };
    (l, rx)
}

impl Lingering {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        // `stream` is taken only in `drop`, after which no poll can run.
        Pin::new(self.stream.as_mut().expect("stream present until drop"))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        if let (Some(s), Some(tx)) = (self.stream.take(), self.back.take()) {
            // The receiver may be gone (its task ended): the stream just closes.
            let _ = tx.send(s);
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_shutdown(cx)
    }
}

/// Shuts the write side (if hyper did not), then reads and drops what the
/// client still sends until it closes, [`LINGER_TIME`] passes or
/// [`LINGER_BYTES`] have been read; then the stream closes.
pub async fn linger(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt as _;
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 8192];
    let mut read = 0usize;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while read < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}
