//! The server-side connection state machine on arbitrary byte streams.
//!
//! The first byte sets the chunk size. Asserts: no panic; every read makes
//! progress or fails; buffered bytes stay within the limits; after an
//! error or a close frame nothing more is read; everything the session
//! emits parses as valid, unmasked server frames; nothing follows a close
//! frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::frame::{OpCode, Role};
use wsloop::protocol::{Event, Limits, Outbox, Session};

const LIMITS: Limits = Limits {
    max_frame_size: 1024,
    max_message_size: 4096,
    max_fragments: 16,
    max_pong_backlog: 2048,
};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let chunk = chunk as usize % 97 + 1;
    let mut session = Session::new(Role::Server, LIMITS);
    let mut out = Outbox::new();
    let mut ended = false;
    for piece in input.chunks(chunk) {
        let mut piece = piece.to_vec();
        let mut pos = 0;
        while pos < piece.len() {
            match session.read(&mut piece[pos..], &mut out) {
                Ok(step) => {
                    assert!(step.consumed > 0 || step.event.is_some(), "no progress");
                    if ended {
                        assert!(step.event.is_none(), "event after the end");
                    }
                    if let Some(Event::Close { .. }) = step.event {
                        ended = true;
                    }
                    pos += step.consumed;
                }
                Err(err) => {
                    assert!(!ended, "error after the end");
                    out.close(err.close_code(), &err.to_string());
                    ended = true;
                    break;
                }
            }
            // Capacity may double once past what is held.
            assert!(session.buffered() <= 2 * LIMITS.max_message_size + 2 * 125);
        }
    }
    check_server_output(&out.to_vec());
});

/// Parses `bytes` as a client would: all valid frames, none after a close.
fn check_server_output(mut bytes: &[u8]) {
    let mut client = Session::new(Role::Client, Limits::default());
    let mut sink = Outbox::new();
    let mut closed = false;
    let mut copy = bytes.to_vec();
    let mut pos = 0;
    while pos < copy.len() {
        assert!(!closed, "bytes after the close frame");
        let step = client
            .read(&mut copy[pos..], &mut sink)
            .expect("the server emitted an invalid frame");
        if let Some(Event::Close { .. }) = step.event {
            closed = true;
        }
        pos += step.consumed;
    }
    assert!(!client.is_mid_message(), "output ends inside a frame");
    // Every frame is unmasked and has FIN (the server never fragments).
    while !bytes.is_empty() {
        let (header, n) = wsloop::frame::FrameHeader::parse(bytes, Role::Client)
            .unwrap()
            .unwrap();
        assert!(header.fin && header.mask.is_none());
        assert!(matches!(header.opcode, OpCode::Pong | OpCode::Close));
        bytes = &bytes[n + header.payload_len as usize..];
    }
}
