//! The server `session::Session` end to end on arbitrary byte streams: the
//! requests (a valid upgrade, or the fuzzer's own bytes: plain requests
//! kept alive and pipelined, bodies, heads that are refused), the answers,
//! then frames once an upgrade is accepted, or events once an event
//! stream is, fed in chunks while a clock advances and output is written
//! whole or a little at a time.
//!
//! Input: a chunk-size byte, a flags byte, then the stream. Flags: bit 0,
//! the stream carries its own requests (else a valid upgrade goes first);
//! bits 1-2, how the application answers; bit 3, echo every message back,
//! and hold every request it will not open: a plain one waits and gets the
//! answer it would have had at the first chunk after the hold's deadline
//! (a chunk before then ends the connection; one still held when the
//! stream ends is answered closing, as on shutdown), an upgrade gets 500
//! (for a path starting `/events` too, answered with a stream); and a
//! plain request for a path starting `/events` is answered with an event
//! stream instead (`retry: 1000` first; a HEAD gets its head alone), whose
//! chunks after the request are the application's turns: by the first
//! byte's low four bits, 0 makes the chunk the peer's input, 1 the peer's
//! FIN, anything else a send of the chunk as text (lossy UTF-8), and 2 then
//! closes the stream with code 4000 plus that byte and the rest as reason,
//! and sends once more; bit 4, a slow peer: each write takes at most 32
//! bytes; bits 5-7, how many seconds the clock moves per chunk (short
//! timeouts are set, so keepalive pings, the pong, idle, close, hold and
//! heartbeat deadlines are all reachable).
//!
//! Asserts: no panic; every read makes progress; buffered input stays
//! within the head, body and message limits; a due deadline never
//! survives `handle_timeout`; the application is asked only while a
//! request is being read, and every request the session reads (each
//! starting where the kept-alive one before it ended) has the verdict,
//! the request and the length of a one-shot `handshake::parse` of the
//! stream from there, and one it still waits for is unfinished there too;
//! the output is exactly the answers' HTTP responses in order, each with
//! or without its body and `Connection: close` as its request calls for,
//! then after an accepted upgrade the exact 101 followed by valid
//! unmasked, unfragmented server frames; input is discarded only after a
//! closing answer, an error or the end, and input while a request is held
//! ends the connection; FIN follows a closing answer and never a kept-alive
//! one, nothing follows a close frame, and nothing is written after FIN;
//! messages, the error and the peer's close equal what a lone
//! `MessageReader` reads from the same bytes whole, and nothing is
//! delivered after the connection leaves the open state but for what the
//! peer sent after our close and before its own (an echo of it is
//! `Closed`); echoed messages
//! come back in order; pongs answer pings, in order, with their payloads;
//! the close frame and the close record match the cause of the close;
//! after the peer's close, the session has ended once the echo is written.
//! An event stream's only deadline is its heartbeat, a second after what
//! was last queued; input on it ends the session, as input while held
//! does; after its head the output reads strictly as an event stream
//! (UTF-8 lines ending in LF, blocks ended by a blank line): the retry
//! block, then an event per send that returned `Queued`, in order, with
//! its joined `data` lines equal to the text sent with CR LF, CR and LF
//! as LF, and a lone comment for each heartbeat, and nothing else; a send
//! or a heartbeat is refused (ending the stream) exactly when output is
//! queued and it would take it past `max_write_buffer`, so what is queued
//! stays within the cap plus one event; a close writes nothing, and a
//! send after it is `Closed`; FIN follows once the last events are out,
//! and nothing after it; the close record is the application's code and
//! reason, 1008 "input on an event stream", 1008 "write buffer full", or
//! 1006 for the peer's FIN or an I/O error on a stream still streaming.
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
use wsloop::{CloseCode, Config, HandshakeError, ProtocolError, SendStatus};

const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";
/// RFC 6455 §1.3's accept value for the key above.
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

const MAX_HEADER_BYTES: usize = 512;
/// Past this much queued output a plain answer closes the connection.
const MAX_WRITE_BUFFER: usize = 2048;
const MAX_BODY_BYTES: usize = 64;
const MAX_MESSAGE: usize = 4096;
const PONG_BACKLOG: usize = 2048;
/// Most bytes a slow peer takes per write.
const SLOW_WRITE: usize = 32;
/// How long a held request may wait.
const HOLD: Duration = Duration::from_secs(2);
/// An event stream's silence before a heartbeat: short, so that the
/// clock's steps reach it.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The event stream's `retry` field.
const RETRY_MS: u64 = 1000;
/// A heartbeat: a comment, then the blank line that ends its block.
const HEARTBEAT_BYTES: &[u8] = b":\n\n";

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
                .max_headers(8)
                .max_body_bytes(MAX_BODY_BYTES),
        )
        .max_write_buffer(MAX_WRITE_BUFFER)
        .handshake_timeout(Duration::from_secs(30))
        .ping_interval(Some(Duration::from_secs(3)))
        .pong_timeout(Duration::from_secs(3))
        .idle_timeout(Some(Duration::from_secs(20)))
        .close_timeout(Duration::from_secs(4))
        .stream_heartbeat(Some(HEARTBEAT))
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
type Summary = (String, String, u8, Vec<(String, String)>, Vec<u8>, bool);

fn summary(req: &Request<'_>) -> Summary {
    (
        req.method.into(),
        req.path.into(),
        req.version,
        req.headers().map(|(n, v)| (n.into(), v.into())).collect(),
        req.body().into(),
        req.is_upgrade(),
    )
}

/// A request the session read: where it starts in the stream, where it
/// ends (known once the read that answered it returns; never for a
/// refusal), and the request or the refusal.
struct Seen {
    start: usize,
    end: Option<usize>,
    verdict: Result<Summary, HandshakeError>,
}

/// A plain request whose answer is held, and the answer it will get.
struct Holding {
    response: Response,
    with_body: bool,
    keep_alive: bool,
    /// Where the request ends in the stream.
    end: usize,
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

/// What an event stream carries after its head, one block (ended by a
/// blank line) each.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Block {
    Retry(u64),
    /// An event's data: its `data` lines joined with `\n`.
    Event(String),
    /// A comment, which readers ignore.
    Heartbeat,
}

/// Why an event stream stopped streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StreamEnd {
    /// The application's `close`.
    Closed(CloseCode, String),
    /// The peer sent something.
    Input,
    /// A send or a heartbeat found the write buffer full.
    Cap,
    /// The peer's FIN.
    PeerFin,
}

/// An event stream the session started, as the application sees it.
struct Sse {
    /// What it should have written after its head, in order.
    blocks: Vec<Block>,
    /// When an event or a heartbeat was last queued (or refused).
    last_write: Time,
    /// Why it stopped, once it has.
    end: Option<StreamEnd>,
}

/// An event as a reader gets it: the text with every line break as `\n`.
fn event_data(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// How many bytes the event for `text` takes: a `data: ` line per line of
/// it, then a blank line.
fn event_len(text: &str) -> usize {
    let data = event_data(text);
    data.split('\n')
        .map(|line| "data: ".len() + line.len() + 1)
        .sum::<usize>()
        + 1
}

/// Reads an event stream strictly: UTF-8 lines ending in `\n`, blocks of
/// lines ended by a blank line; a block is a `retry` field, a lone comment,
/// or an event of `data` lines only.
fn read_event_stream(bytes: &[u8]) -> Vec<Block> {
    let text = std::str::from_utf8(bytes).expect("an event stream is UTF-8");
    assert!(!text.contains('\r'), "a CR in an event stream");
    let mut blocks = Vec::new();
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (line, after) = rest.split_once('\n').expect("a line without its \\n");
        rest = after;
        if !line.is_empty() {
            lines.push(line);
            continue;
        }
        let block = match lines[..] {
            [] => panic!("an empty block"),
            [":"] => Block::Heartbeat,
            [line] if line.starts_with("retry: ") => {
                Block::Retry(line["retry: ".len()..].parse().expect("a retry in ms"))
            }
            _ => {
                let data: Vec<&str> = lines
                    .iter()
                    .map(|l| l.strip_prefix("data: ").expect("an event of data lines"))
                    .collect();
                Block::Event(data.join("\n"))
            }
        };
        blocks.push(block);
        lines.clear();
    }
    assert!(lines.is_empty(), "the last block has no blank line");
    blocks
}

struct Run {
    config: Config,
    session: Session<()>,
    now: Time,
    wire: Vec<u8>,
    fin_sent: bool,
    left_open: Option<Cause>,
    /// Every HTTP response due so far, in order, and the 101 if accepted,
    /// or the event stream's head.
    expected: Vec<u8>,
    /// The event stream, once one started.
    sse: Option<Sse>,
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
        // A stream we end sends FIN once its last events are out.
        if let Some(Sse {
            end: Some(StreamEnd::Closed(..) | StreamEnd::Cap),
            ..
        }) = &self.sse
        {
            if !self.session.wants_write() {
                assert!(
                    self.fin_sent || self.session.is_ended(),
                    "no FIN after the stream's last events"
                );
            }
        }
    }

    /// Applies the deadline due now, if any.
    fn tick(&mut self) {
        let s = &mut self.session;
        let next = s.poll_timeout(self.now, &self.config);
        assert_eq!(next.is_none(), s.is_ended());
        // A streaming session's only deadline is its heartbeat.
        let beat = match &self.sse {
            Some(sse) if s.is_stream() => {
                let due = sse.last_write + HEARTBEAT;
                assert_eq!(next, Some(due), "not the heartbeat's deadline");
                Some((due <= self.now, s.buffered_amount()))
            }
            _ => None,
        };
        if next.is_some_and(|t| t <= self.now) {
            let was_open = s.is_open();
            s.handle_timeout(self.now, &self.config);
            if let (Some((true, before)), Some(sse)) = (beat, &mut self.sse) {
                sse.last_write = self.now;
                let len = HEARTBEAT_BYTES.len();
                if before > 0 && before + len > MAX_WRITE_BUFFER {
                    assert!(!s.is_stream() && !s.is_open(), "a full stream beat on");
                    sse.end = Some(StreamEnd::Cap);
                } else {
                    assert!(s.is_stream(), "a heartbeat ended the stream");
                    assert_eq!(s.buffered_amount(), before + len, "not one heartbeat");
                    sse.blocks.push(Block::Heartbeat);
                }
            } else if was_open && !s.is_open() {
                self.left_open.get_or_insert(Cause::Us);
            }
            let next = s.poll_timeout(self.now, &self.config);
            assert!(next.is_none_or(|t| t > self.now), "a due deadline survived");
            assert_eq!(next.is_none(), s.is_ended());
        }
    }

    /// The application's turn on an event stream, at a chunk: the chunk's
    /// first byte says what happens, and the chunk is the peer's input
    /// only when that is what it says (returns whether it is). Otherwise
    /// the peer sends FIN, or the application sends the chunk as text,
    /// and may then close the stream and try to send once more.
    fn stream_turn(&mut self, piece: &[u8]) -> bool {
        let Some(sse) = &mut self.sse else {
            return true;
        };
        if self.session.is_ended() {
            return true;
        }
        match piece[0] % 16 {
            0 => return true,
            1 => {
                let was_stream = self.session.is_stream();
                self.session.handle_eof();
                if was_stream {
                    assert!(self.session.is_ended(), "a stream outlived the peer's FIN");
                    sse.end = Some(StreamEnd::PeerFin);
                }
            }
            turn => {
                self.stream_send(&String::from_utf8_lossy(piece));
                if turn == 2 {
                    let code = CloseCode(4000 + u16::from(piece[0]));
                    let reason = String::from_utf8_lossy(&piece[1..]).into_owned();
                    let (was_stream, before) =
                        (self.session.is_stream(), self.session.buffered_amount());
                    self.session.close(self.now, code, &reason);
                    assert!(!self.session.is_stream() && !self.session.is_open());
                    assert_eq!(self.session.buffered_amount(), before, "a close wrote");
                    let sse = self.sse.as_mut().expect("a stream");
                    if was_stream {
                        sse.end = Some(StreamEnd::Closed(code, reason));
                    }
                    self.stream_send("late");
                }
            }
        }
        false
    }

    /// Sends `text` on the event stream: queued as one event unless the
    /// write buffer holds output and the event would take it past the cap,
    /// which ends the stream; refused once the stream has ended.
    fn stream_send(&mut self, text: &str) {
        let s = &mut self.session;
        let sse = self.sse.as_mut().expect("a stream");
        let (streaming, before) = (s.is_stream(), s.buffered_amount());
        let status = s.send(self.now, &self.config, Message::Text(text));
        if !streaming {
            assert_eq!(status, SendStatus::Closed, "a send after the stream ended");
            assert_eq!(s.buffered_amount(), before);
            return;
        }
        let len = event_len(text);
        if before > 0 && before + len > MAX_WRITE_BUFFER {
            assert_eq!(status, SendStatus::Dropped, "a send past the cap");
            assert!(!s.is_stream() && !s.is_open(), "a full stream went on");
            assert_eq!(s.buffered_amount(), before);
            sse.end = Some(StreamEnd::Cap);
        } else {
            assert_eq!(status, SendStatus::Queued);
            let after = s.buffered_amount();
            assert_eq!(after, before + len, "not one event");
            // Within the cap, or one event on an empty buffer.
            assert!(after <= MAX_WRITE_BUFFER.max(len));
            sse.blocks.push(Block::Event(event_data(text)));
            sse.last_write = self.now;
        }
    }

    /// Answers the held request, `closing` as on shutdown. Returns whether
    /// the connection stays open for the next request.
    fn answer_held(&mut self, held: Holding, closing: bool) -> bool {
        assert!(self.session.is_held());
        let keep_alive = held.keep_alive && !closing;
        self.session.answer_held(self.now, &held.response, closing);
        assert!(!self.session.is_held() && self.session.held_deadline(self.now).is_none());
        self.expected
            .extend(held.response.encode(held.with_body, keep_alive));
        keep_alive
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
        expected: Vec::new(),
        sse: None,
    };
    let mut seen: Vec<Seen> = Vec::new();
    // Where the request the session is reading starts, while it reads one.
    let mut reading = Some(0);
    // A closing HTTP answer is queued: what follows is discarded.
    let mut closing = false;
    let mut accepted = false;
    let mut holding: Option<Holding> = None;
    let mut opened = false;
    let mut frames_from = None;
    let mut delivered = Vec::new();
    let mut echoed = Vec::new();
    let mut read_error: Option<ReadError> = None;

    let mut base = 0;
    for piece in stream.chunks(chunk) {
        run.now = run.now + step;
        // The application answers a held request at its deadline.
        if let Some(deadline) = run.session.held_deadline(run.now) {
            if deadline <= run.now {
                let held = holding.take().expect("held without a Hold");
                // Input behind a held request ends the connection, so
                // this one ended where the last chunk did.
                assert_eq!(held.end, base);
                if run.answer_held(held, false) {
                    reading = Some(base);
                } else {
                    closing = true;
                }
            }
        }
        run.tick();
        if run.session.is_ended() && reading.is_some() {
            // A timeout while a request was awaited: it is never read.
            reading = None;
        }
        if !run.stream_turn(piece) {
            run.flush(slow_peer);
            base += piece.len();
            continue;
        }
        let mut piece = piece.to_vec();
        let mut pos = 0;
        while pos < piece.len() {
            let s = &mut run.session;
            let was_open = s.is_open();
            let was_held = s.is_held();
            let was_stream = s.is_stream();
            assert_eq!(was_held, holding.is_some());
            // Input after our last words, or after the end, is discarded.
            let discarding = read_error.is_some()
                || s.is_ended()
                || closing
                || run.left_open == Some(Cause::Peer)
                || run.sse.as_ref().is_some_and(|sse| sse.end.is_some());
            let input_len = piece.len() - pos;
            // What is queued when a request is answered decides whether
            // its answer may keep the connection.
            let queued = s.buffered_amount();
            let asked_before = seen.len();
            let expected = &mut run.expected;
            let sse = &mut run.sse;
            let now = run.now;
            let answer = |req: &Request<'_>, from: SocketAddr| {
                let start = reading.take().expect("asked while not reading a request");
                assert!(!accepted && !closing && holding.is_none() && sse.is_none());
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
                seen.push(Seen {
                    start,
                    end: None,
                    verdict: Ok(summary(req)),
                });
                let hold = Answer::Hold {
                    data: (),
                    timeout: HOLD,
                };
                match key {
                    Some(key) if mode != 2 => {
                        let protocol = if mode == 3 {
                            req.protocols().next().map(str::to_owned)
                        } else {
                            None
                        };
                        expected.extend(accept_response(&key, protocol.as_deref(), None));
                        accepted = true;
                        return Answer::Accept { protocol, data: () };
                    }
                    // Only a plain request can wait, or stream.
                    Some(_) if echo => {
                        expected.extend(Response::status(500).encode(with_body, false));
                        closing = true;
                        if req.path.starts_with("/events") {
                            return Answer::event_stream((), Some(RETRY_MS));
                        }
                        return hold;
                    }
                    _ => {}
                }
                let response = match (mode, key) {
                    (1, None) => Response::status(426).with_header("Upgrade", "websocket"),
                    (2, _) => Response::status(403),
                    _ => Response::ok("text/plain", "a page"),
                };
                // A refused upgrade closes; a plain answer keeps the
                // connection when the request lets it.
                let keep_alive = key.is_none() && req.keep_alive() && queued <= MAX_WRITE_BUFFER;
                // A request it would hold for /events gets an event stream
                // instead; a HEAD gets the stream's head alone.
                if echo && req.path.starts_with("/events") {
                    let answer = Answer::event_stream((), Some(RETRY_MS));
                    let Answer::Stream { response, .. } = &answer else {
                        unreachable!("event_stream makes a Stream");
                    };
                    if !with_body {
                        expected.extend(response.encode(false, false));
                        closing = true;
                        return answer;
                    }
                    // The head, then the body the stream starts with,
                    // which the events are checked with.
                    let head = response.encode_streamed();
                    let body = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    expected.extend(&head[..body]);
                    *sse = Some(Sse {
                        blocks: vec![Block::Retry(RETRY_MS)],
                        last_write: now,
                        end: None,
                    });
                    return answer;
                }
                if echo {
                    holding = Some(Holding {
                        response,
                        with_body,
                        keep_alive,
                        end: 0,
                    });
                    return hold;
                }
                expected.extend(response.encode(with_body, keep_alive));
                closing = !keep_alive;
                if mode == 1 {
                    // Only an upgrade can be accepted: this gets 426.
                    Answer::Accept {
                        protocol: None,
                        data: (),
                    }
                } else {
                    Answer::Respond(response)
                }
            };
            let result = s.handle_read(run.now, &config, &mut piece[pos..], answer);
            match result {
                Ok(step) => {
                    assert!(step.consumed <= input_len);
                    assert!(step.consumed > 0 || step.delivery.is_some(), "no progress");
                    if discarding || was_held || was_stream {
                        assert_eq!(
                            (step.consumed, &step.delivery),
                            (input_len, &None),
                            "input after the end, or while held or streaming, was read"
                        );
                    }
                    if was_held {
                        assert!(s.is_ended(), "input while held did not end it");
                        holding = None;
                    }
                    if was_stream {
                        assert!(s.is_ended(), "input on a stream did not end it");
                        run.sse.as_mut().unwrap().end = Some(StreamEnd::Input);
                    }
                    let consumed = step.consumed;
                    let end = base + pos + consumed;
                    if seen.len() > asked_before {
                        assert_eq!(seen.len(), asked_before + 1, "asked twice in one read");
                        seen.last_mut().unwrap().end = Some(end);
                        if let Some(held) = &mut holding {
                            held.end = end;
                        } else if !closing && !accepted && run.sse.is_none() {
                            // Kept alive: the next request starts here.
                            reading = Some(end);
                        }
                    }
                    match step.delivery {
                        None => {}
                        Some(Delivery::Opened) => {
                            assert!(!opened, "opened twice");
                            assert!(accepted && seen.len() > asked_before);
                            assert!(s.is_open());
                            opened = true;
                            frames_from = Some(end);
                        }
                        Some(Delivery::Streaming) => {
                            assert!(run.sse.is_some() && seen.len() > asked_before);
                            assert!(s.is_stream() && s.is_open() && !s.is_held());
                            assert_eq!(s.data(), Some(&()));
                        }
                        Some(Delivery::Held) => {
                            assert!(holding.is_some() && seen.len() > asked_before);
                            assert!(s.is_held() && !s.is_upgraded());
                            assert_eq!(s.held_deadline(run.now), Some(run.now + HOLD));
                            assert!(s.held_data_mut().is_some());
                        }
                        Some(Delivery::Message(incoming)) => {
                            // Open, or closing from our side: what the peer
                            // sent before it saw our close is still
                            // delivered (RFC 6455 §5.5.1 forbids sending
                            // after a close, not receiving).
                            let ours = run.left_open == Some(Cause::Us) && s.sent_close();
                            assert!(
                                opened && (was_open && s.is_open() || ours),
                                "delivered when not open"
                            );
                            assert!(run.left_open.is_none() || ours);
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
                                    SendStatus::Closed if !was_open => {}
                                    other => panic!("send on an open connection: {other:?}"),
                                }
                            }
                        }
                        Some(other) => panic!("unexpected {other:?}"),
                    }
                    if holding.is_some() {
                        assert!(s.is_held(), "a Hold not held");
                    }
                    if was_open && !was_stream && !s.is_open() {
                        run.left_open.get_or_insert(Cause::Peer);
                    }
                    pos += consumed;
                }
                Err(err) => {
                    assert!(
                        !discarding && !was_held && !was_stream,
                        "an error after the end"
                    );
                    assert!(!s.is_open(), "still open after an error");
                    match &err {
                        ReadError::Handshake(e) => {
                            assert!(!opened);
                            let start = reading.take().expect("refused while not reading");
                            seen.push(Seen {
                                start,
                                end: None,
                                verdict: Err(e.clone()),
                            });
                            // A refused HEAD gets no body either.
                            // Empty lines (CRLF) may come before the
                            // request line.
                            let mut line = &stream[start..];
                            while let Some(rest) = line.strip_prefix(b"\r\n") {
                                line = rest;
                            }
                            let with_body = !line.starts_with(b"HEAD ");
                            run.expected
                                .extend(Response::for_error(e).encode(with_body, false));
                            closing = true;
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
                2 * (MAX_HEADER_BYTES + MAX_BODY_BYTES + 1)
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
    // The stream is over; a request still held is answered as on shutdown.
    if let Some(held) = holding.take() {
        assert!(!run.answer_held(held, true));
        closing = true;
    }
    while run.session.wants_write() {
        run.flush(false);
    }
    run.flush(false);
    // Nothing is held now, so there is nothing to answer.
    run.session
        .answer_held(run.now, &Response::status(204), false);
    assert!(!run.session.wants_write(), "answered what was not held");
    let disturbed = matches!(run.left_open, Some(Cause::Us));

    // Each request: the same verdict as parsing the stream from its start
    // at once; one still awaited is unfinished there.
    let limits = config.handshake_limits;
    for s in &seen {
        let whole = handshake::parse(&stream[s.start..], 0, &limits);
        match (&s.verdict, whole) {
            (Ok(got), Ok(Parsed::Upgrade(req, len) | Parsed::Http(req, len))) => {
                assert_eq!(summary(&req), *got);
                assert_eq!(s.end, Some(s.start + len), "the request's length differs");
                // The head is exactly what httparse reads.
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let head = match httparse::Request::new(&mut headers).parse(&stream[s.start..]) {
                    Ok(httparse::Status::Complete(n)) => n,
                    other => panic!("at {}: httparse says {other:?}", s.start),
                };
                assert_eq!(head + req.body().len(), len, "the head's length differs");
            }
            (Err(got), Err(whole)) => assert_eq!(*got, whole),
            (got, whole) => panic!("at {}: whole: {whole:?}, in chunks: {got:?}", s.start),
        }
    }
    if let Some(start) = reading {
        match handshake::parse(&stream[start..], 0, &limits) {
            Ok(Parsed::Partial) => {}
            Ok(Parsed::NeedBody { total }) => assert!(start + total > stream.len()),
            whole => panic!("at {start}: whole: {whole:?}, in chunks: unfinished"),
        }
        assert!(!run.fin_sent, "FIN on a kept-alive connection");
    }
    if closing {
        assert!(
            run.fin_sent || run.session.is_ended(),
            "no FIN after the last answer"
        );
    }

    // An event stream: the answers' responses, its head, then its blocks,
    // and a close record that says why it ended.
    if let Some(sse) = run.sse.take() {
        assert!(!opened);
        let events = run
            .wire
            .strip_prefix(&run.expected[..])
            .expect("not the answers' responses and the stream's head");
        assert_eq!(read_event_stream(events), sse.blocks, "not the events sent");
        let streaming = run.session.is_stream();
        assert_eq!(streaming, sse.end.is_none());
        run.session.handle_io_error();
        assert!(run.session.is_ended());
        assert_eq!(run.session.poll_timeout(run.now, &config), None);
        let record = run.session.close_record().expect("a stream has a record");
        let policy = CloseCode::POLICY_VIOLATION;
        match &sse.end {
            Some(StreamEnd::Closed(code, reason)) => assert_eq!(record, (*code, reason.as_str())),
            Some(StreamEnd::Input) => assert_eq!(record, (policy, "input on an event stream")),
            Some(StreamEnd::Cap) => assert_eq!(record, (policy, "write buffer full")),
            Some(StreamEnd::PeerFin) | None => assert_eq!(record, (CloseCode::ABNORMAL, "")),
        }
        return;
    }

    // The output: the answers' responses in order, then frames.
    assert_eq!(opened, accepted);
    if !opened {
        assert_eq!(run.wire, run.expected, "not the answers' responses");
        run.session.handle_io_error();
        assert!(run.session.is_ended() && run.session.close_record().is_none());
        return;
    }
    assert_eq!(frames_from, seen.last().and_then(|s| s.end));
    let frames = run
        .wire
        .strip_prefix(&run.expected[..])
        .expect("not the expected responses and 101");
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
