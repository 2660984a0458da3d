//! MPREG's TCP transport (`tcp://`, and `tcps://` with TLS): length-prefixed frames
//! ([`super::frame`]) carrying the same JSON as WebSocket frames, served by the same session
//! code with the same limits, concurrency and error replies. [`TcpSocket`] makes a framed byte
//! stream look like a WebSocket to the session: a data frame is a binary message, `PING` is a
//! ping the session answers with `PONG`, and closing with a code closes the stream (TCP has no
//! close frame to carry it).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ws::Message;
use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_util::codec::Framed;

use std::sync::Arc;
use std::time::Duration;

use super::handshake;
use super::listen::Ticket;
use super::state::ServerState;
use crate::protocol::frame::{Frame, FrameCodec, FrameError, PING, PONG};

/// Serves one TCP connection: its TLS handshake when the port speaks TLS, then a session, which
/// keeps the connection's place under the caps (`ticket`) for as long as it runs.
pub async fn serve(tcp: tokio::net::TcpStream, ticket: Ticket, state: Arc<ServerState>) {
    let remote = tcp.peer_addr().ok();
    let deadline = Duration::from_millis(state.config.header_timeout_ms);
    match handshake::open(tcp, &state.security, deadline, &state.handshakes).await {
        Ok((conn, peer)) => {
            let _ticket = ticket;
            // No headers on this transport: a client certificate or the anonymous role. A
            // refused client sees the connection close (there is no request to answer yet).
            let principal = match state.guard.tcp_client(&peer) {
                Ok(p) => p,
                Err(r) => return super::auth::log_refused(remote, &r),
            };
            let socket = TcpSocket::new(conn, state.config.max_message_bytes);
            super::session::run(socket, state, remote, principal).await;
        }
        // No HTTP here to say why: the client sees the connection close.
        Err(e) => handshake::failed(remote, &e),
    }
}

/// A framed TCP (or TLS) connection as the session's message socket.
pub struct TcpSocket<IO> {
    framed: Framed<IO, FrameCodec>,
    /// A close was sent: the next flush shuts the connection down.
    closing: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TcpSocket<IO> {
    /// Frames of at most `max` bytes over `io`.
    pub fn new(io: IO, max: usize) -> Self {
        let mut framed = Framed::new(io, FrameCodec::new(max));
        // Replies are written in batches; a flush waits until this much is buffered at most.
        framed.set_backpressure_boundary(64 << 10);
        TcpSocket {
            framed,
            closing: false,
        }
    }
}

impl<IO> super::session::Socket for TcpSocket<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    const ANSWERS_PINGS: bool = false;
}

/// The session reads socket errors as WebSocket errors, so an oversized TCP frame is handled
/// (logged, counted, closed) exactly as an oversized WebSocket message.
fn as_ws_error(e: FrameError) -> axum::Error {
    match e {
        FrameError::TooLarge { size, max } => {
            axum::Error::new(WsError::Capacity(CapacityError::MessageTooLong {
                size,
                max_size: max,
            }))
        }
        FrameError::Io(e) => axum::Error::new(WsError::Io(e)),
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Stream for TcpSocket<IO> {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.closing {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.framed).poll_next(cx).map(|frame| {
            frame.map(|f| match f {
                Ok(Frame::Data(bytes)) => Ok(Message::Binary(bytes)),
                Ok(Frame::Ping) => Ok(Message::Ping(Bytes::from_static(PING))),
                Err(e) => Err(as_ws_error(e)),
            })
        })
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Sink<Message> for TcpSocket<IO> {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Sink::<Bytes>::poll_ready(Pin::new(&mut self.framed), cx).map_err(as_ws_error)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        let bytes = match item {
            Message::Text(t) => Bytes::from(t),
            Message::Binary(b) => b,
            Message::Pong(_) => Bytes::from_static(PONG),
            Message::Ping(_) => Bytes::from_static(PING),
            Message::Close(_) => {
                self.closing = true;
                return Ok(());
            }
        };
        Pin::new(&mut self.framed)
            .start_send(bytes)
            .map_err(as_ws_error)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let flushed = Sink::<Bytes>::poll_flush(Pin::new(&mut self.framed), cx);
        match flushed {
            Poll::Ready(Ok(())) if self.closing => self.poll_close(cx),
            other => other.map_err(as_ws_error),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Sink::<Bytes>::poll_close(Pin::new(&mut self.framed), cx).map_err(as_ws_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn frames_become_messages_and_replies_become_frames() {
        let (client, server) = tokio::io::duplex(1024);
        let mut socket = TcpSocket::new(server, 64);
        let (mut rd, mut wr) = tokio::io::split(client);
        wr.write_all(&[0, 0, 0, 2, b'{', b'}', 0, 0, 0, 4, b'P', b'I', b'N', b'G'])
            .await
            .expect("write");
        let first = socket.next().await.expect("frame").expect("ok");
        assert!(matches!(first, Message::Binary(b) if b.as_ref() == b"{}"));
        let ping = socket.next().await.expect("frame").expect("ok");
        assert!(matches!(ping, Message::Ping(_)));
        socket
            .send(Message::Text("[1]".into()))
            .await
            .expect("send");
        socket
            .send(Message::Pong(Bytes::new()))
            .await
            .expect("send");
        let mut got = [0u8; 15];
        rd.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"\0\0\0\x03[1]\0\0\0\x04PONG");
        // A close shuts the stream down: the client reads its end.
        socket.send(Message::Close(None)).await.expect("close");
        let mut rest = Vec::new();
        rd.read_to_end(&mut rest).await.expect("eof");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_a_capacity_error() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut socket = TcpSocket::new(server, 8);
        client.write_all(&[0, 0, 1, 0]).await.expect("write");
        let err = socket.next().await.expect("item").expect_err("too big");
        let inner = err.into_inner().downcast::<WsError>().expect("a ws error");
        assert!(matches!(
            *inner,
            WsError::Capacity(CapacityError::MessageTooLong {
                size: 256,
                max_size: 8
            })
        ));
    }
}
