//! permessage-deflate through real sockets: a room where some members
//! negotiated compression and some did not. Needs `--features deflate`.
#![cfg(feature = "deflate")]

mod util;

use flate2::{Compress, Compression, Decompress};
use util::{start, Client, Room};
use wsloop::deflate::{self, DeflateConfig};
use wsloop::frame::OpCode;
use wsloop::Config;

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    deflate::inflate(&mut Decompress::new(false), payload, 1 << 20, &mut out).unwrap();
    out
}

/// A masked text frame with RSV1, holding `text` compressed.
fn compressed_frame(text: &str) -> Vec<u8> {
    let mut payload = Vec::new();
    deflate::compress(
        &mut Compress::new(Compression::new(6), false),
        text.as_bytes(),
        &mut payload,
    );
    let mut frame = Vec::new();
    wsloop::protocol::encode_frame(&mut frame, true, OpCode::Text, Some([1, 2, 3, 4]), &payload);
    frame[0] |= 0x40;
    frame
}

#[test]
fn a_room_gets_compressed_frames_where_negotiated_and_plain_ones_elsewhere() {
    let config = util::config(2).deflate(Some(DeflateConfig::default()));
    let server = start(config, || Room);
    let addr = server.local_addr();
    let mut compressing = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..10 {
        let (client, head) = Client::open_with(addr, "/", OFFER);
        assert!(head.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"), "{head}");
        compressing.push(client);
        let (client, head) = Client::open_with(addr, "/", "");
        assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
        plain.push(client);
    }
    let lines: Vec<String> = (0..5)
        .map(|i| format!("message {i}: ") + &"the meeting moved to room four at noon; ".repeat(25))
        .collect();
    // One member sends compressed, another plain; all get all, in order.
    for (i, line) in lines.iter().enumerate() {
        if i % 2 == 0 {
            compressing[0].send_raw(&compressed_frame(line));
        } else {
            plain[0].send_text(line);
        }
        for client in &mut compressing {
            let frame = client.expect_frame();
            assert!(frame.rsv1 && frame.opcode == OpCode::Text);
            assert!(
                frame.payload.len() < line.len() / 4,
                "{} bytes",
                frame.payload.len()
            );
            assert_eq!(inflate(&frame.payload), line.as_bytes());
        }
        for client in &mut plain {
            let frame = client.expect_frame();
            assert!(!frame.rsv1);
            assert_eq!(frame.payload, line.as_bytes());
        }
    }
    // RSV1 from a member that did not negotiate is a protocol error.
    plain[1].send_raw(&compressed_frame("hi"));
    assert_eq!(plain[1].expect_close(), Some(1002));
    drop(server);
}

#[test]
fn config_refuses_windows_zlib_cannot_use() {
    let bad = Config::default().deflate(Some(DeflateConfig::default().server_max_window_bits(8)));
    assert_eq!(
        bad.validate().unwrap_err().to_string(),
        "config: deflate.server_max_window_bits must be from 9 to 15"
    );
}
