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
