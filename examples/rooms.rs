//! Chat rooms in one screen of code: the step between `echo` and `chat`.
//!
//! ```text
//! cargo run --release --example rooms
//! ```
//!
//! A client joins a room by the query of its upgrade request,
//! `ws://127.0.0.1:9003/?room=lobby`, and every message it sends goes to
//! every member of that room, itself included, whichever worker thread
//! each member landed on. An upgrade without a room is refused with 400.
//!
//! What it adds to `echo`, one idea at a time:
//!
//! - `on_upgrade` reads the request and decides: accept, with the data
//!   this connection carries from now on (`Room`), or reject with an HTTP
//!   response.
//! - `Handler::Data` rides with the connection: every later callback gets
//!   the room back through `conn.data()`, so the handler keeps no table of
//!   connections.
//! - Topics: `subscribe` in `on_open`, `publish` in `on_message`. The
//!   frame is encoded once and goes to every subscriber on every worker.
//!   Subscriptions end with the connection, so there is no `on_close`.
//! - A publish can be refused when a worker is too far behind; the sender
//!   is told with close 1013 (try again later) rather than losing the
//!   message silently.
//!
//! What `chat` adds on top: a browser page, names, history and resume,
//! long polling, who is here, Origin checks and rate limits.
//!
//! Try it from a browser's console on any page:
//!
//! ```text
//! let ws = new WebSocket("ws://127.0.0.1:9003/?room=lobby");
//! ws.onmessage = (e) => console.log(e.data);
//! ws.onopen = () => ws.send("hello");
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use wsloop::{
    CloseCode, Config, Conn, Handler, Message, PublishStatus, Request, Response, Upgrade,
};

mod common;

/// The longest room name accepted, in bytes: a room is a topic, and topic
/// names are kept in memory while they have subscribers.
const MAX_ROOM: usize = 64;

/// What each connection carries: the room it joined, decided at the upgrade.
#[derive(Debug, Default)]
struct Room(String);

/// One per worker thread. It holds nothing: all it needs comes with each
/// connection (`Room`) or lives in wsloop's topics.
struct Rooms;

impl Handler for Rooms {
    type Data = Room;

    fn on_upgrade(&mut self, req: &Request<'_>, _peer: SocketAddr) -> Upgrade<Room> {
        // `query` returns the value as sent, percent-escapes and all: a room
        // name is only ever compared, never shown, so that does no harm.
        match req.query("room") {
            Some(room) if !room.is_empty() && room.len() <= MAX_ROOM => {
                Upgrade::accept(Room(room.to_owned()))
            }
            // Nothing is upgraded: the client gets this response and the
            // connection closes after it.
            _ => Upgrade::reject(Response::status(400)),
        }
    }

    fn on_open(&mut self, conn: &mut Conn<'_, Room>) {
        // The room is cloned because `subscribe` borrows `conn` mutably
        // while `data()` borrows it too.
        let room = conn.data().0.clone();
        conn.subscribe(&room);
    }

    fn on_message(&mut self, conn: &mut Conn<'_, Room>, msg: Message<'_>) {
        // The message borrows the worker's read buffer; `publish` encodes it
        // once, then every member's connection queues the same bytes. This
        // worker's members get it when the current round of events ends,
        // the others' through their worker's inbox. `publish_data` names
        // the topic from the connection's data with no clone.
        if conn.publish_data(|room| &room.0, msg) == PublishStatus::Refused {
            conn.close(CloseCode::TRY_AGAIN_LATER, "server busy");
        }
    }
}

fn main() -> ExitCode {
    let args = match common::Args::parse("127.0.0.1:9003") {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let config = args.config(Config::default());
    // The closure runs once per worker thread, so each worker has its own
    // `Rooms`, called from that thread only: it needs no lock.
    common::serve("rooms", "listening on ws://", &args, config, || Rooms)
}
