//! MPREG's TCP framing: each message is a 4-byte big-endian length followed by that many bytes
//! of the same JSON a WebSocket frame carries (the original's `tcp_transport.py`). A frame whose
//! payload is exactly `PING` is a keep-alive, answered with `PONG`.
//!
//! The decoder checks the announced length against the limit before it buffers anything, so a
//! client cannot make the node reserve 4 GiB by sending four bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Bytes of the length prefix.
pub const HEADER: usize = 4;
/// The keep-alive the original's `TCPTransport.ping` sends, and its answer.
pub const PING: &[u8] = b"PING";
/// See [`PING`].
pub const PONG: &[u8] = b"PONG";

/// What one decoded frame is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message (JSON, not checked here).
    Data(Bytes),
    /// A `PING` keep-alive.
    Ping,
}

/// Why the byte stream cannot be read as frames; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the node accepts.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// What the prefix announced.
        size: usize,
        /// `server.max_message_bytes`.
        max: usize,
    },
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Length-prefixed frames of at most `max` bytes.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    /// Frames of at most `max` payload bytes.
    pub fn new(max: usize) -> Self {
        FrameCodec { max }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(head) = src.get(..HEADER) else {
            return Ok(None);
        };
        let mut len = [0u8; HEADER];
        len.copy_from_slice(head);
        let size = u32::from_be_bytes(len) as usize;
        if size > self.max {
            return Err(FrameError::TooLarge {
                size,
                max: self.max,
            });
        }
        if src.len() < HEADER + size {
            // Room for the rest of this frame in one allocation.
            src.reserve(HEADER + size - src.len());
            return Ok(None);
        }
        src.advance(HEADER);
        let payload = src.split_to(size).freeze();
        Ok(Some(if payload.as_ref() == PING {
            Frame::Ping
        } else {
            Frame::Data(payload)
        }))
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), FrameError> {
        let item = item.as_ref();
        let size = u32::try_from(item.len()).map_err(|_| FrameError::TooLarge {
            size: item.len(),
            max: u32::MAX as usize,
        })?;
        dst.reserve(HEADER + item.len());
        dst.put_u32(size);
        dst.put_slice(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        FrameCodec::new(usize::MAX)
            .encode(payload, &mut out)
            .expect("encode");
        out.to_vec()
    }

    #[test]
    fn a_frame_is_a_big_endian_length_then_the_payload() {
        assert_eq!(framed(b"{}"), [0, 0, 0, 2, b'{', b'}']);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 4, b'P', b'I', b'N', b'G', 0, 0][..]);
        let mut codec = FrameCodec::new(16);
        assert_eq!(codec.decode(&mut buf).expect("ok"), Some(Frame::Ping));
        // Two bytes of the next header: not yet a frame.
        assert_eq!(codec.decode(&mut buf).expect("ok"), None);
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_its_payload_arrives() {
        let mut buf = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        let err = FrameCodec::new(1 << 20)
            .decode(&mut buf)
            .expect_err("too big");
        assert!(matches!(
            err,
            FrameError::TooLarge {
                size: 0xffff_ffff,
                max: 1_048_576
            }
        ));
        assert!(buf.capacity() < 1 << 20, "nothing reserved for it");
    }

    #[test]
    fn an_empty_frame_is_data() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        let frame = FrameCodec::new(8).decode(&mut buf).expect("ok");
        assert_eq!(frame, Some(Frame::Data(Bytes::new())));
    }

    proptest! {
        /// Any sequence of frames, cut into arbitrary chunks, decodes to the same frames.
        #[test]
        fn frames_survive_any_chunking(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
            cuts in proptest::collection::vec(1usize..17, 1..32),
        ) {
            let wire: Vec<u8> = payloads.iter().flat_map(|p| framed(p)).collect();
            let mut codec = FrameCodec::new(64);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= wire.len() { break; }
                let end = (at + cut).min(wire.len());
                buf.extend_from_slice(&wire[at..end]);
                at = end;
                while let Some(f) = codec.decode(&mut buf).expect("valid stream") {
                    got.push(f);
                }
            }
            let want: Vec<Frame> = payloads.iter().map(|p| if p.as_slice() == PING {
                Frame::Ping
            } else {
                Frame::Data(Bytes::copy_from_slice(p))
            }).collect();
            prop_assert_eq!(got, want);
            prop_assert!(buf.is_empty());
        }

        /// Arbitrary bytes never panic the decoder, and a prefix over the limit is an error.
        #[test]
        fn arbitrary_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut codec = FrameCodec::new(32);
            let mut buf = BytesMut::from(bytes.as_slice());
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(Frame::Data(d))) => prop_assert!(d.len() <= 32),
                    Ok(Some(Frame::Ping)) => {}
                    Ok(None) => break,
                    Err(FrameError::TooLarge { size, max }) => { prop_assert!(size > max); break; }
                    Err(FrameError::Io(_)) => unreachable!("no I/O here"),
                }
            }
        }
    }
}
