//! Client-encoded messages, masked and cut into random fragments with pings
//! between them (and maybe a close after), fed in random chunks to a
//! server-role `MessageReader` and, behind an upgrade, to a server
//! `session::Session`.
//!
//! Asserts: the reader gives back the same message, borrowed in place
//! exactly when its payload arrived whole in one chunk, the pings in order with
//! their payloads, the close with its code and reason, and holds nothing
//! afterwards; the session delivers `Opened` then the same message, writes
//! the 101 then exactly one pong per ping with the ping's payload, echoes
//! the close, discards what follows it, and once the echo is written has
//! ended with the peer's code and reason as its record.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use wsloop::frame::{FrameHeader, OpCode, Role};
use wsloop::handshake::{accept_response, AcceptKey, Request};
use wsloop::protocol::{encode_frame, Event, Incoming, Limits, MessageReader};
use wsloop::session::{Answer, Delivery, Session, Time};
use wsloop::{CloseCode, Config};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const CLOSE: &[u8] = &[0x03, 0xe8, b'b', b'y', b'e'];

fuzz_target!(|data: &[u8]| {
    let [kind, frag, chunk, k0, k1, k2, k3, body @ ..] = data else {
        return;
    };
    let text;
    let (opcode, payload) = if kind & 1 == 0 {
        text = String::from_utf8_lossy(body).into_owned();
        (OpCode::Text, text.as_bytes())
    } else {
        (OpCode::Binary, body)
    };
    let with_pings = kind & 2 != 0;
    let with_close = kind & 4 != 0;
    let frag = *frag as usize % 40 + 1;
    let chunk = *chunk as usize % 50 + 1;
    let key = [*k0, *k1, *k2, *k3];

    // Encode as a client: fragments of `frag` bytes, a ping after each.
    let mut wire = Vec::new();
    let pieces: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(frag).collect()
    };
    let mut pings = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        // A fresh key per frame, as a real client uses.
        let key = key.map(|b| b.wrapping_add(i as u8));
        let op = if i == 0 { opcode } else { OpCode::Continuation };
        encode_frame(&mut wire, i + 1 == pieces.len(), op, Some(key), piece);
        if with_pings {
            let ping = [i as u8, (i >> 8) as u8];
            encode_frame(&mut wire, true, OpCode::Ping, Some(key), &ping);
            pings.push(ping.to_vec());
        }
    }
    // An unfragmented message whose payload arrives within one chunk (its
    // header may be split) comes out as one borrowed, unmasked slice.
    let in_place = pieces.len() == 1
        && FrameHeader::parse(&wire, Role::Server)
            .unwrap()
            .is_some_and(|(h, n)| {
                let len = h.payload_len as usize;
                len == 0 || n / chunk == (n + len - 1) / chunk
            });
    if with_close {
        encode_frame(&mut wire, true, OpCode::Close, Some(key), CLOSE);
    }

    // The reader alone.
    let limits = Limits::default();
    let mut reader = MessageReader::new(Role::Server);
    let mut got = None;
    let mut got_pings = Vec::new();
    let mut got_close = None;
    for piece in wire.chunks(chunk) {
        let mut piece = piece.to_vec();
        let mut pos = 0;
        while pos < piece.len() {
            assert!(got_close.is_none(), "frames after the close");
            let step = reader
                .read(&mut piece[pos..], &limits)
                .expect("valid input");
            assert!(step.consumed > 0, "no progress");
            match step.event {
                Some(Event::Message(incoming)) => {
                    assert_eq!(matches!(incoming, Incoming::InPlace(_)), in_place);
                    let msg = incoming.message();
                    assert_eq!(msg.opcode(), opcode);
                    assert!(
                        got.replace(msg.as_bytes().to_vec()).is_none(),
                        "two messages"
                    );
                }
                Some(Event::Ping(p)) => got_pings.push(p.as_bytes().to_vec()),
                Some(Event::Close { code, reason }) => {
                    got_close = Some((code, reason.as_bytes().to_vec()));
                }
                other => assert!(other.is_none(), "unexpected {other:?}"),
            }
            pos += step.consumed;
        }
    }
    assert_eq!(got.as_deref(), Some(payload), "message changed on the way");
    assert_eq!(got_pings, pings);
    if with_close {
        assert_eq!(got_close, Some((CloseCode::NORMAL, b"bye".to_vec())));
    }
    assert!(!reader.is_mid_message());
    assert_eq!(reader.buffered(), 0, "held after the message");

    // The same frames to a session, behind an upgrade, with a message
    // after the close that must be discarded.
    let mut stream = UPGRADE.to_vec();
    stream.extend_from_slice(&wire);
    if with_close {
        encode_frame(&mut stream, true, OpCode::Text, Some(key), b"late");
    }
    let config = Config::default();
    let now = Time::from_millis(0);
    let peer = SocketAddr::from(([192, 0, 2, 1], 40000));
    let mut session = Session::<()>::new(now, peer);
    let mut deliveries = Vec::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        let mut piece = piece.to_vec();
        let mut pos = 0;
        while pos < piece.len() {
            let answer = |req: &Request<'_>, from: SocketAddr| {
                assert!(req.is_upgrade());
                assert_eq!(from, peer);
                Answer::Accept {
                    protocol: None,
                    data: (),
                }
            };
            let step = session
                .handle_read(now, &config, &mut piece[pos..], answer)
                .expect("valid input");
            assert!(step.consumed > 0, "no progress");
            deliveries.extend(step.delivery.map(|d| match d {
                Delivery::Opened => None,
                Delivery::Message(m) => Some(m.message().as_bytes().to_vec()),
                other => panic!("unexpected {other:?}"),
            }));
            pos += step.consumed;
        }
        // Written as a reactor writes, after each read.
        let pending: Vec<u8> = session.poll_transmit().flatten().copied().collect();
        session.transmitted(pending.len());
        out.extend(pending);
    }
    assert_eq!(deliveries, [None, Some(payload.to_vec())]);
    let response = accept_response(&AcceptKey::for_key(KEY), None, None);
    let frames = out.strip_prefix(&response[..]).expect("a 101 first");
    let mut client = MessageReader::new(Role::Client);
    let mut frames = frames.to_vec();
    let mut pos = 0;
    let mut pongs = Vec::new();
    let mut echo = None;
    while pos < frames.len() {
        assert!(echo.is_none(), "bytes after the close frame");
        let step = client
            .read(&mut frames[pos..], &Limits::default())
            .expect("the server wrote an invalid frame");
        match step.event {
            Some(Event::Pong(p)) => pongs.push(p.as_bytes().to_vec()),
            Some(Event::Close { code, reason }) => echo = Some((code, reason.as_bytes().to_vec())),
            other => assert!(other.is_none(), "unexpected {other:?}"),
        }
        pos += step.consumed;
    }
    assert!(!client.is_mid_message(), "output ends inside a frame");
    assert_eq!(pongs, pings, "one pong per ping, with its payload");
    if with_close {
        assert_eq!(echo, Some((CloseCode::NORMAL, Vec::new())));
        // Both closes exchanged and the echo written: the server drops the
        // connection first (RFC 6455 §7.1.1), reporting the peer's close.
        assert!(session.is_ended(), "not ended once the echo is out");
        assert_eq!(session.close_record(), Some((CloseCode::NORMAL, "bye")));
    } else {
        assert!(echo.is_none() && session.is_open());
        assert!(!session.poll_shutdown());
        session.handle_eof();
        assert_eq!(session.close_record(), Some((CloseCode::ABNORMAL, "")));
    }
    assert!(session.is_ended());
});
