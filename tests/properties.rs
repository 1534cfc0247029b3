//! Property tests on the pure core, so that stable `cargo test` checks what
//! the fuzz targets check: round trips through the codec and state machine,
//! and the incremental UTF-8 validator against std.

use proptest::prelude::*;
use wsloop::frame::{FrameHeader, OpCode, Role, MAX_HEADER_LEN};
use wsloop::protocol::{encode_frame, Message};
use wsloop::session::{Answer, Delivery, Session, Time};
use wsloop::utf8::Utf8Validator;
use wsloop::Config;

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Feeds an upgrade and then `wire` to a server session in pieces of
/// `chunk` bytes, and collects the data messages it delivers and the pongs
/// it writes.
fn serve(wire: &[u8], chunk: usize) -> (Vec<(bool, Vec<u8>)>, usize) {
    let config = Config::default();
    let now = Time::from_millis(0);
    let mut session = Session::<()>::new(now, "127.0.0.1:1".parse().unwrap());
    let mut messages = Vec::new();
    let input = [UPGRADE, wire].concat();
    for piece in input.chunks(chunk) {
        let mut piece = piece.to_vec();
        let mut pos = 0;
        while pos < piece.len() {
            let accept = |_: &wsloop::Request<'_>, _| Answer::Accept {
                protocol: None,
                data: (),
            };
            let step = session
                .handle_read(now, &config, &mut piece[pos..], accept)
                .expect("valid input");
            if let Some(Delivery::Message(incoming)) = step.delivery {
                messages.push(match incoming.message() {
                    Message::Text(t) => (true, t.as_bytes().to_vec()),
                    Message::Binary(b) => (false, b.to_vec()),
                    other => panic!("unexpected {other:?}"),
                });
            }
            pos += step.consumed;
        }
    }
    let output: Vec<u8> = session.poll_transmit().flatten().copied().collect();
    let head_end = output.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut frames = &output[head_end..];
    let mut pongs = 0;
    while !frames.is_empty() {
        let (header, n) = FrameHeader::parse(frames, Role::Client).unwrap().unwrap();
        assert_eq!(header.opcode, OpCode::Pong);
        pongs += 1;
        frames = &frames[n + header.payload_len as usize..];
    }
    (messages, pongs)
}

/// A message: text or binary payload.
fn message() -> impl Strategy<Value = (bool, Vec<u8>)> {
    prop_oneof![
        ".{0,300}".prop_map(|s: String| (true, s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 0..2000).prop_map(|b| (false, b)),
    ]
}

proptest! {
    #[test]
    fn messages_survive_masking_fragmentation_and_chunking(
        messages in proptest::collection::vec(message(), 1..6),
        frag in 1usize..200,
        chunk in 1usize..300,
        key in any::<[u8; 4]>(),
        with_pings in any::<bool>(),
    ) {
        let mut wire = Vec::new();
        let mut pings = 0;
        for (text, payload) in &messages {
            let opcode = if *text { OpCode::Text } else { OpCode::Binary };
            let pieces: Vec<&[u8]> = if payload.is_empty() { vec![&[]] } else { payload.chunks(frag).collect() };
            for (i, piece) in pieces.iter().enumerate() {
                let op = if i == 0 { opcode } else { OpCode::Continuation };
                encode_frame(&mut wire, i + 1 == pieces.len(), op, Some(key), piece);
                if with_pings {
                    encode_frame(&mut wire, true, OpCode::Ping, Some(key), b"k");
                    pings += 1;
                }
            }
        }
        let (got, got_pings) = serve(&wire, chunk);
        prop_assert_eq!(got, messages);
        prop_assert_eq!(got_pings, pings);
    }

    #[test]
    fn header_encode_parse_round_trip(len in any::<u64>(), fin: bool, rsv1: bool, mask in any::<Option<[u8; 4]>>()) {
        let header = FrameHeader { fin, rsv1, opcode: OpCode::Binary, mask, payload_len: len >> 1 };
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut bytes);
        let role = if mask.is_some() { Role::Server } else { Role::Client };
        prop_assert_eq!(FrameHeader::parse(&bytes[..n], role), Ok(Some((header, n))));
    }

    #[test]
    fn utf8_validator_agrees_with_std(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            ".{0,40}".prop_map(String::into_bytes),
        ],
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
    ) {
        let mut cuts = [a.index(bytes.len() + 1), b.index(bytes.len() + 1)];
        cuts.sort();
        let mut v = Utf8Validator::new();
        let ours = v.feed(&bytes[..cuts[0]])
            .and_then(|()| v.feed(&bytes[cuts[0]..cuts[1]]))
            .and_then(|()| v.feed(&bytes[cuts[1]..]))
            .and_then(|()| v.finish())
            .map_err(|e| e.valid_up_to);
        let std = std::str::from_utf8(&bytes).map(|_| ()).map_err(|e| e.valid_up_to() as u64);
        prop_assert_eq!(ours, std);
    }
}
