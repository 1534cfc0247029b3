//! One connection's whole life, pure: the request head, an HTTP answer or
//! the upgrade, messages, the close handshake, the end; the five deadlines;
//! and the close record that `on_close` reports.
//!
//! Nothing here reads a clock or touches a socket. Input goes in through
//! `handle_*` calls: [`Session::handle_read`] for bytes read,
//! [`Session::handle_timeout`], [`Session::handle_eof`],
//! [`Session::handle_io_error`] and [`Session::handle_write_blocked`]; the
//! application's commands are [`Session::send`], [`Session::ping`] and
//! [`Session::close`]. Output is pulled through `poll_*` calls:
//! [`Session::poll_transmit`] for bytes to write, [`Session::poll_timeout`]
//! for the next deadline, [`Session::poll_shutdown`] for when to send FIN
//! and [`Session::poll_drain`] for when queued output has gone.
//!
//! # Driving a session
//!
//! Whoever owns the socket (wsloop's reactor, or a loop of your own) is the
//! driver. It moves bytes, socket events and the time in, and carries out
//! what the session asks for:
//!
//! ```text
//!  the driver          the Session                      the application
//!  ──────────────────────────────────────────────────────────────────────
//!  bytes read ───────► handle_read(now, ..) ──► Step ──► Opened, Message, Held
//!  read returned 0 ──► handle_eof
//!  read failed ──────► handle_io_error
//!  a timer fired ────► handle_timeout(now)
//!  write fell short ─► handle_write_blocked
//!                      send, ping, close ◄───────────── commands
//!  write these ◄────── poll_transmit, then transmitted(n)
//!  send FIN ◄───────── poll_shutdown
//!  arm a timer ◄────── poll_timeout(now)
//!  call on_drain ◄──── poll_drain
//!  drop the socket ◄── is_ended, then close_record for on_close
//! ```
//!
//! The call order, after each thing that happens to the socket:
//!
//! 1. **Read.** Hand what the socket gave to [`Session::handle_read`] until
//!    all of it is used. Each call consumes [`Step::consumed`] bytes and
//!    returns at most one [`Delivery`], which may borrow the input: act on
//!    it before the next call. When a request head completes, the `answer`
//!    closure decides what becomes of it ([`Answer`]). A read that returns
//!    0 is the peer's FIN ([`Session::handle_eof`]); a failed read is
//!    [`Session::handle_io_error`]. An `Err` from `handle_read` has been
//!    answered already (an HTTP error or a close frame is queued); it is
//!    for counting, and the rest of the input may be dropped.
//! 2. **Write.** While [`Session::wants_write`], write the pieces
//!    [`Session::poll_transmit`] yields, in order (one vectored write
//!    takes them all), then report how many bytes the socket took with
//!    [`Session::transmitted`]. If it takes no more, call
//!    [`Session::handle_write_blocked`] and write again when the socket is
//!    writable.
//! 3. **FIN.** When [`Session::poll_shutdown`] says so (once, after an HTTP
//!    answer that closes, or a close frame that failed the connection),
//!    shut the socket's write side and keep reading until the peer's FIN.
//! 4. **Time.** Arm a timer at [`Session::poll_timeout`]; when it fires,
//!    call [`Session::handle_timeout`] and go back to step 2, since a
//!    deadline may queue a ping or a close frame. Ask again after every
//!    step: each may move the deadline.
//! 5. **End.** Once [`Session::is_ended`], close the socket. For an
//!    upgraded connection, [`Session::close_record`] is the code and reason
//!    to report.
//!
//! Commands may come at any point and only queue; what they queue goes out
//! at the next step 2. A driver that runs step 2 once for all the input of
//! one read writes every reply to it together ("corking"): wsloop's reactor
//! does so per readiness event, and sixteen pipelined replies cost one
//! `sendmsg`.
//!
//! `examples/thread_per_connection.rs` is the smallest complete driver: its
//! `serve` runs a session over a blocking `std::net::TcpStream` in about 45
//! lines: steps 1, 2, 3 and 5 in that order, and no step 4, since that
//! baseline keeps no deadlines. Read it before `conn.rs` and `worker.rs`,
//! which make the same calls around readiness events.
//!
//! # States
//!
//! <!-- session-states:begin -->
//! A connection lives in two phases. Before the upgrade it speaks HTTP/1.1
//! (`src/session/http.rs`):
//!
//! ```text
//!                       (a)
//!                     ┌─────┐
//!                     │     ▼
//!  accept ───────► ReadingRequest ────────── (b) ──────────► Held
//!                  │  │     │  ▲                               │
//!                  │  │     │  └──────────── (c) ──────────────┤
//!                  │(e)  (d)│                                  │
//!                  │  ▼     ▼                                  │
//!                  │ Open  Answering ◄────── (f) ──────────────┘
//!                  │ (the   │
//!                  │ Web-(g)│
//!               (s)│ Socket ▼
//!                  │ phase) Ended   no on_close: the connection never opened
//!                  ▼
//!              Streaming ──► Failed or Ended, below; on_close follows
//! ```
//!
//! - (a) `on_http` answered and the connection stays open for the next
//!   request: HTTP/1.1 without `Connection: close`
//!   ([RFC 9112 §9.3](https://www.rfc-editor.org/rfc/rfc9112#section-9.3)),
//!   and a client that reads its answers. The handshake clock restarts.
//! - (b) `on_http` returned `Reply::Hold`: the answer waits for a message on
//!   a topic, the hold's timeout, or shutdown.
//! - (c) `on_wake` wrote the held answer, and the request allowed keep-alive.
//! - (d) a closing answer: `on_http`'s to a request that may not be kept
//!   alive, `on_upgrade`'s `Upgrade::reject`, or the parser's refusal of a
//!   head. A server that finds a handshake invalid "MUST stop processing the
//!   client's handshake and return an HTTP response with an appropriate error
//!   code" ([RFC 6455 §4.2.1](https://www.rfc-editor.org/rfc/rfc6455#section-4.2.1)).
//! - (e) `on_upgrade` accepted: the 101 with `Sec-WebSocket-Accept`
//!   ([RFC 6455 §4.2.2](https://www.rfc-editor.org/rfc/rfc6455#section-4.2.2))
//!   is queued, and `on_open` runs before it is written.
//! - (f) `on_wake` wrote the held answer with `Connection: close`: the request
//!   asked for it, or the server is shutting down.
//! - (g) the answer is out, then our FIN; the peer's FIN ends it, and input
//!   that comes meanwhile is read and thrown away. Closing with unread input
//!   would make the kernel send a reset, which can destroy the answer before
//!   the client reads it; [RFC 9112 §9.6](https://www.rfc-editor.org/rfc/rfc9112#section-9.6)
//!   describes this close in stages.
//! - (s) `on_http` returned `Reply::Stream`: the head goes out and the
//!   connection is `Streaming` (`src/session/stream.rs`), an HTTP answer
//!   written to as messages come, as Server-Sent Events; `on_open`
//!   follows as for an upgrade. It leaves for `Failed` below when this
//!   side ends it (`Conn::close`, a drain, shutdown, the write cap): its
//!   last events, then FIN, then the peer's FIN. Any input, the peer's
//!   FIN or a socket error ends it at once. `on_close` follows either way.
//!
//! After the upgrade it speaks RFC 6455 (`src/session/open.rs`):
//!
//! ```text
//!         (e) from ReadingRequest
//!                   │
//!                   ▼
//!     on_message   Open ─────────────── (h) ──────────────► Closing
//!     on_drain      │ │                                      │  │
//!                   │ └──────── (i) ────────► Closed ◄── (j) ┘  │
//!                (k)│                           │               │
//!                   ▼                        (m)│               │
//!                 Failed ◄───────────────── (k) ┼───────────────┘
//!                   │                           │
//!                (n)│                           ▼
//!                   └────────────────────────► Ended ──► on_close, once
//! ```
//!
//! - (h) we sent a close frame: `Conn::close`, the idle timeout (1001), the
//!   backpressure policy (1008) or shutdown (1001). Sends now return
//!   `SendStatus::Closed`, since "after sending a Close frame, the application
//!   MUST NOT send any more data frames"
//!   ([RFC 6455 §5.5.1](https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1)),
//!   and messages that still arrive are read and dropped.
//! - (i) the peer's close frame came first, and we echo its code (1000 for
//!   one without a code): an endpoint that receives a close frame without
//!   having sent one "MUST send a Close frame in response"
//!   ([RFC 6455 §5.5.1](https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1)).
//! - (j) the peer answered our close frame.
//! - (k) the peer broke the protocol or a limit, in `Open` or in `Closing`:
//!   the connection is failed
//!   ([RFC 6455 §7.1.7](https://www.rfc-editor.org/rfc/rfc6455#section-7.1.7))
//!   with the code [RFC 6455 §7.4.1](https://www.rfc-editor.org/rfc/rfc6455#section-7.4.1)
//!   gives the violation (1002, 1007, 1009; 1008 for the rate limit), unless
//!   our close frame is out already. Input after the error is thrown away.
//! - (m) our last bytes are written and the socket is closed at once: once
//!   both close frames are exchanged, "the server MUST close the underlying
//!   TCP connection immediately"
//!   ([RFC 6455 §5.5.1](https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1)).
//!   The peer sends nothing after its close frame, so no reset can follow.
//! - (n) our close frame is out, then our FIN; the peer's FIN ends it. The
//!   peer may still be sending the rest of a broken frame, and closing on
//!   unread input would reset the connection under our close frame; this is
//!   the shutdown-then-read close that
//!   [RFC 6455 §7.1.1](https://www.rfc-editor.org/rfc/rfc6455#section-7.1.1)
//!   gives as its example.
//!
//! Outside the arrows, any state ends on the peer's FIN (once an answer or
//! a close frame still going out is written), on a socket error, or at a
//! deadline: the handshake timeout in `ReadingRequest` and `Answering`, the
//! pong timeout in `Open` (1006, reason `no pong`), the close timeout in
//! `Closing`, `Closed` and `Failed`. Input while `Held` ends it too. Ended
//! this way, `Open` reports 1006; the later states keep the record of the
//! first close frame.
//! <!-- session-states:end -->

// One file per question a reader has. This one holds the states, the
// `handle_*` and `poll_*` surface that routes input to the parts, and the end.
mod deadlines; // the five deadlines: handle_timeout, poll_timeout
mod extensions; // permessage-deflate: agreed, inflating, compressing
mod http; // the request head, its body, and the answer to it
mod open; // an upgraded connection: frames, sends, the close handshake
mod stream; // an event stream: a response written to as messages come
#[cfg(test)]
mod test_util; // what the parts' tests share

use std::net::SocketAddr;

use crate::config::Config;
use crate::error::{CloseCode, HandshakeError, ProtocolError};
use crate::frame::Role;
use crate::handshake::Request;
use crate::protocol::{Incoming, MessageReader, Outbox};
use crate::time::Stamp;
use http::{Reading, Waiting};
use open::{CloseRecord, Ending, Open};
use stream::Streaming;

pub use crate::time::{Time, MAX_TIMEOUT};
pub use http::Answer;

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
    /// A plain request is answered with an event stream, as
    /// [`Answer::Stream`] asked: its head is queued, and sends now write
    /// events.
    Streaming,
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

/// What became of a send. Most callers may ignore it, and it is not
/// `#[must_use]`: a send that is `Dropped` under the default
/// [`Backpressure::Close`](crate::Backpressure::Close) closes the
/// connection, and one that finds it `Closed` had no one to reach. Look at
/// it under [`Backpressure::Drop`](crate::Backpressure::Drop), where a
/// dropped message is the only sign that the peer is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendStatus {
    /// Queued; it is written when the current event is done, with
    /// everything else queued in it.
    Queued,
    /// Not sent: output is queued and this message would take it over
    /// [`Config::max_write_buffer`]. Under
    /// [`Backpressure::Close`](crate::Backpressure::Close) the connection
    /// is now closing with 1008.
    Dropped,
    /// Not sent: the connection is closing or closed.
    Closed,
    /// Not sent: an event stream ([`Answer::Stream`]) carries text only,
    /// and this was a binary message.
    NotText,
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
    /// A plain request answered with an event stream: messages flow out
    /// as events.
    Streaming(Streaming<D>),
    /// We sent a close frame and wait for the peer's.
    Closing(Ending<D>),
    /// Both close frames are exchanged: our last bytes go out, then the
    /// TCP connection is dropped, the server closing first ([§7.1.1]). The
    /// peer sends nothing after its close frame, so no reset can follow.
    ///
    /// [§7.1.1]: https://www.rfc-editor.org/rfc/rfc6455#section-7.1.1
    Closed(Ending<D>),
    /// The peer broke the protocol: our close frame goes out, then FIN,
    /// then we wait for the peer's FIN, so that input it is still sending
    /// cannot turn our close frame into a reset. An event stream that we
    /// end takes the same way out, with no close frame.
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
            // Nor on an event stream, where the request was the client's
            // last word.
            State::Streaming(_) => {
                self.end(CloseCode::POLICY_VIOLATION, "input on an event stream");
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
            State::Open(Open { data, .. }) | State::Streaming(Streaming { data, .. }) => {
                let record = CloseRecord {
                    code,
                    reason: reason.into(),
                };
                State::Ended(Some(Ending::new(data, Time::from_millis(0), record)))
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

    /// The socket took only part of the output: the application hears of
    /// it through [`Session::poll_drain`] once the rest is written.
    pub fn handle_write_blocked(&mut self) {
        if let Some(wanted) = self.drain_wanted() {
            *wanted = true;
        }
    }

    /// Whether the application waits to hear that the queue emptied, for
    /// a connection that can still send.
    fn drain_wanted(&mut self) -> Option<&mut bool> {
        match &mut self.state {
            State::Open(open) => Some(&mut open.drain_wanted),
            State::Streaming(stream) => Some(&mut stream.drain_wanted),
            _ => None,
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
        let empty = self.out.is_empty();
        match self.drain_wanted() {
            Some(wanted) if *wanted && empty => {
                *wanted = false;
                true
            }
            _ => false,
        }
    }

    /// Whether the TCP connection is to be dropped now.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended(_))
    }

    /// Whether our close frame is queued or sent: what the peer still
    /// sends is read for its messages sent before it saw ours, and for its
    /// close frame.
    pub fn sent_close(&self) -> bool {
        matches!(
            self.state,
            State::Closing(_) | State::Failed(_) | State::Closed(_)
        )
    }

    /// Whether messages can be sent: an open WebSocket, or an event
    /// stream.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_) | State::Streaming(_))
    }

    /// Whether the upgrade happened, or an event stream began, so that the
    /// application has data here.
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

    /// The application's data, once the upgrade is accepted or the event
    /// stream begun.
    pub fn data(&self) -> Option<&D> {
        match &self.state {
            State::Open(Open { data, .. }) | State::Streaming(Streaming { data, .. }) => Some(data),
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
            State::Open(Open { data, .. }) | State::Streaming(Streaming { data, .. }) => Some(data),
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
