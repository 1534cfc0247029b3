//! The connection state machine, pure: bytes in, events and bytes out.
//!
//! [`Session`] reads frames in place from the caller's buffer. A data
//! message that arrives whole in one buffer is handed out as a borrowed
//! slice of it, unmasked in place, with no copy. Anything else (a split
//! header, a frame across reads, a fragmented message) is gathered in the
//! session, which keeps only those bytes. Text is checked as UTF-8 piece by
//! piece as it arrives, so an invalid byte fails the connection at once.
//!
//! [`Outbox`] holds encoded frames not yet written. It is kept apart from
//! the session so that a handler can send while it holds a borrowed message.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::{CloseCode, ProtocolError};
use crate::frame::{apply_mask, FrameHeader, OpCode, Role, MAX_HEADER_LEN};
use crate::utf8::Utf8Validator;

/// Peer-controlled sizes the session will accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A complete data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// What one step of reading produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A data message.
    Message(Message<'a>),
    /// A ping; the pong is already queued.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// The peer's close frame. If we had not sent a close, the echo is
    /// queued. Nothing more is read after it.
    Close {
        /// The peer's code, or 1005 when the frame carried none.
        code: CloseCode,
        /// The peer's reason.
        reason: &'a str,
    },
}

/// The result of [`Session::read`]: input bytes used, and an event if one
/// completed. Call again with the rest of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    /// Bytes of input consumed.
    pub consumed: usize,
    /// The event completed by those bytes, if any.
    pub event: Option<Event<'a>>,
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct InFrame {
    header: FrameHeader,
    received: u64,
}

/// Where the payload of a finished event lies.
enum Ready {
    /// In the caller's input, at this range.
    Input(OpCode, usize, usize),
    /// In `Session::message`.
    Message(OpCode),
    /// In `Session::control`.
    Control(OpCode),
}

/// Which buffer a finished event borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandedOut {
    Message,
    Control,
}

/// The reading half of a connection: frame parsing, fragments, UTF-8,
/// control frames and the receiving side of the close handshake.
#[derive(Debug)]
pub struct Session {
    role: Role,
    limits: Limits,
    head: [u8; MAX_HEADER_LEN],
    head_len: u8,
    frame: Option<InFrame>,
    /// Opcode of the data message in progress and how many frames it has had.
    message_op: Option<OpCode>,
    fragments: u32,
    message: Vec<u8>,
    control: Vec<u8>,
    utf8: Utf8Validator,
    /// A buffered payload was handed out and is cleared on the next read.
    handed_out: Option<HandedOut>,
    /// A close frame was received or the peer broke the protocol.
    done: bool,
}

impl Session {
    /// A session reading frames as `role`.
    pub fn new(role: Role, limits: Limits) -> Self {
        Session {
            role,
            limits,
            head: [0; MAX_HEADER_LEN],
            head_len: 0,
            frame: None,
            message_op: None,
            fragments: 0,
            message: Vec::new(),
            control: Vec::new(),
            utf8: Utf8Validator::new(),
            handed_out: None,
            done: false,
        }
    }

    /// Whether reading has ended: a close frame arrived or an error occurred.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes held for unfinished frames and messages.
    pub fn buffered(&self) -> usize {
        self.message.capacity() + self.control.capacity()
    }

    /// Whether a frame or message is partly received.
    pub fn is_mid_message(&self) -> bool {
        self.head_len > 0 || self.frame.is_some() || self.message_op.is_some()
    }

    /// Reads from `input`, unmasking it in place. Returns after one event
    /// or when the input is used up. Automatic replies (pong, close echo) go
    /// to `out`. After an error or a close frame, input is ignored.
    pub fn read<'a>(
        &'a mut self,
        input: &'a mut [u8],
        out: &mut Outbox,
    ) -> Result<Step<'a>, ProtocolError> {
        match self.handed_out.take() {
            // Free it: an idle connection holds no message buffer.
            Some(HandedOut::Message) => self.message = Vec::new(),
            Some(HandedOut::Control) => self.control = Vec::new(),
            None => {}
        }
        if self.done {
            return Ok(Step {
                consumed: input.len(),
                event: None,
            });
        }
        match self.advance(input) {
            Ok((consumed, None)) => Ok(Step {
                consumed,
                event: None,
            }),
            Ok((consumed, Some(ready))) => {
                let event = self.finish_event(ready, input, out)?;
                Ok(Step {
                    consumed,
                    event: Some(event),
                })
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    /// Parses until one event's payload is complete or input runs out.
    fn advance(&mut self, input: &mut [u8]) -> Result<(usize, Option<Ready>), ProtocolError> {
        let mut pos = 0;
        loop {
            let mut frame = match self.frame {
                Some(frame) => frame,
                None => match self.parse_header(input, &mut pos)? {
                    Some(header) => {
                        self.begin_frame(&header)?;
                        InFrame {
                            header,
                            received: 0,
                        }
                    }
                    None => return Ok((pos, None)),
                },
            };
            let header = frame.header;
            let left = header.payload_len - frame.received;
            let take = left.min((input.len() - pos) as u64) as usize;
            let chunk = &mut input[pos..pos + take];
            if let Some(key) = header.mask {
                apply_mask(chunk, key, frame.received);
            }
            let whole = frame.received == 0 && take as u64 == header.payload_len;
            let start = pos;
            pos += take;
            frame.received += take as u64;
            let complete = frame.received == header.payload_len;
            self.frame = if complete { None } else { Some(frame) };

            if header.opcode.is_control() {
                // Nothing is read after a close frame, valid or not.
                self.done |= complete && header.opcode == OpCode::Close;
                if whole && self.control.is_empty() {
                    return Ok((pos, Some(Ready::Input(header.opcode, start, pos))));
                }
                self.control.extend_from_slice(chunk);
                if complete {
                    return Ok((pos, Some(Ready::Control(header.opcode))));
                }
                return Ok((pos, None));
            }

            let op = self.message_op.expect("begin_frame set the message opcode");
            if whole && header.fin && header.opcode != OpCode::Continuation {
                // The common case: a one-frame message, whole in the input.
                if op == OpCode::Text && std::str::from_utf8(chunk).is_err() {
                    return Err(ProtocolError::InvalidUtf8);
                }
                self.message_op = None;
                return Ok((pos, Some(Ready::Input(op, start, pos))));
            }
            if op == OpCode::Text {
                self.utf8
                    .feed(chunk)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            self.message.extend_from_slice(chunk);
            if complete && header.fin {
                if op == OpCode::Text {
                    self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                self.message_op = None;
                return Ok((pos, Some(Ready::Message(op))));
            }
            if !complete {
                return Ok((pos, None));
            }
        }
    }

    /// Takes a header from held bytes plus `input`. On a partial header,
    /// holds what there is and returns `None`.
    fn parse_header(
        &mut self,
        input: &[u8],
        pos: &mut usize,
    ) -> Result<Option<FrameHeader>, ProtocolError> {
        if self.head_len == 0 {
            if let Some((header, len)) = FrameHeader::parse(&input[*pos..], self.role)? {
                *pos += len;
                return Ok(Some(header));
            }
        }
        let held = self.head_len as usize;
        let take = (MAX_HEADER_LEN - held).min(input.len() - *pos);
        self.head[held..held + take].copy_from_slice(&input[*pos..*pos + take]);
        match FrameHeader::parse(&self.head[..held + take], self.role)? {
            Some((header, len)) => {
                *pos += len - held;
                self.head_len = 0;
                Ok(Some(header))
            }
            None => {
                *pos += take;
                self.head_len = (held + take) as u8;
                Ok(None)
            }
        }
    }

    /// Checks a new frame against the message in progress and the limits.
    fn begin_frame(&mut self, header: &FrameHeader) -> Result<(), ProtocolError> {
        if header.payload_len > self.limits.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooLarge {
                len: header.payload_len,
                max: self.limits.max_frame_size,
            });
        }
        match (header.opcode, self.message_op) {
            (op, _) if op.is_control() => return Ok(()),
            // RFC 6455 §5.4: fragments of one message are not interleaved
            // with those of another.
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(_)) => {
                self.fragments += 1;
                if self.fragments as usize > self.limits.max_fragments {
                    return Err(ProtocolError::TooManyFragments {
                        max: self.limits.max_fragments,
                    });
                }
            }
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            (op, None) => {
                self.message_op = Some(op);
                self.fragments = 1;
            }
        }
        let total = self.message.len() as u64 + header.payload_len;
        if total > self.limits.max_message_size as u64 {
            return Err(ProtocolError::MessageTooLarge {
                len: total,
                max: self.limits.max_message_size,
            });
        }
        Ok(())
    }

    /// Turns a finished payload into an event, replying to pings and closes.
    fn finish_event<'a>(
        &'a mut self,
        ready: Ready,
        input: &'a [u8],
        out: &mut Outbox,
    ) -> Result<Event<'a>, ProtocolError> {
        let (op, payload): (OpCode, &'a [u8]) = match ready {
            Ready::Input(op, start, end) => (op, &input[start..end]),
            Ready::Message(op) => {
                self.handed_out = Some(HandedOut::Message);
                (op, &self.message)
            }
            Ready::Control(op) => {
                self.handed_out = Some(HandedOut::Control);
                (op, &self.control)
            }
        };
        match op {
            // Validated on the way in.
            OpCode::Text => Ok(Event::Message(Message::Text(
                std::str::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?,
            ))),
            OpCode::Binary => Ok(Event::Message(Message::Binary(payload))),
            OpCode::Ping => {
                // RFC 6455 §5.5.2: answer with a pong carrying the same data.
                out.pong(payload, self.limits.max_pong_backlog);
                Ok(Event::Ping(payload))
            }
            OpCode::Pong => Ok(Event::Pong(payload)),
            OpCode::Close => {
                let (code, reason) = parse_close(payload)?;
                // RFC 6455 §5.5.1: reply with a close, echoing the code.
                let echo = if code == CloseCode::NO_STATUS {
                    CloseCode::NORMAL
                } else {
                    code
                };
                out.close(echo, "");
                Ok(Event::Close { code, reason })
            }
            OpCode::Continuation => unreachable!("continuations finish as their message opcode"),
        }
    }
}

/// Splits a close payload into a code and reason, checking both (§5.5.1, §7.4).
pub fn parse_close(payload: &[u8]) -> Result<(CloseCode, &str), ProtocolError> {
    match payload {
        [] => Ok((CloseCode::NO_STATUS, "")),
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

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// A close frame was already sent; RFC 6455 §5.5.1 allows no more data.
    Closed,
    /// A control payload over 125 bytes.
    ControlTooLong,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Closed => f.write_str("connection is closing"),
            SendError::ControlTooLong => f.write_str("control payload over 125 bytes"),
        }
    }
}

impl std::error::Error for SendError {}

/// One piece of queued output: bytes of its own, or a frame shared with
/// other connections (a broadcast).
#[derive(Debug)]
enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(bytes) => bytes,
            Chunk::Shared(bytes) => bytes,
        }
    }
}

/// Encoded server frames waiting to be written, and the sending side of the
/// close handshake. Frames are unmasked, as a server sends them. A shared
/// frame is queued by reference, not copied.
#[derive(Debug, Default)]
pub struct Outbox {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    head: usize,
    /// Bytes waiting, over all chunks.
    len: usize,
    close_sent: bool,
    close_code: Option<CloseCode>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many bytes wait to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The waiting bytes, in order, as contiguous pieces (for `writev`).
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks.iter().enumerate().map(|(i, c)| {
            if i == 0 {
                &c.bytes()[self.head..]
            } else {
                c.bytes()
            }
        })
    }

    /// All waiting bytes in one vector (for tests and tools).
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces().flatten().copied().collect()
    }

    /// Marks `n` waiting bytes as written. Memory is freed as chunks
    /// empty, so an idle connection holds none.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.len -= n;
        self.head += n;
        while let Some(front) = self.chunks.front() {
            let front_len = front.bytes().len();
            if self.head < front_len {
                break;
            }
            self.head -= front_len;
            self.chunks.pop_front();
        }
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
            self.head = 0;
        }
    }

    /// Appends raw bytes, such as the rest of a partly written frame.
    pub fn push_raw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if let Some(Chunk::Owned(last)) = self.chunks.back_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.chunks.push_back(Chunk::Owned(bytes.to_vec()));
        }
    }

    /// Appends a whole encoded frame shared with other connections, without
    /// copying it. Refused after a close.
    pub fn push_shared(&mut self, frame: Arc<[u8]>) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        self.len += frame.len();
        self.chunks.push_back(Chunk::Shared(frame));
        Ok(())
    }

    /// Whether a close frame has been queued.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// The code of the close frame queued by [`Outbox::close`], if any.
    pub fn close_code(&self) -> Option<CloseCode> {
        self.close_code
    }

    /// Builds the header for a frame and records a close. The caller writes
    /// header and payload, directly or through [`Outbox::push_raw`].
    pub fn header(
        &mut self,
        opcode: OpCode,
        len: usize,
    ) -> Result<([u8; MAX_HEADER_LEN], usize), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if opcode.is_control() && len > 125 {
            return Err(SendError::ControlTooLong);
        }
        if opcode == OpCode::Close {
            self.close_sent = true;
        }
        let mut bytes = [0; MAX_HEADER_LEN];
        let n = FrameHeader {
            fin: true,
            opcode,
            mask: None,
            payload_len: len as u64,
        }
        .encode(&mut bytes);
        Ok((bytes, n))
    }

    /// Queues one unfragmented frame.
    pub fn push(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        let (head, n) = self.header(opcode, payload.len())?;
        self.push_raw(&head[..n]);
        self.push_raw(payload);
        Ok(())
    }

    /// Queues a pong, unless closing or unless more than `backlog` bytes
    /// wait already. RFC 6455 §5.5.3 lets an endpoint answer only the
    /// latest of several pings, so a peer that pings without reading cannot
    /// grow the output through pongs.
    pub fn pong(&mut self, payload: &[u8], backlog: usize) {
        if self.len <= backlog {
            let _ = self.push(OpCode::Pong, payload);
        }
    }

    /// Queues a close frame with a code and a reason cut to fit 123 bytes
    /// on a character boundary. Does nothing if a close was already sent.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut payload = [0u8; 125];
        payload[..2].copy_from_slice(&code.0.to_be_bytes());
        payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
        if self.push(OpCode::Close, &payload[..2 + cut]).is_ok() {
            self.close_code = Some(code);
        }
    }
}

/// Encodes one frame with an optional mask, as a client (masked) or server
/// (unmasked) sends it. Used by test clients and the load generator.
pub fn encode_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = FrameHeader {
        fin,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    }
    .encode(&mut head);
    out.extend_from_slice(&head[..n]);
    let at = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[at..], key, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event with owned data, for comparing runs.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(u16, String),
        Error(ProtocolError),
    }

    /// Feeds `input` cut at `cuts` to a server session.
    fn run(input: &[u8], cuts: &[usize], limits: Limits) -> (Vec<Owned>, Vec<u8>) {
        let mut session = Session::new(Role::Server, limits);
        let mut out = Outbox::new();
        let mut events = Vec::new();
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < input.len()));
        bounds.push(input.len());
        for piece in bounds.windows(2) {
            let mut chunk = input[piece[0]..piece[1]].to_vec();
            let mut pos = 0;
            while pos < chunk.len() {
                match session.read(&mut chunk[pos..], &mut out) {
                    Ok(step) => {
                        events.extend(step.event.map(|e| match e {
                            Event::Message(Message::Text(t)) => Owned::Text(t.into()),
                            Event::Message(Message::Binary(b)) => Owned::Binary(b.into()),
                            Event::Ping(p) => Owned::Ping(p.into()),
                            Event::Pong(p) => Owned::Pong(p.into()),
                            Event::Close { code, reason } => Owned::Close(code.0, reason.into()),
                        }));
                        pos += step.consumed;
                    }
                    Err(e) => {
                        events.push(Owned::Error(e));
                        return (events, out.to_vec());
                    }
                }
            }
        }
        (events, out.to_vec())
    }

    fn masked(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, fin, op, Some([0x37, 0xfa, 0x21, 0x3d]), payload);
        out
    }

    /// The same events and output whole and split at every offset.
    fn check(input: &[u8], want: &[Owned]) -> Vec<u8> {
        let (events, out) = run(input, &[], Limits::default());
        assert_eq!(events, want, "whole");
        for cut in 1..input.len() {
            assert_eq!(
                run(input, &[cut], Limits::default()),
                (events.clone(), out.clone()),
                "cut {cut}"
            );
        }
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(
            run(input, &every, Limits::default()),
            (events.clone(), out.clone()),
            "bytewise"
        );
        out
    }

    #[test]
    fn rfc_6455_masked_hello() {
        let input = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        check(&input, &[Owned::Text("Hello".into())]);
    }

    #[test]
    fn fragmented_message_with_ping_in_between() {
        let mut input = masked(false, OpCode::Text, b"Hel");
        input.extend(masked(true, OpCode::Ping, b"Hello"));
        input.extend(masked(true, OpCode::Continuation, b"lo"));
        let out = check(
            &input,
            &[Owned::Ping(b"Hello".to_vec()), Owned::Text("Hello".into())],
        );
        // RFC 6455 §5.7: an unmasked pong with the ping's payload.
        assert_eq!(out, [0x8a, 0x05, b'H', b'e', b'l', b'l', b'o']);
    }

    #[test]
    fn close_is_echoed_and_ends_reading() {
        let mut input = masked(true, OpCode::Close, &[0x03, 0xe8, b'o', b'k']);
        input.extend(masked(true, OpCode::Text, b"ignored"));
        let out = check(&input, &[Owned::Close(1000, "ok".into())]);
        assert_eq!(out, [0x88, 0x02, 0x03, 0xe8]);
        let out = check(
            &masked(true, OpCode::Close, b""),
            &[Owned::Close(1005, "".into())],
        );
        assert_eq!(out, [0x88, 0x02, 0x03, 0xe8]);
    }

    #[test]
    fn protocol_violations_fail_with_their_code() {
        let bad_utf8_reason = masked(true, OpCode::Close, &[0x03, 0xe8, 0xff]);
        let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
            (
                masked(true, OpCode::Continuation, b"x"),
                ProtocolError::UnexpectedContinuation,
            ),
            (
                [
                    masked(false, OpCode::Text, b"a"),
                    masked(true, OpCode::Binary, b"b"),
                ]
                .concat(),
                ProtocolError::ExpectedContinuation,
            ),
            (
                masked(true, OpCode::Close, &[0x03]),
                ProtocolError::InvalidClosePayload,
            ),
            (
                masked(true, OpCode::Close, &[0x03, 0xed]),
                ProtocolError::InvalidCloseCode(1005),
            ),
            (
                masked(true, OpCode::Close, &[0x03, 0xf7]),
                ProtocolError::InvalidCloseCode(1015),
            ),
            (
                masked(true, OpCode::Close, &[0x13, 0x88]),
                ProtocolError::InvalidCloseCode(5000),
            ),
            (bad_utf8_reason, ProtocolError::InvalidUtf8),
            (
                masked(true, OpCode::Text, &[0xce, 0xba, 0xff]),
                ProtocolError::InvalidUtf8,
            ),
            (vec![0x81, 0x00], ProtocolError::UnmaskedClientFrame),
        ];
        for (input, err) in cases {
            let code = err.close_code();
            check(&input, &[Owned::Error(err)]);
            assert!(code == CloseCode::PROTOCOL_ERROR || code == CloseCode::INVALID_PAYLOAD);
        }
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_ends() {
        // A 100-byte text frame whose third byte is invalid: the error must
        // come from the first 3 bytes of payload alone.
        let mut payload = b"ab".to_vec();
        payload.push(0xff);
        payload.resize(100, b'z');
        let input = masked(true, OpCode::Text, &payload);
        let (events, _) = run(&input[..6 + 3], &[], Limits::default());
        assert_eq!(events, [Owned::Error(ProtocolError::InvalidUtf8)]);
        // And across fragments: the second fragment's first byte is bad.
        let mut input = masked(false, OpCode::Text, &[0xce]);
        input.extend(masked(true, OpCode::Continuation, &[0x41]));
        let (events, _) = run(&input, &[], Limits::default());
        assert_eq!(events, [Owned::Error(ProtocolError::InvalidUtf8)]);
    }

    #[test]
    fn limits_close_with_1009() {
        let limits = Limits {
            max_frame_size: 10,
            max_message_size: 15,
            max_fragments: 3,
            ..Limits::default()
        };
        let (events, _) = run(&masked(true, OpCode::Binary, &[0; 11]), &[], limits);
        assert_eq!(
            events,
            [Owned::Error(ProtocolError::FrameTooLarge {
                len: 11,
                max: 10
            })]
        );
        let input = [
            masked(false, OpCode::Binary, &[0; 10]),
            masked(true, OpCode::Continuation, &[0; 6]),
        ]
        .concat();
        let (events, _) = run(&input, &[], limits);
        assert_eq!(
            events,
            [Owned::Error(ProtocolError::MessageTooLarge {
                len: 16,
                max: 15
            })]
        );
        let input: Vec<u8> = [masked(false, OpCode::Text, b"")]
            .into_iter()
            .chain((0..3).map(|_| masked(false, OpCode::Continuation, b"")))
            .flatten()
            .collect();
        let (events, _) = run(&input, &[], limits);
        assert_eq!(
            events,
            [Owned::Error(ProtocolError::TooManyFragments { max: 3 })]
        );
        for err in [
            ProtocolError::FrameTooLarge { len: 0, max: 0 },
            ProtocolError::TooManyFragments { max: 0 },
        ] {
            assert_eq!(err.close_code(), CloseCode::TOO_BIG);
        }
    }

    #[test]
    fn nothing_is_buffered_between_whole_messages() {
        let mut session = Session::new(Role::Server, Limits::default());
        let mut out = Outbox::new();
        let mut input = masked(true, OpCode::Binary, &[5; 1000]);
        let step = session.read(&mut input, &mut out).unwrap();
        assert_eq!(
            step.event,
            Some(Event::Message(Message::Binary(&[5; 1000])))
        );
        assert_eq!((session.buffered(), session.is_mid_message()), (0, false));
    }

    #[test]
    #[cfg_attr(miri, ignore = "behaviour, not memory safety; too slow under Miri")]
    fn ping_flood_cannot_grow_the_outbox() {
        let mut input = Vec::new();
        for _ in 0..10_000 {
            input.extend(masked(true, OpCode::Ping, &[7; 125]));
        }
        let (events, out) = run(&input, &[], Limits::default());
        assert_eq!(events.len(), 10_000);
        assert!(
            out.len() <= Limits::default().max_pong_backlog + 127,
            "{} bytes queued",
            out.len()
        );
    }

    #[test]
    fn outbox_refuses_frames_after_close() {
        let mut out = Outbox::new();
        out.close(CloseCode::GOING_AWAY, "bye");
        assert_eq!(out.push(OpCode::Text, b"late"), Err(SendError::Closed));
        assert_eq!(out.to_vec(), [0x88, 0x05, 0x03, 0xe9, b'b', b'y', b'e']);
        assert_eq!(out.close_code(), Some(CloseCode::GOING_AWAY));
        out.consume(7);
        assert!(out.is_empty());
    }

    #[test]
    fn outbox_keeps_order_across_owned_and_shared_chunks() {
        let mut out = Outbox::new();
        out.push_raw(b"ab");
        let shared: Arc<[u8]> = Arc::from(&b"cde"[..]);
        out.push_shared(shared.clone()).unwrap();
        out.push_raw(b"f");
        out.push_raw(b"g");
        assert_eq!((out.len(), out.to_vec()), (7, b"abcdefg".to_vec()));
        out.consume(3);
        assert_eq!(out.pieces().collect::<Vec<_>>(), [&b"de"[..], b"fg"]);
        out.consume(4);
        assert!(out.is_empty() && out.chunks.capacity() == 0);
        out.close(CloseCode::NORMAL, "");
        assert_eq!(out.push_shared(shared), Err(SendError::Closed));
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let mut out = Outbox::new();
        out.close(CloseCode::NORMAL, &"é".repeat(100));
        let frame = out.to_vec();
        assert_eq!(frame[1] as usize, frame.len() - 2);
        assert!(frame.len() - 2 <= 125);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}
