//! A chat server: rooms across all worker threads, a browser page, message
//! history, and long polling for clients whose WebSocket cannot open.
//!
//! ```text
//! cargo run --release --example chat
//! ```
//! then open <http://127.0.0.1:8080/>. Flags: `--addr HOST:PORT`,
//! `--workers N`, `--ping-interval SECS`, `--idle-timeout SECS`,
//! `--any-origin` (skip the Origin check), `--trusted-proxy IP` (believe
//! its X-Forwarded-For / X-Real-IP; repeatable), `--redis
//! redis://HOST:PORT/` (rooms span every chat process started with the same
//! URL; see the README's "Scaling out"), `--history N` (messages kept per
//! room, default 100), `--poll-hold SECS` (longest a poll waits, default
//! 25), `--poll-grace SECS` (how long a poller may be silent before it is
//! announced as gone, default 10), `--refuse-upgrades` (answer every
//! WebSocket upgrade with 403, to show the page's fallback). Built with
//! `--features deflate`, `--deflate` compresses for every browser, which
//! offers permessage-deflate by itself:
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
//! - `GET /poll?room=R&name=N&after=ID`, a long poll: answered at once
//!   with what came after ID, or held until the room's next message or
//!   25 s. `after=0` joins: the answer carries the latest id and who is
//!   here. `POST /send?room=R&name=N` with the line as its body says
//!   something. The cursor lives in the client, so any server process can
//!   answer any poll.
//!
//! Presence: a WebSocket member is here while connected; a poller while
//! it keeps polling, and is announced as gone after `--poll-grace` of
//! silence beyond a poll's longest hold.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;
use wsloop::{
    Broadcaster, CloseCode, Config, Conn, Handler, HistoryConfig, Hold, Limits, Message, MessageId,
    Pending, PublishStatus, Publisher, Reply, Request, Response, Upgrade, Wake,
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

/// A polling client: its address, room and name.
type Poller = (IpAddr, String, String);

/// Who is in which room, for every worker: WebSocket members while they are
/// connected, pollers while they keep polling.
#[derive(Debug, Default)]
struct Presence {
    /// Names of the WebSocket members of each room, one per connection.
    sockets: HashMap<String, Vec<String>>,
    /// Each polling client's last sign of life and latest poll's number.
    pollers: HashMap<Poller, (Instant, u64)>,
}

impl Presence {
    /// Everyone in `room`, a name once per connection or poller.
    fn names(&self, room: &str) -> Vec<String> {
        let sockets = self.sockets.get(room).into_iter().flatten().cloned();
        let pollers = self.pollers.keys().filter(|p| p.1 == room);
        sockets.chain(pollers.map(|p| p.2.clone())).collect()
    }

    /// A poller showed life; true if it is new here (announce it).
    fn polled(&mut self, who: &Poller) -> bool {
        let seen = self.pollers.get_mut(who);
        let new = seen.is_none();
        match seen {
            Some(entry) => entry.0 = Instant::now(),
            None => {
                self.pollers.insert(who.clone(), (Instant::now(), 0));
            }
        }
        new
    }

    /// Removes pollers silent for longer than `limit` and returns them.
    fn expire(&mut self, limit: Duration) -> Vec<Poller> {
        let gone: Vec<Poller> = self
            .pollers
            .iter()
            .filter(|(_, (seen, _))| seen.elapsed() > limit)
            .map(|(who, _)| who.clone())
            .collect();
        for who in &gone {
            self.pollers.remove(who);
        }
        gone
    }
}

/// Settings every worker's handler shares.
#[derive(Debug, Clone)]
struct Settings {
    check_origin: bool,
    refuse_upgrades: bool,
    poll_hold: Duration,
}

/// One per worker. It keeps no table of connections: each one carries its
/// own `Member`. Presence is shared by all workers.
struct Chat {
    settings: Settings,
    presence: Arc<Mutex<Presence>>,
}

impl Chat {
    fn presence(&self) -> MutexGuard<'_, Presence> {
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `POST /send`: the body is the line.
    fn send(&self, req: &Request<'_>, peer: SocketAddr, topics: &mut Publisher<'_>) -> Response {
        let Some(member) = member_of(req.path) else {
            return Response::status(400);
        };
        let line = match std::str::from_utf8(req.body()) {
            Ok(line) if !line.trim().is_empty() => line.trim_end(),
            _ => return Response::status(400),
        };
        let who = (peer.ip(), member.room.clone(), member.name.clone());
        if self.presence().polled(&who) {
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
        let (Some(member), Some(after)) = (member_of(req.path), After::of(req)) else {
            return Response::status(400).into();
        };
        if after == After::Absent {
            return Response::status(400).into();
        }
        let who = (peer.ip(), member.room.clone(), member.name.clone());
        // A joining poller's cursor, read before its join is published;
        // a poll with a cursor of its own needs none.
        let before = match after {
            After::Now => topics.history(&member.room, None).latest,
            After::Id(_) | After::Absent => None,
        };
        let (new, number) = {
            let mut presence = self.presence();
            let new = presence.polled(&who);
            let entry = presence.pollers.get_mut(&who).expect("polled() added it");
            entry.1 += 1;
            (new, entry.1)
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
        let mut presence = self.presence();
        // A newer poll from the same client replaced this one: it gets the
        // messages, this one nothing.
        let latest_poll = presence.pollers.get(who).map(|p| p.1);
        if latest_poll.is_some_and(|n| n != *number) {
            return json_response(409, &json!({ "replaced": true }));
        }
        presence.polled(who);
        let catchup = &wake.catchup;
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
        // Who is here goes with a join (no cursor) and a reset.
        if after.is_none() || catchup.reset {
            body["here"] = json!(presence.names(room));
        }
        json_response(200, &body)
    }

    fn on_upgrade(&mut self, req: &Request<'_>, peer: SocketAddr) -> Upgrade<Member> {
        if req.path_only() != "/ws" {
            return Upgrade::reject(Response::status(404));
        }
        if self.settings.refuse_upgrades {
            return Upgrade::reject(Response::status(403));
        }
        // Browsers always send Origin: refuse pages from other sites, so
        // that they cannot chat in a visitor's name.
        if self.settings.check_origin && !same_origin(req) {
            return Upgrade::reject(Response::status(403));
        }
        let (Some(member), Some(after)) = (member_of(req.path), After::of(req)) else {
            return Upgrade::reject(Response::status(400));
        };
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
            presence
                .sockets
                .entry(room.clone())
                .or_default()
                .push(name.clone());
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
        {
            let mut presence = self.presence();
            if let Some(names) = presence.sockets.get_mut(&room) {
                if let Some(at) = names.iter().position(|n| *n == name) {
                    names.swap_remove(at);
                }
                if names.is_empty() {
                    presence.sockets.remove(&room);
                }
            }
        }
        let _ = conn.publish(&room, event("leave", &name, "ws").as_text());
    }
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

/// Room and name from `/ws?room=R&name=N`, decoded and checked.
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
    let valid = |s: &String, max: usize| {
        let n = s.chars().count();
        n > 0 && n <= max && !s.chars().any(char::is_control)
    };
    let (room, name) = (room?, name?);
    (valid(&room, MAX_ROOM) && valid(&name, MAX_NAME)).then_some(Member {
        room,
        name,
        ..Member::default()
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

/// Announces pollers that stopped polling, once a second.
fn sweep_pollers(presence: Arc<Mutex<Presence>>, topics: Broadcaster, limit: Duration) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let gone = presence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expire(limit);
        for (_, room, name) in gone {
            let _ = topics.publish(&room, event("leave", &name, "poll").as_text());
        }
    }
}

fn main() -> ExitCode {
    let usage = "--any-origin --trusted-proxy IP --redis URL --history N --poll-hold SECS --poll-grace SECS --refuse-upgrades";
    let args = match common::Args::parse("127.0.0.1:8080") {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg} {usage}");
            return ExitCode::from(2);
        }
    };
    let limits = Limits::default()
        .max_message_size(MAX_LINE)
        .max_frame_size(MAX_LINE);
    let mut config = args.config(Config::default().limits(limits));
    config.handshake_limits.max_body_bytes = MAX_LINE;
    let mut history = HistoryConfig::default().envelope(envelope);
    let mut settings = Settings {
        check_origin: true,
        refuse_upgrades: false,
        poll_hold: Duration::from_secs(25),
    };
    let mut grace = Duration::from_secs(10);
    let mut redis = None;
    for (flag, value) in &args.extra {
        let secs = || {
            value
                .as_deref()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| *s > 0.0)
        };
        match (flag.as_str(), value) {
            ("--any-origin", None) => settings.check_origin = false,
            ("--refuse-upgrades", None) => settings.refuse_upgrades = true,
            ("--redis", Some(url)) => redis = Some(url.clone()),
            ("--history", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => {
                history.depth = n.parse().unwrap_or(history.depth);
            }
            ("--poll-hold", Some(_)) if secs().is_some() => {
                settings.poll_hold = Duration::from_secs_f64(secs().unwrap_or(25.0));
            }
            ("--poll-grace", Some(_)) if secs().is_some() => {
                grace = Duration::from_secs_f64(secs().unwrap_or(10.0));
            }
            ("--trusted-proxy", Some(ip)) => match ip.parse() {
                Ok(ip) => config.trusted_proxies.push(ip),
                Err(_) => {
                    eprintln!("chat: --trusted-proxy needs an IP address, not {ip:?}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!(
                    "chat: unknown flag or bad value: {flag} {}",
                    value.as_deref().unwrap_or("")
                );
                eprintln!("flags: {usage}");
                return ExitCode::from(2);
            }
        }
    }
    config.history = Some(history);
    let presence = Arc::new(Mutex::new(Presence::default()));
    let shared = presence.clone();
    let handler_settings = settings.clone();
    let factory = move || Chat {
        settings: handler_settings.clone(),
        presence: shared.clone(),
    };
    // A poller is gone once it has been silent for a poll's longest hold
    // and the grace period.
    let silence = settings.poll_hold + grace;
    common::serve_with(
        "chat",
        "open http://",
        &args.addr,
        config,
        factory,
        |server| {
            let topics = server.broadcaster();
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
