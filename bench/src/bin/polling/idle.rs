//! Memory per idle member. A member that says nothing still costs the
//! server what it keeps between messages: a WebSocket's session, an event
//! stream's open answer, a poller's held request. For each transport the
//! bench starts a fresh chat, warms it with one room of members (so that
//! what the chat sets up once is not charged to the members), reads its
//! resident memory (VmRSS), opens `--idle` members in rooms of
//! `--room-size` that then stay silent, and reads it again.
//!
//! The figure is the whole member, not the bare connection: its place in
//! the chat's presence and its share of its room's topic and history
//! (the joins) come with it, alike for every transport.
//!
//! The members read nothing after they are in. What the chat writes them
//! then (their room's later joins, heartbeats) waits in the kernel's
//! socket buffers, which VmRSS does not count. A poller joins with
//! `after=0`, and once its whole room has joined it leaves one poll held
//! with the room's latest id, which nothing comes after.

use std::io::BufReader;
use std::net::TcpStream;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wsloop_bench::status_kib;

use crate::wire::{http, request, sse_open, ws_open, Counted};
use crate::{address_of, Chat, Tally, Transport};

/// One transport's idle members and the chat's memory around them.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    pub members: usize,
    pub before_kib: u64,
    pub after_kib: u64,
}

impl Idle {
    /// What the chat's resident memory grew by, per member.
    pub fn bytes_per_member(&self) -> f64 {
        self.after_kib.saturating_sub(self.before_kib) as f64 * 1024.0 / self.members as f64
    }
}

/// Opens `members` idle members of `transport` on a fresh chat, and reads
/// its memory before and after.
pub fn measure(transport: Transport, members: usize, room_size: usize) -> Idle {
    // Long enough that nothing ends while the members are counted: a held
    // poll is answered at its hold, and a WebSocket that answers no ping
    // is closed a ping interval and a pong timeout after it opened.
    let chat = Chat::start(
        Duration::from_secs(1),
        &["--poll-hold", "600", "--ping-interval", "600"],
    );
    let tally = Arc::new(Tally::default());
    let warm = open_room(&chat, transport, "warm", 0..room_size, &tally);
    settle();
    let before_kib = status_kib(chat.pid(), "VmRSS:");
    let mut idle = Vec::with_capacity(members);
    for (r, first) in (0..members).step_by(room_size).enumerate() {
        let ids = first..(first + room_size).min(members);
        idle.extend(open_room(
            &chat,
            transport,
            &format!("idle{r}"),
            ids,
            &tally,
        ));
    }
    settle();
    let after_kib = status_kib(chat.pid(), "VmRSS:");
    if transport == Transport::Polling {
        let answered = idle.iter().filter(|conn| has_input(conn)).count();
        if answered > 0 {
            eprintln!("polling: {answered} of {members} idle polls were answered, not held");
        }
    }
    drop((warm, idle));
    Idle {
        members,
        before_kib,
        after_kib,
    }
}

/// Opens the members `ids` of `room`, each from its own address, and
/// leaves their connections open.
fn open_room(
    chat: &Chat,
    transport: Transport,
    room: &str,
    ids: Range<usize>,
    tally: &Arc<Tally>,
) -> Vec<TcpStream> {
    let name = |i: usize| format!("m{i}");
    match transport {
        Transport::WebSocket => ids
            .map(|i| ws_open(chat.addr, address_of(i), room, &name(i), tally))
            .map(|conn| conn.into_inner().stream)
            .collect(),
        Transport::Sse => ids
            .map(|i| sse_open(chat.addr, address_of(i), room, &name(i), tally))
            .map(|conn| conn.into_inner().stream)
            .collect(),
        Transport::Polling => {
            // Each joins, and is answered at once...
            let mut latest = String::new();
            let mut joined = Vec::new();
            for i in ids {
                let name = name(i);
                let query = format!("room={room}&name={name}&client=bench-{name}-{room}");
                let mut conn = BufReader::new(Counted::connect(chat.addr, address_of(i), tally));
                let (status, body) = http(&mut conn, "GET", &format!("/poll?{query}&after=0"), "")
                    .expect("a poller joins");
                assert_eq!(status, 200);
                let answer: Value = serde_json::from_slice(&body).expect("JSON");
                latest = answer["latest"].as_str().expect("a latest id").to_owned();
                joined.push((conn, query));
            }
            // ...then asks for what comes after the room's last join.
            joined
                .into_iter()
                .map(|(mut conn, query)| {
                    request(
                        &mut conn,
                        "GET",
                        &format!("/poll?{query}&after={latest}"),
                        "",
                    )
                    .expect("a held poll");
                    conn.into_inner().stream
                })
                .collect()
        }
    }
}

/// Whether the chat has written anything on `conn` that was not read.
fn has_input(conn: &TcpStream) -> bool {
    conn.set_nonblocking(true).expect("nonblocking");
    conn.peek(&mut [0]).is_ok_and(|n| n > 0)
}

/// Time for the chat to finish what the last member set off.
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}
