//! The frame-by-frame message reader: frames in, in place from the
//! caller's buffer; whole messages, control frames and their errors out.

use std::borrow::Cow;

use super::{parse_close, ControlPayload, Event, Incoming, Limits, Message, Step};
use crate::error::ProtocolError;
use crate::frame::{apply_mask, FrameHeader, OpCode, Role, MAX_HEADER_LEN};
use crate::utf8::Utf8Validator;

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
/// and every [§5] rule on what a peer may send.
///
/// [§5]: https://www.rfc-editor.org/rfc/rfc6455#section-5
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
    /// permessage-deflate is negotiated ([RFC 7692 §6]). Such messages come
    /// out as [`Event::Compressed`], for the caller to inflate.
    ///
    /// [RFC 7692 §6]: https://www.rfc-editor.org/rfc/rfc7692#section-6
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
                // RFC 6455 §8.1: text that is not valid UTF-8 MUST fail
                // the connection (1007).
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
            // RFC 6455 §5.4: "The fragments of one message MUST NOT be
            // interleaved between the fragments of another message unless an
            // extension has been negotiated that can interpret the
            // interleaving." None that wsloop knows can.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CloseCode;
    use crate::protocol::encode_frame;

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
}
