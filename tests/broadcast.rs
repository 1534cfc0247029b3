//! Topics across workers: every subscriber gets every message once, in
//! each publisher's order.

mod util;

use std::collections::HashMap;
use std::net::SocketAddr;

use util::{start, Client, Room};
use wsloop::frame::OpCode;

use wsloop::{CloseCode, Conn, Handler, Message, PublishStatus, Request, Upgrade};

const CLIENTS: usize = 200;
const EACH: usize = 5;

#[test]
fn two_hundred_clients_on_four_workers_get_every_message_once_in_order() {
    let server = start(util::config(4), || Room);
    let addr = server.local_addr();
    // The 101 is written after on_open, so every client is subscribed once
    // its upgrade completes.
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| Client::open(addr, "/")).collect();
    let per_worker: Vec<u64> = server
        .worker_counters()
        .iter()
        .map(|c| c.upgraded)
        .collect();
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "clients not spread: {per_worker:?}"
    );

    for k in 0..EACH {
        for (i, client) in clients.iter_mut().enumerate() {
            client.send_text(&format!("{i}:{k}"));
        }
    }
    for (reader, client) in clients.iter_mut().enumerate() {
        let mut next: HashMap<usize, usize> = HashMap::new();
        for _ in 0..CLIENTS * EACH {
            let frame = client.expect_frame();
            assert_eq!(frame.opcode, OpCode::Text);
            let text = String::from_utf8(frame.payload).unwrap();
            let (from, k) = text.split_once(':').unwrap();
            let (from, k): (usize, usize) = (from.parse().unwrap(), k.parse().unwrap());
            let expected = next.entry(from).or_insert(0);
            assert_eq!(
                k, *expected,
                "client {reader}: message {text} out of order or repeated"
            );
            *expected += 1;
        }
        assert_eq!(next.len(), CLIENTS);
        assert!(next.values().all(|&n| n == EACH));
    }
    // Nothing more arrives: each message came exactly once.
    let counters = server.counters();
    assert_eq!(counters.messages_in, (CLIENTS * EACH) as u64);
    assert_eq!(counters.messages_out, (CLIENTS * EACH * CLIENTS) as u64);
}

#[test]
fn broadcaster_reaches_subscribers_from_another_thread() {
    let server = start(util::config(2), || Room);
    let mut clients: Vec<Client> = (0..8)
        .map(|_| Client::open(server.local_addr(), "/"))
        .collect();
    let broadcaster = server.broadcaster();
    std::thread::spawn(move || {
        for i in 0..100 {
            let status = broadcaster.publish("room", Message::Text(&i.to_string()));
            assert_eq!(status, PublishStatus::Queued);
        }
    })
    .join()
    .unwrap();
    for client in &mut clients {
        for i in 0..100 {
            assert_eq!(client.expect_frame().payload, i.to_string().as_bytes());
        }
    }
}

#[test]
fn unsubscribed_and_closed_connections_get_nothing() {
    struct Picky;
    impl Handler for Picky {
        /// Whether the connection asked to be quiet.
        type Data = bool;

        fn on_upgrade(&mut self, req: &Request<'_>, _peer: SocketAddr) -> Upgrade<bool> {
            Upgrade::accept(req.path == "/quiet")
        }

        fn on_open(&mut self, conn: &mut Conn<'_, bool>) {
            conn.subscribe("room");
            if *conn.data() {
                assert!(conn.unsubscribe("room"));
            }
        }
        fn on_message(&mut self, conn: &mut Conn<'_, bool>, msg: Message<'_>) {
            let _ = conn.publish("room", msg);
        }
    }
    let server = start(util::config(1), || Picky);
    let addr = server.local_addr();
    let mut quiet = Client::open(addr, "/quiet");
    let mut gone = Client::open(addr, "/");
    gone.send_close(1000, "");
    assert_eq!(gone.expect_close(), Some(1000));
    let mut talker = Client::open(addr, "/");
    talker.send_text("hello");
    assert_eq!(talker.expect_frame().payload, b"hello");
    quiet.send_text("ping?");
    // quiet is not subscribed: its own message goes to talker only.
    assert_eq!(talker.expect_frame().payload, b"ping?");
    quiet.send_frame(true, OpCode::Ping, b"x");
    assert_eq!(quiet.expect_frame().opcode, OpCode::Pong);
}

#[test]
fn a_subscription_made_in_on_close_ends_with_the_connection() {
    /// Subscribes to "late" on open when it is the witness, and on close
    /// always: the latter must not outlive the connection.
    struct Sticky;
    impl Handler for Sticky {
        /// Whether this connection is the witness.
        type Data = bool;

        fn on_upgrade(&mut self, req: &Request<'_>, _peer: SocketAddr) -> Upgrade<bool> {
            Upgrade::accept(req.path == "/witness")
        }
        fn on_open(&mut self, conn: &mut Conn<'_, bool>) {
            if *conn.data() {
                conn.subscribe("late");
            }
        }
        fn on_message(&mut self, conn: &mut Conn<'_, bool>, msg: Message<'_>) {
            assert_eq!(conn.send(msg), wsloop::SendStatus::Queued);
        }
        fn on_close(&mut self, conn: &mut Conn<'_, bool>, _code: CloseCode, _reason: &str) {
            conn.subscribe("late");
        }
    }
    let server = start(util::config(1), || Sticky);
    let addr = server.local_addr();
    let mut first = Client::open(addr, "/");
    first.send_close(1000, "");
    assert_eq!(first.expect_close(), Some(1000));
    first.expect_eof();
    util::wait_until_closed(&server);
    // The next connection gets the first one's slab key.
    let mut second = Client::open(addr, "/");
    let mut witness = Client::open(addr, "/witness");
    let status = server
        .broadcaster()
        .publish("late", Message::Text("leaked?"));
    assert_eq!(status, PublishStatus::Queued);
    // Once the witness has it, the worker has delivered it everywhere.
    assert_eq!(witness.expect_frame().payload, b"leaked?");
    second.send_text("probe");
    assert_eq!(second.expect_frame().payload, b"probe");
}
