//! Timers over real sockets, with the timeouts shortened.

mod util;

use std::time::{Duration, Instant};

use util::{start, Client, Echo};
use wsloop::frame::OpCode;
use wsloop::Config;

fn quick() -> Config {
    Config::default()
        .workers(1)
        .handshake_timeout(Duration::from_millis(200))
        .ping_interval(None)
        .close_timeout(Duration::from_millis(200))
}

#[test]
fn half_sent_handshake_is_closed_after_the_timeout() {
    let server = start(quick(), || Echo);
    let mut client = Client::connect(server.local_addr());
    let began = Instant::now();
    client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n");
    client.expect_eof();
    assert!(began.elapsed() >= Duration::from_millis(200));
    util::wait_until_closed(&server);
}

#[test]
fn silent_peer_gets_pings_and_is_dropped_without_pong() {
    let config = quick()
        .ping_interval(Some(Duration::from_millis(100)))
        .pong_timeout(Duration::from_millis(200));
    let server = start(config, || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    // Answering keeps the connection: two rounds.
    for _ in 0..2 {
        let ping = client.expect_frame();
        assert_eq!(ping.opcode, OpCode::Ping);
        client.send_frame(true, OpCode::Pong, &ping.payload);
    }
    // Now stay silent: the next ping goes unanswered and TCP is dropped.
    assert_eq!(client.expect_frame().opcode, OpCode::Ping);
    client.expect_eof();
    util::wait_until_closed(&server);
    assert_eq!(server.counters().closes_by_code(1006), 1);
}

#[test]
fn keepalive_continues_after_a_pong_even_with_a_long_pong_timeout() {
    // The pong deadline (60 s) is far behind the next ping (100 ms after
    // the pong): the pong must bring the next ping forward, or the peer
    // waits a minute and a proxy's read timeout kills the connection.
    let config = quick()
        .ping_interval(Some(Duration::from_millis(100)))
        .pong_timeout(Duration::from_secs(60));
    let server = start(config, || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    for _ in 0..3 {
        let ping = client.expect_frame(); // the watchdog is 10 s
        assert_eq!(ping.opcode, OpCode::Ping);
        client.send_frame(true, OpCode::Pong, &ping.payload);
    }
}

#[test]
fn idle_timeout_closes_with_1001() {
    let config = quick().idle_timeout(Some(Duration::from_millis(150)));
    let server = start(config, || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    client.send_text("one");
    assert_eq!(client.expect_frame().payload, b"one");
    assert_eq!(client.expect_close(), Some(1001));
    client.send_close(1001, "");
    client.expect_eof();
}

#[test]
fn unanswered_close_is_dropped_after_the_close_timeout() {
    let server = start(quick(), || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    server.shutdown_handle().shutdown();
    assert_eq!(client.expect_close(), Some(1001));
    // No reply: the server drops TCP after close_timeout.
    client.expect_eof();
    server.join().unwrap();
}

/// Sets timers from its callbacks and says when each fires.
struct Alarm;

impl wsloop::Handler for Alarm {
    type Data = ();

    fn on_open(&mut self, conn: &mut wsloop::Conn<'_>) {
        // The second replaces the first: a connection has one timer.
        conn.set_timer(Duration::from_millis(20), 1);
        conn.set_timer(Duration::from_millis(40), 2);
    }

    fn on_message(&mut self, conn: &mut wsloop::Conn<'_>, msg: wsloop::Message<'_>) {
        match msg.as_bytes() {
            b"again" => conn.set_timer(Duration::from_millis(10), 3),
            b"cancel" => {
                let cancelled = conn.cancel_timer();
                let _ = conn.send_text(&format!("cancelled {cancelled}"));
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, conn: &mut wsloop::Conn<'_>, token: u64) {
        let _ = conn.send_text(&format!("timer {token}"));
    }
}

#[test]
fn a_handler_timer_fires_once_with_its_token_and_can_be_replaced_or_cancelled() {
    let server = start(quick(), || Alarm);
    let opening = Instant::now();
    let mut client = Client::open(server.local_addr(), "/");
    let text = |frame: util::Frame| String::from_utf8(frame.payload).unwrap();
    let first = text(client.expect_frame());
    assert_eq!(first, "timer 2");
    // Timers count from the turn that set them, which began after this.
    assert!(opening.elapsed() >= Duration::from_millis(40));
    // Fired once: set again, it fires again, with the new token.
    client.send_text("again");
    assert_eq!(text(client.expect_frame()), "timer 3");
    // Nothing is set now, so nothing is cancelled; set, it is.
    client.send_text("cancel");
    assert_eq!(text(client.expect_frame()), "cancelled false");
    client.send_text("again");
    client.send_text("cancel");
    assert_eq!(text(client.expect_frame()), "cancelled true");
}
