//! Limits against abuse, over real sockets.

mod util;

use util::{start, Client, Echo};
use wsloop::frame::OpCode;
use wsloop::{Config, Limits};

fn limited() -> Config {
    Config::default().workers(1).limits(
        Limits::default()
            .max_frame_size(1000)
            .max_message_size(2500)
            .max_fragments(10),
    )
}

#[test]
fn oversized_frame_closes_with_1009_before_its_payload_arrives() {
    let server = start(limited(), || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    // Only the header of a 1001-byte frame.
    client.send_raw(&[0x82, 0xFE, 0x03, 0xE9, 0, 0, 0, 0]);
    assert_eq!(client.expect_close(), Some(1009));
}

#[test]
fn oversized_message_across_fragments_closes_with_1009() {
    let server = start(limited(), || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    client.send_frame(false, OpCode::Binary, &[1; 1000]);
    client.send_frame(false, OpCode::Continuation, &[1; 1000]);
    client.send_frame(true, OpCode::Continuation, &[1; 501]);
    assert_eq!(client.expect_close(), Some(1009));
}

#[test]
fn over_fragmented_message_closes_with_1009() {
    let server = start(limited(), || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    client.send_frame(false, OpCode::Text, b"");
    for _ in 0..10 {
        client.send_frame(false, OpCode::Continuation, b"");
    }
    assert_eq!(client.expect_close(), Some(1009));
}

#[test]
fn within_limits_is_fine() {
    let server = start(limited(), || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    client.send_frame(false, OpCode::Binary, &[1; 1000]);
    client.send_frame(false, OpCode::Continuation, &[2; 1000]);
    client.send_frame(true, OpCode::Continuation, &[3; 500]);
    assert_eq!(client.expect_frame().payload.len(), 2500);
}

#[test]
fn connections_over_the_cap_are_closed_at_once() {
    let config = limited().max_connections(2);
    let server = start(config, || Echo);
    let _a = Client::open(server.local_addr(), "/");
    let _b = Client::open(server.local_addr(), "/");
    let mut c = Client::connect(server.local_addr());
    c.expect_eof();
    assert_eq!(server.counters().refused, 1);
}

#[test]
fn a_config_that_cannot_work_is_refused_at_bind() {
    let config = Config::default().read_buffer_size(0);
    let err = wsloop::Server::bind("127.0.0.1:0", config, || Echo).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "config: read_buffer_size must be at least 1"
    );
}
