//! The server `session::Session` end to end on arbitrary byte streams: the
//! request head (a valid upgrade, or the fuzzer's own bytes), the answer,
//! then frames, fed in chunks while a clock advances and output is written
//! whole or a little at a time.
//!
//! Input: a chunk-size byte, a flags byte, then the stream. Flags: bit 0,
//! the stream carries its own head (else a valid upgrade goes first);
//! bits 1-2, how the application answers; bit 3, echo every message back;
//! bit 4, a slow peer: each write takes at most 32 bytes; bits 5-7, how
//! many seconds the clock moves per chunk (short timeouts are set, so
//! keepalive pings, the pong, idle and close deadlines are all reachable).
//!
//! Asserts: no panic; every read makes progress; buffered input stays
//! within the head and message limits; a due deadline never survives
//! `handle_timeout`; the head's verdict and request equal a one-shot
//! `handshake::parse` of the stream; the output is exactly the answer's
//! HTTP response, or the exact 101 followed by valid unmasked, unfragmented
//! server frames; nothing follows a close frame, and nothing is written
//! after FIN; messages, the error and the peer's close equal what a lone
//! `MessageReader` reads from the same bytes whole, and nothing is
//! delivered after the connection leaves the open state; echoed messages
//! come back in order; pongs answer pings, in order, with their payloads;
//! the close frame and the close record match the cause of the close;
//! after the peer's close, the session has ended once the echo is written.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use wsloop::frame::{FrameHeader, Role};
use wsloop::handshake::{
    self, accept_response, AcceptKey, HandshakeLimits, Parsed, Request, Response,
};
use wsloop::protocol::{close_payload, Event, Limits, Message, MessageReader};
use wsloop::session::{Answer, Delivery, ReadError, Session, Time};
use wsloop::{CloseCode, Config, ProtocolError, SendStatus};

const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";
/// RFC 6455 §1.3's accept value for the key above.
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

const MAX_HEADER_BYTES: usize = 512;
const MAX_MESSAGE: usize = 4096;
const PONG_BACKLOG: usize = 2048;
/// Most bytes a slow peer takes per write.
const SLOW_WRITE: usize = 32;

fn config() -> Config {
    Config::default()
        .limits(
            Limits::default()
                .max_frame_size(1024)
                .max_message_size(MAX_MESSAGE)
                .max_fragments(16)
                .max_pong_backlog(PONG_BACKLOG),
        )
        .handshake_limits(
            HandshakeLimits::default()
                .max_header_bytes(MAX_HEADER_BYTES)
                .max_headers(8),
        )
        .max_write_buffer(2048)
        .handshake_timeout(Duration::from_secs(30))
        .ping_interval(Some(Duration::from_secs(3)))
        .pong_timeout(Duration::from_secs(3))
        .idle_timeout(Some(Duration::from_secs(20)))
        .close_timeout(Duration::from_secs(4))
}

/// An event with owned data, for comparing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(CloseCode, String),
    Error(ProtocolError),
}

fn message(msg: Message<'_>) -> Ev {
    match msg {
        Message::Text(t) => Ev::Text(t.into()),
        Message::Binary(b) => Ev::Binary(b.into()),
        other => panic!("unexpected {other:?}"),
    }
}

fn event(e: Event<'_>) -> Ev {
    match e {
        Event::Message(m) => message(m.message()),
        Event::Ping(p) => Ev::Ping(p.as_bytes().into()),
        Event::Pong(p) => Ev::Pong(p.as_bytes().into()),
        Event::Close { code, reason } => {
            Ev::Close(code, String::from_utf8(reason.as_bytes().into()).unwrap())
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Reads `bytes` whole with a lone reader, up to a close or an error.
/// Returns the events and the bytes consumed.
fn read_all(role: Role, bytes: &[u8], limits: &Limits) -> (Vec<Ev>, usize, bool) {
    let mut reader = MessageReader::new(role);
    let mut bytes = bytes.to_vec();
    let mut events = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match reader.read(&mut bytes[pos..], limits) {
            Ok(step) => {
                assert!(step.consumed > 0 || step.event.is_some(), "no progress");
                pos += step.consumed;
                if let Some(e) = step.event {
                    let e = event(e);
                    let closed = matches!(e, Ev::Close(..));
                    events.push(e);
                    if closed {
                        break;
                    }
                }
            }
            Err(err) => {
                events.push(Ev::Error(err));
                break;
            }
        }
    }
    (events, pos, reader.is_mid_message())
}

/// A request as plain data.
type Summary = (String, String, u8, Vec<(String, String)>, bool);

fn summary(req: &Request<'_>) -> Summary {
    (
        req.method.into(),
        req.path.into(),
        req.version,
        req.headers().map(|(n, v)| (n.into(), v.into())).collect(),
        req.is_upgrade(),
    )
}

/// What the application's answer was, and the bytes it should put first
/// on the wire.
struct Answered {
    request: Summary,
    accepted: bool,
    response: Vec<u8>,
}

/// Why the connection left the open state.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    /// The peer's close frame.
    Peer,
    /// The peer broke the protocol.
    Error(ProtocolError),
    /// A deadline, or the write buffer cap: our close, or an end.
    Us,
}

struct Run {
    config: Config,
    session: Session<()>,
    now: Time,
    wire: Vec<u8>,
    fin_sent: bool,
    left_open: Option<Cause>,
}

impl Run {
    /// Writes the pending output, or a little of it.
    fn flush(&mut self, slow: bool) {
        assert!(
            !self.fin_sent || !self.session.wants_write(),
            "output after FIN"
        );
        let pending: Vec<u8> = self.session.poll_transmit().flatten().copied().collect();
        assert_eq!(pending.len(), self.session.buffered_amount());
        let n = if slow {
            pending.len().min(SLOW_WRITE)
        } else {
            pending.len()
        };
        self.wire.extend_from_slice(&pending[..n]);
        self.session.transmitted(n);
        assert_eq!(self.session.buffered_amount(), pending.len() - n);
        if self.session.poll_shutdown() {
            assert!(!self.fin_sent, "FIN twice");
            assert!(!self.session.wants_write() && !self.session.is_open());
            self.fin_sent = true;
        }
    }

    /// Applies the deadline due now, if any.
    fn tick(&mut self) {
        let s = &mut self.session;
        let next = s.poll_timeout(self.now, &self.config);
        assert_eq!(next.is_none(), s.is_ended());
        if next.is_some_and(|t| t <= self.now) {
            let was_open = s.is_open();
            s.handle_timeout(self.now, &self.config);
            if was_open && !s.is_open() {
                self.left_open.get_or_insert(Cause::Us);
            }
            let next = s.poll_timeout(self.now, &self.config);
            assert!(next.is_none_or(|t| t > self.now), "a due deadline survived");
            assert_eq!(next.is_none(), s.is_ended());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [chunk, flags, rest @ ..] = data else {
        return;
    };
    let chunk = *chunk as usize % 97 + 1;
    let own_head = flags & 1 != 0;
    let mode = (flags >> 1) & 3;
    let echo = flags & 8 != 0;
    let slow_peer = flags & 16 != 0;
    let step = Duration::from_secs((flags >> 5) as u64);
    let stream = if own_head {
        rest.to_vec()
    } else {
        [UPGRADE, rest].concat()
    };

    let config = config();
    let now = Time::from_millis(0);
    let peer = SocketAddr::from(([192, 0, 2, 1], 40000));
    let mut run = Run {
        session: Session::new(now, peer),
        config: config.clone(),
        now,
        wire: Vec::new(),
        fin_sent: false,
        left_open: None,
    };
    let mut answered: Option<Answered> = None;
    let mut opened = false;
    let mut frames_from = None;
    let mut delivered = Vec::new();
    let mut echoed = Vec::new();
    let mut read_error: Option<ReadError> = None;
    let mut head_cut_short = false;

    let mut base = 0;
    for piece in stream.chunks(chunk) {
        run.now = run.now + step;
        run.tick();
        if run.session.is_ended() && answered.is_none() && read_error.is_none() {
            head_cut_short = true;
        }
        let mut piece = piece.to_vec();
        let mut pos = 0;
        while pos < piece.len() {
            let s = &mut run.session;
            let was_open = s.is_open();
            // Input after our last words, or after the end, is discarded.
            let discarding = read_error.is_some()
                || s.is_ended()
                || (answered.is_some() && !opened)
                || run.left_open == Some(Cause::Peer);
            let input_len = piece.len() - pos;
            let answer = |req: &Request<'_>, from: SocketAddr| {
                assert!(answered.is_none(), "asked twice");
                assert_eq!(from, peer);
                let with_body = req.method != "HEAD";
                let key = req.accept_key();
                if let Some(key) = key {
                    assert!(req.is_upgrade());
                    let sent = req.header("sec-websocket-key").unwrap();
                    assert_eq!(key, AcceptKey::for_key(sent));
                    if !own_head {
                        assert_eq!(key.as_str(), ACCEPT);
                    }
                }
                let (answer, accepted, response) = match (mode, key) {
                    (0 | 1 | 3, Some(key)) => {
                        let protocol = if mode == 3 {
                            req.protocols().next().map(str::to_owned)
                        } else {
                            None
                        };
                        let response = accept_response(&key, protocol.as_deref(), None);
                        (Answer::Accept { protocol, data: () }, true, response)
                    }
                    (1, None) => {
                        let response = Response::status(426).with_header("Upgrade", "websocket");
                        let answer = Answer::Accept {
                            protocol: None,
                            data: (),
                        };
                        (answer, false, response.encode(with_body))
                    }
                    (2, _) => {
                        let response = Response::status(403);
                        let bytes = response.encode(with_body);
                        (Answer::Respond(response), false, bytes)
                    }
                    _ => {
                        let response = Response::ok("text/plain", "a page");
                        let bytes = response.encode(with_body);
                        (Answer::Respond(response), false, bytes)
                    }
                };
                answered = Some(Answered {
                    request: summary(req),
                    accepted,
                    response,
                });
                answer
            };
            let result = s.handle_read(run.now, &config, &mut piece[pos..], answer);
            match result {
                Ok(step) => {
                    assert!(step.consumed <= input_len);
                    assert!(step.consumed > 0 || step.delivery.is_some(), "no progress");
                    if discarding {
                        assert_eq!(
                            (step.consumed, &step.delivery),
                            (input_len, &None),
                            "input after the end was read"
                        );
                    }
                    let consumed = step.consumed;
                    match step.delivery {
                        None => {}
                        Some(Delivery::Opened) => {
                            assert!(!opened, "opened twice");
                            assert!(answered.as_ref().is_some_and(|a| a.accepted));
                            assert!(s.is_open());
                            opened = true;
                            frames_from = Some(base + pos + consumed);
                        }
                        Some(Delivery::Message(incoming)) => {
                            assert!(opened && was_open && s.is_open(), "delivered when not open");
                            assert!(run.left_open.is_none());
                            let msg = incoming.message();
                            assert!(msg.as_bytes().len() <= MAX_MESSAGE);
                            delivered.push(message(msg));
                            if echo {
                                match s.send(run.now, &config, msg) {
                                    SendStatus::Queued => echoed.push(message(msg)),
                                    SendStatus::Dropped => {
                                        if !s.is_open() {
                                            run.left_open = Some(Cause::Us);
                                        }
                                    }
                                    other => panic!("send on an open connection: {other:?}"),
                                }
                            }
                        }
                        Some(other) => panic!("unexpected {other:?}"),
                    }
                    if was_open && !s.is_open() {
                        run.left_open.get_or_insert(Cause::Peer);
                    }
                    pos += consumed;
                }
                Err(err) => {
                    assert!(!discarding, "an error after the end");
                    assert!(!s.is_open(), "still open after an error");
                    match &err {
                        ReadError::Handshake(e) => {
                            assert!(!opened && answered.is_none());
                            answered = Some(Answered {
                                request: Default::default(),
                                accepted: false,
                                // A refused HEAD gets no body either.
                                response: Response::for_error(e)
                                    .encode(!stream.starts_with(b"HEAD ")),
                            });
                        }
                        ReadError::Protocol(e) => {
                            assert!(opened);
                            if was_open {
                                run.left_open = Some(Cause::Error(e.clone()));
                            }
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                    read_error = Some(err);
                    // A reactor stops reading here; the next chunks check
                    // that anything more would be discarded.
                    break;
                }
            }
            let bound = if opened {
                2 * MAX_MESSAGE + 2 * 125
            } else {
                2 * (MAX_HEADER_BYTES + 1)
            };
            assert!(
                run.session.buffered_input() <= bound,
                "{} bytes buffered",
                run.session.buffered_input()
            );
        }
        run.flush(slow_peer);
        base += piece.len();
    }
    while run.session.wants_write() {
        run.flush(false);
    }
    run.flush(false);
    let disturbed = matches!(run.left_open, Some(Cause::Us)) || head_cut_short;

    // The head: the same verdict as parsing the whole stream at once.
    let limits = config.handshake_limits;
    if !head_cut_short {
        let head_error = match &read_error {
            Some(ReadError::Handshake(e)) => Some(e),
            _ => None,
        };
        match (handshake::parse(&stream, 0, &limits), &answered, head_error) {
            (Ok(Parsed::Partial), None, None) => {}
            (Ok(Parsed::Upgrade(req, end) | Parsed::Http(req, end)), Some(a), None) => {
                assert_eq!(summary(&req), a.request);
                if opened {
                    assert_eq!(frames_from, Some(end));
                }
            }
            (Err(e), Some(_), Some(got)) => assert_eq!(&e, got),
            (whole, _, got) => panic!("whole: {whole:?}, in chunks: {got:?}"),
        }
    }

    // The output: nothing, or the answer's response, then frames.
    let Some(answered) = answered else {
        assert!(run.wire.is_empty(), "output without an answer");
        run.session.handle_io_error();
        assert!(run.session.is_ended() && run.session.close_record().is_none());
        return;
    };
    assert_eq!(opened, answered.accepted);
    if !opened {
        assert_eq!(run.wire, answered.response, "not the answer's response");
        run.session.handle_io_error();
        assert!(run.session.is_ended() && run.session.close_record().is_none());
        return;
    }
    let frames = run
        .wire
        .strip_prefix(&answered.response[..])
        .expect("not the expected 101");
    let (out, used, mid) = read_all(Role::Client, frames, &Limits::default());
    assert_eq!(used, frames.len(), "bytes after the close frame");
    assert!(!mid, "output ends inside a frame");
    let mut rest = frames;
    while !rest.is_empty() {
        let (header, n) = FrameHeader::parse(rest, Role::Client).unwrap().unwrap();
        assert!(header.fin && header.mask.is_none(), "{header:?}");
        rest = &rest[n + header.payload_len as usize..];
    }
    let mut pongs = Vec::new();
    let mut data_out = Vec::new();
    let mut close_out = None;
    for e in out {
        match e {
            Ev::Ping(p) => assert!(p.is_empty(), "a keepalive ping has no payload"),
            Ev::Pong(p) => pongs.push(p),
            Ev::Text(_) | Ev::Binary(_) => data_out.push(e),
            Ev::Close(code, reason) => close_out = Some((code, reason)),
            Ev::Error(err) => panic!("the server wrote an invalid frame: {err}"),
        }
    }
    assert_eq!(data_out, echoed, "echoes differ from the messages sent");

    // The frames read: the same as a lone reader reads whole.
    let frames_from = frames_from.unwrap();
    let (shadow, _, _) = read_all(Role::Server, &stream[frames_from..], &config.limits);
    let shadow_messages: Vec<Ev> = shadow
        .iter()
        .filter(|e| matches!(e, Ev::Text(_) | Ev::Binary(_)))
        .cloned()
        .collect();
    if disturbed {
        assert!(shadow_messages.starts_with(&delivered), "messages differ");
    } else {
        assert_eq!(delivered, shadow_messages, "messages differ");
        let shadow_error = shadow.iter().find_map(|e| match e {
            Ev::Error(e) => Some(e),
            _ => None,
        });
        let got_error = match &read_error {
            Some(ReadError::Protocol(e)) => Some(e),
            _ => None,
        };
        assert_eq!(got_error, shadow_error, "errors differ");
    }
    if let Some(ReadError::Protocol(e)) = &read_error {
        assert_eq!(shadow.last(), Some(&Ev::Error(e.clone())));
    }
    let shadow_pings: Vec<Vec<u8>> = shadow
        .iter()
        .filter_map(|e| match e {
            Ev::Ping(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let mut unanswered = shadow_pings.iter();
    for pong in &pongs {
        assert!(
            unanswered.any(|p| p == pong),
            "a pong for no ping: {pong:?}"
        );
    }
    if !disturbed && !echo && !slow_peer {
        // The backlog is never reached: every ping is answered.
        assert_eq!(pongs, shadow_pings, "pings left unanswered");
    }

    // The close: its frame and its record agree with its cause.
    let ended_before_eof = run.session.is_ended();
    run.session.handle_io_error();
    assert!(run.session.is_ended());
    assert_eq!(run.session.poll_timeout(run.now, &config), None);
    let (code, reason) = run.session.close_record().expect("an upgraded connection");
    match &run.left_open {
        Some(Cause::Peer) => {
            assert!(ended_before_eof, "not ended once the echo was out");
            let Some(Ev::Close(peer_code, peer_reason)) = shadow.last() else {
                panic!("closed without the peer's close: {shadow:?}");
            };
            assert_eq!((code, reason), (*peer_code, peer_reason.as_str()));
            let echo_code = if code == CloseCode::NO_STATUS {
                CloseCode::NORMAL
            } else {
                code
            };
            assert_eq!(close_out, Some((echo_code, String::new())));
        }
        Some(Cause::Error(e)) => {
            let message = e.to_string();
            let (payload, sent) = close_payload(e.close_code(), &message);
            assert_eq!(close_out, Some((e.close_code(), sent.to_string())));
            assert_eq!(payload.as_bytes()[2..], *sent.as_bytes());
            assert_eq!((code, reason), (e.close_code(), sent));
        }
        Some(Cause::Us) => match &close_out {
            Some((out_code, out_reason)) => {
                assert_eq!((code, reason), (*out_code, out_reason.as_str()))
            }
            None => assert_eq!((code, reason), (CloseCode::ABNORMAL, "no pong")),
        },
        None => {
            assert_eq!(close_out, None);
            assert_eq!((code, reason), (CloseCode::ABNORMAL, ""));
        }
    }
});
