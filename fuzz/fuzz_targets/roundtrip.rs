//! Client-encoded messages, masked and cut into random fragments with pings
//! between them, fed in random chunks to the server session: the same
//! messages must come out, and each ping must be answered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::frame::{OpCode, Role};
use wsloop::protocol::{encode_frame, Event, Limits, Message, Outbox, Session};

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
    let frag = *frag as usize % 40 + 1;
    let key = [*k0, *k1, *k2, *k3];

    // Encode as a client: fragments of `frag` bytes, a ping after each.
    let mut wire = Vec::new();
    let pieces: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(frag).collect()
    };
    let mut pings = 0;
    for (i, piece) in pieces.iter().enumerate() {
        // A fresh key per frame, as a real client uses.
        let key = key.map(|b| b.wrapping_add(i as u8));
        let op = if i == 0 { opcode } else { OpCode::Continuation };
        encode_frame(&mut wire, i + 1 == pieces.len(), op, Some(key), piece);
        if kind & 2 != 0 {
            encode_frame(&mut wire, true, OpCode::Ping, Some(key), &[i as u8]);
            pings += 1;
        }
    }

    let mut session = Session::new(Role::Server, Limits::default());
    let mut out = Outbox::new();
    let mut got = None;
    let mut pongs = 0;
    for piece in wire.chunks(*chunk as usize % 50 + 1) {
        let mut piece = piece.to_vec();
        let mut pos = 0;
        while pos < piece.len() {
            let step = session
                .read(&mut piece[pos..], &mut out)
                .expect("valid input");
            match step.event {
                Some(Event::Message(Message::Text(t))) => {
                    assert!(got.replace(t.as_bytes().to_vec()).is_none(), "two messages")
                }
                Some(Event::Message(Message::Binary(b))) => {
                    assert!(got.replace(b.to_vec()).is_none(), "two messages")
                }
                Some(Event::Ping(_)) => pongs += 1,
                other => assert!(other.is_none(), "unexpected {other:?}"),
            }
            pos += step.consumed;
        }
    }
    assert_eq!(got.as_deref(), Some(payload), "message changed on the way");
    assert_eq!(pongs, pings);
    assert!(!session.is_mid_message());
});
