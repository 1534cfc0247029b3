//! An event stream: the answer to a plain request that stays open and is
//! written to as messages come ([`Answer::Stream`]), in the Server-Sent
//! Events format.
//!
//! The head goes out without a length and with `Connection: close`, so
//! the body runs until the connection ends ([RFC 9112 §6.3]). Each
//! message sent becomes one event (`crate::protocol::events`); a
//! heartbeat comment goes out after [`Config::stream_heartbeat`] of
//! silence. The client sends nothing more: any input ends the stream. A
//! stream the server ends (a close, a shutdown, the write cap) sends its
//! last events, then FIN, and waits for the client's FIN as a failed
//! WebSocket does, under the close timeout.
//!
//! [RFC 9112 §6.3]: https://www.rfc-editor.org/rfc/rfc9112#section-6.3

use std::sync::Arc;

use super::open::{CloseRecord, Ending};
use super::{Answer, SendStatus, Session, State};
use crate::config::Config;
use crate::error::CloseCode;
use crate::protocol::events::{encode_event, HEARTBEAT};
use crate::protocol::{Message, SharedFrame};
use crate::time::{Stamp, Time};

/// What an event stream keeps: as little as an open WebSocket.
#[derive(Debug)]
pub(super) struct Streaming<D> {
    pub(super) data: D,
    /// When output was last queued; the heartbeat follows that much
    /// silence.
    pub(super) last_write: Stamp,
    /// The socket refused output, or a send was dropped: tell the
    /// application when the queue is empty.
    pub(super) drain_wanted: bool,
}

/// An event's bytes: made for this stream, or shared by all of a
/// topic's streams on the worker.
enum Event {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl<D> Session<D> {
    /// Starts the stream: `head` is queued, its body first.
    pub(super) fn start_stream(&mut self, now: Time, data: D, head: Vec<u8>) {
        self.out.push_owned(head);
        self.state = State::Streaming(Streaming {
            data,
            last_write: now.stamp(),
            drain_wanted: false,
        });
    }

    /// Whether this connection is an event stream, still streaming.
    pub fn is_stream(&self) -> bool {
        matches!(self.state, State::Streaming(_))
    }

    /// A message sent on the stream: text becomes an event with no id.
    pub(super) fn stream_message(
        &mut self,
        now: Time,
        config: &Config,
        msg: Message<'_>,
    ) -> SendStatus {
        let Message::Text(text) = msg else {
            return SendStatus::NotText;
        };
        let mut event = Vec::with_capacity(text.len() + 8);
        encode_event(&mut event, None, text);
        self.push_event(now, config, Event::Owned(event))
    }

    /// A broadcast on the stream: the event made once for every stream.
    pub(super) fn stream_shared(
        &mut self,
        now: Time,
        config: &Config,
        frame: &mut SharedFrame,
    ) -> SendStatus {
        match frame.event() {
            Some(event) => self.push_event(now, config, Event::Shared(event)),
            None => SendStatus::NotText,
        }
    }

    /// Queues an event under the write cap.
    fn push_event(&mut self, now: Time, config: &Config, event: Event) -> SendStatus {
        let len = match &event {
            Event::Owned(bytes) => bytes.len(),
            Event::Shared(bytes) => bytes.len(),
        };
        if let Err(refused) = self.admit(now, config, len) {
            return refused;
        }
        if let State::Streaming(stream) = &mut self.state {
            stream.last_write = now.stamp();
        }
        match event {
            Event::Owned(bytes) => self.out.push_owned(bytes),
            Event::Shared(bytes) => self.out.push_shared(bytes),
        }
        SendStatus::Queued
    }

    /// Ends the stream from this side: what is queued goes out, then FIN.
    pub(super) fn end_stream(&mut self, now: Time, code: CloseCode, reason: &str) {
        let State::Streaming(stream) = std::mem::replace(&mut self.state, State::Ended(None))
        else {
            return;
        };
        let record = CloseRecord {
            code,
            reason: reason.into(),
        };
        self.state = State::Failed(Ending::new(stream.data, now, record));
    }

    /// The heartbeat, when the stream has been silent for its interval.
    pub(super) fn stream_timeout(&mut self, now: Time, config: &Config) {
        let (State::Streaming(stream), Some(every)) = (&mut self.state, config.stream_heartbeat)
        else {
            return;
        };
        if now.reached(stream.last_write, every) {
            // Written down before the push, which the cap may refuse: the
            // next beat is an interval away either way.
            stream.last_write = now.stamp();
            self.push_event(now, config, Event::Owned(HEARTBEAT.to_vec()));
        }
    }

    /// When the next heartbeat is due.
    pub(super) fn stream_deadline(&self, now: Time, config: &Config) -> Option<Time> {
        match (&self.state, config.stream_heartbeat) {
            (State::Streaming(stream), Some(every)) => Some(now.after(stream.last_write, every)),
            _ => None,
        }
    }
}

impl<D> Answer<D> {
    /// Answers with an event stream carrying `data`: `200`,
    /// `text/event-stream`, not cached, not buffered by proxies (nginx
    /// reads `X-Accel-Buffering`), and, if `retry_ms` is given, a first
    /// `retry` field telling readers how long to wait before they
    /// reconnect.
    pub fn event_stream(data: D, retry_ms: Option<u64>) -> Self {
        let mut first = Vec::new();
        if let Some(ms) = retry_ms {
            crate::protocol::events::encode_retry(&mut first, ms);
        }
        let response = crate::handshake::Response::ok("text/event-stream", first)
            .with_header("Cache-Control", "no-store")
            .with_header("X-Accel-Buffering", "no");
        Answer::Stream { data, response }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backpressure;
    use crate::history::MessageId;
    use crate::session::test_util::{feed, ms, peer, secs, written};

    const REQUEST: &[u8] = b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n";

    fn streaming(config: &Config) -> Session<u32> {
        let mut s = Session::new(ms(0), peer());
        assert_eq!(feed(&mut s, ms(0), config, REQUEST), ["streaming"]);
        s
    }

    fn text(s: &mut Session<u32>) -> String {
        String::from_utf8(written(s)).expect("an event stream is text")
    }

    #[test]
    fn the_head_has_no_length_and_the_body_starts_with_retry() {
        let config = Config::default();
        let mut s = streaming(&config);
        assert_eq!(
            text(&mut s),
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
             Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n\
             Connection: close\r\n\r\nretry: 1000\n\n"
        );
        assert!(s.is_stream() && s.is_open() && s.data() == Some(&5));
    }

    #[test]
    fn sends_are_events_with_the_message_id_when_there_is_one() {
        let config = Config::default();
        let mut s = streaming(&config);
        written(&mut s);
        s.send(ms(1), &config, Message::Text("hello\nworld"));
        let id = MessageId {
            epoch: 0x5f3a,
            seq: 7,
        };
        let mut frame = SharedFrame::encode(Message::Text("{}")).with_id(Some(id));
        assert_eq!(
            s.send_shared(ms(1), &config, &mut frame),
            SendStatus::Queued
        );
        assert_eq!(
            text(&mut s),
            format!("data: hello\ndata: world\n\nid: {id}\ndata: {{}}\n\n")
        );
        // A second stream shares the event made for the first.
        let made = frame.event().expect("text makes an event");
        assert!(Arc::ptr_eq(&made, &frame.event().expect("made once")));
        let mut binary = SharedFrame::encode(Message::Binary(b"\x00"));
        assert_eq!(
            s.send_shared(ms(1), &config, &mut binary),
            SendStatus::NotText
        );
        assert_eq!(
            s.send(ms(1), &config, Message::Binary(b"x")),
            SendStatus::NotText
        );
        assert!(!s.wants_write());
    }

    #[test]
    fn a_silent_stream_gets_a_heartbeat_and_each_write_moves_it() {
        let config = Config::default().stream_heartbeat(Some(secs(15)));
        let mut s = streaming(&config);
        written(&mut s);
        assert_eq!(s.poll_timeout(ms(0), &config), Some(ms(15_000)));
        s.send(ms(10_000), &config, Message::Text("x"));
        written(&mut s);
        assert_eq!(s.poll_timeout(ms(10_000), &config), Some(ms(25_000)));
        s.handle_timeout(ms(24_999), &config);
        assert!(!s.wants_write());
        s.handle_timeout(ms(25_000), &config);
        assert_eq!(text(&mut s), ":\n\n");
        assert_eq!(s.poll_timeout(ms(25_000), &config), Some(ms(40_000)));
        let off = Config::default().stream_heartbeat(None);
        assert_eq!(s.poll_timeout(ms(25_000), &off), None);
    }

    #[test]
    fn a_reader_that_stops_reading_is_ended_at_the_write_cap() {
        let config = Config::default().max_write_buffer(100);
        let mut s = streaming(&config);
        written(&mut s);
        let line = "x".repeat(60);
        assert_eq!(
            s.send(ms(1), &config, Message::Text(&line)),
            SendStatus::Queued
        );
        assert_eq!(
            s.send(ms(1), &config, Message::Text(&line)),
            SendStatus::Dropped
        );
        assert!(!s.is_open(), "the default policy ends the stream");
        // Its heartbeats stop too; the close timeout drops it unread.
        assert_eq!(s.poll_timeout(ms(1), &config), Some(ms(5_001)));
        s.handle_timeout(ms(5_001), &config);
        assert!(s.is_ended());
        assert_eq!(
            s.close_record(),
            Some((CloseCode::POLICY_VIOLATION, "write buffer full"))
        );

        // Dropping instead: the stream goes on, and hears when it drained.
        let config = config.backpressure(Backpressure::Drop);
        let mut s = streaming(&config);
        written(&mut s);
        s.send(ms(1), &config, Message::Text(&line));
        assert_eq!(
            s.send(ms(1), &config, Message::Text(&line)),
            SendStatus::Dropped
        );
        assert!(s.is_open() && !s.poll_drain());
        written(&mut s);
        assert!(s.poll_drain());
    }

    #[test]
    fn the_server_ends_a_stream_after_its_last_events_then_fin() {
        let config = Config::default();
        let mut s = streaming(&config);
        s.send(ms(1), &config, Message::Text("last"));
        s.close(ms(1), CloseCode::SERVICE_RESTART, "restarting");
        assert_eq!(
            s.send(ms(1), &config, Message::Text("late")),
            SendStatus::Closed
        );
        assert!(!s.poll_shutdown(), "not before the events are out");
        assert!(text(&mut s).ends_with("retry: 1000\n\ndata: last\n\n"));
        assert!(s.poll_shutdown());
        assert!(!s.is_ended(), "it waits for the client's FIN");
        s.handle_eof();
        assert_eq!(
            s.close_record(),
            Some((CloseCode::SERVICE_RESTART, "restarting"))
        );
    }

    #[test]
    fn a_stream_begun_in_a_drain_ends_after_its_head() {
        let config = Config::default();
        let mut s = Session::<u32>::new(ms(0), peer());
        s.finish_http();
        // The application hears of it, and it is over at once: the reader
        // reconnects after `retry`, to whichever server takes it then.
        assert_eq!(feed(&mut s, ms(1), &config, REQUEST), ["streaming"]);
        assert!(!s.is_stream() && !s.is_open() && s.data() == Some(&5));
        assert_eq!(
            s.send(ms(1), &config, Message::Text("late")),
            SendStatus::Closed
        );
        assert!(text(&mut s).ends_with("Connection: close\r\n\r\nretry: 1000\n\n"));
        assert!(s.poll_shutdown());
        s.handle_eof();
        assert_eq!(
            s.close_record(),
            Some((CloseCode::SERVICE_RESTART, "server restarting"))
        );
    }

    #[test]
    fn input_on_a_stream_ends_it_and_so_does_the_client_leaving() {
        let config = Config::default();
        let mut s = streaming(&config);
        let pipelined = b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(feed(&mut s, ms(1), &config, pipelined), [] as [&str; 0]);
        assert!(s.is_ended());
        assert_eq!(
            s.close_record(),
            Some((CloseCode::POLICY_VIOLATION, "input on an event stream"))
        );

        let mut s = streaming(&config);
        s.handle_eof();
        assert_eq!(s.close_record(), Some((CloseCode::ABNORMAL, "")));
    }

    #[test]
    fn a_request_pipelined_behind_the_head_ends_the_stream_at_once() {
        let config = Config::default();
        let mut s = Session::new(ms(0), peer());
        let mut input = REQUEST.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(feed(&mut s, ms(0), &config, &input), ["streaming"]);
        assert!(s.is_ended());
    }

    #[test]
    fn head_gets_the_head_and_no_stream_and_an_upgrade_cannot_stream() {
        let config = Config::default();
        let mut s = Session::<u32>::new(ms(0), peer());
        let head = b"HEAD /events HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(feed(&mut s, ms(0), &config, head), [] as [&str; 0]);
        let out = text(&mut s);
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n") && !s.is_stream());

        let mut s = Session::<u32>::new(ms(0), peer());
        let answer = |_: &crate::handshake::Request<'_>, _| Answer::event_stream(1, None);
        let mut upgrade = crate::session::test_util::UPGRADE.to_vec();
        s.handle_read(ms(0), &config, &mut upgrade, answer)
            .expect("answered");
        assert!(text(&mut s).starts_with("HTTP/1.1 500 "));
    }
}
