//! The five deadlines, in one place: `handle_timeout` applies whichever
//! has passed and `poll_timeout` says when the next falls. The handshake
//! timeout runs while a request head arrives and while an answer goes out;
//! an open connection has its keepalive ping, the pong after it, and the
//! idle timeout; a closing one, the close timeout. A held request's
//! deadline is the application's ([`Session::held_deadline`]).

use super::{Session, State};
use crate::config::Config;
use crate::error::CloseCode;
use crate::frame::OpCode;
use crate::time::{Stamp, Time};

/// The keepalive rule's state: silent so far, or a ping awaits its pong.
#[derive(Debug, Clone, Copy)]
pub(super) enum Keepalive {
    Quiet { last_input: Stamp },
    Pinged { at: Stamp },
}

impl<D> Session<D> {
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
            State::Streaming(_) => self.stream_timeout(now, config),
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
            State::Streaming(_) => self.stream_deadline(now, config),
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::protocol::Message;
    use crate::session::test_util::{
        close_frame, feed, frames, masked, ms, opened, peer, secs, written,
    };
    use crate::session::SendStatus;

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
    fn stamps_survive_the_32_bit_wrap() {
        let config = Config::default();
        let start = ms((1 << 32) - 5_000);
        let s = opened(start, &config);
        assert_eq!(
            s.poll_timeout(start + secs(10), &config),
            Some(start + secs(20))
        );
    }
}
