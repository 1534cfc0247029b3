//! What the session's unit tests share: a request, a driver that feeds
//! input and answers heads the same way every time, and readers of what
//! the session wrote.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Answer, Delivery, Session};
use crate::config::Config;
use crate::frame::{FrameHeader, OpCode, Role};
use crate::handshake::{Request, Response};
use crate::protocol::encode_frame;
use crate::time::Time;

pub(super) const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

pub(super) fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000))
}

pub(super) fn ms(n: u64) -> Time {
    Time::from_millis(n)
}

pub(super) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(super) fn masked(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, true, opcode, Some([1, 2, 3, 4]), payload);
    out
}

/// Feeds all of `input` at `now`, accepting upgrades with data 7,
/// holding requests for `/hold` with data 9 for 30 s, streaming events
/// for `/events` with data 5 and a retry of 1 s, and answering
/// other plain requests with a 200 page naming the method and body;
/// returns what was delivered.
pub(super) fn feed(s: &mut Session<u32>, now: Time, config: &Config, input: &[u8]) -> Vec<String> {
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
            } else if req.path == "/events" {
                Answer::event_stream(5, Some(1000))
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
                    Delivery::Streaming => "streaming".to_string(),
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
pub(super) fn answered(config: &Config, input: &[u8]) -> (Session<u32>, String) {
    let mut s = Session::<u32>::new(ms(0), peer());
    feed(&mut s, ms(0), config, input);
    let output = String::from_utf8(written(&mut s)).unwrap();
    (s, output)
}

/// Takes everything queued, as a reactor's write would.
pub(super) fn written(s: &mut Session<u32>) -> Vec<u8> {
    let bytes: Vec<u8> = s.poll_transmit().flatten().copied().collect();
    s.transmitted(bytes.len());
    bytes
}

/// Server frames as `(opcode, payload)`.
pub(super) fn frames(mut bytes: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (h, n) = FrameHeader::parse(bytes, Role::Client).unwrap().unwrap();
        let end = n + h.payload_len as usize;
        out.push((h.opcode, bytes[n..end].to_vec()));
        bytes = &bytes[end..];
    }
    out
}

pub(super) fn opened(now: Time, config: &Config) -> Session<u32> {
    let mut s = Session::new(now, peer());
    assert_eq!(feed(&mut s, now, config, UPGRADE), ["open"]);
    let response = written(&mut s);
    assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    s
}

pub(super) fn close_frame(code: u16, reason: &str) -> (OpCode, Vec<u8>) {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    (OpCode::Close, payload)
}
