//! One connection's whole life, pure: the request head, an HTTP answer or
//! the upgrade, messages, the close handshake, the end; the five deadlines;
//! and the close record that `on_close` reports.
//!
//! ```text
//!                 head read, answered          reply out, FIN, peer's FIN
//!  ReadingRequest ─────────────────► Answering ──────────────────────────┐
//!        │ upgrade accepted                                              │
//!        ▼                                                               │
//!      Open ── we send close ──► Closing ── peer's close ──► Closed ─────┤
//!        │                          │                          ▲  echo   │
//!        ├── peer's close (we echo) ┼──────────────────────────┘  out    │
//!        │                          │ protocol error                     │
//!        └── protocol error ────────┴──────────► Failed ─────────────────┤
//!                                       close out, FIN, peer's FIN       ▼
//!  any state: peer's FIN, socket error, or a deadline ──────────────► Ended
//! ```
//!
//! Nothing here reads a clock or touches a socket. Input goes in through
//! `handle_*` calls: [`Session::handle_read`] for bytes read,
//! [`Session::handle_timeout`], [`Session::handle_eof`] and
//! [`Session::handle_write_blocked`]; the application's commands are
//! [`Session::send`], [`Session::ping`] and [`Session::close`]. Output is
//! pulled through `poll_*` calls: [`Session::poll_transmit`] for bytes to
//! write, [`Session::poll_timeout`] for the next deadline,
//! [`Session::poll_shutdown`] for when to send FIN and
//! [`Session::poll_drain`] for when queued output has gone.
//!
//! Whatever the application sends while the reactor handles one readiness
//! event is queued here, and the reactor writes it once when the event is
//! done ("corking"): sixteen pipelined replies cost one `sendmsg`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{Backpressure, Config};
use crate::error::{CloseCode, HandshakeError, PingTooLong, ProtocolError};
use crate::frame::{OpCode, Role};
use crate::handshake::{self, AcceptKey, Parsed, Request, Response};
use crate::protocol::{
    close_payload, Event, Incoming, Message, MessageReader, Outbox, SharedFrame,
    MAX_CONTROL_PAYLOAD,
};
use crate::rate::Rate;
use crate::time::Stamp;

pub use crate::time::{Time, MAX_TIMEOUT};

/// How the application answers a request head.
#[derive(Debug)]
#[non_exhaustive]
pub enum Answer<D> {
    /// Complete the upgrade, with an optional subprotocol to echo, and the
    /// data the connection carries from now on.
    Accept {
        /// The chosen subprotocol.
        protocol: Option<String>,
        /// The connection's user data.
        data: D,
    },
    /// Send this response; the connection then closes, or waits for the
    /// next request when the request allows it.
    Respond(Response),
    /// Hold the answer to a plain request: the connection waits, with
    /// this data, until [`Session::answer_held`] or the deadline after
    /// `timeout` ([`Session::held_deadline`]).
    Hold {
        /// What the application keeps for the held request.
        data: D,
        /// Longest wait for the answer.
        timeout: Duration,
    },
}

/// How a plain request is to be answered: with or without the body, on a
/// connection kept open or not, and from whom it came.
#[derive(Debug, Clone, Copy)]
struct Reply {
    with_body: bool,
    keep_alive: bool,
    peer: SocketAddr,
}

/// The extensions an accepted upgrade takes up: permessage-deflate, with
/// the feature, or none.
#[derive(Debug, Clone, Copy)]
struct Agreed {
    #[cfg(feature = "deflate")]
    deflate: Option<crate::deflate::Agreement>,
}

impl Agreed {
    fn from_request(_req: &Request<'_>) -> Self {
        Agreed {
            #[cfg(feature = "deflate")]
            deflate: _req.deflate,
        }
    }

    /// The response's `Sec-WebSocket-Extensions` value, if any.
    fn response(&self) -> Option<String> {
        #[cfg(feature = "deflate")]
        return self.deflate.map(|a| a.response());
        #[cfg(not(feature = "deflate"))]
        None
    }
}

/// The connection's deflate state and settings when a message of `len`
/// bytes is to be compressed: deflate is in force and the message is at
/// least `min_size` long.
#[cfg(feature = "deflate")]
fn compressor<'a, D>(
    state: &'a mut State<D>,
    config: &'a Config,
    len: usize,
) -> Option<(
    &'a mut crate::deflate::Context,
    &'a crate::deflate::DeflateConfig,
)> {
    match (state, &config.deflate) {
        (
            State::Open(Open {
                deflate: Some(deflate),
                ..
            }),
            Some(settings),
        ) if len >= settings.min_size => Some((deflate, settings)),
        _ => None,
    }
}

/// Compresses a message with the connection's context and queues the
/// frame; `false`, with nothing queued, if it is to go plain.
#[cfg(feature = "deflate")]
fn push_deflated(
    out: &mut Outbox,
    deflate: &mut crate::deflate::Context,
    settings: &crate::deflate::DeflateConfig,
    opcode: OpCode,
    payload: &[u8],
) -> bool {
    crate::deflate::with_scratch(|compressed| {
        if !deflate.compress(settings, payload, compressed) {
            return false;
        }
        out.push_frame(true, opcode, compressed);
        true
    })
}

/// Settles permessage-deflate before the application sees the request.
#[cfg(feature = "deflate")]
fn negotiate_deflate<'a>(mut req: Request<'a>, config: &Config) -> Request<'a> {
    if let Some(deflate) = &config.deflate {
        req.deflate = crate::deflate::negotiate(req.deflate_offers(), deflate);
    }
    req
}

/// What a read delivers to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery<'a> {
    /// The upgrade was accepted: the connection is open.
    Opened,
    /// A data message, borrowed from the input where it arrived whole.
    Message(Incoming<'a>),
    /// A plain request's answer is held, as [`Answer::Hold`] asked.
    Held,
}

/// The result of [`Session::handle_read`]: input bytes used, and what they
/// delivered. Call again with the rest of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<'a> {
    /// Bytes of input consumed.
    pub consumed: usize,
    /// What the application is to be given, if anything.
    pub delivery: Option<Delivery<'a>>,
}

/// Why a read ended the connection's useful life. The session has already
/// queued the answer (an HTTP error or a close frame); this is for counting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// The request head was refused.
    Handshake(HandshakeError),
    /// The peer broke RFC 6455 or a limit.
    Protocol(ProtocolError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Handshake(e) => write!(f, "handshake refused: {e}"),
            ReadError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// What became of a send.
#[must_use = "a send can be dropped or refused"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendStatus {
    /// Queued; it is written when the current event is done, with
    /// everything else queued in it.
    Queued,
    /// Not sent: output is queued and this message would take it over
    /// [`Config::max_write_buffer`]. Under [`Backpressure::Close`] the
    /// connection is now closing with 1008.
    Dropped,
    /// Not sent: the connection is closing or closed.
    Closed,
}

/// Whether our FIN has gone out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fin {
    /// Ours is still to go.
    Pending,
    /// Ours went out; we wait for the peer's.
    Sent,
    /// The peer's came first: once our last bytes are out we are done.
    PeerFirst,
}

/// The keepalive rule's state: silent so far, or a ping awaits its pong.
#[derive(Debug, Clone, Copy)]
enum Keepalive {
    Quiet { last_input: Stamp },
    Pinged { at: Stamp },
}

/// What an open connection keeps.
#[derive(Debug)]
struct Open<D> {
    data: D,
    keepalive: Keepalive,
    /// The last data message from the peer, for the idle rule.
    last_message: Stamp,
    /// The socket refused output, or a send was dropped: tell the
    /// application when the queue is empty.
    drain_wanted: bool,
    /// Against [`Config::rate_limit`], when one is set (boxed: eight bytes
    /// in every open connection rather than twelve, none on the heap
    /// without a limit).
    rate: Option<Box<Rate>>,
    /// permessage-deflate, when negotiated.
    #[cfg(feature = "deflate")]
    deflate: Option<Box<crate::deflate::Context>>,
}

/// The code and reason `on_close` reports.
#[derive(Debug)]
struct CloseRecord {
    code: CloseCode,
    reason: Box<str>,
}

/// What a closing or closed connection keeps. The record's fields are
/// kept flat, so that they share one word with `since` and `fin`.
#[derive(Debug)]
struct Ending<D> {
    data: D,
    since: Stamp,
    code: CloseCode,
    /// In `Failed`: whether our FIN has gone out.
    fin: Fin,
    reason: Box<str>,
}

/// What a connection keeps while its request head arrives.
#[derive(Debug)]
struct Reading {
    since: Stamp,
    /// The socket's peer, from accept.
    peer: SocketAddr,
    /// The head's bytes, only when it arrives in pieces.
    request: Vec<u8>,
    /// Once the head is in and a body follows: the request's whole length.
    need: usize,
}

impl Reading {
    fn boxed(now: Time, peer: SocketAddr) -> Box<Reading> {
        Box::new(Reading {
            since: now.stamp(),
            peer,
            request: Vec::new(),
            need: 0,
        })
    }
}

/// What a held request keeps while its answer waits.
#[derive(Debug)]
struct Waiting<D> {
    data: D,
    since: Stamp,
    timeout: Duration,
    peer: SocketAddr,
    /// The answer goes without its body (a `HEAD`).
    with_body: bool,
    /// The connection stays open for another request after the answer.
    keep_alive: bool,
}

/// Where a connection is in its life; each state holds what only it needs.
#[derive(Debug)]
enum State<D> {
    /// Reading the request head (boxed: most connections spend their life
    /// in the smaller states).
    ReadingRequest(Box<Reading>),
    /// An HTTP answer (a page or a refusal) is queued; once it is out we
    /// send FIN and wait for the peer's.
    Answering { since: Stamp, fin: Fin },
    /// A plain request whose answer the application holds (boxed: rare).
    Held(Box<Waiting<D>>),
    /// Upgraded: messages flow.
    Open(Open<D>),
    /// We sent a close frame and wait for the peer's.
    Closing(Ending<D>),
    /// Both close frames are exchanged: our last bytes go out, then the
    /// TCP connection is dropped, the server closing first (§7.1.1). The
    /// peer sends nothing after its close frame, so no reset can follow.
    Closed(Ending<D>),
    /// The peer broke the protocol: our close frame goes out, then FIN,
    /// then we wait for the peer's FIN, so that input it is still sending
    /// cannot turn our close frame into a reset.
    Failed(Ending<D>),
    /// The TCP connection is to be dropped now. An upgraded connection
    /// keeps its data and record until `on_close` has seen them.
    Ended(Option<Ending<D>>),
}

/// One server connection's protocol state, from the first byte of the
/// request to the end. `D` is the application's data for an upgraded
/// connection, decided when the upgrade is accepted.
#[derive(Debug)]
pub struct Session<D> {
    state: State<D>,
    reader: MessageReader,
    out: Outbox,
}

impl<D> Session<D> {
    /// A session for a connection from `peer`, accepted at `now`.
    pub fn new(now: Time, peer: SocketAddr) -> Self {
        Session {
            state: State::ReadingRequest(Reading::boxed(now, peer)),
            reader: MessageReader::new(Role::Server),
            out: Outbox::new(),
        }
    }

    /// Takes bytes read from the socket, unmasking frames in place. Returns
    /// after at most one delivery; call again with the rest. When a request
    /// head completes, `answer` decides what to do with it, given the
    /// request and the socket's peer address. An error has
    /// already been answered on the wire; it is returned for counting.
    pub fn handle_read<'a>(
        &mut self,
        now: Time,
        config: &Config,
        input: &'a mut [u8],
        answer: impl FnOnce(&Request<'_>, SocketAddr) -> Answer<D>,
    ) -> Result<Step<'a>, ReadError> {
        match self.state {
            State::ReadingRequest(_) => self.read_request(now, config, input, answer),
            State::Open(_) | State::Closing(_) => self.read_frames(now, config, input),
            // A client must not send while its request is held: it has
            // given up on the answer, or pipelines, which wsloop does not
            // serve behind a held answer.
            State::Held(_) => {
                self.end(CloseCode::ABNORMAL, "");
                Ok(Step {
                    consumed: input.len(),
                    delivery: None,
                })
            }
            // Input after our last words is discarded.
            State::Answering { .. } | State::Closed(_) | State::Failed(_) | State::Ended(_) => {
                Ok(Step {
                    consumed: input.len(),
                    delivery: None,
                })
            }
        }
    }

    fn read_request<'a>(
        &mut self,
        now: Time,
        config: &Config,
        input: &'a mut [u8],
        answer: impl FnOnce(&Request<'_>, SocketAddr) -> Answer<D>,
    ) -> Result<Step<'a>, ReadError> {
        let State::ReadingRequest(reading) = &mut self.state else {
            unreachable!("called in ReadingRequest only");
        };
        let Reading {
            peer,
            request,
            need,
            ..
        } = &mut **reading;
        let peer = *peer;
        let limits = &config.handshake_limits;
        let held = request.len();
        // The request from the input itself when it came in one piece (the
        // usual case), else from the held bytes with this input added.
        let taken = if held == 0 {
            input.len()
        } else {
            // Held bytes are within the limits, or parse would have refused
            // them: up to the known length, or one byte past the head limit.
            let room = match *need {
                0 => limits.max_header_bytes + 1 - held,
                total => total - held,
            };
            let take = input.len().min(room);
            request.extend_from_slice(&input[..take]);
            take
        };
        let waiting = |consumed| {
            Ok(Step {
                consumed,
                delivery: None,
            })
        };
        if *need > request.len() {
            return waiting(taken);
        }
        // Where the head's end was searched for already; from the start once
        // it is known, since the body is all that was missing.
        let scanned = if *need > 0 { 0 } else { held };
        let buf: &[u8] = if held == 0 { input } else { request };
        // The answer to a HEAD has no body, a refusal's included. Blank
        // lines may come before a request line (RFC 9112 §2.2).
        let with_body = !buf[handshake::request_start(buf)..].starts_with(b"HEAD ");
        // A client that sends requests without reading the answers gets
        // a closing answer once they pass the write buffer cap.
        let room_to_answer = self.out.len() <= config.max_write_buffer;
        let (answer, key, consumed, keep_alive) = match handshake::parse(buf, scanned, limits) {
            Ok(Parsed::Partial) => {
                if held == 0 {
                    request.extend_from_slice(input);
                }
                return waiting(taken);
            }
            Ok(Parsed::NeedBody { total }) => {
                *need = total;
                if held == 0 {
                    request.extend_from_slice(input);
                }
                return waiting(taken);
            }
            Ok(Parsed::Upgrade(req, end)) => {
                #[cfg(feature = "deflate")]
                let req = negotiate_deflate(req, config);
                let agreed = Agreed::from_request(&req);
                let key = req.accept_key();
                ((answer(&req, peer), agreed), key, end - held, false)
            }
            Ok(Parsed::Http(req, end)) => {
                let agreed = Agreed::from_request(&req);
                let keep_alive = req.keep_alive() && room_to_answer;
                ((answer(&req, peer), agreed), None, end - held, keep_alive)
            }
            Err(err) => {
                self.respond(now, &Response::for_error(&err), with_body, false);
                return Err(ReadError::Handshake(err));
            }
        };
        let how = Reply {
            with_body,
            keep_alive,
            peer,
        };
        let delivery = self.apply(now, config, answer, key, how);
        Ok(Step { consumed, delivery })
    }

    /// Carries out the application's answer to a request head.
    fn apply(
        &mut self,
        now: Time,
        config: &Config,
        (answer, agreed): (Answer<D>, Agreed),
        key: Option<AcceptKey>,
        how: Reply,
    ) -> Option<Delivery<'static>> {
        match (answer, key) {
            (Answer::Accept { protocol, data }, Some(key)) => {
                self.accept(now, config, &key, protocol.as_deref(), agreed, data);
                Some(Delivery::Opened)
            }
            // Only an upgrade can be accepted; a plain request gets 426.
            (Answer::Accept { .. }, None) => {
                let response = Response::status(426).with_header("Upgrade", "websocket");
                self.respond(now, &response, how.with_body, how.keep_alive);
                None
            }
            // An upgrade is answered at once; only a plain request waits.
            (Answer::Hold { .. }, Some(_)) => {
                self.respond(now, &Response::status(500), how.with_body, false);
                None
            }
            (Answer::Hold { data, timeout }, None) => {
                self.state = State::Held(Box::new(Waiting {
                    data,
                    since: now.stamp(),
                    timeout: timeout.min(MAX_TIMEOUT),
                    peer: how.peer,
                    with_body: how.with_body,
                    keep_alive: how.keep_alive,
                }));
                Some(Delivery::Held)
            }
            (Answer::Respond(response), _) => {
                self.respond(now, &response, how.with_body, how.keep_alive);
                None
            }
        }
    }

    fn accept(
        &mut self,
        now: Time,
        config: &Config,
        key: &AcceptKey,
        protocol: Option<&str>,
        agreed: Agreed,
        data: D,
    ) {
        let extensions = agreed.response();
        self.out.push_owned(handshake::accept_response(
            key,
            protocol,
            extensions.as_deref(),
        ));
        if extensions.is_some() {
            self.reader.allow_compressed();
        }
        self.state = State::Open(Open {
            data,
            keepalive: Keepalive::Quiet {
                last_input: now.stamp(),
            },
            last_message: now.stamp(),
            drain_wanted: false,
            rate: config.rate_limit.map(|_| Box::new(Rate::new(now))),
            #[cfg(feature = "deflate")]
            deflate: agreed
                .deflate
                .map(|a| Box::new(crate::deflate::Context::new(a))),
        });
    }

    /// Queues an HTTP answer. The connection then reads the next request,
    /// or, after a `Connection: close` answer, sends FIN once it is out.
    fn respond(&mut self, now: Time, response: &Response, with_body: bool, keep_alive: bool) {
        self.out.push_owned(response.encode(with_body, keep_alive));
        self.state = match (&mut self.state, keep_alive) {
            // The next request's time starts now.
            (State::ReadingRequest(reading), true) => {
                reading.since = now.stamp();
                reading.request = Vec::new();
                reading.need = 0;
                return;
            }
            (State::Held(waiting), true) => {
                State::ReadingRequest(Reading::boxed(now, waiting.peer))
            }
            _ => State::Answering {
                since: now.stamp(),
                fin: Fin::Pending,
            },
        };
    }

    /// Answers a held request. `closing` asks for `Connection: close`
    /// whatever the request allowed, as on shutdown. Nothing happens in any
    /// other state.
    pub fn answer_held(&mut self, now: Time, response: &Response, closing: bool) {
        if let State::Held(waiting) = &self.state {
            let (with_body, keep_alive) = (waiting.with_body, waiting.keep_alive && !closing);
            self.respond(now, response, with_body, keep_alive);
        }
    }

    /// For shutdown: a plain HTTP connection takes no more requests. An
    /// answer going out still goes, then FIN; a connection between
    /// requests, or in the middle of one, is dropped.
    pub fn stop_http(&mut self) {
        match &self.state {
            State::ReadingRequest(reading) if !self.out.is_empty() => {
                self.state = State::Answering {
                    since: reading.since,
                    fin: Fin::Pending,
                };
            }
            State::ReadingRequest(_) | State::Held(_) => self.state = State::Ended(None),
            _ => {}
        }
    }

    /// When a held request's wait is over, if it is held.
    pub fn held_deadline(&self, now: Time) -> Option<Time> {
        match &self.state {
            State::Held(waiting) => Some(now.after(waiting.since, waiting.timeout)),
            _ => None,
        }
    }

    /// Whether a plain request's answer is held.
    pub fn is_held(&self) -> bool {
        matches!(self.state, State::Held(_))
    }

    /// The application's data for a held request.
    pub fn held_data_mut(&mut self) -> Option<&mut D> {
        match &mut self.state {
            State::Held(waiting) => Some(&mut waiting.data),
            _ => None,
        }
    }

    fn read_frames<'a>(
        &mut self,
        now: Time,
        config: &Config,
        input: &'a mut [u8],
    ) -> Result<Step<'a>, ReadError> {
        if let State::Open(open) = &mut self.state {
            if let Keepalive::Quiet { .. } = open.keepalive {
                open.keepalive = Keepalive::Quiet {
                    last_input: now.stamp(),
                };
            }
        }
        let step = match self.reader.read(input, &config.limits) {
            Ok(step) => step,
            Err(err) => {
                self.fail(now, &err);
                return Err(ReadError::Protocol(err));
            }
        };
        if let (
            Some(limit),
            State::Open(Open {
                rate: Some(rate), ..
            }),
        ) = (&config.rate_limit, &mut self.state)
        {
            let messages = matches!(
                step.event,
                Some(
                    Event::Message(_) | Event::Compressed { .. } | Event::Ping(_) | Event::Pong(_)
                )
            );
            if !rate.charge(now, limit, messages as u32, step.consumed) {
                let err = ProtocolError::RateLimited;
                self.fail(now, &err);
                return Err(ReadError::Protocol(err));
            }
        }
        let event = match step.event {
            Some(Event::Compressed { text, payload }) => {
                match self.inflate(config, text, &payload) {
                    Ok(event) => event,
                    Err(err) => {
                        self.fail(now, &err);
                        return Err(ReadError::Protocol(err));
                    }
                }
            }
            event => event,
        };
        // A message still arriving is not idleness: a long upload counts.
        if let State::Open(open) = &mut self.state {
            if self.reader.is_mid_message() {
                open.last_message = now.stamp();
            }
        }
        Ok(Step {
            consumed: step.consumed,
            delivery: self.on_event(now, config, event),
        })
    }

    /// Inflates a compressed message (RFC 7692 §7.2.2) into a gathered
    /// one, its size capped and its text checked. After our close frame
    /// it is discarded unread, as any message is.
    #[cfg(feature = "deflate")]
    fn inflate(
        &mut self,
        config: &Config,
        text: bool,
        payload: &[u8],
    ) -> Result<Option<Event<'static>>, ProtocolError> {
        let State::Open(Open {
            deflate: Some(deflate),
            ..
        }) = &mut self.state
        else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        deflate.inflate(payload, config.limits.max_message_size, &mut bytes)?;
        let incoming = if text {
            Incoming::GatheredText(
                String::from_utf8(bytes).map_err(|_| ProtocolError::InvalidUtf8)?,
            )
        } else {
            Incoming::GatheredBinary(bytes)
        };
        Ok(Some(Event::Message(incoming)))
    }

    /// Without the feature the reader never lets RSV1 through.
    #[cfg(not(feature = "deflate"))]
    fn inflate(
        &mut self,
        _config: &Config,
        _text: bool,
        _payload: &[u8],
    ) -> Result<Option<Event<'static>>, ProtocolError> {
        Err(ProtocolError::ReservedBitsSet)
    }

    /// Acts on what the reader produced: a message for the application, or
    /// a control frame the session answers itself.
    fn on_event<'a>(
        &mut self,
        now: Time,
        config: &Config,
        event: Option<Event<'a>>,
    ) -> Option<Delivery<'a>> {
        match event? {
            Event::Message(incoming) => match &mut self.state {
                State::Open(open) => {
                    open.last_message = now.stamp();
                    Some(Delivery::Message(incoming))
                }
                // After our close frame, messages are discarded (§5.5.1).
                _ => None,
            },
            Event::Ping(payload) => {
                // RFC 6455 §5.5.3 lets an endpoint answer only the latest
                // of several pings, so a peer that pings without reading
                // cannot grow the output through pongs.
                if self.is_open() && self.out.len() <= config.limits.max_pong_backlog {
                    self.out.push(OpCode::Pong, payload.as_bytes());
                }
                None
            }
            Event::Pong(_) => {
                if let State::Open(open) = &mut self.state {
                    open.keepalive = Keepalive::Quiet {
                        last_input: now.stamp(),
                    };
                }
                None
            }
            Event::Close { code, reason } => {
                // Checked to be UTF-8 by the reader.
                let reason = std::str::from_utf8(reason.as_bytes()).unwrap_or_default();
                self.peer_closed(now, code, reason);
                None
            }
            // Inflated by read_frames before it gets here.
            _ => None,
        }
    }

    /// The peer's close frame: echo it if we had not closed (§5.5.1), and
    /// keep the first close's code and reason.
    fn peer_closed(&mut self, now: Time, code: CloseCode, reason: &str) {
        self.state = match std::mem::replace(&mut self.state, State::Ended(None)) {
            State::Open(open) => {
                let echo = if code == CloseCode::NO_STATUS {
                    CloseCode::NORMAL
                } else {
                    code
                };
                self.push_close(echo, "");
                let record = CloseRecord {
                    code,
                    reason: reason.into(),
                };
                State::Closed(Ending::new(open.data, now, record))
            }
            State::Closing(ending) => State::Closed(ending.since(now)),
            other => other,
        };
        self.end_when_flushed();
    }

    /// A closed connection ends once its last bytes are written, and so
    /// does one whose peer sent FIN while our last words were queued.
    fn end_when_flushed(&mut self) {
        let done = match &self.state {
            State::Closed(_) => true,
            State::Answering { fin, .. } | State::Failed(Ending { fin, .. }) => {
                *fin == Fin::PeerFirst
            }
            _ => false,
        };
        if done && self.out.is_empty() {
            self.end(CloseCode::ABNORMAL, "");
        }
    }

    /// The peer broke the protocol: close with the error's code (§7.4.1),
    /// unless our close frame is out already, and read no more.
    fn fail(&mut self, now: Time, err: &ProtocolError) {
        self.state = match std::mem::replace(&mut self.state, State::Ended(None)) {
            State::Open(open) => {
                let record = self.push_close(err.close_code(), &err.to_string());
                State::Failed(Ending::new(open.data, now, record))
            }
            State::Closing(ending) => State::Failed(ending.since(now)),
            other => other,
        };
    }

    /// Queues a close frame; returns what it said, reason cut as sent.
    fn push_close(&mut self, code: CloseCode, reason: &str) -> CloseRecord {
        let (payload, sent) = close_payload(code, reason);
        self.out.push(OpCode::Close, payload.as_bytes());
        CloseRecord {
            code,
            reason: sent.into(),
        }
    }

    /// Starts the close handshake: our close frame, with a reason cut to
    /// 123 bytes. Does nothing unless the connection is open.
    pub fn close(&mut self, now: Time, code: CloseCode, reason: &str) {
        if !self.is_open() {
            return;
        }
        let State::Open(open) = std::mem::replace(&mut self.state, State::Ended(None)) else {
            unreachable!("checked open above");
        };
        let record = self.push_close(code, reason);
        self.state = State::Closing(Ending::new(open.data, now, record));
    }

    /// Queues a data message, unless the connection is not open or its
    /// output is over [`Config::max_write_buffer`].
    /// Compressed when permessage-deflate is in force and the message is
    /// at least `DeflateConfig::min_size` long (the `deflate` feature).
    pub fn send(&mut self, now: Time, config: &Config, msg: Message<'_>) -> SendStatus {
        self.send_message(now, config, msg, true)
    }

    /// Queues a data message as [`Session::send`] does, but never
    /// compressed: for data that is compressed already, or secret data
    /// next to attacker-chosen text (the CRIME and BREACH attacks).
    pub fn send_uncompressed(
        &mut self,
        now: Time,
        config: &Config,
        msg: Message<'_>,
    ) -> SendStatus {
        self.send_message(now, config, msg, false)
    }

    /// [`Session::send`] or, without `compress`,
    /// [`Session::send_uncompressed`].
    pub(crate) fn send_message(
        &mut self,
        now: Time,
        config: &Config,
        msg: Message<'_>,
        compress: bool,
    ) -> SendStatus {
        let payload = msg.as_bytes();
        if let Err(refused) = self.admit(now, config, payload.len()) {
            return refused;
        }
        if !(compress && self.push_compressed(config, msg.opcode(), payload)) {
            self.out.push(msg.opcode(), payload);
        }
        SendStatus::Queued
    }

    /// Queues `msg` compressed if deflate is in force and it is worth it;
    /// `false` if it must go plain.
    #[cfg(feature = "deflate")]
    fn push_compressed(&mut self, config: &Config, opcode: OpCode, payload: &[u8]) -> bool {
        compressor(&mut self.state, config, payload.len()).is_some_and(|(deflate, settings)| {
            push_deflated(&mut self.out, deflate, settings, opcode, payload)
        })
    }

    #[cfg(not(feature = "deflate"))]
    fn push_compressed(&mut self, _config: &Config, _opcode: OpCode, _payload: &[u8]) -> bool {
        false
    }

    /// Queues a message encoded once for many connections (a broadcast)
    /// under the same rules as [`Session::send`]: the plain frame by
    /// reference, or with deflate a compressed frame, made once per
    /// window size and shared too, unless this connection keeps context.
    pub fn send_shared(
        &mut self,
        now: Time,
        config: &Config,
        frame: &mut SharedFrame,
    ) -> SendStatus {
        if let Err(refused) = self.admit(now, config, frame.frame().len()) {
            return refused;
        }
        #[cfg(feature = "deflate")]
        {
            let (opcode, payload) = frame.payload();
            if let Some((deflate, settings)) = compressor(&mut self.state, config, payload.len()) {
                let queued = match deflate.shared_window() {
                    Some(bits) => frame
                        .deflated(bits, settings)
                        .map(|compressed| self.out.push_shared(compressed))
                        .is_some(),
                    // It keeps context, so only its own compressor can
                    // compress for it.
                    None => push_deflated(&mut self.out, deflate, settings, opcode, payload),
                };
                if queued {
                    return SendStatus::Queued;
                }
            }
        }
        self.out.push_shared(frame.frame().clone());
        SendStatus::Queued
    }

    /// Queues a ping with up to 125 bytes of payload.
    pub fn ping(&mut self, payload: &[u8]) -> Result<SendStatus, PingTooLong> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(PingTooLong { len: payload.len() });
        }
        if !self.is_open() {
            return Ok(SendStatus::Closed);
        }
        self.out.push(OpCode::Ping, payload);
        Ok(SendStatus::Queued)
    }

    /// Refuses a send on a connection that is not open, or one over the
    /// write cap, where the backpressure policy applies.
    fn admit(&mut self, now: Time, config: &Config, len: usize) -> Result<(), SendStatus> {
        let State::Open(open) = &mut self.state else {
            return Err(SendStatus::Closed);
        };
        // The cap bounds what is queued ahead of a message, so one message
        // larger than the cap can still go out on an idle connection.
        let queued = self.out.len();
        if queued > 0 && queued + len > config.max_write_buffer {
            open.drain_wanted = true;
            if config.backpressure == Backpressure::Close {
                self.close(now, CloseCode::POLICY_VIOLATION, "write buffer full");
            }
            return Err(SendStatus::Dropped);
        }
        Ok(())
    }

    /// Applies whichever deadline has passed at `now`.
    pub fn handle_timeout(&mut self, now: Time, config: &Config) {
        match &mut self.state {
            State::ReadingRequest(reading) => {
                if now.reached(reading.since, config.handshake_timeout) {
                    self.state = State::Ended(None);
                }
            }
            State::Answering { since, .. } => {
                if now.reached(*since, config.handshake_timeout) {
                    self.state = State::Ended(None);
                }
            }
            // The I/O layer asks the application for the answer at the
            // deadline (see `held_deadline`).
            State::Held(_) => {}
            State::Closing(ending) | State::Closed(ending) | State::Failed(ending) => {
                if now.reached(ending.since, config.close_timeout) {
                    self.end(CloseCode::ABNORMAL, "");
                }
            }
            State::Open(open) => {
                match open.keepalive {
                    Keepalive::Pinged { at } if now.reached(at, config.pong_timeout) => {
                        return self.end(CloseCode::ABNORMAL, "no pong");
                    }
                    Keepalive::Quiet { last_input }
                        if config
                            .ping_interval
                            .is_some_and(|every| now.reached(last_input, every)) =>
                    {
                        open.keepalive = Keepalive::Pinged { at: now.stamp() };
                        self.out.push(OpCode::Ping, b"");
                    }
                    _ => {}
                }
                if let State::Open(open) = &self.state {
                    let idle = config.idle_timeout;
                    if idle.is_some_and(|idle| now.reached(open.last_message, idle)) {
                        self.close(now, CloseCode::GOING_AWAY, "idle timeout");
                    }
                }
            }
            State::Ended(_) => {}
        }
    }

    /// The next moment [`Session::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self, now: Time, config: &Config) -> Option<Time> {
        match &self.state {
            State::ReadingRequest(reading) => {
                Some(now.after(reading.since, config.handshake_timeout))
            }
            State::Answering { since, .. } => Some(now.after(*since, config.handshake_timeout)),
            State::Held(_) => self.held_deadline(now),
            State::Open(open) => {
                let keepalive = match open.keepalive {
                    Keepalive::Pinged { at } => Some(now.after(at, config.pong_timeout)),
                    Keepalive::Quiet { last_input } => config
                        .ping_interval
                        .map(|every| now.after(last_input, every)),
                };
                let idle = config
                    .idle_timeout
                    .map(|idle| now.after(open.last_message, idle));
                keepalive.into_iter().chain(idle).min()
            }
            State::Closing(ending) | State::Closed(ending) | State::Failed(ending) => {
                Some(now.after(ending.since, config.close_timeout))
            }
            State::Ended(_) => None,
        }
    }

    /// The peer's FIN: it sends no more. Where our last words (an HTTP
    /// answer, a close frame) are still queued they go out first, since the
    /// peer may still read; anywhere else the connection ends, an open one
    /// reporting 1006, a closing one its own record.
    pub fn handle_eof(&mut self) {
        if !self.out.is_empty() {
            match &mut self.state {
                // Closed ends once flushed anyway.
                State::Closed(_) => return,
                State::Answering { fin, .. } | State::Failed(Ending { fin, .. }) => {
                    *fin = Fin::PeerFirst;
                    return;
                }
                // An answer to a kept-alive request is going out, and no
                // next request can come: finish the answer, then end.
                State::ReadingRequest(reading) => {
                    let since = reading.since;
                    self.state = State::Answering {
                        since,
                        fin: Fin::PeerFirst,
                    };
                    return;
                }
                _ => {}
            }
        }
        self.end(CloseCode::ABNORMAL, "");
    }

    /// A socket error, such as a reset: nothing more can be sent, so the
    /// connection ends at once, reporting as [`Session::handle_eof`] does.
    pub fn handle_io_error(&mut self) {
        self.end(CloseCode::ABNORMAL, "");
    }

    /// Moves to `Ended`, keeping the first close record, or making one
    /// with this code for a connection that had none.
    fn end(&mut self, code: CloseCode, reason: &str) {
        self.state = match std::mem::replace(&mut self.state, State::Ended(None)) {
            State::Open(open) => {
                let record = CloseRecord {
                    code,
                    reason: reason.into(),
                };
                State::Ended(Some(Ending::new(open.data, Time::from_millis(0), record)))
            }
            State::Closing(ending) | State::Closed(ending) | State::Failed(ending) => {
                State::Ended(Some(ending))
            }
            State::Ended(ending) => State::Ended(ending),
            State::ReadingRequest(_) | State::Answering { .. } | State::Held(_) => {
                State::Ended(None)
            }
        };
    }

    /// The socket took only part of the output: the application hears of
    /// it through [`Session::poll_drain`] once the rest is written.
    pub fn handle_write_blocked(&mut self) {
        if let State::Open(open) = &mut self.state {
            open.drain_wanted = true;
        }
    }

    /// The bytes waiting to be written, in order, as pieces for one vectored send.
    pub fn poll_transmit(&self) -> impl Iterator<Item = &[u8]> {
        self.out.pieces()
    }

    /// Marks `n` bytes from [`Session::poll_transmit`] as written.
    pub fn transmitted(&mut self, n: usize) {
        self.out.consume(n);
        self.end_when_flushed();
    }

    /// Whether output waits to be written.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// True once, when our last words are written and it is time to send
    /// FIN: after an HTTP answer, or after the close frame that failed the
    /// connection.
    pub fn poll_shutdown(&mut self) -> bool {
        if !self.out.is_empty() {
            return false;
        }
        match &mut self.state {
            State::Answering { fin, .. } | State::Failed(Ending { fin, .. })
                if *fin == Fin::Pending =>
            {
                *fin = Fin::Sent;
                true
            }
            _ => false,
        }
    }

    /// True once, when output that the socket had refused, or a dropped
    /// send, is behind us and the queue is empty.
    pub fn poll_drain(&mut self) -> bool {
        match &mut self.state {
            State::Open(open) if open.drain_wanted && self.out.is_empty() => {
                open.drain_wanted = false;
                true
            }
            _ => false,
        }
    }

    /// Whether the TCP connection is to be dropped now.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended(_))
    }

    /// Whether messages can be sent.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// Whether the upgrade happened, so that the application has data here.
    pub fn is_upgraded(&self) -> bool {
        self.data().is_some()
    }

    /// Output bytes queued and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.out.len()
    }

    /// Bytes held for a partly received request head, frame or message.
    pub fn buffered_input(&self) -> usize {
        match &self.state {
            State::ReadingRequest(reading) => reading.request.capacity(),
            _ => self.reader.buffered(),
        }
    }

    /// The application's data, once the upgrade is accepted.
    pub fn data(&self) -> Option<&D> {
        match &self.state {
            State::Open(open) => Some(&open.data),
            State::Closing(ending) | State::Closed(ending) | State::Failed(ending) => {
                Some(&ending.data)
            }
            State::Ended(ending) => ending.as_ref().map(|e| &e.data),
            State::ReadingRequest(_) | State::Answering { .. } | State::Held(_) => None,
        }
    }

    /// The application's data, mutable.
    pub fn data_mut(&mut self) -> Option<&mut D> {
        match &mut self.state {
            State::Open(open) => Some(&mut open.data),
            State::Closing(ending) | State::Closed(ending) | State::Failed(ending) => {
                Some(&mut ending.data)
            }
            State::Ended(ending) => ending.as_mut().map(|e| &mut e.data),
            State::ReadingRequest(_) | State::Answering { .. } | State::Held(_) => None,
        }
    }

    /// The permessage-deflate agreement in force, while open.
    #[cfg(feature = "deflate")]
    pub fn deflate(&self) -> Option<&crate::deflate::Agreement> {
        match &self.state {
            State::Open(open) => open.deflate.as_deref().map(|d| d.agreement()),
            _ => None,
        }
    }

    /// For an upgraded connection that has ended: the close code and
    /// reason to report. The peer's if it closed first, ours (as sent) if
    /// we did, 1006 if TCP ended without a close frame.
    pub fn close_record(&self) -> Option<(CloseCode, &str)> {
        match &self.state {
            State::Ended(Some(ending)) => Some((ending.code, &ending.reason)),
            _ => None,
        }
    }
}

impl<D> Ending<D> {
    fn new(data: D, now: Time, record: CloseRecord) -> Self {
        Ending {
            data,
            since: now.stamp(),
            code: record.code,
            fin: Fin::Pending,
            reason: record.reason,
        }
    }

    /// The same ending, its clock restarted.
    fn since(self, now: Time) -> Self {
        Ending {
            since: now.stamp(),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameHeader;
    use crate::handshake::HandshakeLimits;
    use crate::protocol::encode_frame;

    const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 5000))
    }

    fn ms(n: u64) -> Time {
        Time::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn masked(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, true, opcode, Some([1, 2, 3, 4]), payload);
        out
    }

    /// Feeds all of `input` at `now`, accepting upgrades with data 7,
    /// holding requests for `/hold` with data 9 for 30 s, and answering
    /// other plain requests with a 200 page naming the method and body;
    /// returns what was delivered.
    fn feed(s: &mut Session<u32>, now: Time, config: &Config, input: &[u8]) -> Vec<String> {
        let mut input = input.to_vec();
        let mut pos = 0;
        let mut got = Vec::new();
        while pos < input.len() {
            let answer = |req: &Request<'_>, _peer| {
                if req.is_upgrade() {
                    Answer::Accept {
                        protocol: None,
                        data: 7,
                    }
                } else if req.path == "/hold" {
                    Answer::Hold {
                        data: 9,
                        timeout: secs(30),
                    }
                } else {
                    let body = String::from_utf8_lossy(req.body());
                    Answer::Respond(Response::ok(
                        "text/plain",
                        format!("{} page{body}", req.method),
                    ))
                }
            };
            match s.handle_read(now, config, &mut input[pos..], answer) {
                Ok(step) => {
                    pos += step.consumed;
                    got.extend(step.delivery.map(|d| match d {
                        Delivery::Opened => "open".to_string(),
                        Delivery::Message(m) => format!("{:?}", m.message()),
                        Delivery::Held => "held".to_string(),
                    }));
                }
                Err(e) => {
                    got.push(format!("error: {e}"));
                    break;
                }
            }
        }
        got
    }

    /// A new session's output after it is fed `input` at 0 ms, as text.
    fn answered(config: &Config, input: &[u8]) -> (Session<u32>, String) {
        let mut s = Session::<u32>::new(ms(0), peer());
        feed(&mut s, ms(0), config, input);
        let output = String::from_utf8(written(&mut s)).unwrap();
        (s, output)
    }

    /// Takes everything queued, as a reactor's write would.
    fn written(s: &mut Session<u32>) -> Vec<u8> {
        let bytes: Vec<u8> = s.poll_transmit().flatten().copied().collect();
        s.transmitted(bytes.len());
        bytes
    }

    /// Server frames as `(opcode, payload)`.
    fn frames(mut bytes: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (h, n) = FrameHeader::parse(bytes, Role::Client).unwrap().unwrap();
            let end = n + h.payload_len as usize;
            out.push((h.opcode, bytes[n..end].to_vec()));
            bytes = &bytes[end..];
        }
        out
    }

    fn opened(now: Time, config: &Config) -> Session<u32> {
        let mut s = Session::new(now, peer());
        assert_eq!(feed(&mut s, now, config, UPGRADE), ["open"]);
        let response = written(&mut s);
        assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
        s
    }

    fn close_frame(code: u16, reason: &str) -> (OpCode, Vec<u8>) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        (OpCode::Close, payload)
    }

    #[test]
    fn handshake_deadline_drops_a_slow_request() {
        let config = Config::default();
        let mut s = Session::<u32>::new(ms(0), peer());
        assert_eq!(
            feed(&mut s, ms(3_000), &config, b"GET / HTTP/1.1\r\n"),
            [] as [&str; 0]
        );
        // The deadline counts from accept, not from the last byte.
        assert_eq!(s.poll_timeout(ms(3_000), &config), Some(ms(10_000)));
        s.handle_timeout(ms(9_999), &config);
        assert!(!s.is_ended());
        s.handle_timeout(ms(10_000), &config);
        assert!(s.is_ended() && s.close_record().is_none());
    }

    #[test]
    fn ping_after_silence_then_pong_deadline_gives_1006() {
        let config = Config::default();
        let mut s = opened(ms(0), &config);
        assert_eq!(s.poll_timeout(ms(0), &config), Some(ms(20_000)));
        // Input pushes the ping out.
        feed(&mut s, ms(5_000), &config, &masked(OpCode::Text, b"hi"));
        assert_eq!(s.poll_timeout(ms(5_000), &config), Some(ms(25_000)));
        s.handle_timeout(ms(24_999), &config);
        assert_eq!(frames(&written(&mut s)), []);
        s.handle_timeout(ms(25_000), &config);
        assert_eq!(frames(&written(&mut s)), [(OpCode::Ping, vec![])]);
        // Now the pong deadline rules, and input other than a pong does not move it.
        feed(&mut s, ms(30_000), &config, &masked(OpCode::Text, b"busy"));
        assert_eq!(s.poll_timeout(ms(30_000), &config), Some(ms(45_000)));
        s.handle_timeout(ms(45_000), &config);
        assert!(s.is_ended());
        assert_eq!(s.close_record(), Some((CloseCode::ABNORMAL, "no pong")));
    }

    #[test]
    fn a_pong_rearms_the_next_ping_even_with_a_long_pong_timeout() {
        let config = Config::default()
            .ping_interval(Some(Duration::from_millis(100)))
            .pong_timeout(secs(60));
        let mut s = opened(ms(0), &config);
        s.handle_timeout(ms(100), &config);
        assert_eq!(frames(&written(&mut s)), [(OpCode::Ping, vec![])]);
        assert_eq!(s.poll_timeout(ms(100), &config), Some(ms(60_100)));
        feed(&mut s, ms(150), &config, &masked(OpCode::Pong, b""));
        // The deadline moved earlier: from the pong's 60 s to the next ping.
        assert_eq!(s.poll_timeout(ms(150), &config), Some(ms(250)));
        s.handle_timeout(ms(250), &config);
        assert_eq!(frames(&written(&mut s)), [(OpCode::Ping, vec![])]);
    }

    #[test]
    fn idle_timeout_closes_with_1001_then_the_close_timeout_drops() {
        let config = Config::default()
            .ping_interval(None)
            .idle_timeout(Some(secs(30)));
        let mut s = opened(ms(0), &config);
        assert_eq!(
            feed(&mut s, ms(10_000), &config, &masked(OpCode::Text, b"x")),
            ["Text(\"x\")"]
        );
        // Pings and pongs are not messages: they do not reset the idle clock.
        feed(&mut s, ms(20_000), &config, &masked(OpCode::Ping, b""));
        assert_eq!(s.poll_timeout(ms(20_000), &config), Some(ms(40_000)));
        s.handle_timeout(ms(40_000), &config);
        assert_eq!(
            frames(&written(&mut s)),
            [(OpCode::Pong, vec![]), close_frame(1001, "idle timeout")]
        );
        assert!(!s.is_open());
        assert_eq!(s.poll_timeout(ms(40_000), &config), Some(ms(45_000)));
        s.handle_timeout(ms(45_000), &config);
        assert_eq!(
            s.close_record(),
            Some((CloseCode::GOING_AWAY, "idle timeout"))
        );
    }

    #[test]
    fn our_close_moves_the_deadline_earlier_and_reports_what_was_sent() {
        let config = Config::default();
        let mut s = opened(ms(0), &config);
        assert_eq!(s.poll_timeout(ms(0), &config), Some(ms(20_000)));
        let long = "r".repeat(200);
        s.close(ms(1_000), CloseCode::NORMAL, &long);
        assert_eq!(s.poll_timeout(ms(1_000), &config), Some(ms(6_000)));
        assert_eq!(
            s.send(ms(1_000), &config, Message::Text("late")),
            SendStatus::Closed
        );
        assert_eq!(frames(&written(&mut s)), [close_frame(1000, &long[..123])]);
        // No reply: dropped after the close timeout, with our record.
        s.handle_timeout(ms(6_000), &config);
        assert_eq!(s.close_record(), Some((CloseCode::NORMAL, &long[..123])));
    }

    #[test]
    fn peer_close_is_echoed_then_the_connection_ends() {
        let config = Config::default();
        let mut s = opened(ms(0), &config);
        let mut input = masked(OpCode::Close, &[0x03, 0xe8, b'o', b'k']);
        input.extend(masked(OpCode::Text, b"ignored"));
        assert_eq!(feed(&mut s, ms(1), &config, &input), [] as [&str; 0]);
        assert!(!s.is_ended(), "the echo is still to be written");
        assert_eq!(s.poll_timeout(ms(1), &config), Some(ms(5_001)));
        assert_eq!(frames(&written(&mut s)), [close_frame(1000, "")]);
        // The handshake is complete: the server closes TCP first, no FIN dance.
        assert!(s.is_ended() && !s.poll_shutdown());
        assert_eq!(s.close_record(), Some((CloseCode::NORMAL, "ok")));
        assert_eq!(s.data(), Some(&7));
    }

    #[test]
    fn the_reply_to_our_close_ends_the_connection_at_once() {
        let config = Config::default();
        let mut s = opened(ms(0), &config);
        s.close(ms(1), CloseCode::GOING_AWAY, "bye");
        assert_eq!(frames(&written(&mut s)), [close_frame(1001, "bye")]);
        feed(
            &mut s,
            ms(2),
            &config,
            &masked(OpCode::Close, &[0x03, 0xe9]),
        );
        assert!(s.is_ended());
        assert_eq!(s.close_record(), Some((CloseCode::GOING_AWAY, "bye")));
    }

    #[test]
    fn close_without_code_is_answered_with_1000_and_reported_as_1005() {
        let config = Config::default();
        let mut s = opened(ms(0), &config);
        feed(&mut s, ms(1), &config, &masked(OpCode::Close, b""));
        assert_eq!(frames(&written(&mut s)), [close_frame(1000, "")]);
        s.handle_eof();
        assert_eq!(s.close_record(), Some((CloseCode::NO_STATUS, "")));
    }

    #[test]
    fn protocol_error_closes_with_its_code_and_reason() {
        let config = Config::default();
        let mut s = opened(ms(0), &config);
        let got = feed(&mut s, ms(1), &config, &masked(OpCode::Text, &[0xff]));
        assert_eq!(got, ["error: protocol error: text is not valid UTF-8"]);
        assert_eq!(
            frames(&written(&mut s)),
            [close_frame(1007, "text is not valid UTF-8")]
        );
        // Nothing more is read; FIN once the close frame is out, then the
        // peer's FIN ends it.
        assert_eq!(
            feed(&mut s, ms(2), &config, &masked(OpCode::Text, b"x")),
            [] as [&str; 0]
        );
        assert!(s.poll_shutdown());
        assert!(!s.poll_shutdown(), "FIN once");
        assert!(!s.is_ended());
        s.handle_eof();
        assert_eq!(
            s.close_record(),
            Some((CloseCode::INVALID_PAYLOAD, "text is not valid UTF-8"))
        );
    }

    #[test]
    fn frames_right_behind_the_head_and_a_head_in_pieces() {
        let config = Config::default();
        let mut input = UPGRADE.to_vec();
        input.extend(masked(OpCode::Text, b"early"));
        let mut s = Session::new(ms(0), peer());
        assert_eq!(
            feed(&mut s, ms(0), &config, &input),
            ["open", "Text(\"early\")"]
        );
        // The same, a byte at a time.
        let mut s = Session::new(ms(0), peer());
        let mut got = Vec::new();
        for byte in &input {
            got.extend(feed(&mut s, ms(0), &config, std::slice::from_ref(byte)));
        }
        assert_eq!(got, ["open", "Text(\"early\")"]);
    }

    #[test]
    fn plain_http_1_0_and_head_are_answered() {
        let config = Config::default();
        let (mut s, reply) = answered(&config, b"GET / HTTP/1.0\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nGET page"), "{reply}");
        assert!(s.poll_shutdown());

        let (_, reply) = answered(&config, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(reply.contains("Content-Length: 9\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\n"), "no body: {reply}");
    }

    #[test]
    fn http_1_1_keeps_the_connection_for_the_next_request() {
        let config = Config::default();
        let mut s = Session::<u32>::new(ms(0), peer());
        // Two requests in one read, the second asking to close.
        feed(
            &mut s,
            ms(0),
            &config,
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        let replies = String::from_utf8(written(&mut s)).unwrap();
        assert_eq!(
            replies.matches("HTTP/1.1 200 OK\r\n").count(),
            2,
            "{replies}"
        );
        assert_eq!(
            replies.matches("Connection: close\r\n").count(),
            1,
            "{replies}"
        );
        assert!(s.poll_shutdown(), "closed after the second");

        // Between requests the handshake timeout runs from the last answer.
        let mut s = Session::<u32>::new(ms(0), peer());
        feed(
            &mut s,
            ms(5_000),
            &config,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        written(&mut s);
        assert!(!s.poll_shutdown() && !s.is_ended());
        assert_eq!(s.poll_timeout(ms(5_000), &config), Some(ms(15_000)));
        s.handle_timeout(ms(15_000), &config);
        assert!(s.is_ended());
    }

    #[test]
    fn pipelined_requests_that_are_never_read_end_with_a_closing_answer() {
        let config = Config::default().max_write_buffer(100);
        let mut s = Session::<u32>::new(ms(0), peer());
        let many = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(10);
        feed(&mut s, ms(0), &config, &many);
        // Each answer is 57 bytes: the third one goes past 100 and closes;
        // the requests after it are not answered.
        let replies = String::from_utf8(written(&mut s)).unwrap();
        assert_eq!(replies.matches("HTTP/1.1 200 OK").count(), 3, "{replies}");
        assert!(
            replies.ends_with("Connection: close\r\n\r\nGET page"),
            "{replies}"
        );
        assert!(s.poll_shutdown());
    }

    /// The smuggling corpus on a kept-alive connection: a head with a bare
    /// line end is refused whole, and nothing behind it is read as a
    /// request. Each case goes in whole and cut at every byte.
    #[test]
    fn a_request_cannot_hide_another_behind_a_bare_line_end() {
        let config = Config::default();
        let next = "POST /send?name=mallory HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let heads = [
            "POST /send?name=alice HTTP/1.1\r\nHost: x\r\nContent-Length: 5\n\n",
            "POST /send?name=alice HTTP/1.1\nHost: x\nContent-Length: 5\n\n",
            "POST /send?name=alice HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\n",
            "POST /send?name=alice HTTP/1.1\r\nHost: x\rContent-Length: 5\r\n\r\n",
            "\nPOST /send?name=alice HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /send?name=alice HTTP/1.1\nHost: x\n\n",
        ];
        for head in heads {
            let input = format!("{head}{next}");
            let plain_first = head.starts_with("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            for cut in 0..input.len() {
                let mut s = Session::<u32>::new(ms(0), peer());
                let mut got = feed(&mut s, ms(0), &config, &input.as_bytes()[..cut]);
                if !got.iter().any(|g| g.starts_with("error")) {
                    got.extend(feed(&mut s, ms(0), &config, &input.as_bytes()[cut..]));
                }
                let replies = String::from_utf8(written(&mut s)).unwrap();
                assert_eq!(
                    got,
                    ["error: handshake refused: request head has a CR or LF outside a CRLF line ending"],
                    "{head:?} cut at {cut}"
                );
                assert!(
                    !replies.contains("POST page"),
                    "{head:?} cut at {cut}: {replies}"
                );
                let answers = replies.matches("HTTP/1.1 ").count();
                assert_eq!(answers, 1 + plain_first as usize, "{replies}");
                assert!(replies.contains("400 Bad Request\r\n"), "{replies}");
                assert!(s.poll_shutdown(), "the connection closes after the 400");
            }
        }
    }

    #[test]
    fn a_head_after_blank_lines_gets_no_body() {
        let config = Config::default();
        let (_, reply) = answered(&config, b"\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(reply.ends_with("Content-Length: 9\r\n\r\n"), "{reply}");
        // The fuzz finding: an unfinished HEAD after empty lines is owed
        // nothing yet.
        let (_, reply) = answered(&config, b"\r\n\r\n\r\n\r\nHEAD ");
        assert_eq!(reply, "");
    }

    #[test]
    fn a_body_is_read_whatever_the_cut_and_oversized_ones_get_413() {
        let config = Config::default();
        let req = b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n hello";
        for cut in 1..req.len() {
            let mut s = Session::<u32>::new(ms(0), peer());
            feed(&mut s, ms(0), &config, &req[..cut]);
            assert!(written(&mut s).is_empty(), "cut at {cut}");
            feed(&mut s, ms(0), &config, &req[cut..]);
            let reply = String::from_utf8(written(&mut s)).unwrap();
            assert!(reply.ends_with("POST page hello"), "cut at {cut}: {reply}");
        }
        let limits = HandshakeLimits::default().max_body_bytes(5);
        let small = Config::default().handshake_limits(limits);
        let mut s = Session::<u32>::new(ms(0), peer());
        let got = feed(&mut s, ms(0), &small, req);
        assert_eq!(
            got,
            ["error: handshake refused: request body is over the 5-byte limit"]
        );
        let reply = String::from_utf8(written(&mut s)).unwrap();
        assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
        assert!(s.poll_shutdown());
    }

    #[test]
    fn a_held_request_waits_for_its_answer_or_its_deadline() {
        let config = Config::default();
        let hold = b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut s = Session::<u32>::new(ms(0), peer());
        assert_eq!(feed(&mut s, ms(1_000), &config, hold), ["held"]);
        assert!(s.is_held() && written(&mut s).is_empty());
        assert_eq!(s.held_data_mut(), Some(&mut 9));
        assert_eq!(s.held_deadline(ms(1_000)), Some(ms(31_000)));
        assert_eq!(s.poll_timeout(ms(1_000), &config), Some(ms(31_000)));
        // The session leaves the deadline to the application.
        s.handle_timeout(ms(31_000), &config);
        assert!(s.is_held());
        s.answer_held(ms(31_000), &Response::status(204), false);
        let reply = String::from_utf8(written(&mut s)).unwrap();
        assert!(reply.starts_with("HTTP/1.1 204 No Content\r\n"), "{reply}");
        assert!(!reply.contains("Connection: close"), "kept alive: {reply}");
        // The next request on the same connection is held again.
        assert_eq!(feed(&mut s, ms(32_000), &config, hold), ["held"]);
        // On shutdown the answer closes the connection.
        s.answer_held(ms(32_000), &Response::status(204), true);
        let reply = String::from_utf8(written(&mut s)).unwrap();
        assert!(reply.contains("Connection: close\r\n"), "{reply}");
        assert!(s.poll_shutdown());

        // Input while held, or the client's FIN, ends the connection.
        let mut s = Session::<u32>::new(ms(0), peer());
        feed(&mut s, ms(0), &config, hold);
        feed(&mut s, ms(0), &config, b"GET / HTTP/1.1\r\n");
        assert!(s.is_ended());
        let mut s = Session::<u32>::new(ms(0), peer());
        feed(&mut s, ms(0), &config, hold);
        s.handle_eof();
        assert!(s.is_ended() && !s.is_upgraded());
        // An upgrade cannot be held.
        let mut s = Session::<u32>::new(ms(0), peer());
        let answer = |_: &Request<'_>, _| Answer::Hold {
            data: 1,
            timeout: secs(1),
        };
        let mut input = UPGRADE.to_vec();
        s.handle_read(ms(0), &config, &mut input, answer).unwrap();
        let reply = String::from_utf8(written(&mut s)).unwrap();
        assert!(reply.starts_with("HTTP/1.1 500 "), "{reply}");
    }

    #[test]
    fn a_peer_fin_before_the_answer_is_out_waits_for_the_answer() {
        let config = Config::default();
        let mut s = Session::<u32>::new(ms(0), peer());
        feed(&mut s, ms(0), &config, b"GET / HTTP/1.0\r\n\r\n");
        s.handle_eof();
        assert!(!s.is_ended(), "the page is still queued");
        assert!(
            !s.poll_shutdown(),
            "no FIN dance: the peer has gone already"
        );
        let reply = written(&mut s);
        assert!(reply.ends_with(b"GET page"));
        assert!(s.is_ended());
        // A reset is different: nothing more can be sent.
        let mut s = Session::<u32>::new(ms(0), peer());
        feed(&mut s, ms(0), &config, b"GET / HTTP/1.0\r\n\r\n");
        s.handle_io_error();
        assert!(s.is_ended());
    }

    #[test]
    fn a_refused_head_request_gets_no_body() {
        let config = Config::default();
        let mut s = Session::<u32>::new(ms(0), peer());
        let got = feed(&mut s, ms(0), &config, b"HEAD / HTTP/1.1\r\n\r\n");
        assert_eq!(got, ["error: handshake refused: missing Host header"]);
        let reply = String::from_utf8(written(&mut s)).unwrap();
        assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
        assert!(reply.ends_with("\r\n\r\n"), "no body: {reply}");
    }

    #[test]
    fn a_message_still_arriving_is_not_idleness() {
        let config = Config::default()
            .ping_interval(None)
            .idle_timeout(Some(secs(30)));
        let mut s = opened(ms(0), &config);
        let frame = masked(OpCode::Binary, &[0; 1000]);
        for (i, byte) in frame[..500].iter().enumerate() {
            feed(
                &mut s,
                ms(i as u64 * 100),
                &config,
                std::slice::from_ref(byte),
            );
        }
        assert_eq!(s.poll_timeout(ms(49_900), &config), Some(ms(79_900)));
    }

    #[test]
    fn an_upgrade_over_http_1_0_is_refused() {
        let config = Config::default();
        let mut s = Session::<u32>::new(ms(0), peer());
        let request = String::from_utf8(UPGRADE.to_vec())
            .unwrap()
            .replace("HTTP/1.1", "HTTP/1.0");
        let got = feed(&mut s, ms(0), &config, request.as_bytes());
        assert_eq!(
            got,
            ["error: handshake refused: WebSocket upgrade needs HTTP/1.1"]
        );
        assert!(written(&mut s).starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    }

    #[test]
    fn ping_flood_cannot_grow_the_output() {
        let config = Config::default();
        let mut s = opened(ms(0), &config);
        let mut input = Vec::new();
        for _ in 0..2_000 {
            input.extend(masked(OpCode::Ping, &[7; 125]));
        }
        feed(&mut s, ms(1), &config, &input);
        let backlog = config.limits.max_pong_backlog;
        assert!(
            s.buffered_amount() <= backlog + 127,
            "{}",
            s.buffered_amount()
        );
        assert!(s.buffered_amount() > backlog);
    }

    #[test]
    fn sends_are_capped_and_drain_is_reported_once() {
        let config = Config::default().max_write_buffer(100);
        let mut s = opened(ms(0), &config);
        let big = [0u8; 80];
        assert_eq!(
            s.send(ms(1), &config, Message::Binary(&big)),
            SendStatus::Queued
        );
        assert_eq!(
            s.send(ms(1), &config, Message::Binary(&big)),
            SendStatus::Dropped
        );
        // The default policy closes with 1008.
        assert!(!s.is_open());
        let got = frames(&written(&mut s));
        assert_eq!(got[1], close_frame(1008, "write buffer full"));

        let config = config.backpressure(Backpressure::Drop);
        let mut s = opened(ms(0), &config);
        assert_eq!(
            s.send(ms(1), &config, Message::Binary(&big)),
            SendStatus::Queued
        );
        assert_eq!(
            s.send(ms(1), &config, Message::Binary(&big)),
            SendStatus::Dropped
        );
        assert!(s.is_open() && !s.poll_drain());
        written(&mut s);
        assert!(s.poll_drain());
        assert!(!s.poll_drain());
        assert_eq!(s.ping(&[0; 126]), Err(PingTooLong { len: 126 }));
        assert_eq!(s.ping(&[0; 125]), Ok(SendStatus::Queued));
    }

    #[test]
    fn stamps_survive_the_32_bit_wrap() {
        let config = Config::default();
        let start = ms((1 << 32) - 5_000);
        let s = opened(start, &config);
        assert_eq!(
            s.poll_timeout(start + secs(10), &config),
            Some(start + secs(20))
        );
    }

    #[cfg(feature = "deflate")]
    mod deflate {
        use super::*;
        use crate::deflate::{self, DeflateConfig};
        use flate2::{Compress, Compression, Decompress};

        const OFFER: &str =
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

        fn upgrade_with(extensions: &str) -> Vec<u8> {
            let head = std::str::from_utf8(UPGRADE).unwrap();
            head.replace("\r\n\r\n", &format!("\r\n{extensions}"))
                .into_bytes()
        }

        fn lean() -> Config {
            Config::default().deflate(Some(DeflateConfig::default().min_size(64)))
        }

        /// A masked client frame with RSV1, holding `text` compressed.
        fn compressed_frame(text: &[u8]) -> Vec<u8> {
            let mut payload = Vec::new();
            deflate::compress(
                &mut Compress::new(Compression::new(6), false),
                text,
                &mut payload,
            );
            let mut frame = masked(OpCode::Text, &payload);
            frame[0] |= 0x40;
            frame
        }

        fn open_with(config: &Config, extensions: &str) -> (Session<u32>, String) {
            let mut s = Session::new(ms(0), peer());
            assert_eq!(
                feed(&mut s, ms(0), config, &upgrade_with(extensions)),
                ["open"]
            );
            let response = String::from_utf8(written(&mut s)).unwrap();
            (s, response)
        }

        #[test]
        fn the_agreement_is_answered_and_messages_flow_both_ways() {
            let config = lean();
            let (mut s, response) = open_with(&config, OFFER);
            assert!(response.contains(
                "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
            ));
            let text =
                "hello hello hello hello hello hello hello hello hello hello hello".repeat(3);
            // In: two compressed messages, each a stream of its own, then a plain one.
            let mut input = compressed_frame(text.as_bytes());
            input.extend(compressed_frame(b"short"));
            input.extend(masked(OpCode::Text, b"plain"));
            assert_eq!(
                feed(&mut s, ms(1), &config, &input),
                [
                    format!("Text({text:?})"),
                    "Text(\"short\")".into(),
                    "Text(\"plain\")".into()
                ]
            );
            // Out: long messages compressed (RSV1), short ones plain.
            assert_eq!(
                s.send(ms(1), &config, Message::Text(&text)),
                SendStatus::Queued
            );
            assert_eq!(
                s.send(ms(1), &config, Message::Text("hi")),
                SendStatus::Queued
            );
            assert_eq!(
                s.send_uncompressed(ms(1), &config, Message::Text(&text)),
                SendStatus::Queued
            );
            let out = written(&mut s);
            assert_eq!(out[0], 0xC1, "FIN, RSV1, text");
            let n = 2 + usize::from(out[1] & 0x7f);
            assert!(n - 2 < text.len() / 4, "compressed to {}", n - 2);
            let mut back = Vec::new();
            let mut inflater = Decompress::new(false);
            deflate::inflate(&mut inflater, &out[2..n], 1 << 20, &mut back).unwrap();
            assert_eq!(back, text.as_bytes());
            let rest = frames(&out[n..]);
            assert_eq!(
                rest,
                [
                    (OpCode::Text, b"hi".to_vec()),
                    (OpCode::Text, text.clone().into_bytes())
                ]
            );
            assert_eq!(out[n] & 0x40, 0, "plain frames have no RSV1");
        }

        #[test]
        fn a_compressed_message_in_fragments_is_read_across_every_split() {
            let config = lean();
            let text = "fragments of one compressed message, split anywhere at all; ".repeat(6);
            let mut compressed = Vec::new();
            deflate::compress(
                &mut Compress::new(Compression::new(6), false),
                text.as_bytes(),
                &mut compressed,
            );
            // Three frames: RSV1 on the first only.
            let thirds = [&compressed[..10], &compressed[10..30], &compressed[30..]];
            let mut input = Vec::new();
            for (i, part) in thirds.iter().enumerate() {
                let op = if i == 0 {
                    OpCode::Text
                } else {
                    OpCode::Continuation
                };
                let mut frame = Vec::new();
                encode_frame(&mut frame, i == 2, op, Some([9, 8, 7, 6]), part);
                if i == 0 {
                    frame[0] |= 0x40;
                }
                input.extend(frame);
            }
            let want = [format!("Text({text:?})")];
            for cut in 0..=input.len() {
                let (mut s, _) = open_with(&config, OFFER);
                let mut got = feed(&mut s, ms(1), &config, &input[..cut]);
                got.extend(feed(&mut s, ms(1), &config, &input[cut..]));
                assert_eq!(got, want, "cut at {cut}");
            }
        }

        #[test]
        fn without_an_agreement_rsv1_is_a_protocol_error() {
            // Deflate on, but the client offered nothing.
            let (mut s, response) = open_with(&lean(), "\r\n");
            assert!(!response.contains("Sec-WebSocket-Extensions"));
            let got = feed(&mut s, ms(1), &lean(), &compressed_frame(b"hi"));
            assert_eq!(
                got,
                ["error: protocol error: reserved bits set with no extension negotiated"]
            );
            assert_eq!(
                frames(&written(&mut s)),
                [close_frame(
                    1002,
                    "reserved bits set with no extension negotiated"
                )]
            );
            // Deflate off: the offer is declined.
            let (_, response) = open_with(&Config::default(), OFFER);
            assert!(!response.contains("Sec-WebSocket-Extensions"));
        }

        #[test]
        fn bombs_close_with_1009_and_garbage_with_1007() {
            let config = lean().limits(crate::Limits::default().max_message_size(4096));
            let (mut s, _) = open_with(&config, OFFER);
            let mut bomb = Vec::new();
            deflate::compress(
                &mut Compress::new(Compression::best(), false),
                &[b'a'; 100_000],
                &mut bomb,
            );
            let mut frame = masked(OpCode::Binary, &bomb);
            frame[0] |= 0x40;
            assert!(frame.len() < 4096);
            let got = feed(&mut s, ms(1), &config, &frame);
            assert_eq!(got, ["error: protocol error: compressed message inflates to over the 4096-byte limit"]);
            assert_eq!(frames(&written(&mut s))[0].1[..2], 1009u16.to_be_bytes());

            let (mut s, _) = open_with(&config, OFFER);
            let mut frame = masked(OpCode::Binary, &[0xff, 0xff, 0xff]);
            frame[0] |= 0x40;
            let got = feed(&mut s, ms(1), &config, &frame);
            assert_eq!(
                got,
                ["error: protocol error: compressed message is not valid DEFLATE data"]
            );
            assert_eq!(frames(&written(&mut s))[0].1[..2], 1007u16.to_be_bytes());

            // Valid DEFLATE, invalid UTF-8 once inflated.
            let (mut s, _) = open_with(&config, OFFER);
            let got = feed(
                &mut s,
                ms(1),
                &config,
                &compressed_frame(b"\xff\xfe not text"),
            );
            assert_eq!(got, ["error: protocol error: text is not valid UTF-8"]);
        }

        #[test]
        fn context_takeover_keeps_each_direction_s_window() {
            let config = Config::default().deflate(Some(
                DeflateConfig::default()
                    .min_size(64)
                    .server_context_takeover(true)
                    .client_context_takeover(true),
            ));
            let (mut s, response) = open_with(&config, OFFER);
            assert!(response.contains(
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\n"
            ));
            // The client's second message refers back into its first.
            let mut client = Compress::new(Compression::new(6), false);
            let line = b"the quick brown fox jumps over the lazy dog, again and again and again";
            let mut input = Vec::new();
            for _ in 0..2 {
                let mut payload = Vec::new();
                deflate::compress(&mut client, line, &mut payload);
                let mut frame = masked(OpCode::Text, &payload);
                frame[0] |= 0x40;
                input.extend(frame);
            }
            let want = format!("Text({:?})", std::str::from_utf8(line).unwrap());
            assert_eq!(feed(&mut s, ms(1), &config, &input), [want.clone(), want]);
            // Our second copy is smaller: it refers back into the first.
            for _ in 0..2 {
                assert_eq!(
                    s.send(ms(1), &config, Message::Binary(line)),
                    SendStatus::Queued
                );
            }
            let out = written(&mut s);
            let first = 2 + usize::from(out[1] & 0x7f);
            let second = &out[first..];
            assert!(second.len() < first / 2, "{} then {}", first, second.len());
            let mut inflater = Decompress::new(false);
            for payload in [&out[2..first], &second[2..]] {
                let mut back = Vec::new();
                deflate::inflate(&mut inflater, payload, 1 << 20, &mut back).unwrap();
                assert_eq!(back, line);
            }
        }

        #[test]
        fn a_broadcast_is_compressed_once_for_every_lean_subscriber() {
            let config = lean();
            let text = "everyone: the meeting moved to room 4, see you there at noon".repeat(4);
            let mut shared = SharedFrame::encode(Message::Text(&text));
            let (mut a, _) = open_with(&config, OFFER);
            let (mut b, _) = open_with(&config, OFFER);
            let (mut plain, _) = open_with(&config, "\r\n");
            for s in [&mut a, &mut b, &mut plain] {
                assert_eq!(
                    s.send_shared(ms(1), &config, &mut shared),
                    SendStatus::Queued
                );
            }
            // One compressed frame was made, and both queues hold it.
            let made = shared
                .deflated(15, config.deflate.as_ref().unwrap())
                .unwrap();
            assert_eq!(std::sync::Arc::strong_count(&made), 4);
            let (a, b, plain) = (written(&mut a), written(&mut b), written(&mut plain));
            assert_eq!(a, b);
            assert_eq!(a[0], 0xC1);
            assert!(a.len() < text.len() / 3);
            assert_eq!(frames(&plain), [(OpCode::Text, text.into_bytes())]);
        }
    }
}
