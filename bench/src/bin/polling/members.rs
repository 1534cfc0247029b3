//! The load's members: each listens on its transport in a thread of its
//! own, and says its lines through a `Mouth` when its room's turn comes.

use std::io::BufReader;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use serde_json::Value;

use crate::wire::{http, sse_next, sse_open, ws_open, ws_read, ws_send, Counted};
use crate::{Tally, Transport};

/// Microseconds since the bench started: what a line carries.
pub fn now_us(origin: Instant) -> u64 {
    origin.elapsed().as_micros() as u64
}

/// Records a received chat message: a delivery, and its latency if it is
/// a timed line.
fn received(msg: &Value, origin: Instant, tally: &Tally) {
    if msg["kind"] != "say" || !tally.measuring.load(Relaxed) {
        return;
    }
    tally.deliveries.fetch_add(1, Relaxed);
    let sent = msg["text"]
        .as_str()
        .and_then(|t| t.rsplit("t=").next())
        .and_then(|t| t.parse::<u64>().ok());
    if let Some(sent) = sent {
        let us = now_us(origin).saturating_sub(sent).min(u32::MAX as u64) as u32;
        tally.latencies.lock().unwrap().push(us);
    }
}

/// A member's sending side: says lines, as scheduled by its room.
pub enum Mouth {
    Socket(Counted),
    Poster(BufReader<Counted>, String),
}

impl Mouth {
    pub fn say(&mut self, text: &str, tally: &Tally) -> bool {
        match self {
            Mouth::Socket(stream) => ws_send(stream, text).is_ok(),
            Mouth::Poster(conn, query) => {
                if tally.measuring.load(Relaxed) {
                    tally.requests.fetch_add(1, Relaxed);
                }
                matches!(
                    http(conn, "POST", &format!("/send?{query}"), text),
                    Some((204, _))
                )
            }
        }
    }
}

/// Opens a member: its listening thread runs until the run stops; the
/// returned mouth says its lines, and the stream is shut down at the end.
pub fn open_member(
    addr: SocketAddr,
    transport: Transport,
    (room, name, from): (&str, &str, IpAddr),
    tally: &Arc<Tally>,
    origin: Instant,
) -> (Mouth, Vec<TcpStream>, thread::JoinHandle<()>) {
    let tally = tally.clone();
    match transport {
        Transport::WebSocket => {
            let mut reader = ws_open(addr, from, room, name, &tally);
            let mouth = reader.get_ref().try_clone();
            let closer = reader.get_ref().stream.try_clone().expect("clone");
            let listener = thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    while let Some((opcode, payload)) = ws_read(&mut reader) {
                        if opcode == 0x1 {
                            if let Ok(msg) = serde_json::from_slice::<Value>(&payload) {
                                received(&msg, origin, &tally);
                            }
                        }
                    }
                })
                .expect("thread");
            (Mouth::Socket(mouth), vec![closer], listener)
        }
        Transport::Polling => {
            // The token a page makes once: a poll replaces only an
            // earlier poll that carries the same.
            let query = format!("room={room}&name={name}&client=bench-{name}-{room}");
            let mut polls = BufReader::new(Counted::connect(addr, from, &tally));
            let sends = BufReader::new(Counted::connect(addr, from, &tally));
            let closers = vec![
                polls.get_ref().stream.try_clone().expect("clone"),
                sends.get_ref().stream.try_clone().expect("clone"),
            ];
            let (status, body) = http(&mut polls, "GET", &format!("/poll?{query}&after=0"), "")
                .expect("a poller joins");
            assert_eq!(status, 200);
            let joined: Value = serde_json::from_slice(&body).expect("JSON");
            let mut cursor = joined["latest"].as_str().unwrap_or("0").to_owned();
            let poll_query = query.clone();
            let listener = thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    while !tally.stop.load(Relaxed) {
                        if tally.measuring.load(Relaxed) {
                            tally.requests.fetch_add(1, Relaxed);
                        }
                        let path = format!("/poll?{poll_query}&after={cursor}");
                        let Some((200, body)) = http(&mut polls, "GET", &path, "") else {
                            if !tally.stop.load(Relaxed) {
                                tally.failures.fetch_add(1, Relaxed);
                            }
                            return;
                        };
                        let Ok(answer) = serde_json::from_slice::<Value>(&body) else {
                            return;
                        };
                        for msg in answer["messages"].as_array().into_iter().flatten() {
                            received(msg, origin, &tally);
                        }
                        if let Some(latest) = answer["latest"].as_str() {
                            cursor = latest.to_owned();
                        }
                    }
                })
                .expect("thread");
            (Mouth::Poster(sends, query), closers, listener)
        }
        Transport::Sse => {
            // The stream's own token (`sse_open`), so that its lines come
            // from the member the room has.
            let query = format!("room={room}&name={name}&client=bench-{name}-{room}");
            let mut events = sse_open(addr, from, room, name, &tally);
            let sends = BufReader::new(Counted::connect(addr, from, &tally));
            let closers = vec![
                events.get_ref().stream.try_clone().expect("clone"),
                sends.get_ref().stream.try_clone().expect("clone"),
            ];
            let listener = thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    while let Some(data) = sse_next(&mut events) {
                        if let Ok(msg) = serde_json::from_str::<Value>(&data) {
                            received(&msg, origin, &tally);
                        }
                    }
                    if !tally.stop.load(Relaxed) {
                        tally.failures.fetch_add(1, Relaxed);
                    }
                })
                .expect("thread");
            (Mouth::Poster(sends, query), closers, listener)
        }
    }
}
