//! Graceful shutdown: queued messages first, then close 1001, then exit.

mod util;

use std::process::Command;

use util::{start, Client};
use wsloop::{Config, Conn, Handler, Message};

const BURST: usize = 2000;

/// On any message, queues a burst of numbered 4 KiB messages.
struct Burst;

impl Handler for Burst {
    type Data = ();

    fn on_message(&mut self, conn: &mut Conn<'_>, _msg: Message<'_>) {
        for i in 0..BURST {
            let mut text = format!("{i:>6}");
            text.push_str(&"x".repeat(4096));
            assert_eq!(conn.send_text(&text), wsloop::SendStatus::Queued);
        }
    }
}

#[test]
fn handle_sends_1001_after_queued_messages_and_join_returns() {
    let config = Config::default().workers(2).max_write_buffer(64 << 20);
    let server = start(config, || Burst);
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..4).map(|_| Client::open(addr, "/")).collect();
    for client in &mut clients {
        client.send_text("go");
    }
    // Wait until each burst has been handled, without reading any of it.
    util::wait_for("the bursts to be queued", || {
        server.counters().messages_out >= (4 * BURST) as u64
    });
    server.shutdown_handle().shutdown();
    for client in &mut clients {
        for i in 0..BURST {
            let frame = client.expect_frame();
            assert_eq!(&frame.payload[..6], format!("{i:>6}").as_bytes());
        }
        assert_eq!(client.expect_close(), Some(1001));
        client.send_close(1001, "");
        client.expect_eof();
    }
    drop(clients);
    let counters = server.join().expect("clean exit");
    assert_eq!(counters.closes_by_code(1001), 4);
    assert_eq!(counters.open, 0);
}

#[test]
fn new_connections_are_refused_after_shutdown() {
    let server = start(util::config(1), || util::Echo);
    let addr = server.local_addr();
    server.shutdown_handle().shutdown();
    server.join().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// The echo example: SIGTERM gives clients 1001 and the process exits 0.
#[test]
fn echo_example_shuts_down_on_sigterm() {
    let (mut child, mut stdout, addr) = util::spawn_example("echo", &["--workers", "1"]);
    let mut client = Client::open(addr, "/");
    client.send_text("before");
    assert_eq!(client.expect_frame().payload, b"before");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(client.expect_close(), Some(1001));
    client.send_close(1001, "");
    client.expect_eof();
    drop(client);
    let exit = child.wait().unwrap();
    assert!(exit.success(), "echo exited with {exit}");
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut summary).unwrap();
    assert!(summary.contains("messages  in 1  out 1"), "{summary}");
}
