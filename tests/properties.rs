//! Property tests on the pure core, so that stable `cargo test` checks what
//! the fuzz targets check: round trips through the codec and state machine,
//! and the incremental UTF-8 validator against std.

use proptest::prelude::*;
use wsloop::frame::{FrameHeader, OpCode, Role, MAX_HEADER_LEN};
use wsloop::protocol::{encode_frame, Event, Limits, Message, Outbox, Session};
use wsloop::utf8::Utf8Validator;

/// Feeds `wire` to a server session in pieces of `chunk` bytes and collects
/// the data messages and the number of pings.
fn serve(wire: &[u8], chunk: usize) -> (Vec<(bool, Vec<u8>)>, usize) {
    let mut session = Session::new(Role::Server, Limits::default());
    let mut out = Outbox::new();
    let mut messages = Vec::new();
    let mut pings = 0;
    for piece in wire.chunks(chunk) {
        let mut piece = piece.to_vec();
        let mut pos = 0;
        while pos < piece.len() {
            let step = session
                .read(&mut piece[pos..], &mut out)
                .expect("valid input");
            match step.event {
                Some(Event::Message(Message::Text(t))) => {
                    messages.push((true, t.as_bytes().to_vec()))
                }
                Some(Event::Message(Message::Binary(b))) => messages.push((false, b.to_vec())),
                Some(Event::Ping(_)) => pings += 1,
                other => assert!(other.is_none(), "unexpected {other:?}"),
            }
            pos += step.consumed;
        }
    }
    (messages, pings)
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
    fn header_encode_parse_round_trip(len in any::<u64>(), fin: bool, mask in any::<Option<[u8; 4]>>()) {
        let header = FrameHeader { fin, opcode: OpCode::Binary, mask, payload_len: len >> 1 };
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
