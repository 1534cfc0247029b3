//! The rooms example, built and run as a user runs it, with tungstenite as
//! the client: a message reaches every member of its room and no one
//! else, across workers, and an upgrade without a room is refused.

mod util;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};

use tungstenite::{Message, WebSocket};
use util::{spawn_example, WATCHDOG};

type Ws = WebSocket<TcpStream>;

/// Joins `room` (the raw query value) over a socket whose reads time out
/// after the watchdog, so that a message that never comes fails the test.
fn join(addr: SocketAddr, room: &str) -> Ws {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    let url = format!("ws://{addr}/?room={room}");
    let (ws, response) = tungstenite::client(url, stream).expect("upgrade accepted");
    assert_eq!(response.status(), 101);
    ws
}

/// The next data message, skipping pings and pongs.
fn next(ws: &mut Ws) -> Message {
    loop {
        match ws.read().expect("a message before the watchdog") {
            Message::Ping(_) | Message::Pong(_) => continue,
            msg => return msg,
        }
    }
}

fn say(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).expect("send");
}

fn hears(ws: &mut Ws, text: &str) {
    assert_eq!(next(ws), Message::text(text));
}

#[test]
fn a_message_reaches_its_room_and_no_other() {
    // One worker makes the order of deliveries a promise, not a likelihood:
    // each message goes to all of the worker's members of its room in the
    // round of events that read it, before the next message is even sent.
    let (_server, _stdout, addr) = spawn_example("rooms", &["--workers", "1"]);
    let mut a1 = join(addr, "a");
    let mut a2 = join(addr, "a");
    let mut b1 = join(addr, "b");

    // The sender is a member too, so it hears its own message.
    say(&mut a1, "from a1");
    hears(&mut a1, "from a1");
    hears(&mut a2, "from a1");

    // Had b1 been given "from a1", it would be queued ahead of this.
    say(&mut b1, "from b1");
    hears(&mut b1, "from b1");

    // And had room a been given "from b1", a1 would read it before this.
    a2.send(Message::binary(vec![0, 1, 2])).unwrap();
    assert_eq!(next(&mut a1), Message::binary(vec![0, 1, 2]));
    assert_eq!(next(&mut a2), Message::binary(vec![0, 1, 2]));

    // A member that leaves takes its subscription with it; the room goes on.
    a2.close(None).unwrap();
    loop {
        match a2.read() {
            Ok(Message::Close(_)) => continue,
            Ok(other) => panic!("after close, {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close handshake failed: {e}"),
        }
    }
    say(&mut a1, "still here");
    hears(&mut a1, "still here");
}

#[test]
fn members_on_every_worker_hear_each_other() {
    const MEMBERS: usize = 8;
    let (_server, _stdout, addr) = spawn_example("rooms", &["--workers", "2"]);
    // The kernel spreads the connections over the two workers; whichever
    // way it does, every member must hear every line once.
    let mut members: Vec<Ws> = (0..MEMBERS).map(|_| join(addr, "x")).collect();
    for (i, ws) in members.iter_mut().enumerate() {
        say(ws, &format!("line {i}"));
    }
    let all: BTreeSet<String> = (0..MEMBERS).map(|i| format!("line {i}")).collect();
    for (i, ws) in members.iter_mut().enumerate() {
        let heard: BTreeSet<String> = (0..MEMBERS)
            .map(|_| next(ws).into_text().expect("text").to_string())
            .collect();
        assert_eq!(heard, all, "member {i}");
    }
}

#[test]
fn an_upgrade_without_a_room_is_refused_with_400() {
    let (_server, _stdout, addr) = spawn_example("rooms", &["--workers", "1"]);
    for query in ["", "?room=", "?name=ann"] {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        match tungstenite::client(format!("ws://{addr}/{query}"), stream) {
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                assert_eq!(response.status(), 400, "{query:?}");
            }
            Err(e) => panic!("{query:?}: {e}"),
            Ok(_) => panic!("{query:?}: upgraded without a room"),
        }
    }
}
