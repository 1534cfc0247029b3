//! The HTTP side of a connection: the request head and its body, and the
//! application's answer to it ([`Answer`]): the upgrade, a response on a
//! connection kept alive or closed, or an answer held for later.

use std::net::SocketAddr;
use std::time::Duration;

#[cfg(feature = "deflate")]
use super::extensions::negotiate_deflate;
use super::extensions::Agreed;
use super::open::Open;
use super::{Delivery, Fin, ReadError, Session, State, Step};
use crate::config::Config;
use crate::error::CloseCode;
use crate::handshake::{self, AcceptKey, Parsed, Request, Response};
use crate::time::{Stamp, Time, MAX_TIMEOUT};

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
    /// Answer a plain request with a response that stays open and is
    /// written to as messages come: Server-Sent Events. `response` is the
    /// head, and its body the stream's first bytes
    /// ([`Answer::event_stream`] makes one). Sends on the session then
    /// write events, until either side ends it.
    Stream {
        /// The stream's data, as an upgraded connection's.
        data: D,
        /// The head, sent without a length and with `Connection: close`.
        response: Response,
    },
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
/// connection kept open or not, on a draining server or not, and from
/// whom it came.
#[derive(Debug, Clone, Copy)]
struct Reply {
    with_body: bool,
    keep_alive: bool,
    last: bool,
    peer: SocketAddr,
}

/// What a connection keeps while its request head arrives.
#[derive(Debug)]
pub(super) struct Reading {
    pub(super) since: Stamp,
    /// The socket's peer, from accept.
    peer: SocketAddr,
    /// The head's bytes, only when it arrives in pieces.
    pub(super) request: Vec<u8>,
    /// Once the head is in and a body follows: the request's whole length.
    need: usize,
    /// The server is draining: this request is answered, with
    /// `Connection: close`, and is the connection's last.
    last: bool,
}

impl Reading {
    pub(super) fn boxed(now: Time, peer: SocketAddr) -> Box<Reading> {
        Box::new(Reading {
            since: now.stamp(),
            peer,
            request: Vec::new(),
            need: 0,
            last: false,
        })
    }
}

/// What a held request keeps while its answer waits.
#[derive(Debug)]
pub(super) struct Waiting<D> {
    data: D,
    since: Stamp,
    timeout: Duration,
    peer: SocketAddr,
    /// The answer goes without its body (a `HEAD`).
    with_body: bool,
    /// The connection stays open for another request after the answer.
    keep_alive: bool,
}

impl<D> Session<D> {
    pub(super) fn read_request<'a>(
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
            last,
            ..
        } = &mut **reading;
        let (peer, last) = (*peer, *last);
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
            // A draining server takes no new WebSocket: the client comes
            // back after a second, to whichever server takes it then.
            Ok(Parsed::Upgrade(_, end)) if last => {
                let busy = Response::status(503).with_header("Retry-After", "1");
                self.respond(now, &busy, with_body, false);
                return Ok(Step {
                    consumed: end - held,
                    delivery: None,
                });
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
                let keep_alive = req.keep_alive() && room_to_answer && !last;
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
            last,
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
            // An upgrade is answered at once; only a plain request waits
            // or streams.
            (Answer::Hold { .. } | Answer::Stream { .. }, Some(_)) => {
                self.respond(now, &Response::status(500), how.with_body, false);
                None
            }
            // A HEAD learns the head, and no stream follows.
            (Answer::Stream { response, .. }, None) if !how.with_body => {
                self.respond(now, &response, false, false);
                None
            }
            (Answer::Stream { data, response }, None) => {
                self.start_stream(now, data, response.encode_streamed());
                // A draining server ends it after its head, as it would
                // have ended it had it begun before the drain: the reader
                // reconnects after `retry`, to whichever server takes it
                // then. (A 503, as an upgrade gets, stops an EventSource
                // for good.)
                if how.last {
                    self.end_stream(now, CloseCode::SERVICE_RESTART, "server restarting");
                }
                Some(Delivery::Streaming)
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
        self.state = State::Open(Open::new(now, config, data, agreed));
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

    /// For a drain: a plain HTTP connection still reading a request (one
    /// accepted just before the listener closed, say) reads it and gets its
    /// answer with `Connection: close`; an upgrade gets 503 with
    /// `Retry-After`, and an event stream ends after its head with 1012.
    /// One writing an answer closes after it, as with
    /// [`Session::stop_http`]. Its handshake deadline still bounds it.
    pub fn finish_http(&mut self) {
        match &mut self.state {
            State::ReadingRequest(_) if !self.out.is_empty() => self.stop_http(),
            State::ReadingRequest(reading) => reading.last = true,
            _ => {}
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;
    use crate::handshake::HandshakeLimits;
    use crate::session::test_util::{answered, feed, masked, ms, peer, secs, written, UPGRADE};

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
}
