//! A `session::Session` that negotiated permessage-deflate, fed frames a
//! client builds from the input: messages it compresses itself (whole or
//! fragmented), raw bytes sent as if compressed, plain messages and pings,
//! in random chunks. Every message is echoed, so the compress path runs
//! too.
//!
//! Asserts: nothing panics; the 101 carries the agreement; every echo,
//! read back by a client-role `MessageReader` and inflated as the
//! agreement says, equals the message delivered, in order; RSV1 never
//! comes on a control frame; a failing session closes with 1002, 1007 or
//! 1009 and delivers nothing after; delivered messages stay within
//! `max_message_size`.
#![no_main]

use std::collections::VecDeque;
use std::net::SocketAddr;

use flate2::{Compress, Compression, Decompress};
use libfuzzer_sys::fuzz_target;
use wsloop::deflate::{compress, inflate, DeflateConfig};
use wsloop::frame::{OpCode, Role};
use wsloop::protocol::{encode_frame, Event, MessageReader};
use wsloop::session::{Answer, Delivery, Session, Time};
use wsloop::{Config, Limits};

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
const MAX: usize = 4096;

/// What the client writes, built from the fuzzer's input.
fn client_wire(ops: &[u8], takeover: bool) -> Vec<u8> {
    let mut deflater = Compress::new(Compression::new(6), false);
    let mut wire = Vec::new();
    let mut rest = ops;
    let mut n = 0u8;
    while let [kind, len, tail @ ..] = rest {
        let len = (*len as usize).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        n = n.wrapping_add(1);
        let key = Some([n, 7, n ^ 0x5a, 3]);
        let text = String::from_utf8_lossy(payload).into_owned();
        let (op, body) = if kind & 1 == 0 {
            (OpCode::Text, text.as_bytes())
        } else {
            (OpCode::Binary, payload)
        };
        match (kind >> 1) % 5 {
            // A message the client compresses, in one frame or several.
            0 | 1 => {
                let mut compressed = Vec::new();
                if !takeover {
                    deflater.reset();
                }
                compress(&mut deflater, body, &mut compressed);
                let pieces: Vec<&[u8]> = if kind >> 1 & 1 == 0 || compressed.len() < 2 {
                    vec![&compressed]
                } else {
                    let cut = compressed.len() / 2;
                    vec![&compressed[..cut], &compressed[cut..]]
                };
                for (i, piece) in pieces.iter().enumerate() {
                    let at = wire.len();
                    let frame_op = if i == 0 { op } else { OpCode::Continuation };
                    encode_frame(&mut wire, i + 1 == pieces.len(), frame_op, key, piece);
                    if i == 0 {
                        wire[at] |= 0x40;
                    }
                }
            }
            // The fuzzer's bytes as a compressed payload: garbage, bombs.
            2 => {
                let at = wire.len();
                encode_frame(&mut wire, true, op, key, payload);
                wire[at] |= 0x40;
            }
            3 => encode_frame(&mut wire, true, op, key, body),
            _ => encode_frame(&mut wire, true, OpCode::Ping, key, &payload[..len.min(125)]),
        }
    }
    wire
}

fuzz_target!(|data: &[u8]| {
    let [flags, chunk, ops @ ..] = data else { return };
    let takeover = flags & 1 != 0;
    let chunk = *chunk as usize % 64 + 1;
    let deflate = DeflateConfig::default()
        .min_size(usize::from(flags >> 1 & 3) * 40)
        .server_context_takeover(takeover)
        .client_context_takeover(takeover);
    let config = Config::default()
        .limits(Limits::default().max_message_size(MAX).max_frame_size(MAX))
        .deflate(Some(deflate));
    let peer = SocketAddr::from(([127, 0, 0, 1], 1));
    let now = Time::from_millis(0);
    let mut session = Session::<()>::new(now, peer);

    let mut input = [UPGRADE.as_bytes(), &client_wire(ops, takeover)].concat();
    let mut client = MessageReader::new(Role::Client);
    client.allow_compressed();
    let mut inflater = Decompress::new(false);
    let mut head_seen = false;
    let mut sent: VecDeque<(bool, Vec<u8>)> = VecDeque::new();
    let mut failed = false;
    let mut out = Vec::new();

    for piece in input.chunks_mut(chunk) {
        let len = piece.len();
        let mut pos = 0;
        while pos < len {
            let step = session.handle_read(now, &config, &mut piece[pos..], |_req, _peer| Answer::Accept {
                protocol: None,
                data: (),
            });
            match step {
                Ok(step) => {
                    assert!(step.consumed > 0 || step.delivery.is_some(), "no progress");
                    pos += step.consumed;
                    if let Some(Delivery::Message(incoming)) = step.delivery {
                        assert!(!failed, "delivered after failing");
                        let msg = incoming.message();
                        assert!(msg.as_bytes().len() <= MAX);
                        let text = matches!(msg, wsloop::Message::Text(_));
                        sent.push_back((text, msg.as_bytes().to_vec()));
                        let _ = session.send(now, &config, msg);
                    }
                }
                Err(_) => {
                    failed = true;
                    pos = len;
                }
            }
        }
        out.extend(session.poll_transmit().flatten().copied());
        let n = session.poll_transmit().map(<[u8]>::len).sum();
        session.transmitted(n);
    }

    // The client's view of what the server wrote.
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a 101") + 4;
    let head = std::str::from_utf8(&out[..head_end]).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "));
    assert!(head.contains("Sec-WebSocket-Extensions: permessage-deflate"), "{head}");
    head_seen |= true;
    let mut frames = out[head_end..].to_vec();
    let mut pos = 0;
    while pos < frames.len() {
        let step = client.read(&mut frames[pos..], &Limits::default()).expect("valid server frames");
        assert!(step.consumed > 0);
        pos += step.consumed;
        match step.event {
            Some(Event::Message(incoming)) => {
                let msg = incoming.message();
                let (text, want) = sent.pop_front().expect("an echo of a delivered message");
                assert_eq!(matches!(msg, wsloop::Message::Text(_)), text);
                assert_eq!(msg.as_bytes(), want);
            }
            Some(Event::Compressed { text: is_text, payload }) => {
                let mut back = Vec::new();
                if !takeover {
                    inflater.reset(false);
                }
                inflate(&mut inflater, &payload, 1 << 20, &mut back).expect("our own frames inflate");
                let (text, want) = sent.pop_front().expect("an echo of a delivered message");
                assert_eq!(is_text, text);
                assert_eq!(back, want);
            }
            Some(Event::Close { code, .. }) => {
                if failed {
                    assert!(matches!(code.0, 1002 | 1007 | 1009), "closed with {code:?}");
                }
            }
            _ => {}
        }
    }
    assert!(head_seen);
    assert!(sent.is_empty() || failed, "echoes missing: {}", sent.len());
});
