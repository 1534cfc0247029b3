//! Who is in which room: WebSocket members while they are connected,
//! pollers while they keep polling, event-stream members while a stream
//! is open and for a poller's silence after it; the bounds on it, and the
//! sweep that announces pollers gone silent.
//!
//! An event-stream member is kept as a poller is, by its address, its
//! page's token and its name: its lines come by `POST /send` with the
//! same token, which must not make it a second member, and `EventSource`
//! reconnects each stream that ends, which must not make the room hear a
//! leave and a join each time. Only silence after its last stream does.
//!
//! # One order for who is here
//!
//! A page counts who is here from the here-list it is given, then from
//! the joins and leaves after it. That count is right only if every join
//! or leave is either counted in the list or delivered after it: never
//! both (a name counted twice) and never neither (a leave of a name the
//! page never had). Members join and leave on every worker at once, so
//! two things are each done as one step, under the presence lock:
//!
//! - a change to who is here, and the publish of its join or leave;
//! - the read of a here-list, and the place in the room's stream where
//!   the reader continues: a WebSocket's subscription
//!   ([`Conn::subscribe_after`](wsloop::Conn::subscribe_after)), or the
//!   history a poll's answer carries.
//!
//! Every join and leave is then published either before the reader's
//! step, counted in its list and below its place in the stream, or
//! after it, not counted and delivered.
//!
//! Lock order: the presence lock first, then wsloop's history lock,
//! which `publish`, `history` and `subscribe_after` take inside.
//! Nothing takes them the other way round: wsloop calls no handler code
//! while it holds its locks, and the one chat function it calls under
//! the history lock, [`envelope`](crate::messages::envelope), takes no
//! lock.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wsloop::{Broadcaster, RateLimit, Response};

use crate::messages::event;

/// A polling client, within its room: its address, the token its page
/// made, and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Poller {
    pub addr: IpAddr,
    pub client: Arc<str>,
    pub name: Arc<str>,
}

/// Bounds on presence. A poller keeps its place until it has been silent
/// for a poll's hold and the grace, so that without them one address could
/// fill memory, and the list of who is here, with made-up names.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Polling names one client address may hold (`--max-names-per-address`,
    /// default 64): a household or an office behind one NAT has room, a
    /// script does not. WebSocket members do not count: each holds a
    /// connection, which wsloop bounds.
    pub per_address: usize,
    /// Members of one room, WebSocket and polling (`--max-room-members`,
    /// default 1,000). Every newcomer gets the list of who is here.
    pub per_room: usize,
    /// Members of all rooms (`--max-members`, default 100,000).
    pub overall: usize,
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
pub enum Refused {
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
    pub fn response(self, silence: Duration) -> Response {
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
/// drops. One lock guards it for every worker, and orders joins and leaves
/// against here-lists (see [the module docs](self)).
#[derive(Debug)]
pub struct Presence {
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
    /// Its event streams open now: while it has one it is never silent.
    streams: u32,
    /// How it listens, for its leave: `poll`, or `sse` for a member that
    /// came with a stream.
    via: &'static str,
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
    pub fn new(bounds: Bounds) -> Self {
        Presence {
            bounds,
            rooms: HashMap::new(),
            per_address: HashMap::new(),
            members: 0,
            silence: Silence::default(),
        }
    }

    /// Everyone in `room`, a name once per connection or poller.
    pub fn names(&self, room: &str) -> Vec<String> {
        let Some(room) = self.rooms.get(room) else {
            return Vec::new();
        };
        let pollers = room.pollers.keys().map(|p| p.name.to_string());
        room.sockets.iter().cloned().chain(pollers).collect()
    }

    /// Whether `room` has a place for one more member.
    pub fn has_place(&self, room: &str) -> Result<(), Refused> {
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
    pub fn socket_joined(&mut self, room: &str, name: &str) {
        self.members += 1;
        let members = self.rooms.entry(room.to_owned()).or_default();
        members.sockets.push(name.to_owned());
    }

    pub fn socket_left(&mut self, room: &str, name: &str) {
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
    pub fn poll(&mut self, room: &str, who: &Poller, now: Instant) -> Result<(u64, bool), Refused> {
        let (seen, new) = self.seen(room, who, now)?;
        seen.latest_poll = seen.stamp.1;
        Ok((seen.latest_poll, new))
    }

    /// A line from `who` at `now`, against `rate` if there is one: whether
    /// `who` is new here.
    pub fn line(
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

    /// An event stream from `who` began at `now`: whether `who` is new
    /// here (announce it). It stays while the stream is open.
    pub fn stream_opened(
        &mut self,
        room: &str,
        who: &Poller,
        now: Instant,
    ) -> Result<bool, Refused> {
        let (seen, new) = self.seen(room, who, now)?;
        seen.streams += 1;
        if new {
            seen.via = "sse";
        }
        Ok(new)
    }

    /// An event stream from `who` ended at `now`: its silence starts, and
    /// a reconnect within it is no news to the room.
    pub fn stream_closed(&mut self, room: &str, who: &Poller, now: Instant) {
        let seen = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.pollers.get_mut(who));
        if let Some(seen) = seen {
            seen.streams = seen.streams.saturating_sub(1);
            seen.stamp = self.silence.renew(seen.stamp, now);
        }
    }

    /// Whether `who` may open a stream in `room`: it is here already, or
    /// there is a place for it.
    pub fn may_stream(&self, room: &str, who: &Poller) -> Result<(), Refused> {
        if self
            .rooms
            .get(room)
            .is_some_and(|r| r.pollers.contains_key(who))
        {
            return Ok(());
        }
        self.has_place(room)?;
        let held = self.per_address.get(&who.addr).copied().unwrap_or(0);
        match held >= self.bounds.per_address {
            true => Err(Refused::Address),
            false => Ok(()),
        }
    }

    /// Poll number `number` from `who` is being answered: false if a newer
    /// poll from the same client replaced it. A poller still here showed
    /// life; one dropped meanwhile is not brought back unannounced.
    pub fn answering(&mut self, room: &str, who: &Poller, number: u64, now: Instant) -> bool {
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
                streams: 0,
                via: "poll",
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

    /// Drops the pollers last seen before `cutoff`, and only those, at
    /// `now`; returns their rooms, names and how they listened. One with
    /// a stream open is seen at `now` instead.
    fn expire(&mut self, now: Instant, cutoff: Instant) -> Vec<(String, String, &'static str)> {
        let mut gone = Vec::new();
        while let Some((room, who)) = self.silence.pop_before(cutoff) {
            let Some(members) = self.rooms.get_mut(&room) else {
                continue;
            };
            if let Some(seen) = members.pollers.get_mut(&who).filter(|s| s.streams > 0) {
                seen.stamp = self.silence.add(now, &room, &who);
                continue;
            }
            let Some(seen) = members.pollers.remove(&who) else {
                continue;
            };
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
            gone.push((room, who.name.to_string(), seen.via));
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

/// Takes the presence lock, poisoned or not: a panic on one worker does
/// not stop the others.
pub fn lock(presence: &Mutex<Presence>) -> MutexGuard<'_, Presence> {
    presence.lock().unwrap_or_else(|e| e.into_inner())
}

/// Announces pollers that stopped polling, once a second: those silent for
/// longer than `silence`. Each is dropped and announced in one step (see
/// [the module docs](self)).
pub fn sweep_pollers(presence: Arc<Mutex<Presence>>, topics: Broadcaster, silence: Duration) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = Instant::now();
        let Some(cutoff) = now.checked_sub(silence) else {
            continue;
        };
        let mut presence = lock(&presence);
        for (room, name, via) in presence.expire(now, cutoff) {
            let _ = topics.publish(&room, event("leave", &name, via).as_text());
        }
    }
}
