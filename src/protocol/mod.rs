//! Frames to messages, pure: [RFC 6455 §5] and [§8] on a byte stream.
//!
//! [`MessageReader`] reads frames in place from the caller's buffer. A data
//! message that arrives whole in one buffer is handed out as a borrowed
//! slice of it, unmasked in place, with no copy. Anything else (a split
//! header, a frame across reads, a fragmented message) is gathered in a
//! boxed `Partial` that exists only while such a message is in progress,
//! so an idle connection's reader is its role and a null pointer. Text is checked as UTF-8
//! piece by piece as it arrives, so an invalid byte fails at once.
//!
//! With permessage-deflate negotiated, a compressed message comes out
//! as [`Event::Compressed`]; inflating it is the session's part.
//!
//! [`Outbox`] holds encoded frames not yet written. The connection's life
//! around both (handshake, replies to pings and closes, deadlines) is
//! [`crate::session::Session`].
//!
//! [RFC 6455 §5]: https://www.rfc-editor.org/rfc/rfc6455#section-5
//! [§8]: https://www.rfc-editor.org/rfc/rfc6455#section-8

// One file per question a reader has. This one holds what the parts share:
// the limits, messages and events, the close payload, and frame encoding.
pub mod events; // Server-Sent Events: a message as an event
mod outbox; // what is queued to write: Outbox, SharedFrame
mod reader; // the frame-by-frame message reader: MessageReader

use std::borrow::Cow;

use crate::error::{CloseCode, ProtocolError};
use crate::frame::{apply_mask, FrameHeader, OpCode, MAX_HEADER_LEN};

pub use outbox::{Outbox, SharedFrame};
pub use reader::MessageReader;

/// The longest control frame payload ([RFC 6455 §5.5]).
///
/// [RFC 6455 §5.5]: https://www.rfc-editor.org/rfc/rfc6455#section-5.5
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Peer-controlled sizes a reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest payload of one frame. Default 16 MiB, the largest message
    /// Autobahn sends (9.1.6). Over it the connection closes with 1009.
    pub max_frame_size: usize,
    /// Largest payload of one message, all fragments together. Default
    /// 16 MiB, as above. Bytes are buffered only as they arrive, never on
    /// the strength of a declared length. Over it: 1009.
    pub max_message_size: usize,
    /// Most frames in one message. Default 131,072: twice Autobahn 9.3.1's
    /// 65,536 fragments of 64 bytes, and a cap on a flood of empty
    /// fragments, which no other limit bounds. Over it: 1009.
    pub max_fragments: usize,
    /// Queued output above which pings go unanswered. Default 64 KiB. This
    /// is the guard against a ping flood from a peer that does not read.
    pub max_pong_backlog: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            max_fragments: 1 << 17,
            max_pong_backlog: 64 * 1024,
        }
    }
}

setters! {
    Limits {
        max_frame_size: usize,
        max_message_size: usize,
        max_fragments: usize,
        max_pong_backlog: usize,
    }
}

/// A complete data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// A text message, checked to be UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }

    /// The opcode of the frame that carries this message.
    pub fn opcode(&self) -> OpCode {
        match self {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
        }
    }
}

/// A whole data message as the reader hands it over: borrowed from the
/// input when it arrived in one piece, else the buffer it was gathered in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming<'a> {
    /// Unmasked in place in the caller's input.
    InPlace(Message<'a>),
    /// A text message gathered across reads or fragments.
    GatheredText(String),
    /// A binary message gathered across reads or fragments.
    GatheredBinary(Vec<u8>),
}

impl Incoming<'_> {
    /// The message, borrowed from wherever it is.
    pub fn message(&self) -> Message<'_> {
        match self {
            Incoming::InPlace(msg) => *msg,
            Incoming::GatheredText(text) => Message::Text(text),
            Incoming::GatheredBinary(bytes) => Message::Binary(bytes),
        }
    }
}

/// The payload of a control frame, copied out of the input (at most 125
/// bytes), so that events never borrow the reader.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ControlPayload {
    bytes: [u8; MAX_CONTROL_PAYLOAD],
    len: u8,
}

impl ControlPayload {
    fn new(payload: &[u8]) -> Self {
        // Control frames carry at most 125 bytes (§5.5), which
        // `FrameHeader::parse` checks far from here; the cut keeps the
        // index and the `u8` below in range whatever a caller passes.
        let len = payload.len().min(MAX_CONTROL_PAYLOAD);
        let mut bytes = [0; MAX_CONTROL_PAYLOAD];
        bytes[..len].copy_from_slice(&payload[..len]);
        ControlPayload {
            bytes,
            len: len as u8,
        }
    }

    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for ControlPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlPayload({:?})", self.as_bytes())
    }
}

/// What one step of reading produced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A data message.
    Message(Incoming<'a>),
    /// A ping. [RFC 6455 §5.5.2] asks for a pong with the same payload.
    ///
    /// [RFC 6455 §5.5.2]: https://www.rfc-editor.org/rfc/rfc6455#section-5.5.2
    Ping(ControlPayload),
    /// A pong.
    Pong(ControlPayload),
    /// The peer's close frame, its code and reason checked ([§5.5.1], [§7.4]).
    ///
    /// [§5.5.1]: https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1
    /// [§7.4]: https://www.rfc-editor.org/rfc/rfc6455#section-7.4
    Close {
        /// The peer's code, or 1005 when the frame carried none.
        code: CloseCode,
        /// The reason bytes, checked to be UTF-8.
        reason: ControlPayload,
    },
    /// A compressed data message (RSV1 on its first frame), once allowed
    /// by [`MessageReader::allow_compressed`]. Its size counts against the
    /// limits as it arrived; text is checked only once it is inflated.
    Compressed {
        /// Whether it is a text message.
        text: bool,
        /// The compressed payload, borrowed when it arrived whole.
        payload: Cow<'a, [u8]>,
    },
}

/// The result of [`MessageReader::read`]: input bytes used, and an event if
/// one completed. Call again with the rest of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<'a> {
    /// Bytes of input consumed.
    pub consumed: usize,
    /// The event completed by those bytes, if any.
    pub event: Option<Event<'a>>,
}

/// Splits a close payload into a code and reason, checking both ([§5.5.1], [§7.4]).
///
/// [§5.5.1]: https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1
/// [§7.4]: https://www.rfc-editor.org/rfc/rfc6455#section-7.4
pub fn parse_close(payload: &[u8]) -> Result<(CloseCode, &str), ProtocolError> {
    match payload {
        [] => Ok((CloseCode::NO_STATUS, "")),
        // RFC 6455 §5.5.1: a close body, if any, MUST begin with a two-byte
        // status code, so one byte alone is malformed.
        [_] => Err(ProtocolError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok((code, reason))
        }
    }
}

/// A close frame's payload: the code, then the reason cut to fit 123 bytes
/// on a character boundary. Returns the payload and the reason as cut.
pub fn close_payload(code: CloseCode, reason: &str) -> (ControlPayload, &str) {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.0.to_be_bytes());
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    (ControlPayload::new(&payload[..2 + cut]), &reason[..cut])
}

/// The encoded header of one frame, and its length.
fn frame_header(
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    len: usize,
) -> ([u8; MAX_HEADER_LEN], usize) {
    let mut bytes = [0; MAX_HEADER_LEN];
    let n = FrameHeader {
        fin,
        rsv1,
        opcode,
        mask,
        payload_len: len as u64,
    }
    .encode(&mut bytes);
    (bytes, n)
}

/// Encodes one frame with an optional mask, as a client (masked) or server
/// (unmasked) sends it. Used for broadcasts, by test clients and by the
/// load generator.
pub fn encode_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) {
    let (header, n) = frame_header(fin, false, opcode, mask, payload.len());
    out.extend_from_slice(&header[..n]);
    let at = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[at..], key, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_payload_never_holds_more_than_125_bytes() {
        assert_eq!(ControlPayload::new(&[7; 300]).as_bytes(), &[7; 125][..]);
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let long = "é".repeat(100);
        let (payload, sent) = close_payload(CloseCode::NORMAL, &long);
        assert!(payload.as_bytes().len() <= 125);
        assert_eq!(sent.len(), 122);
        assert_eq!(&payload.as_bytes()[2..], sent.as_bytes());
        assert_eq!(
            parse_close(payload.as_bytes()),
            Ok((CloseCode::NORMAL, sent))
        );
    }
}
