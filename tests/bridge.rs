//! A server's bridge hooks: what a Redis bridge (or any other) is told of
//! publishes and of which topics have subscribers on this server.

mod util;

use std::sync::{Arc, Mutex};

use util::{start, Client};
use wsloop::frame::OpCode;
use wsloop::{Bridge, Conn, Handler, Message, PublishStatus};

/// Records what the server tells it.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl Bridge for Recorder {
    fn published(&self, topic: &str, msg: Message<'_>) {
        let text = std::str::from_utf8(msg.as_bytes()).unwrap();
        self.events
            .lock()
            .unwrap()
            .push(format!("published {topic} {text}"));
    }

    fn interest(&self, topic: &str, subscribed: bool) {
        let what = if subscribed {
            "subscribed"
        } else {
            "unsubscribed"
        };
        self.events.lock().unwrap().push(format!("{what} {topic}"));
    }
}

/// `/join/ROOM` subscribes to ROOM; text "say ROOM words" publishes there,
/// "leave ROOM" unsubscribes.
struct Rooms;

impl Handler for Rooms {
    type Data = String;

    fn on_upgrade(
        &mut self,
        req: &wsloop::Request<'_>,
        _peer: std::net::SocketAddr,
    ) -> wsloop::Upgrade<String> {
        wsloop::Upgrade::accept(req.path.trim_start_matches("/join/").to_owned())
    }

    fn on_open(&mut self, conn: &mut Conn<'_, String>) {
        let room = conn.data().clone();
        conn.subscribe(&room);
    }

    fn on_message(&mut self, conn: &mut Conn<'_, String>, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        if let Some(rest) = text.strip_prefix("say ") {
            let (room, words) = rest.split_once(' ').unwrap();
            let _ = conn.publish(room, Message::Text(words));
        } else if let Some(room) = text.strip_prefix("leave ") {
            conn.unsubscribe(room);
            assert_eq!(conn.send_text("left"), wsloop::SendStatus::Queued);
        }
    }
}

#[test]
fn the_bridge_hears_publishes_and_each_topic_s_first_and_last_subscriber() {
    let server = start(util::config(2), || Rooms);
    let addr = server.local_addr();
    // A subscriber from before the bridge is announced when it is installed.
    let mut early = Client::open(addr, "/join/lobby");
    let recorder = Arc::new(Recorder::default());
    assert!(server.set_bridge(recorder.clone()));
    assert!(
        !server.set_bridge(Arc::new(Recorder::default())),
        "only one bridge"
    );
    assert_eq!(recorder.take(), ["subscribed lobby"]);

    // More subscribers, spread over both workers, announce nothing more.
    let mut others: Vec<Client> = (0..6).map(|_| Client::open(addr, "/join/lobby")).collect();
    let mut kitchen = Client::open(addr, "/join/kitchen");
    util::wait_for("the kitchen subscription", || {
        recorder.events.lock().unwrap().len() == 1
    });
    assert_eq!(recorder.take(), ["subscribed kitchen"]);

    // A handler's publish reaches local subscribers and the bridge; a
    // Broadcaster's too; publish_local only the local ones.
    early.send_text("say lobby hello");
    for client in others.iter_mut().chain([&mut early]) {
        assert_eq!(client.expect_frame().payload, b"hello");
    }
    let status = server
        .broadcaster()
        .publish("lobby", Message::Text("from afar"));
    assert_eq!(status, PublishStatus::Queued);
    let status = server
        .broadcaster()
        .publish_local("lobby", Message::Text("from a bridge"));
    assert_eq!(status, PublishStatus::Queued);
    for client in others.iter_mut().chain([&mut early]) {
        assert_eq!(client.expect_frame().payload, b"from afar");
        assert_eq!(client.expect_frame().payload, b"from a bridge");
    }
    assert_eq!(
        recorder.take(),
        ["published lobby hello", "published lobby from afar"]
    );

    // The last subscriber leaving, by unsubscribing or by closing, is told once.
    kitchen.send_text("leave kitchen");
    assert_eq!(kitchen.expect_frame().opcode, OpCode::Text);
    assert_eq!(recorder.take(), ["unsubscribed kitchen"]);
    for mut client in others.drain(..) {
        client.send_close(1000, "");
        assert_eq!(client.expect_close(), Some(1000));
    }
    assert_eq!(recorder.take(), [] as [String; 0]);
    early.send_close(1000, "");
    assert_eq!(early.expect_close(), Some(1000));
    kitchen.send_close(1000, "");
    assert_eq!(kitchen.expect_close(), Some(1000));
    util::wait_until_closed(&server);
    assert_eq!(recorder.take(), ["unsubscribed lobby"]);
}

/// A bridge that numbers messages, played by the test: what handlers
/// publish comes out of `submitted`, and the test decides when it is
/// delivered and what each load holds.
struct Numbering {
    submitted: Mutex<std::sync::mpsc::Sender<String>>,
}

impl Bridge for Numbering {
    fn published(&self, _topic: &str, _msg: Message<'_>) {}

    fn interest(&self, _topic: &str, _subscribed: bool) {}

    fn orders(&self) -> bool {
        true
    }

    fn submit(&self, _topic: &str, msg: Message<'_>) -> PublishStatus {
        let text = std::str::from_utf8(msg.as_bytes()).unwrap().to_owned();
        let _ = self.submitted.lock().unwrap().send(text);
        PublishStatus::Queued
    }
}

/// A subscriber with no cursor starts where the topic's copy stood when it
/// subscribed. A load that comes after it, and already holds what it went
/// on to publish (the subscription's own join, in the chat), brings that
/// to it: before, it was moved to the load's end and missed it.
#[test]
fn a_subscriber_with_no_cursor_gets_what_a_later_load_holds_after_its_subscription() {
    let config = util::config(1).history(Some(wsloop::HistoryConfig::default()));
    let server = start(config, || Rooms);
    let addr = server.local_addr();
    let (tx, submitted) = std::sync::mpsc::channel();
    let bridge = Numbering {
        submitted: Mutex::new(tx),
    };
    assert!(server.set_bridge(Arc::new(bridge)));
    let topics = server.broadcaster();
    let id = |seq| wsloop::MessageId { epoch: 7, seq };
    let entry = |seq: u64, text: &str| format!("{} {text}", id(seq)).into_bytes();

    // The first subscriber waits for the copy; an empty first load, then
    // its own line, delivered as the bridge numbered it.
    let mut first = Client::open(addr, "/join/r");
    util::wait_for("the first load", || {
        topics.restore("r", 7, 1, std::iter::empty())
    });
    first.send_text("say r one");
    assert_eq!(submitted.recv().unwrap(), "one");
    let queued = topics.deliver("r", id(1), Message::Text("one"));
    assert_eq!(queued, PublishStatus::Queued);
    assert_eq!(first.expect_frame().payload, entry(1, "one"));

    // A second subscriber, with no cursor, while the copy is at 1. What
    // it says is numbered 2, and the next load holds it.
    let mut second = Client::open(addr, "/join/r");
    second.send_text("say r two");
    assert_eq!(submitted.recv().unwrap(), "two");
    let log = [(1, Message::Text("one")), (2, Message::Text("two"))];
    assert!(topics.restore("r", 7, 3, log));
    let queued = topics.deliver("r", id(3), Message::Text("three"));
    assert_eq!(queued, PublishStatus::Queued);
    for client in [&mut first, &mut second] {
        assert_eq!(client.expect_frame().payload, entry(2, "two"));
        assert_eq!(client.expect_frame().payload, entry(3, "three"));
    }

    // One that waits for a new topic's copy starts where the first load
    // ended, even when a second load is in by the time the worker reads
    // the first one's notice.
    let mut third = Client::open(addr, "/join/s");
    util::wait_for("the first load of s", || {
        topics.restore("s", 7, 1, std::iter::empty())
    });
    assert!(topics.restore("s", 7, 2, [(1, Message::Text("x"))]));
    assert_eq!(third.expect_frame().payload, entry(1, "x"));
}
