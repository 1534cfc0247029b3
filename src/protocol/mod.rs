//! Frames to messages, pure: RFC 6455 §5 and §8 on a byte stream.
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

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::{CloseCode, ProtocolError};
use crate::frame::{apply_mask, FrameHeader, OpCode, Role, MAX_HEADER_LEN};
use crate::utf8::Utf8Validator;

/// RFC 6455 §5.5: the longest control frame payload.
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
    /// A ping. RFC 6455 §5.5.2 asks for a pong with the same payload.
    Ping(ControlPayload),
    /// A pong.
    Pong(ControlPayload),
    /// The peer's close frame, its code and reason checked (§5.5.1, §7.4).
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

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct InFrame {
    header: FrameHeader,
    received: u64,
}

/// What a reader holds while a frame or message is unfinished.
#[derive(Debug, Default)]
struct Partial {
    /// Bytes of a frame header split across reads.
    header_bytes: [u8; MAX_HEADER_LEN],
    header_len: u8,
    frame: Option<InFrame>,
    /// Opcode of the data message in progress and how many frames it has had.
    message_op: Option<OpCode>,
    /// Whether that message is compressed (its first frame had RSV1).
    compressed: bool,
    fragments: u32,
    message: Vec<u8>,
    control: Vec<u8>,
    utf8: Utf8Validator,
}

impl Partial {
    /// Adds a piece of a control frame split across reads; returns the
    /// frame once complete.
    fn gather_control(&mut self, frame: InFrame, chunk: &[u8]) -> Option<Ready> {
        let complete = frame.received == frame.header.payload_len;
        self.frame = (!complete).then_some(frame);
        self.control.extend_from_slice(chunk);
        complete.then_some(Ready::Control(frame.header.opcode))
    }

    /// Adds a piece of a data message, checking text as it comes; returns
    /// the finished message when `last` completes it.
    fn gather(
        &mut self,
        op: OpCode,
        chunk: &[u8],
        last: bool,
    ) -> Result<Option<Ready>, ProtocolError> {
        self.message_op = Some(op);
        // Compressed text is checked once inflated.
        let check_text = op == OpCode::Text && !self.compressed;
        if check_text {
            self.utf8
                .feed(chunk)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.message.extend_from_slice(chunk);
        if !last {
            return Ok(None);
        }
        if check_text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.message_op = None;
        self.fragments = 0;
        let compressed = std::mem::take(&mut self.compressed);
        Ok(Some(Ready::Message(op, compressed)))
    }

    /// Whether nothing is in progress, so the box can go.
    fn is_idle(&self) -> bool {
        self.header_len == 0 && self.frame.is_none() && self.message_op.is_none()
    }
}

/// Where the payload of a finished event lies.
enum Ready {
    /// In the caller's input, at this range.
    Input(OpCode, usize, usize),
    /// A compressed message in the caller's input, at this range.
    CompressedInput(OpCode, usize, usize),
    /// In `Partial::message`; whether it is compressed.
    Message(OpCode, bool),
    /// In `Partial::control`.
    Control(OpCode),
}

/// Frames in, messages and control frames out: fragments, UTF-8, limits
/// and every §5 rule on what a peer may send.
#[derive(Debug)]
pub struct MessageReader {
    role: Role,
    /// Whether RSV1 marks a compressed message: permessage-deflate was
    /// negotiated.
    compression: bool,
    partial: Option<Box<Partial>>,
}

impl MessageReader {
    /// A reader of frames sent to `role`.
    pub fn new(role: Role) -> Self {
        MessageReader {
            role,
            compression: false,
            partial: None,
        }
    }

    /// Lets RSV1 mark the first frame of a compressed data message, once
    /// permessage-deflate is negotiated (RFC 7692 §6). Such messages come
    /// out as [`Event::Compressed`], for the caller to inflate.
    pub fn allow_compressed(&mut self) {
        self.compression = true;
    }

    /// Bytes held for unfinished frames and messages.
    pub fn buffered(&self) -> usize {
        self.partial
            .as_ref()
            .map_or(0, |p| p.message.capacity() + p.control.capacity())
    }

    /// Whether a frame or message is partly received.
    pub fn is_mid_message(&self) -> bool {
        self.partial.as_ref().is_some_and(|p| !p.is_idle())
    }

    /// Reads from `input`, unmasking it in place. Returns after one event
    /// or when the input is used up. After an error the reader starts
    /// afresh; the caller is expected to stop reading.
    pub fn read<'a>(
        &mut self,
        input: &'a mut [u8],
        limits: &Limits,
    ) -> Result<Step<'a>, ProtocolError> {
        let result = self.advance(input, limits).and_then(|(consumed, ready)| {
            let event = match ready {
                Some(ready) => Some(self.finish_event(ready, input)?),
                None => None,
            };
            Ok(Step { consumed, event })
        });
        // Events carry copies or moved buffers, so what they came from can
        // go: the control bytes at once, the box once nothing is in progress.
        if let Some(p) = self.partial.as_mut() {
            if p.frame.is_none_or(|f| !f.header.opcode.is_control()) {
                p.control.clear();
            }
            if result.is_err() || p.is_idle() {
                self.partial = None;
            }
        }
        result
    }

    fn partial(&mut self) -> &mut Partial {
        self.partial.get_or_insert_with(Box::default)
    }

    /// Parses until one event's payload is complete or input runs out.
    fn advance(
        &mut self,
        input: &mut [u8],
        limits: &Limits,
    ) -> Result<(usize, Option<Ready>), ProtocolError> {
        let mut pos = 0;
        loop {
            let Some(mut frame) = self.next_frame(input, &mut pos, limits)? else {
                return Ok((pos, None));
            };
            let header = frame.header;
            let left = header.payload_len - frame.received;
            // At most the input left, so it fits a usize even where the
            // peer's 64-bit length would not.
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
            let message_op = self.partial.as_ref().and_then(|p| p.message_op);

            if header.opcode.is_control() {
                let ready = if whole {
                    Some(Ready::Input(header.opcode, start, pos))
                } else {
                    self.partial().gather_control(frame, chunk)
                };
                return Ok((pos, ready));
            }

            // The opcode of a first frame, or of the message a continuation continues.
            let op = message_op.unwrap_or(header.opcode);
            if whole && header.fin && header.opcode != OpCode::Continuation {
                // The common case: a one-frame message, whole in the input
                // (its header may have come in the read before).
                if let Some(p) = self.partial.as_mut() {
                    p.message_op = None;
                }
                if header.rsv1 {
                    return Ok((pos, Some(Ready::CompressedInput(op, start, pos))));
                }
                if op == OpCode::Text && std::str::from_utf8(chunk).is_err() {
                    return Err(ProtocolError::InvalidUtf8);
                }
                return Ok((pos, Some(Ready::Input(op, start, pos))));
            }
            let p = self.partial();
            p.frame = (!complete).then_some(frame);
            // RSV1 comes on a message's first frame only (begin_frame).
            p.compressed |= header.rsv1;
            if let Some(ready) = p.gather(op, chunk, complete && header.fin)? {
                return Ok((pos, Some(ready)));
            }
            if !complete {
                return Ok((pos, None));
            }
        }
    }

    /// The frame whose payload comes next: the one under way, or a new one
    /// whose header is read and checked. `None` when the header is not all
    /// here yet.
    fn next_frame(
        &mut self,
        input: &[u8],
        pos: &mut usize,
        limits: &Limits,
    ) -> Result<Option<InFrame>, ProtocolError> {
        // Taken: the caller puts it back if the frame goes on.
        if let Some(frame) = self.partial.as_mut().and_then(|p| p.frame.take()) {
            return Ok(Some(frame));
        }
        let Some(header) = self.parse_header(input, pos)? else {
            return Ok(None);
        };
        self.begin_frame(&header, limits)?;
        Ok(Some(InFrame {
            header,
            received: 0,
        }))
    }

    /// Takes a header from held bytes plus `input`. On a partial header,
    /// holds what there is and returns `None`.
    fn parse_header(
        &mut self,
        input: &[u8],
        pos: &mut usize,
    ) -> Result<Option<FrameHeader>, ProtocolError> {
        let held = self.partial.as_ref().map_or(0, |p| p.header_len as usize);
        if held == 0 {
            if let Some((header, len)) = FrameHeader::parse(&input[*pos..], self.role)? {
                *pos += len;
                return Ok(Some(header));
            }
            if *pos == input.len() {
                return Ok(None);
            }
        }
        let role = self.role;
        let p = self.partial();
        let take = (MAX_HEADER_LEN - held).min(input.len() - *pos);
        p.header_bytes[held..held + take].copy_from_slice(&input[*pos..*pos + take]);
        match FrameHeader::parse(&p.header_bytes[..held + take], role)? {
            Some((header, len)) => {
                *pos += len - held;
                p.header_len = 0;
                Ok(Some(header))
            }
            None => {
                *pos += take;
                p.header_len = (held + take) as u8;
                Ok(None)
            }
        }
    }

    /// Checks a new frame against the message in progress and the limits.
    fn begin_frame(&mut self, header: &FrameHeader, limits: &Limits) -> Result<(), ProtocolError> {
        if header.payload_len > limits.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooLarge {
                len: header.payload_len,
                max: limits.max_frame_size,
            });
        }
        let (message_op, held) = self
            .partial
            .as_ref()
            .map_or((None, 0), |p| (p.message_op, p.message.len()));
        // RFC 7692 §6.1: RSV1 marks the first frame of a compressed data
        // message, and means nothing, so is an error, anywhere else.
        let first_data = !header.opcode.is_control() && header.opcode != OpCode::Continuation;
        if header.rsv1 && !(self.compression && first_data) {
            return Err(ProtocolError::ReservedBitsSet);
        }
        match (header.opcode, message_op) {
            (op, _) if op.is_control() => return Ok(()),
            // RFC 6455 §5.4: fragments of one message are not interleaved
            // with those of another.
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(_)) => {
                let p = self.partial();
                // Config caps max_fragments at u32::MAX, so a count that
                // would pass u32::MAX is over the limit too, not a wrap.
                match p.fragments.checked_add(1) {
                    Some(n) if n as usize <= limits.max_fragments => p.fragments = n,
                    _ => {
                        return Err(ProtocolError::TooManyFragments {
                            max: limits.max_fragments,
                        })
                    }
                }
            }
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            (_, None) => {
                if !header.fin {
                    self.partial().fragments = 1;
                }
            }
        }
        // In u64, never usize, so a 32-bit target cannot wrap the sum under
        // the limit; saturating, so no wrap rests on `payload_len < 2^63`
        // being checked in another file.
        let total = (held as u64).saturating_add(header.payload_len);
        if total > limits.max_message_size as u64 {
            return Err(ProtocolError::MessageTooLarge {
                len: total,
                max: limits.max_message_size,
            });
        }
        Ok(())
    }

    /// Turns a finished payload into an event.
    fn finish_event<'a>(
        &mut self,
        ready: Ready,
        input: &'a [u8],
    ) -> Result<Event<'a>, ProtocolError> {
        let control = |op: OpCode, payload: &[u8]| -> Result<Event<'a>, ProtocolError> {
            let payload = ControlPayload::new(payload);
            match op {
                OpCode::Ping => Ok(Event::Ping(payload)),
                OpCode::Pong => Ok(Event::Pong(payload)),
                _ => {
                    let (code, reason) = parse_close(payload.as_bytes())?;
                    Ok(Event::Close {
                        code,
                        reason: ControlPayload::new(reason.as_bytes()),
                    })
                }
            }
        };
        match ready {
            Ready::Input(op, start, end) if op.is_control() => control(op, &input[start..end]),
            // Checked to be UTF-8 on the way in; this cannot fail.
            Ready::Input(OpCode::Text, start, end) => {
                Ok(Event::Message(Incoming::InPlace(Message::Text(
                    std::str::from_utf8(&input[start..end])
                        .map_err(|_| ProtocolError::InvalidUtf8)?,
                ))))
            }
            Ready::Input(_, start, end) => Ok(Event::Message(Incoming::InPlace(Message::Binary(
                &input[start..end],
            )))),
            Ready::CompressedInput(op, start, end) => Ok(Event::Compressed {
                text: op == OpCode::Text,
                payload: Cow::Borrowed(&input[start..end]),
            }),
            Ready::Control(op) => {
                let bytes = self.partial.as_ref().map_or(&[][..], |p| &p.control[..]);
                control(op, bytes)
            }
            Ready::Message(op, compressed) => {
                let gathered = self
                    .partial
                    .as_mut()
                    .map(|p| std::mem::take(&mut p.message))
                    .unwrap_or_default();
                if compressed {
                    Ok(Event::Compressed {
                        text: op == OpCode::Text,
                        payload: Cow::Owned(gathered),
                    })
                } else if op == OpCode::Text {
                    let text =
                        String::from_utf8(gathered).map_err(|_| ProtocolError::InvalidUtf8)?;
                    Ok(Event::Message(Incoming::GatheredText(text)))
                } else {
                    Ok(Event::Message(Incoming::GatheredBinary(gathered)))
                }
            }
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

/// Encoded frames waiting to be written, in order. A shared frame is queued
/// by reference, not copied. It knows nothing of the close handshake: what
/// may still be sent is the session's rule. Empty, it is one null pointer:
/// the queue is boxed while it holds bytes and freed when they are written.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: Option<Box<Queue>>,
}

/// The chunks of a non-empty [`Outbox`]. The first is kept apart, so
/// that the usual queue, one run of owned bytes, allocates no deque.
#[derive(Debug)]
struct Queue {
    front: Chunk,
    rest: VecDeque<Chunk>,
    /// Bytes of `front` already written.
    written: usize,
    /// Bytes waiting, over all chunks.
    len: usize,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many bytes wait to be written.
    pub fn len(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len)
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.queue.is_none()
    }

    /// The waiting bytes, in order, as contiguous pieces (for `sendmsg`).
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.queue.iter().flat_map(|q| {
            std::iter::once(&q.front.bytes()[q.written..]).chain(q.rest.iter().map(Chunk::bytes))
        })
    }

    /// All waiting bytes in one vector (for tests and tools).
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces().flatten().copied().collect()
    }

    /// Marks `n` waiting bytes as written. Memory is freed as chunks
    /// empty, and the queue with the last, so an idle connection holds none.
    pub fn consume(&mut self, n: usize) {
        let Some(q) = self.queue.as_mut() else {
            debug_assert_eq!(n, 0);
            return;
        };
        debug_assert!(n <= q.len);
        q.len -= n;
        if q.len == 0 {
            self.queue = None;
            return;
        }
        q.written += n;
        while q.written >= q.front.bytes().len() {
            q.written -= q.front.bytes().len();
            // Bytes remain, so a chunk follows.
            match q.rest.pop_front() {
                Some(next) => q.front = next,
                None => break,
            }
        }
    }

    /// Appends a chunk, or starts the queue with it.
    fn push_chunk(&mut self, chunk: Chunk) {
        let len = chunk.bytes().len();
        match self.queue.as_mut() {
            Some(q) => {
                q.len += len;
                q.rest.push_back(chunk);
            }
            None => {
                self.queue = Some(Box::new(Queue {
                    front: chunk,
                    rest: VecDeque::new(),
                    written: 0,
                    len,
                }))
            }
        }
    }

    /// Appends raw bytes, such as an HTTP response.
    pub fn push_raw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(q) = self.queue.as_mut() {
            // Never onto a chunk partly written: its written bytes are only
            // freed with it, so a queue that never quite empties would keep
            // every byte ever sent.
            let last = match q.rest.back_mut() {
                Some(last) => Some(last),
                None => (q.written == 0).then_some(&mut q.front),
            };
            if let Some(Chunk::Owned(last)) = last {
                last.extend_from_slice(bytes);
                q.len += bytes.len();
                return;
            }
        }
        self.push_chunk(Chunk::Owned(bytes.to_vec()));
    }

    /// Appends bytes the caller built, without copying them.
    pub fn push_owned(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.push_chunk(Chunk::Owned(bytes));
        }
    }

    /// Appends a whole encoded frame shared with other connections, without
    /// copying it.
    pub fn push_shared(&mut self, frame: Arc<[u8]>) {
        if !frame.is_empty() {
            self.push_chunk(Chunk::Shared(frame));
        }
    }

    /// Queues one unfragmented, unmasked frame, as a server sends it.
    pub fn push(&mut self, opcode: OpCode, payload: &[u8]) {
        self.push_frame(false, opcode, payload);
    }

    /// Queues one unfragmented, unmasked frame, with RSV1 set when its
    /// payload is compressed (RFC 7692 §6).
    pub fn push_frame(&mut self, rsv1: bool, opcode: OpCode, payload: &[u8]) {
        let (header, n) = frame_header(true, rsv1, opcode, None, payload.len());
        self.push_raw(&header[..n]);
        self.push_raw(payload);
    }
}

/// A message encoded once for many connections (a broadcast): the plain
/// frame, queued by reference on each; and, with permessage-deflate,
/// compressed frames made from it on first need, one per window size,
/// shared the same way.
#[derive(Debug)]
pub struct SharedFrame {
    frame: Arc<[u8]>,
    /// Where the payload starts in `frame`.
    header_len: usize,
    opcode: OpCode,
    /// By window bits 9 to 15: not tried yet, or the frame (`None` where
    /// compressing did not make it smaller).
    #[cfg(feature = "deflate")]
    deflated: [Option<Option<Arc<[u8]>>>; crate::deflate::WINDOW_SIZES],
}

impl SharedFrame {
    /// Encodes `msg` as one unmasked frame.
    pub fn encode(msg: Message<'_>) -> Self {
        let mut frame = Vec::with_capacity(msg.as_bytes().len() + MAX_HEADER_LEN);
        encode_frame(&mut frame, true, msg.opcode(), None, msg.as_bytes());
        Self::from_frame(frame.into())
    }

    /// Wraps a frame that [`SharedFrame::encode`] made.
    pub fn from_frame(frame: Arc<[u8]>) -> Self {
        let (header_len, opcode) = match FrameHeader::parse(&frame, Role::Client) {
            Ok(Some((header, len))) => (len, header.opcode),
            // Not a frame after all: it can still go out as bytes.
            _ => (frame.len(), OpCode::Binary),
        };
        SharedFrame {
            frame,
            header_len,
            opcode,
            #[cfg(feature = "deflate")]
            deflated: Default::default(),
        }
    }

    /// The plain frame.
    pub fn frame(&self) -> &Arc<[u8]> {
        &self.frame
    }

    /// The message's opcode and payload.
    pub fn payload(&self) -> (OpCode, &[u8]) {
        (self.opcode, &self.frame[self.header_len..])
    }

    /// The frame compressed for a connection that keeps no context and
    /// inflates with a window of `bits`, made on the first call; `None`
    /// when compressing does not make it smaller.
    #[cfg(feature = "deflate")]
    pub(crate) fn deflated(
        &mut self,
        bits: u8,
        config: &crate::deflate::DeflateConfig,
    ) -> Option<Arc<[u8]>> {
        let slot = &mut self.deflated[crate::deflate::window_slot(bits)];
        let (opcode, payload) = (self.opcode, &self.frame[self.header_len..]);
        slot.get_or_insert_with(|| {
            crate::deflate::with_scratch(|compressed| {
                if !crate::deflate::compress_shared(bits, config, payload, compressed) {
                    return None;
                }
                let (header, n) = frame_header(true, true, opcode, None, compressed.len());
                let mut frame = Vec::with_capacity(n + compressed.len());
                frame.extend_from_slice(&header[..n]);
                frame.extend_from_slice(compressed);
                Some(frame.into())
            })
        })
        .clone()
    }
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

    /// An event with owned data, for comparing runs.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(u16, String),
        Compressed(bool, Vec<u8>),
        Error(ProtocolError),
    }

    /// Feeds `input` cut at `cuts` to a server-role reader.
    fn run(input: &[u8], cuts: &[usize], limits: Limits) -> Vec<Owned> {
        run_with(MessageReader::new(Role::Server), input, cuts, limits)
    }

    /// Feeds `input` cut at `cuts` to `reader`.
    fn run_with(
        mut reader: MessageReader,
        input: &[u8],
        cuts: &[usize],
        limits: Limits,
    ) -> Vec<Owned> {
        let mut events = Vec::new();
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < input.len()));
        bounds.push(input.len());
        for piece in bounds.windows(2) {
            let mut chunk = input[piece[0]..piece[1]].to_vec();
            let mut pos = 0;
            while pos < chunk.len() {
                match reader.read(&mut chunk[pos..], &limits) {
                    Ok(step) => {
                        events.extend(step.event.map(|e| match e {
                            Event::Message(m) => match m.message() {
                                Message::Text(t) => Owned::Text(t.into()),
                                Message::Binary(b) => Owned::Binary(b.into()),
                            },
                            Event::Ping(p) => Owned::Ping(p.as_bytes().into()),
                            Event::Pong(p) => Owned::Pong(p.as_bytes().into()),
                            Event::Close { code, reason } => Owned::Close(
                                code.0,
                                String::from_utf8(reason.as_bytes().to_vec()).unwrap(),
                            ),
                            Event::Compressed { text, payload } => {
                                Owned::Compressed(text, payload.into_owned())
                            }
                        }));
                        pos += step.consumed;
                    }
                    Err(e) => {
                        events.push(Owned::Error(e));
                        return events;
                    }
                }
            }
        }
        events
    }

    fn masked(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, fin, op, Some([0x37, 0xfa, 0x21, 0x3d]), payload);
        out
    }

    /// The same events whole and split at every offset.
    fn check(input: &[u8], want: &[Owned]) {
        let events = run(input, &[], Limits::default());
        assert_eq!(events, want, "whole");
        for cut in 1..input.len() {
            assert_eq!(run(input, &[cut], Limits::default()), events, "cut {cut}");
        }
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(run(input, &every, Limits::default()), events, "bytewise");
    }

    #[test]
    fn rfc_6455_masked_hello() {
        let input = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        check(&input, &[Owned::Text("Hello".into())]);
    }

    #[test]
    fn two_messages_whole_and_split_anywhere() {
        // Cut right after the first header, the first payload arrives whole
        // in the next read: the second message must still start afresh.
        let mut input = masked(true, OpCode::Text, b"one");
        input.extend(masked(true, OpCode::Binary, b"two"));
        check(
            &input,
            &[Owned::Text("one".into()), Owned::Binary(b"two".to_vec())],
        );
    }

    /// A masked frame with RSV1 set.
    fn masked_rsv1(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut frame = masked(fin, op, payload);
        frame[0] |= 0x40;
        frame
    }

    #[test]
    fn rsv1_marks_compressed_messages_only_where_allowed() {
        let whole = masked_rsv1(true, OpCode::Text, b"\xf2\x48");
        let mut split = masked_rsv1(false, OpCode::Binary, b"ab");
        split.extend(masked(true, OpCode::Continuation, b"cd"));
        // Without permessage-deflate, RSV1 is an error (1002).
        assert_eq!(
            run(&whole, &[], Limits::default()),
            [Owned::Error(ProtocolError::ReservedBitsSet)]
        );
        let mut allowed = MessageReader::new(Role::Server);
        allowed.allow_compressed();
        let mut input = whole.clone();
        input.extend(&split);
        input.extend(masked(true, OpCode::Text, b"plain"));
        for cut in 0..input.len() {
            let mut reader = MessageReader::new(Role::Server);
            reader.allow_compressed();
            assert_eq!(
                run_with(reader, &input, &[cut], Limits::default()),
                [
                    // Not checked as UTF-8: it is still compressed.
                    Owned::Compressed(true, b"\xf2\x48".to_vec()),
                    Owned::Compressed(false, b"abcd".to_vec()),
                    Owned::Text("plain".into()),
                ],
                "cut at {cut}"
            );
        }
        // Even then, RSV1 on a continuation or a control frame is an error.
        let mut on_continuation = masked(false, OpCode::Text, b"a");
        on_continuation.extend(masked_rsv1(true, OpCode::Continuation, b"b"));
        for bad in [on_continuation, masked_rsv1(true, OpCode::Ping, b"")] {
            let mut reader = MessageReader::new(Role::Server);
            reader.allow_compressed();
            assert_eq!(
                run_with(reader, &bad, &[], Limits::default()).last(),
                Some(&Owned::Error(ProtocolError::ReservedBitsSet))
            );
        }
    }

    #[test]
    fn fragmented_message_with_ping_in_between() {
        let mut input = masked(false, OpCode::Text, b"Hel");
        input.extend(masked(true, OpCode::Ping, b"Hello"));
        input.extend(masked(true, OpCode::Continuation, b"lo"));
        check(
            &input,
            &[Owned::Ping(b"Hello".to_vec()), Owned::Text("Hello".into())],
        );
    }

    #[test]
    fn close_code_and_reason_are_read() {
        check(
            &masked(true, OpCode::Close, &[0x03, 0xe8, b'o', b'k']),
            &[Owned::Close(1000, "ok".into())],
        );
        check(
            &masked(true, OpCode::Close, b""),
            &[Owned::Close(1005, "".into())],
        );
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
        let events = run(&input[..6 + 3], &[], Limits::default());
        assert_eq!(events, [Owned::Error(ProtocolError::InvalidUtf8)]);
        // And across fragments: the second fragment's first byte is bad.
        let mut input = masked(false, OpCode::Text, &[0xce]);
        input.extend(masked(true, OpCode::Continuation, &[0x41]));
        let events = run(&input, &[], Limits::default());
        assert_eq!(events, [Owned::Error(ProtocolError::InvalidUtf8)]);
    }

    #[test]
    fn limits_close_with_1009() {
        let limits = Limits::default()
            .max_frame_size(10)
            .max_message_size(15)
            .max_fragments(3);
        let events = run(&masked(true, OpCode::Binary, &[0; 11]), &[], limits);
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
        let events = run(&input, &[], limits);
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
        let events = run(&input, &[], limits);
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

    /// A masked binary frame header declaring `len`, in the 64-bit form.
    fn header_64(fin: bool, op: OpCode, len: u64) -> Vec<u8> {
        let mut header = vec![(u8::from(fin) << 7) | op.as_u8(), 0xFF];
        header.extend(len.to_be_bytes());
        header.extend([1, 2, 3, 4]);
        header
    }

    #[test]
    fn extreme_lengths_fail_with_typed_errors() {
        // The top bit set (u64::MAX, 2^63) is refused by the header, and
        // the largest legal length, 2^63 - 1, by the frame limit.
        for len in [u64::MAX, 1 << 63] {
            let input = header_64(true, OpCode::Binary, len);
            check(&input, &[Owned::Error(ProtocolError::InvalidLength)]);
        }
        let len = i64::MAX as u64;
        check(
            &header_64(true, OpCode::Binary, len),
            &[Owned::Error(ProtocolError::FrameTooLarge {
                len,
                max: 16 << 20,
            })],
        );
        // Fragments whose sum passes u32::MAX, a 32-bit usize::MAX: the
        // sum is taken in u64, so it cannot wrap to under the limit.
        let max = u32::MAX as usize;
        let limits = Limits::default().max_frame_size(max).max_message_size(max);
        let mut input = masked(false, OpCode::Binary, &[0; 10]);
        input.extend(header_64(true, OpCode::Continuation, u32::MAX.into()));
        assert_eq!(
            run(&input, &[], limits),
            [Owned::Error(ProtocolError::MessageTooLarge {
                len: u64::from(u32::MAX) + 10,
                max
            })]
        );
    }

    #[test]
    fn the_fragment_count_stops_at_u32_max() {
        let max = u32::MAX as usize;
        let limits = Limits::default().max_fragments(max);
        let mut reader = MessageReader::new(Role::Server);
        let mut first = masked(false, OpCode::Binary, b"a");
        assert_eq!(reader.read(&mut first, &limits).unwrap().event, None);
        // As if 2^32 - 3 more fragments had come.
        reader.partial.as_mut().unwrap().fragments = u32::MAX - 1;
        let mut last_allowed = masked(false, OpCode::Continuation, b"b");
        assert_eq!(reader.read(&mut last_allowed, &limits).unwrap().event, None);
        let mut one_more = masked(true, OpCode::Continuation, b"c");
        assert_eq!(
            reader.read(&mut one_more, &limits),
            Err(ProtocolError::TooManyFragments { max })
        );
    }

    #[test]
    fn a_control_payload_never_holds_more_than_125_bytes() {
        assert_eq!(ControlPayload::new(&[7; 300]).as_bytes(), &[7; 125][..]);
    }

    #[test]
    fn nothing_is_held_between_messages() {
        let mut reader = MessageReader::new(Role::Server);
        let limits = Limits::default();
        let mut input = masked(true, OpCode::Binary, &[5; 1000]);
        let step = reader.read(&mut input, &limits).unwrap();
        assert_eq!(
            step.event,
            Some(Event::Message(Incoming::InPlace(Message::Binary(
                &[5; 1000]
            ))))
        );
        assert_eq!((reader.buffered(), reader.is_mid_message()), (0, false));
        // A message gathered across reads is handed over, box and all.
        let mut input = masked(true, OpCode::Text, b"split");
        let (a, b) = input.split_at_mut(8);
        assert_eq!(reader.read(a, &limits).unwrap().event, None);
        assert!(reader.is_mid_message());
        let step = reader.read(b, &limits).unwrap();
        assert_eq!(
            step.event,
            Some(Event::Message(Incoming::GatheredText("split".into())))
        );
        assert!(reader.partial.is_none());
    }

    #[test]
    fn outbox_keeps_order_across_owned_and_shared_chunks() {
        let mut out = Outbox::new();
        out.push_raw(b"ab");
        let shared: Arc<[u8]> = Arc::from(&b"cde"[..]);
        out.push_shared(shared.clone());
        out.push_raw(b"f");
        out.push_raw(b"g");
        assert_eq!((out.len(), out.to_vec()), (7, b"abcdefg".to_vec()));
        out.consume(3);
        assert_eq!(out.pieces().collect::<Vec<_>>(), [&b"de"[..], b"fg"]);
        out.consume(4);
        assert!(out.is_empty() && out.queue.is_none());
    }

    #[test]
    fn a_queue_that_never_empties_does_not_keep_written_bytes() {
        let mut out = Outbox::new();
        out.push_raw(&[1; 100]);
        for _ in 0..1000 {
            // The peer reads a little less than we send, forever.
            out.consume(out.len() - 10);
            out.push_raw(&[2; 100]);
        }
        assert_eq!(out.len(), 110);
        let held: usize = out.queue.as_ref().map_or(0, |q| {
            q.front.bytes().len() + q.rest.iter().map(|c| c.bytes().len()).sum::<usize>()
        });
        assert!(held <= 2 * 110, "{held} bytes held for 110 waiting");
        assert_eq!(out.to_vec()[..10], [2; 10]);
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
