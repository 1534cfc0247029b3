//! An upgraded connection: frames in, messages and automatic answers
//! (pongs, the close echo) out, sends under the write cap, and the close
//! handshake with the record that `on_close` reports.

use super::deadlines::Keepalive;
use super::extensions::Agreed;
#[cfg(feature = "deflate")]
use super::extensions::{compressor, push_deflated};
use super::{Delivery, Fin, ReadError, SendStatus, Session, State, Step};
use crate::config::{Backpressure, Config};
use crate::error::{CloseCode, PingTooLong, ProtocolError};
use crate::frame::OpCode;
use crate::protocol::{close_payload, Event, Message, SharedFrame, MAX_CONTROL_PAYLOAD};
use crate::rate::Rate;
use crate::time::{Stamp, Time};

/// What an open connection keeps.
#[derive(Debug)]
pub(super) struct Open<D> {
    pub(super) data: D,
    pub(super) keepalive: Keepalive,
    /// The last data message from the peer, for the idle rule.
    pub(super) last_message: Stamp,
    /// The socket refused output, or a send was dropped: tell the
    /// application when the queue is empty.
    pub(super) drain_wanted: bool,
    /// Against [`Config::rate_limit`], when one is set (boxed: eight bytes
    /// in every open connection rather than twelve, none on the heap
    /// without a limit).
    rate: Option<Box<Rate>>,
    /// permessage-deflate, when negotiated.
    #[cfg(feature = "deflate")]
    pub(super) deflate: Option<Box<crate::deflate::Context>>,
}

impl<D> Open<D> {
    /// A connection upgraded at `now`: quiet so far, nothing owed, and
    /// the extensions `agreed` in force.
    pub(super) fn new(now: Time, config: &Config, data: D, _agreed: Agreed) -> Self {
        Open {
            data,
            keepalive: Keepalive::Quiet {
                last_input: now.stamp(),
            },
            last_message: now.stamp(),
            drain_wanted: false,
            rate: config.rate_limit.map(|_| Box::new(Rate::new(now))),
            #[cfg(feature = "deflate")]
            deflate: _agreed
                .deflate
                .map(|a| Box::new(crate::deflate::Context::new(a))),
        }
    }
}

/// The code and reason `on_close` reports.
#[derive(Debug)]
pub(super) struct CloseRecord {
    pub(super) code: CloseCode,
    pub(super) reason: Box<str>,
}

/// What a closing or closed connection keeps. The record's fields are
/// kept flat, so that they share one word with `since` and `fin`.
#[derive(Debug)]
pub(super) struct Ending<D> {
    pub(super) data: D,
    pub(super) since: Stamp,
    pub(super) code: CloseCode,
    /// In `Failed`: whether our FIN has gone out.
    pub(super) fin: Fin,
    pub(super) reason: Box<str>,
}

impl<D> Ending<D> {
    pub(super) fn new(data: D, now: Time, record: CloseRecord) -> Self {
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

impl<D> Session<D> {
    pub(super) fn read_frames<'a>(
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
                // After our close frame, what the peer sent before it saw
                // ours is still the application's: RFC 6455 §5.5.1 forbids
                // sending data after a close, not receiving it. A line said
                // as a server drains is so not lost. After the peer's own
                // close nothing may follow, and nothing is delivered.
                State::Closing(_) => Some(Delivery::Message(incoming)),
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

    /// The peer's close frame: echo it if we had not closed ([§5.5.1]), and
    /// keep the first close's code and reason.
    ///
    /// [§5.5.1]: https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1
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

    /// The peer broke the protocol: close with the error's code ([§7.4.1]),
    /// unless our close frame is out already, and read no more.
    ///
    /// [§7.4.1]: https://www.rfc-editor.org/rfc/rfc6455#section-7.4.1
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
        if self.is_stream() {
            return self.end_stream(now, code, reason);
        }
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
        if self.is_stream() {
            return self.stream_message(now, config, msg);
        }
        let payload = msg.as_bytes();
        if let Err(refused) = self.admit(now, config, payload.len()) {
            return refused;
        }
        if !(compress && self.push_compressed(config, msg.opcode(), payload)) {
            self.out.push(msg.opcode(), payload);
        }
        SendStatus::Queued
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
        if self.is_stream() {
            return self.stream_shared(now, config, frame);
        }
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
        // An event stream has no pings: a heartbeat comment stands in.
        if self.is_stream() {
            self.out.push_raw(crate::protocol::events::HEARTBEAT);
            return Ok(SendStatus::Queued);
        }
        self.out.push(OpCode::Ping, payload);
        Ok(SendStatus::Queued)
    }

    /// Refuses a send on a connection that is not open, or one over the
    /// write cap, where the backpressure policy applies.
    pub(super) fn admit(
        &mut self,
        now: Time,
        config: &Config,
        len: usize,
    ) -> Result<(), SendStatus> {
        let queued = self.out.len();
        let Some(drain_wanted) = self.drain_wanted() else {
            return Err(SendStatus::Closed);
        };
        // The cap bounds what is queued ahead of a message, so one message
        // larger than the cap can still go out on an idle connection.
        if queued > 0 && queued + len > config.max_write_buffer {
            *drain_wanted = true;
            if config.backpressure == Backpressure::Close {
                self.close(now, CloseCode::POLICY_VIOLATION, "write buffer full");
            }
            return Err(SendStatus::Dropped);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::test_util::{close_frame, feed, frames, masked, ms, opened, written};

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
    fn a_message_the_peer_sent_before_seeing_our_close_is_delivered() {
        let config = Config::default();
        let mut s = opened(ms(0), &config);
        s.close(ms(1), CloseCode::SERVICE_RESTART, "restarting");
        assert_eq!(frames(&written(&mut s)), [close_frame(1012, "restarting")]);
        let mut input = masked(OpCode::Text, b"said in time");
        input.extend(masked(OpCode::Close, &[0x03, 0xe8]));
        input.extend(masked(OpCode::Text, b"after its close"));
        assert_eq!(
            feed(&mut s, ms(2), &config, &input),
            ["Text(\"said in time\")"]
        );
        assert!(s.is_ended());
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
}
