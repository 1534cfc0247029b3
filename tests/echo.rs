//! Echo over real sockets: raw frames, fragments, sizes, and tungstenite
//! as an independent client.

mod util;

use util::{start, Client, Echo};
use wsloop::frame::OpCode;

#[test]
fn echoes_text_and_binary_of_every_length_class() {
    let server = start(util::config(2), || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    for len in [0usize, 1, 125, 126, 65535, 65536, 1 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        client.send_frame(true, OpCode::Binary, &payload);
        let frame = client.expect_frame();
        assert_eq!(
            (frame.opcode, frame.fin, frame.payload.len()),
            (OpCode::Binary, true, len)
        );
        assert!(frame.payload == payload, "payload of {len} bytes differs");
    }
    client.send_text("héllo");
    assert_eq!(client.expect_frame().payload, "héllo".as_bytes());
}

#[test]
fn fragments_are_joined_with_control_frames_between() {
    let server = start(util::config(1), || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    client.send_frame(false, OpCode::Text, "frag".as_bytes());
    client.send_frame(true, OpCode::Ping, b"p");
    client.send_frame(false, OpCode::Continuation, "men".as_bytes());
    client.send_frame(true, OpCode::Continuation, "ted ✓".as_bytes());
    let pong = client.expect_frame();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (OpCode::Pong, &b"p"[..])
    );
    let msg = client.expect_frame();
    assert_eq!(
        (msg.opcode, msg.payload.as_slice()),
        (OpCode::Text, "fragmented ✓".as_bytes())
    );
}

#[test]
fn frames_split_at_every_byte_arrive_whole() {
    let server = start(util::config(1), || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    let mut bytes = Vec::new();
    wsloop::protocol::encode_frame(
        &mut bytes,
        true,
        OpCode::Text,
        Some([9, 8, 7, 6]),
        "split ✓ text".as_bytes(),
    );
    for byte in &bytes {
        client.send_raw(&[*byte]);
    }
    assert_eq!(client.expect_frame().payload, "split ✓ text".as_bytes());
}

#[test]
fn many_pipelined_messages_come_back_in_order() {
    let server = start(util::config(1), || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    let mut bytes = Vec::new();
    for i in 0..2000 {
        wsloop::protocol::encode_frame(
            &mut bytes,
            true,
            OpCode::Text,
            Some([1, 2, 3, 4]),
            i.to_string().as_bytes(),
        );
    }
    client.send_raw(&bytes);
    for i in 0..2000 {
        assert_eq!(client.expect_frame().payload, i.to_string().as_bytes());
    }
}

#[test]
fn tungstenite_client_interoperates() {
    use tungstenite::Message as T;
    let server = start(util::config(2), || Echo);
    let url = format!("ws://{}/socket", server.local_addr());
    let (mut ws, response) = tungstenite::connect(url).expect("tungstenite handshake");
    assert_eq!(response.status(), 101);
    ws.send(T::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), T::text("hello"));
    let big = vec![7u8; 300_000];
    ws.send(T::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), T::binary(big));
    ws.send(T::Ping(b"x".to_vec())).unwrap();
    assert_eq!(ws.read().unwrap(), T::Pong(b"x".to_vec()));
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(T::Close(_)) => continue,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close handshake failed: {e}"),
        }
    }
}

#[test]
fn many_clients_across_workers() {
    let server = start(util::config(2), || Echo);
    let addr = server.local_addr();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut client = Client::open(addr, "/");
                for i in 0..200 {
                    let text = format!("{t}-{i}");
                    client.send_text(&text);
                    assert_eq!(client.expect_frame().payload, text.as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.counters().messages_in, 8 * 200);
}
