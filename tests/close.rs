//! The close handshake and failure closes over real sockets.

mod util;

use util::{start, Client, Echo};
use wsloop::frame::OpCode;
use wsloop::{CloseCode, Conn, ConnId, Handler, Message};

#[test]
fn peer_close_is_echoed_then_tcp_closes() {
    let server = start(util::config(1), || Echo);
    for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 4999] {
        let mut client = Client::open(server.local_addr(), "/");
        client.send_close(code, "bye");
        assert_eq!(client.expect_close(), Some(code));
        client.expect_eof();
    }
}

#[test]
fn bad_input_gets_its_close_code_then_tcp_closes() {
    let server = start(util::config(1), || Echo);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (vec![0x81, 0x02, b'h', b'i'], 1002),    // unmasked client frame
        (vec![0xC1, 0x80, 0, 0, 0, 0], 1002),    // RSV1 without extension
        (vec![0x83, 0x80, 0, 0, 0, 0], 1002),    // reserved opcode
        (vec![0x09, 0x80, 0, 0, 0, 0], 1002),    // fragmented ping
        (vec![0x80, 0x80, 0, 0, 0, 0], 1002),    // continuation without start
        (vec![0x88, 0x81, 0, 0, 0, 0, 3], 1002), // 1-byte close payload
        (vec![0x88, 0x82, 0, 0, 0, 0, 0x03, 0xed], 1002), // close code 1005
        (vec![0x81, 0x81, 0, 0, 0, 0, 0xff], 1007), // invalid UTF-8
        (vec![0x88, 0x83, 0, 0, 0, 0, 0x03, 0xe8, 0xff], 1007), // invalid reason
    ];
    for (bytes, code) in cases {
        let mut client = Client::open(server.local_addr(), "/");
        client.send_raw(&bytes);
        assert_eq!(client.expect_close(), Some(code), "{bytes:x?}");
        client.expect_eof();
    }
}

#[test]
fn invalid_utf8_fails_fast_inside_an_unfinished_frame() {
    let server = start(util::config(1), || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    // A 1000-byte text frame: header, then only 3 bytes of payload, the
    // last of them invalid. The close must come without the rest.
    let mut payload = vec![b'a'; 1000];
    payload[2] = 0xff;
    let mut frame = Vec::new();
    wsloop::protocol::encode_frame(&mut frame, true, OpCode::Text, Some([0; 4]), &payload);
    client.send_raw(&frame[..8 + 3]);
    assert_eq!(client.expect_close(), Some(1007));
}

/// Closes on "bye", and records on_close calls in a shared log.
struct Closer(std::sync::Arc<std::sync::Mutex<Vec<(ConnId, u16, String)>>>);

impl Handler for Closer {
    type Data = ();

    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        if msg == Message::Text("bye") {
            assert_eq!(conn.send_text("last words"), wsloop::SendStatus::Queued);
            conn.close(CloseCode(4000), "done");
            assert_eq!(conn.send_text("too late"), wsloop::SendStatus::Closed);
        }
    }

    fn on_close(&mut self, conn: &mut Conn<'_>, code: CloseCode, reason: &str) {
        assert_eq!(conn.send_text("after close"), wsloop::SendStatus::Closed);
        self.0
            .lock()
            .unwrap()
            .push((conn.id(), code.0, reason.to_owned()));
    }
}

#[test]
fn handler_close_waits_for_the_reply_and_reports_once() {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let shared = log.clone();
    let server = start(util::config(1), move || Closer(shared.clone()));
    let mut client = Client::open(server.local_addr(), "/");
    client.send_text("bye");
    assert_eq!(client.expect_frame().payload, b"last words");
    assert_eq!(client.expect_close(), Some(4000));
    client.send_close(4000, "");
    client.expect_eof();
    drop(client);
    util::wait_until_closed(&server);

    let mut dropped = Client::open(server.local_addr(), "/");
    dropped.send_text("hi");
    drop(dropped);
    util::wait_until_closed(&server);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    // The close the server started is reported as it was sent, reason too.
    assert_eq!((log[0].1, log[0].2.as_str()), (4000, "done"));
    assert_eq!((log[1].1, log[1].2.as_str()), (1006, ""));
    assert_eq!(server.counters().closes_by_code(1006), 1);
}
