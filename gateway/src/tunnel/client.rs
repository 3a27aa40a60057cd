//! The client side of a splice: the socket itself where it can be had.
//!
//! Pingora's plain TCP stream keeps a write buffer (1,460 bytes), its
//! digests and its own bookkeeping for the connection's whole life: about
//! 2 KiB per idle websocket, more than the rest of the splice. Once the
//! upgrade's response is flushed nothing is left in Pingora's buffers (the
//! gateway reads downstream unbuffered, and the request head that Pingora's
//! h2c preface check rewinds is read by then), so the splice takes a
//! duplicate of the socket and Pingora's stream is dropped (with the
//! gateway's read-timeout wrapper, whose deadlines a tunnel is past). TLS connections,
//! and a gateway reading downstream through a buffer
//! (`--downstream-read-buffer`), keep Pingora's stream.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use pingora_core::protocols::Stream;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::read_timeouts::TimedStream;

/// The client connection of a splice.
pub enum Client {
    /// Pingora's stream (TLS, or a buffered reader).
    Pingora(Stream),
    /// The bare socket.
    Tcp(TcpStream),
}

impl Client {
    /// The bare socket of `stream` when it is plain TCP and `unbuffered`
    /// (nothing can wait in Pingora's read buffer), else `stream` itself
    /// (out of its read-timeout wrapper either way).
    pub async fn new(stream: Stream, unbuffered: bool) -> io::Result<Self> {
        let mut stream = untimed(stream)?;
        if !unbuffered || l4_stream(&stream).is_none() {
            return Ok(Client::Pingora(stream));
        }
        // The 101 may still sit in Pingora's write buffer.
        if let Err(error) = stream.flush().await {
            tracing::debug!(%error, "flushing the upgrade's response");
            return Ok(Client::Pingora(stream));
        }
        match socket_of(&stream) {
            Ok(socket) => Ok(Client::Tcp(socket)),
            Err(error) => {
                tracing::debug!(%error, "keeping Pingora's stream for a splice");
                Ok(Client::Pingora(stream))
            }
        }
    }
}

/// The stream inside the gateway's read-timeout wrapper
/// ([`TimedStream`]), which every HTTP/1.x client stream comes in.
fn untimed(stream: Stream) -> io::Result<Stream> {
    if !(*stream).as_any().is::<TimedStream>() {
        return Ok(stream);
    }
    match stream.into_any().downcast::<TimedStream>() {
        Ok(timed) => Ok(timed.into_inner()),
        Err(_) => Err(io::Error::other("the client stream changed type while unwrapping it")),
    }
}

/// The plain TCP stream in the box, if that is what it holds (`(**stream)`:
/// the box itself is an `IO` too, and its `as_any` is the box's).
fn l4_stream(stream: &Stream) -> Option<&L4Stream> {
    (**stream).as_any().downcast_ref::<L4Stream>()
}

/// A duplicate of `stream`'s socket, registered with this runtime.
fn socket_of(stream: &Stream) -> io::Result<TcpStream> {
    let l4 = l4_stream(stream).ok_or_else(|| io::Error::other("not a TCP stream"))?;
    // SAFETY: the descriptor belongs to `l4`, which is borrowed (so open)
    // for as long as the borrowed descriptor is used: only to duplicate it.
    #[allow(unsafe_code)]
    let borrowed = unsafe { BorrowedFd::borrow_raw(l4.as_raw_fd()) };
    let socket = std::net::TcpStream::from(borrowed.try_clone_to_owned()?);
    socket.set_nonblocking(true)?;
    TcpStream::from_std(socket)
}

impl AsyncRead for Client {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Pingora(stream) => Pin::new(stream).poll_read(cx, buf),
            Client::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Client {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Client::Pingora(stream) => Pin::new(stream).poll_write(cx, buf),
            Client::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Pingora(stream) => Pin::new(stream).poll_flush(cx),
            Client::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Pingora(stream) => Pin::new(stream).poll_shutdown(cx),
            Client::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
        }
    }
}
