//! A chat server: rooms across all worker threads, a browser page, message
//! history, and long polling for clients whose WebSocket cannot open.
//!
//! ```text
//! cargo run --release --example chat
//! ```
//! then open <http://127.0.0.1:8080/>. `--help` lists the flags ([`USAGE`]).
//! Built with `--features deflate`, `--deflate` compresses for every
//! browser, which offers permessage-deflate by itself:
//! `cargo run --release --features deflate --example chat -- --deflate`.
//!
//! How it works: every room is a topic with history. Each message is a
//! small JSON object, numbered by wsloop when it is published and wrapped
//! with its id (`{"id":"5f3a09c1-57","kind":"say",...}`), then written to
//! every member on every worker in one order. The same numbers serve two
//! ways of listening:
//!
//! - `GET /ws?room=R&name=N[&after=ID]`, a WebSocket. With `after`, the
//!   room's messages since ID are sent first, or a reset notice and the
//!   room's recent messages when ID is too old.
//! - `GET /poll?room=R&name=N&client=T&after=ID`, a long poll: answered at
//!   once with what came after ID, or held until the room's next message
//!   or 25 s. `after=0` joins: the answer carries the latest id and who is
//!   here. `POST /send?room=R&name=N&client=T` with the line as its body
//!   says something. The cursor lives in the client, so any server process
//!   can answer any poll. `T` is a token the page makes once, 8 to 64 of
//!   `A-Z a-z 0-9 _ -`: a poll replaces (and answers with 409) only an
//!   earlier poll from the same address with the same room, name and
//!   token, so that nobody behind the same address can take a poller's
//!   place by using its name.
//!
//! Presence: a WebSocket member is here while connected; a poller while
//! it keeps polling, and is announced as gone after `--poll-grace` of
//! silence beyond a poll's longest hold.
//!
//! What a stranger can make it do, and the bounds on it:
//!
//! - A page from another site is refused with 403 on `/ws`, `/send` and
//!   `/poll` alike (one rule, [`same_origin`]), so that it cannot chat in
//!   a visitor's name from the visitor's browser and address.
//! - Presence is kept per room, and bounded: polling names per client
//!   address (64), members per room (1,000) and in all (100,000). A poll
//!   or a line that would pass a bound gets 429 with `Retry-After` and is
//!   not published; an upgrade into a full room gets 429 too. Each bound
//!   is a flag.
//! - Rooms and names lose Unicode format characters (invisible ones, and
//!   bidi overrides that would reorder the page's text) and surrounding
//!   white space; one with nothing left is refused with 400.
//! - A client may send 20 lines a second, 200 at once (`--rate`): a
//!   WebSocket past it is closed by wsloop with 1008, a poller's line gets
//!   429.
//! - A line that a worker too far behind cannot take is refused rather
//!   than lost: the WebSocket is closed with 1013, `POST /send` answers 503.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;
use wsloop::{
    Broadcaster, CloseCode, Config, Conn, Handler, HistoryConfig, Hold, Limits, Message, MessageId,
    Pending, PublishStatus, Publisher, RateLimit, Reply, Request, Response, Upgrade, Wake,
};
use wsloop_redis::{BridgeConfig, RedisBridge};

mod common;

/// The page, embedded in the binary.
const PAGE: &str = include_str!("chat.html");
/// Longest room name, in characters.
const MAX_ROOM: usize = 32;
/// Longest nickname, in characters.
const MAX_NAME: usize = 24;
/// Longest chat line, in bytes; longer messages close the connection (1009)
/// or get 413 from `POST /send`.
const MAX_LINE: usize = 2000;
/// Lengths a poller's `client=` token may have.
const CLIENT_TOKEN: std::ops::RangeInclusive<usize> = 8..=64;

/// Default of `--rate`: lines a second from one client. A person typing
/// never comes near it; a script that floods passes it in seconds.
const RATE: u32 = 20;
/// Bytes a second from one WebSocket, frame headers included: 20 lines of
/// the longest, and more.
const RATE_BYTES: u32 = 64 * 1024;
/// How far ahead of the rate a client may get: 10 s of it (200 lines at
/// the default), for a pasted text sent line by line.
const RATE_BURST: Duration = Duration::from_secs(10);

/// The chat's own flags, printed after the common ones.
const USAGE: &str = "\
chat flags:
  --any-origin                skip the Origin check on /ws, /send and /poll
  --refuse-upgrades           answer every WebSocket upgrade with 403, to show the page's fallback
  --trusted-proxy IP          believe the client address this proxy forwards (repeatable)
  --redis URL                 rooms span every chat started with the same redis://HOST:PORT/
  --history N                 messages kept per room (default 100)
  --poll-hold SECS            longest a poll waits (default 25)
  --poll-grace SECS           silence past a poll's hold before a poller is gone (default 10)
  --rate MSGS_PER_SEC         lines (pings too) a client may send a second, 10 s of them at once;
                              a WebSocket past it, or past 64 KiB/s, is closed with 1008, a
                              poller's line gets 429 (default 20; 0 turns the limit off)
  --max-names-per-address N   polling names one client address may hold (default 64)
  --max-room-members N        members of one room, WebSocket and polling (default 1000)
  --max-members N             members of all rooms (default 100000)
A poll, a line or an upgrade that would pass one of the last three gets 429.";

/// Who a connection or a held poll is: decided once, from the request, and
/// handed back by wsloop in every callback as its data.
#[derive(Debug, Default)]
struct Member {
    room: String,
    name: String,
    /// For a WebSocket: the last message id the client had, if it resumes.
    after: Option<MessageId>,
    /// For a poll: the client and the number of its poll, to tell whether
    /// a newer poll replaced this one.
    poll: Option<(Poller, u64)>,
}

impl Member {
    /// The poller this member is when it polls from `peer` with `client`.
    fn poller(&self, peer: SocketAddr, client: &str) -> Poller {
        Poller {
            addr: peer.ip(),
            client: client.to_owned(),
            name: self.name.clone(),
        }
    }
}

/// A polling client, within its room: its address, the token its page
/// made, and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Poller {
    addr: IpAddr,
    client: String,
    name: String,
}

/// Bounds on presence. A poller keeps its place until it has been silent
/// for a poll's hold and the grace, so that without them one address could
/// fill memory, and the list of who is here, with made-up names.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// Polling names one client address may hold (`--max-names-per-address`,
    /// default 64): a household or an office behind one NAT has room, a
    /// script does not. WebSocket members do not count: each holds a
    /// connection, which wsloop bounds.
    per_address: usize,
    /// Members of one room, WebSocket and polling (`--max-room-members`,
    /// default 1,000). Every newcomer gets the list of who is here.
    per_room: usize,
    /// Members of all rooms (`--max-members`, default 100,000).
    overall: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            per_address: 64,
            per_room: 1_000,
            overall: 100_000,
        }
    }
}

/// Why a client is turned away with 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Its address holds `Bounds::per_address` polling names.
    Address,
    /// The room has `Bounds::per_room` members.
    Room,
    /// The chat has `Bounds::overall` members.
    Everyone,
    /// Its lines come faster than `--rate`.
    Rate,
}

impl Refused {
    /// 429, saying why and when to try again: places are held by pollers
    /// that may have gone, each dropped after `silence`; the rate lets a
    /// line through within a second.
    fn response(self, silence: Duration) -> Response {
        let (why, wait) = match self {
            Refused::Address => ("too many names from this address", silence),
            Refused::Room => ("this room is full", silence),
            Refused::Everyone => ("the chat is full", silence),
            Refused::Rate => ("too many lines: slow down", Duration::from_secs(1)),
        };
        let secs = wait.as_secs_f64().ceil().max(1.0);
        let mut response = Response::status(429).with_header("Retry-After", &secs.to_string());
        response.body = format!("{why}\n").into_bytes();
        response
    }
}

/// When a poller was last seen, told apart from others seen at the same
/// instant by a serial number.
type Stamp = (Instant, u64);

/// Who is in which room, for every worker: WebSocket members while they are
/// connected, pollers while they keep polling. Kept per room, so that a
/// join reads one room's members; within [`Bounds`]; and with the pollers
/// in the order they were last seen, so that a sweep reads only those it
/// drops.
#[derive(Debug)]
struct Presence {
    bounds: Bounds,
    rooms: HashMap<String, Room>,
    /// Polling names per client address.
    per_address: HashMap<IpAddr, usize>,
    /// Members of all rooms.
    members: usize,
    silence: Silence,
}

/// One room's members.
#[derive(Debug, Default)]
struct Room {
    /// Names of the WebSocket members, one per connection.
    sockets: Vec<String>,
    pollers: HashMap<Poller, Seen>,
}

impl Room {
    fn len(&self) -> usize {
        self.sockets.len() + self.pollers.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What presence keeps of a poller.
#[derive(Debug)]
struct Seen {
    /// Its last sign of life: its key in [`Silence`].
    stamp: Stamp,
    /// Its latest poll, by the serial number of the stamp it made: unique,
    /// so that no poll from before the poller was dropped and came back
    /// passes for it.
    latest_poll: u64,
    /// Its lines against `--rate`.
    lines: Bucket,
}

/// Every poller by its last sign of life, oldest first.
#[derive(Debug, Default)]
struct Silence {
    order: BTreeMap<Stamp, (String, Poller)>,
    serial: u64,
}

impl Silence {
    fn stamp(&mut self, now: Instant) -> Stamp {
        self.serial += 1;
        (now, self.serial)
    }

    /// Adds a poller seen at `now`; returns its stamp.
    fn add(&mut self, now: Instant, room: &str, who: &Poller) -> Stamp {
        let stamp = self.stamp(now);
        self.order.insert(stamp, (room.to_owned(), who.clone()));
        stamp
    }

    /// Moves a poller seen again at `now` to the back; returns its stamp.
    fn renew(&mut self, stamp: Stamp, now: Instant) -> Stamp {
        let renewed = self.stamp(now);
        if let Some(who) = self.order.remove(&stamp) {
            self.order.insert(renewed, who);
        }
        renewed
    }

    /// Takes the oldest poller if it was last seen before `cutoff`.
    fn pop_before(&mut self, cutoff: Instant) -> Option<(String, Poller)> {
        let oldest = self.order.first_entry()?;
        (oldest.key().0 < cutoff).then(|| oldest.remove())
    }
}

impl Presence {
    fn new(bounds: Bounds) -> Self {
        Presence {
            bounds,
            rooms: HashMap::new(),
            per_address: HashMap::new(),
            members: 0,
            silence: Silence::default(),
        }
    }

    /// Everyone in `room`, a name once per connection or poller.
    fn names(&self, room: &str) -> Vec<String> {
        let Some(room) = self.rooms.get(room) else {
            return Vec::new();
        };
        let pollers = room.pollers.keys().map(|p| p.name.clone());
        room.sockets.iter().cloned().chain(pollers).collect()
    }

    /// Whether `room` has a place for one more member.
    fn has_place(&self, room: &str) -> Result<(), Refused> {
        if self.members >= self.bounds.overall {
            return Err(Refused::Everyone);
        }
        if self.rooms.get(room).map_or(0, Room::len) >= self.bounds.per_room {
            return Err(Refused::Room);
        }
        Ok(())
    }

    /// A WebSocket member joined, after [`Presence::has_place`] let its
    /// upgrade through.
    fn socket_joined(&mut self, room: &str, name: &str) {
        self.members += 1;
        let members = self.rooms.entry(room.to_owned()).or_default();
        members.sockets.push(name.to_owned());
    }

    fn socket_left(&mut self, room: &str, name: &str) {
        let Some(members) = self.rooms.get_mut(room) else {
            return;
        };
        if let Some(at) = members.sockets.iter().position(|n| n == name) {
            members.sockets.swap_remove(at);
            self.members -= 1;
        }
        if members.is_empty() {
            self.rooms.remove(room);
        }
    }

    /// A poll from `who` at `now`: the poll's number, and whether `who` is
    /// new here (announce it).
    fn poll(&mut self, room: &str, who: &Poller, now: Instant) -> Result<(u64, bool), Refused> {
        let (seen, new) = self.seen(room, who, now)?;
        seen.latest_poll = seen.stamp.1;
        Ok((seen.latest_poll, new))
    }

    /// A line from `who` at `now`, against `rate` if there is one: whether
    /// `who` is new here.
    fn line(
        &mut self,
        room: &str,
        who: &Poller,
        now: Instant,
        rate: Option<&RateLimit>,
    ) -> Result<bool, Refused> {
        let (seen, new) = self.seen(room, who, now)?;
        match rate {
            Some(rate) if !seen.lines.take(now, rate) => Err(Refused::Rate),
            _ => Ok(new),
        }
    }

    /// Poll number `number` from `who` is being answered: false if a newer
    /// poll from the same client replaced it. A poller still here showed
    /// life; one dropped meanwhile is not brought back unannounced.
    fn answering(&mut self, room: &str, who: &Poller, number: u64, now: Instant) -> bool {
        let seen = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.pollers.get_mut(who));
        let Some(seen) = seen else {
            return true;
        };
        if seen.latest_poll != number {
            return false;
        }
        seen.stamp = self.silence.renew(seen.stamp, now);
        true
    }

    /// `who` showed life at `now`: its entry, and whether it is new here.
    /// A new poller takes a place within the bounds, or is refused.
    fn seen(
        &mut self,
        room: &str,
        who: &Poller,
        now: Instant,
    ) -> Result<(&mut Seen, bool), Refused> {
        let known = self
            .rooms
            .get(room)
            .is_some_and(|r| r.pollers.contains_key(who));
        if !known {
            self.has_place(room)?;
            let held = self.per_address.get(&who.addr).copied().unwrap_or(0);
            if held >= self.bounds.per_address {
                return Err(Refused::Address);
            }
            self.per_address.insert(who.addr, held + 1);
            self.members += 1;
            let seen = Seen {
                stamp: self.silence.add(now, room, who),
                latest_poll: 0,
                lines: Bucket::new(now),
            };
            let members = self.rooms.entry(room.to_owned()).or_default();
            return Ok((members.pollers.entry(who.clone()).or_insert(seen), true));
        }
        let seen = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.pollers.get_mut(who))
            .expect("a known poller is in its room");
        seen.stamp = self.silence.renew(seen.stamp, now);
        Ok((seen, false))
    }

    /// Drops the pollers last seen before `cutoff`, and only those; returns
    /// their rooms and names.
    fn expire(&mut self, cutoff: Instant) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        while let Some((room, who)) = self.silence.pop_before(cutoff) {
            let Some(members) = self.rooms.get_mut(&room) else {
                continue;
            };
            if members.pollers.remove(&who).is_none() {
                continue;
            }
            shrink(&mut members.pollers);
            if members.is_empty() {
                self.rooms.remove(&room);
            }
            self.members -= 1;
            if let Some(held) = self.per_address.get_mut(&who.addr) {
                *held -= 1;
                if *held == 0 {
                    self.per_address.remove(&who.addr);
                }
            }
            gone.push((room, who.name));
        }
        if !gone.is_empty() {
            shrink(&mut self.rooms);
            shrink(&mut self.per_address);
        }
        gone
    }
}

/// Gives memory back once a map holds under a quarter of what it has room
/// for: a flood of names that has expired leaves no large tables behind.
fn shrink<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}

/// A poller's lines against `--rate`, counted as wsloop counts a
/// WebSocket's messages: a token bucket kept as its debt, how far the
/// client is ahead of the steady rate. Time pays the debt off. A line that
/// would take it past the burst is refused, and costs nothing.
#[derive(Debug)]
struct Bucket {
    at: Instant,
    debt: Duration,
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Bucket {
            at: now,
            debt: Duration::ZERO,
        }
    }

    /// Counts one line at `now`; false, counting nothing, past the burst.
    fn take(&mut self, now: Instant, rate: &RateLimit) -> bool {
        let debt = self
            .debt
            .saturating_sub(now.saturating_duration_since(self.at));
        self.at = self.at.max(now);
        let owed = debt + Duration::from_secs(1) / rate.messages_per_sec.max(1);
        let fits = owed <= rate.burst;
        self.debt = if fits { owed } else { debt };
        fits
    }
}

/// Settings every worker's handler shares.
#[derive(Debug, Clone)]
struct Settings {
    check_origin: bool,
    refuse_upgrades: bool,
    poll_hold: Duration,
    /// How long a poller keeps its place after its last sign of life: a
    /// poll's longest hold and the grace.
    silence: Duration,
    /// `--rate`: wsloop applies it to WebSockets, the chat to pollers' lines.
    rate: Option<RateLimit>,
}

/// One per worker. It keeps no table of connections: each one carries its
/// own `Member`. Presence is shared by all workers.
struct Chat {
    settings: Settings,
    presence: Arc<Mutex<Presence>>,
}

impl Chat {
    fn presence(&self) -> MutexGuard<'_, Presence> {
        lock(&self.presence)
    }

    /// Whether the request comes from a page of another site. Browsers
    /// send Origin with every WebSocket upgrade and every cross-site fetch
    /// or form post; refusing those keeps other sites from chatting in a
    /// visitor's name from the visitor's browser. One rule for upgrades,
    /// sends and polls.
    fn foreign(&self, req: &Request<'_>) -> bool {
        self.settings.check_origin && !same_origin(req)
    }

    /// `POST /send`: the body is the line.
    fn send(&self, req: &Request<'_>, peer: SocketAddr, topics: &mut Publisher<'_>) -> Response {
        let (Some(member), Some(client)) = (member_of(req.path), client_of(req)) else {
            return Response::status(400);
        };
        let line = match std::str::from_utf8(req.body()) {
            Ok(line) if !line.trim().is_empty() => line.trim_end(),
            _ => return Response::status(400),
        };
        let who = member.poller(peer, client);
        let rate = self.settings.rate.as_ref();
        let heard = self
            .presence()
            .line(&member.room, &who, Instant::now(), rate);
        let new = match heard {
            Ok(new) => new,
            Err(refused) => return refused.response(self.settings.silence),
        };
        if new {
            let _ = topics.publish(&member.room, event("join", &member.name, "poll").as_text());
        }
        let said = say(&member.name, line);
        if topics.publish(&member.room, said.as_text()) == PublishStatus::Refused {
            return Response::status(503).with_header("Retry-After", "1");
        }
        Response::status(204).with_header("Cache-Control", "no-store")
    }

    /// `GET /poll`: held until the room has something after the cursor.
    fn poll(
        &self,
        req: &Request<'_>,
        peer: SocketAddr,
        topics: &mut Publisher<'_>,
    ) -> Reply<Member> {
        let (Some(member), Some(client), Some(after)) =
            (member_of(req.path), client_of(req), After::of(req))
        else {
            return Response::status(400).into();
        };
        if after == After::Absent {
            return Response::status(400).into();
        }
        let who = member.poller(peer, client);
        // A joining poller's cursor, read before its join is published;
        // a poll with a cursor of its own needs none.
        let before = match after {
            After::Now => topics.history(&member.room, None).latest,
            After::Id(_) | After::Absent => None,
        };
        let polled = self.presence().poll(&member.room, &who, Instant::now());
        let (number, new) = match polled {
            Ok(polled) => polled,
            Err(refused) => return refused.response(self.settings.silence).into(),
        };
        if new {
            let _ = topics.publish(&member.room, event("join", &member.name, "poll").as_text());
        }
        // A new poller's join is answered from before its join message, so
        // that it hears it, as a WebSocket member does; a poller that
        // joins again is answered at once (no cursor).
        let cursor = match after {
            After::Id(id) => Some(id),
            After::Now if new => before,
            After::Now | After::Absent => None,
        };
        Reply::Hold(Hold {
            topic: member.room.clone(),
            after: cursor,
            timeout: self.settings.poll_hold,
            data: Member {
                after: after.id(),
                poll: Some((who, number)),
                ..member
            },
        })
    }
}

impl Handler for Chat {
    type Data = Member;

    fn on_http(
        &mut self,
        req: &Request<'_>,
        peer: SocketAddr,
        topics: &mut Publisher<'_>,
    ) -> Reply<Member> {
        match (req.method, req.path_only()) {
            // HEAD gets the same headers without the body; wsloop drops it.
            ("GET" | "HEAD", "/") => Response::ok("text/html; charset=utf-8", PAGE).into(),
            (_, "/") => Response::status(405)
                .with_header("Allow", "GET, HEAD")
                .into(),
            ("POST", "/send") | ("GET", "/poll") if self.foreign(req) => {
                Response::status(403).into()
            }
            ("POST", "/send") => self.send(req, peer, topics).into(),
            (_, "/send") => Response::status(405).with_header("Allow", "POST").into(),
            ("GET", "/poll") => self.poll(req, peer, topics),
            (_, "/poll") => Response::status(405).with_header("Allow", "GET").into(),
            _ => Response::status(404).into(),
        }
    }

    fn on_wake(&mut self, req: &mut Pending<'_, Member>, wake: Wake) -> Response {
        let Member {
            room, poll, after, ..
        } = req.data();
        let Some((who, number)) = poll else {
            return Response::status(500);
        };
        let catchup = &wake.catchup;
        let (latest, here) = {
            let mut presence = self.presence();
            let latest = presence.answering(room, who, *number, Instant::now());
            // Who is here goes with a join (no cursor) and a reset.
            let here = (latest && (after.is_none() || catchup.reset)).then(|| presence.names(room));
            (latest, here)
        };
        // A newer poll from the same client replaced this one: it gets the
        // messages, this one nothing.
        if !latest {
            return json_response(409, &json!({ "replaced": true }));
        }
        let messages: Vec<serde_json::Value> = catchup
            .entries
            .iter()
            .filter_map(|e| serde_json::from_slice(e.message().as_bytes()).ok())
            .collect();
        let mut body = json!({
            "latest": catchup.latest.map(|id| id.to_string()),
            "reset": catchup.reset,
            "messages": messages,
        });
        if let Some(here) = here {
            body["here"] = json!(here);
        }
        json_response(200, &body)
    }

    fn on_upgrade(&mut self, req: &Request<'_>, peer: SocketAddr) -> Upgrade<Member> {
        if req.path_only() != "/ws" {
            return Upgrade::reject(Response::status(404));
        }
        if self.settings.refuse_upgrades || self.foreign(req) {
            return Upgrade::reject(Response::status(403));
        }
        let (Some(member), Some(after)) = (member_of(req.path), After::of(req)) else {
            return Upgrade::reject(Response::status(400));
        };
        // The member takes its place in on_open, which follows at once on
        // this worker: the bounds can be passed by one member per other
        // worker at most.
        let place = self.presence().has_place(&member.room);
        if let Err(refused) = place {
            return Upgrade::reject(refused.response(self.settings.silence));
        }
        println!("chat: {} joined {} from {peer}", member.name, member.room);
        Upgrade::accept(Member {
            after: after.id(),
            ..member
        })
    }

    fn on_open(&mut self, conn: &mut Conn<'_, Member>) {
        let Member {
            room, name, after, ..
        } = conn.data();
        let (room, name, after) = (room.clone(), name.clone(), *after);
        // Resume: what the client missed, then everything new, each once.
        let catchup = conn.history(&room, after);
        if catchup.reset {
            let latest = catchup.latest.map(|id| id.to_string());
            send_json(conn, &json!({ "kind": "reset", "latest": latest }));
        }
        for entry in &catchup.entries {
            let _ = conn.send(entry.message());
        }
        conn.subscribe_after(&room, catchup.latest);
        let here = {
            let mut presence = self.presence();
            let here = presence.names(&room);
            presence.socket_joined(&room, &name);
            here
        };
        send_json(conn, &json!({ "kind": "here", "names": here }));
        let _ = conn.publish(&room, event("join", &name, "ws").as_text());
    }

    fn on_message(&mut self, conn: &mut Conn<'_, Member>, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            return conn.close(CloseCode::UNSUPPORTED_DATA, "text only");
        };
        // As POST /send does, a blank line says nothing.
        if text.trim().is_empty() {
            return;
        }
        let Member { room, name, .. } = conn.data();
        let (room, said) = (room.clone(), say(name, text.trim_end()));
        // The room is too far behind to take it: say so, rather than
        // leave a line unsaid that its sender saw go.
        if conn.publish(&room, said.as_text()) == PublishStatus::Refused {
            conn.close(CloseCode::TRY_AGAIN_LATER, "server busy");
        }
    }

    fn on_close(&mut self, conn: &mut Conn<'_, Member>, _code: CloseCode, _reason: &str) {
        let Member { room, name, .. } = conn.data();
        let (room, name) = (room.clone(), name.clone());
        self.presence().socket_left(&room, &name);
        let _ = conn.publish(&room, event("leave", &name, "ws").as_text());
    }
}

fn lock(presence: &Mutex<Presence>) -> MutexGuard<'_, Presence> {
    presence.lock().unwrap_or_else(|e| e.into_inner())
}

/// A JSON text ready to publish.
struct Json(String);

impl Json {
    fn as_text(&self) -> Message<'_> {
        Message::Text(&self.0)
    }
}

/// A chat line, as published: `{"kind":"say","name":..,"text":"name: line"}`.
fn say(name: &str, line: &str) -> Json {
    let text = format!("{name}: {line}");
    Json(json!({ "kind": "say", "name": name, "text": text }).to_string())
}

/// A join or leave notice, with how the member listens.
fn event(kind: &str, name: &str, via: &str) -> Json {
    let verb = if kind == "join" { "joined" } else { "left" };
    let text = format!("* {name} {verb}");
    Json(json!({ "kind": kind, "name": name, "via": via, "text": text }).to_string())
}

fn send_json(conn: &mut Conn<'_, Member>, value: &serde_json::Value) {
    let _ = conn.send_text(&value.to_string());
}

fn json_response(status: u16, value: &serde_json::Value) -> Response {
    let mut response = Response::ok("application/json", value.to_string())
        .with_header("Cache-Control", "no-store");
    response.status = status;
    response
}

/// The history envelope: the message's JSON object with its id first.
/// Every chat message is a JSON object, so it starts with `{`.
fn envelope(id: MessageId, msg: Message<'_>, out: &mut Vec<u8>) {
    let rest = msg.as_bytes().strip_prefix(b"{").unwrap_or(b"}");
    out.extend_from_slice(format!("{{\"id\":\"{id}\"").as_bytes());
    if rest != b"}" {
        out.push(b',');
    }
    out.extend_from_slice(rest);
}

/// What a request's `after=` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// No `after`.
    Absent,
    /// `after=0`: the client has no message yet and starts from now.
    Now,
    /// The last message the client has.
    Id(MessageId),
}

impl After {
    /// `after` from the query; `None` when it is garbled.
    fn of(req: &Request<'_>) -> Option<After> {
        match req.query("after") {
            None => Some(After::Absent),
            Some("0") => Some(After::Now),
            Some(id) => id.parse().ok().map(After::Id),
        }
    }

    fn id(self) -> Option<MessageId> {
        match self {
            After::Id(id) => Some(id),
            After::Absent | After::Now => None,
        }
    }
}

/// Room and name from a query such as `/ws?room=R&name=N`, decoded and
/// made [`visible`].
fn member_of(path: &str) -> Option<Member> {
    let query = path.split_once('?')?.1;
    let mut room = None;
    let mut name = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=')?;
        match key {
            "room" => room = Some(percent_decode(value)?),
            "name" => name = Some(percent_decode(value)?),
            _ => {}
        }
    }
    Some(Member {
        room: visible(&room?, MAX_ROOM)?,
        name: visible(&name?, MAX_NAME)?,
        ..Member::default()
    })
}

/// A room or a name as others see it: without format characters, which
/// show nothing or, as bidi overrides, reorder the page's text after
/// them, and without white space around it. `None` if nothing is left, if
/// more than `max` characters are, or if it holds a control character.
fn visible(raw: &str, max: usize) -> Option<String> {
    if raw.chars().any(char::is_control) {
        return None;
    }
    let kept: String = raw.chars().filter(|&c| !is_format(c)).collect();
    let kept = kept.trim();
    (!kept.is_empty() && kept.chars().count() <= max).then(|| kept.to_owned())
}

/// Unicode's format characters (general category Cf, as of Unicode 15),
/// as inclusive ranges: soft hyphen, Arabic number signs, zero-width
/// spaces and joiners, bidi marks, embeddings, overrides and isolates,
/// invisible operators, the byte order mark, interlinear annotation,
/// shorthand, musical and tag characters.
const FORMAT: [(u32, u32); 21] = [
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

fn is_format(c: char) -> bool {
    let c = u32::from(c);
    FORMAT
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// The poller's token from `client=`: 8 to 64 of `A-Z a-z 0-9 _ -`,
/// which a URL carries as they are.
fn client_of<'a>(req: &Request<'a>) -> Option<&'a str> {
    req.query("client").filter(|token| {
        CLIENT_TOKEN.contains(&token.len())
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// Decodes `%XX` escapes (and `+` as space); `None` if it is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// Whether Origin names the same host as Host. No Origin (not a browser)
/// passes.
fn same_origin(req: &Request<'_>) -> bool {
    let Some(origin) = req.origin() else {
        return true;
    };
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    req.host()
        .is_some_and(|host| host.eq_ignore_ascii_case(origin_host))
}

/// Announces pollers that stopped polling, once a second: those silent for
/// longer than `silence`.
fn sweep_pollers(presence: Arc<Mutex<Presence>>, topics: Broadcaster, silence: Duration) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(cutoff) = Instant::now().checked_sub(silence) else {
            continue;
        };
        let gone = lock(&presence).expire(cutoff);
        for (room, name) in gone {
            let _ = topics.publish(&room, event("leave", &name, "poll").as_text());
        }
    }
}

fn main() -> ExitCode {
    let args = match common::Args::parse("127.0.0.1:8080") {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let limits = Limits::default()
        .max_message_size(MAX_LINE)
        .max_frame_size(MAX_LINE);
    let mut config = args.config(Config::default().limits(limits));
    config.handshake_limits.max_body_bytes = MAX_LINE;
    let mut history = HistoryConfig::default().envelope(envelope);
    let mut check_origin = true;
    let mut refuse_upgrades = false;
    let mut poll_hold = Duration::from_secs(25);
    let mut grace = Duration::from_secs(10);
    let mut rate = Some(RATE);
    let mut bounds = Bounds::default();
    let mut redis = None;
    for (flag, value) in &args.extra {
        let value = value.as_deref();
        let number = value.and_then(|v| v.parse::<u32>().ok());
        let secs = value
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64);
        match (flag.as_str(), value, number, secs) {
            ("--any-origin", None, ..) => check_origin = false,
            ("--refuse-upgrades", None, ..) => refuse_upgrades = true,
            ("--redis", Some(url), ..) => redis = Some(url.to_owned()),
            ("--history", _, Some(n @ 1..), _) => history.depth = n as usize,
            ("--poll-hold", .., Some(s)) => poll_hold = s,
            ("--poll-grace", .., Some(s)) => grace = s,
            ("--rate", _, Some(n), _) => rate = (n > 0).then_some(n),
            ("--max-names-per-address", _, Some(n @ 1..), _) => bounds.per_address = n as usize,
            ("--max-room-members", _, Some(n @ 1..), _) => bounds.per_room = n as usize,
            ("--max-members", _, Some(n @ 1..), _) => bounds.overall = n as usize,
            ("--trusted-proxy", Some(ip), ..) => match ip.parse() {
                Ok(ip) => config.trusted_proxies.push(ip),
                Err(_) => {
                    eprintln!("chat: --trusted-proxy needs an IP address, not {ip:?}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!(
                    "chat: unknown flag or bad value: {flag} {}\n{USAGE}",
                    value.unwrap_or("")
                );
                return ExitCode::from(2);
            }
        }
    }
    config.history = Some(history);
    // Past the rate wsloop closes a WebSocket with 1008, counting pings
    // and pongs too; Bucket applies the same rate to a poller's lines.
    let rate = rate.map(|n| RateLimit::new(n, RATE_BYTES, RATE_BURST));
    config.rate_limit = rate;
    let settings = Settings {
        check_origin,
        refuse_upgrades,
        poll_hold,
        // A poller is gone once it has been silent for a poll's longest
        // hold and the grace period.
        silence: poll_hold + grace,
        rate,
    };
    let presence = Arc::new(Mutex::new(Presence::new(bounds)));
    let shared = presence.clone();
    let handler_settings = settings.clone();
    let factory = move || Chat {
        settings: handler_settings.clone(),
        presence: shared.clone(),
    };
    common::serve_with(
        "chat",
        "open http://",
        &args.addr,
        config,
        factory,
        |server| {
            let topics = server.broadcaster();
            let silence = settings.silence;
            std::thread::spawn(move || sweep_pollers(presence, topics, silence));
            // Rooms span every chat process started with the same Redis URL.
            let Some(url) = redis else {
                return Ok(Bridged(None));
            };
            let bridge = RedisBridge::start(server, &url, BridgeConfig::default())
                .map_err(|e| format!("--redis {url}: {e}"))?;
            Ok(Bridged(Some(bridge)))
        },
    )
}

/// The Redis bridge, if any, whose counters are printed at exit.
struct Bridged(Option<RedisBridge>);

impl std::fmt::Display for Bridged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(bridge) => write!(f, "chat: {}", bridge.counters()),
            None => Ok(()),
        }
    }
}
