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
//! Built with `--features tls`, `--tls-cert FILE --tls-key FILE` serves
//! the page on `https://` and its WebSocket on `wss://` (the page builds
//! its URLs from `location`); SIGHUP reads the files again
//! (`bash scripts/tls-cert.sh DIR` makes a test pair).
//!
//! How it works: every room is a topic with history. Each message is a
//! small JSON object, numbered by wsloop when it is published and wrapped
//! with its id (`{"id":"5f3a09c1-57","kind":"say",...}`), then written to
//! every member on every worker in one order. With `--redis` the numbers
//! come from Redis instead, which keeps each room's history, so the order
//! and the ids are the same on every chat process sharing it, and a page
//! resumes on any of them (the history of a room with nobody on this
//! process is loaded from Redis first: `on_history`). The same numbers
//! serve two ways of listening:
//!
//! - `GET /ws?room=R&name=N[&after=ID]`, a WebSocket. With `after`, the
//!   room's messages since ID are sent first, or a reset notice and the
//!   room's recent messages when ID is too old.
//! - `GET /poll?room=R&name=N&client=T&after=ID`, a long poll: answered at
//!   once with what came after ID, or held until the room's next message
//!   or 25 s. `after=0` joins: the answer carries the latest id and who is
//!   here, as does the answer to a cursor too old to continue (a reset).
//!   A cursor that grows too old while its poll waits gets a reset with
//!   no id, and the client joins again.
//!   `POST /send?room=R&name=N&client=T` with the line as its body
//!   says something. The cursor lives in the client, so any server process
//!   can answer any poll. `T` is a token the page makes once, 8 to 64 of
//!   `A-Z a-z 0-9 _ -`: a poll replaces (and answers with 409) only an
//!   earlier poll from the same address with the same room, name and
//!   token, so that nobody behind the same address can take a poller's
//!   place by using its name.
//!
//! Presence: a WebSocket member is here while connected; a poller while
//! it keeps polling, and is announced as gone after `--poll-grace` of
//! silence beyond a poll's longest hold. Who is here, as a newcomer is
//! told, and the joins and leaves after it are in one order, so that a
//! page never counts a name twice or misses one (see `presence.rs`).
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
//!
//! Metrics: `GET /metrics` answers wsloop's counters (and the Redis
//! bridge's) in the Prometheus text format, to loopback and the addresses
//! given with `--metrics-allow`; anyone else gets 404 (see `metrics.rs`).
//!
//! Where things are: `ws.rs`, the WebSocket member; `poll.rs`, long
//! polling; `presence.rs`, who is here, its bounds and expiry, and the
//! one order of here-lists, joins and leaves; `names.rs`, the rooms, names
//! and tokens the chat accepts; `messages.rs`, what a room hears and how it
//! is numbered; `metrics.rs`, who may read the counters. This file has the
//! flags, the routes and start-up.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use wsloop::history::Catchup;
use wsloop::{
    CloseCode, Config, Conn, Handler, HistoryConfig, Limits, Message, MessageId, Pending,
    Publisher, RateLimit, Reply, Request, Response, Upgrade, Wake,
};
use wsloop_redis::{BridgeConfig, RedisBridge};

use messages::envelope;
use presence::{lock, sweep_pollers, Bounds, Poller, Presence};

#[path = "../common/mod.rs"]
mod common;
mod events;
mod messages;
mod metrics;
mod names;
mod poll;
mod presence;
mod ws;

/// The page, embedded in the binary.
const PAGE: &str = include_str!("chat.html");
/// Longest chat line, in bytes; longer messages close the connection (1009)
/// or get 413 from `POST /send`.
const MAX_LINE: usize = 2000;

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
  --metrics-allow IP          may read GET /metrics, as loopback may (repeatable); through a
                              trusted proxy, the address it forwards is the one checked
  --redis URL                 rooms span every chat started with the same redis://HOST:PORT/,
                              numbered there and their history kept there: one order on
                              every node, and a page resumes on any node
  --redis-local-first         with --redis: deliver on this node at once, number and keep
                              history per node (no shared order or resume; lines go on
                              while Redis is away)
  --history N                 messages kept per room (default 100)
  --poll-hold SECS            longest a poll waits (default 25)
  --poll-grace SECS           silence past a poll's hold before a poller is gone (default 10)
  --sse-heartbeat SECS        a comment line on an event stream silent this long, under the
                              read timeout of any proxy on the way (default 15)
  --sse-lifetime SECS         end each event stream after this long; EventSource reconnects
                              with its last id and misses nothing (default: never)
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
    /// For a WebSocket or a stream: the last message id the client had, if
    /// it resumes.
    after: Option<MessageId>,
    /// For a poll: the client and the number of its poll, to tell whether
    /// a newer poll replaced this one.
    poll: Option<(Poller, u64)>,
    /// An event stream (`/events`) rather than a WebSocket.
    stream: bool,
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
    /// `--metrics-allow`: who may read `/metrics` besides loopback.
    metrics_allow: Vec<IpAddr>,
    /// `--sse-lifetime`: how long one event stream lasts before the
    /// server ends it and the reader reconnects.
    sse_lifetime: Option<Duration>,
}

/// One per worker. It keeps no table of connections: each one carries its
/// own `Member`. Presence is shared by all workers, and so is the Redis
/// bridge, made once the server is bound, for its counters.
struct Chat {
    settings: Settings,
    presence: Arc<Mutex<Presence>>,
    bridge: Arc<OnceLock<RedisBridge>>,
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
            ("POST", "/send") | ("GET", "/poll" | "/events") if self.foreign(req) => {
                Response::status(403).into()
            }
            ("POST", "/send") => self.send(req, peer, topics).into(),
            (_, "/send") => Response::status(405).with_header("Allow", "POST").into(),
            ("GET", "/poll") => self.poll(req, peer, topics),
            (_, "/poll") => Response::status(405).with_header("Allow", "GET").into(),
            ("GET", "/events") => self.events(req, peer),
            (_, "/events") => Response::status(405).with_header("Allow", "GET").into(),
            (_, "/metrics") if !self.reads_metrics(peer) => Response::status(404).into(),
            ("GET" | "HEAD", "/metrics") => self.metrics(topics).into(),
            (_, "/metrics") => Response::status(405)
                .with_header("Allow", "GET, HEAD")
                .into(),
            _ => Response::status(404).into(),
        }
    }

    fn on_wake(&mut self, req: &mut Pending<'_, Member>, wake: Wake) -> Response {
        self.answer_held(req, wake)
    }

    fn on_upgrade(&mut self, req: &Request<'_>, peer: SocketAddr) -> Upgrade<Member> {
        self.accept_socket(req, peer)
    }

    fn on_open(&mut self, conn: &mut Conn<'_, Member>) {
        self.open_socket(conn);
    }

    fn on_message(&mut self, conn: &mut Conn<'_, Member>, msg: Message<'_>) {
        self.relay_line(conn, msg);
    }

    fn on_close(&mut self, conn: &mut Conn<'_, Member>, _code: CloseCode, _reason: &str) {
        self.close_socket(conn);
    }

    fn on_history(&mut self, conn: &mut Conn<'_, Member>, _room: &str, catchup: Catchup) {
        ws::catch_up(conn, &catchup);
    }

    fn on_timer(&mut self, conn: &mut Conn<'_, Member>, token: u64) {
        if token == events::LIFETIME {
            self.end_stream(conn);
        }
    }
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
    let mut local_first = false;
    let mut metrics_allow = Vec::new();
    let mut sse_lifetime = None;
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
            ("--redis-local-first", None, ..) => local_first = true,
            ("--history", _, Some(n @ 1..), _) => history.depth = n as usize,
            ("--poll-hold", .., Some(s)) => poll_hold = s,
            ("--poll-grace", .., Some(s)) => grace = s,
            ("--sse-heartbeat", .., Some(s)) => config.stream_heartbeat = Some(s),
            ("--sse-lifetime", .., Some(s)) => sse_lifetime = Some(s),
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
            ("--metrics-allow", Some(ip), ..) => match metrics::allowed(ip) {
                Some(ip) => metrics_allow.push(ip),
                None => {
                    eprintln!("chat: --metrics-allow needs an IP address, not {ip:?}");
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
    let depth = history.depth;
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
        metrics_allow,
        sse_lifetime,
    };
    let presence = Arc::new(Mutex::new(Presence::new(bounds)));
    let shared = presence.clone();
    let handler_settings = settings.clone();
    // Empty until `setup` starts the bridge, after bind: the handlers
    // read its counters from here.
    let bridge = Arc::new(OnceLock::new());
    let handler_bridge = bridge.clone();
    let factory = move || Chat {
        settings: handler_settings.clone(),
        presence: shared.clone(),
        bridge: handler_bridge.clone(),
    };
    common::serve_with("chat", "open http://", &args, config, factory, |server| {
        let topics = server.broadcaster();
        let silence = settings.silence;
        std::thread::spawn(move || sweep_pollers(presence, topics, silence));
        // Rooms span every chat process started with the same Redis URL.
        let Some(url) = redis else {
            return Ok(Bridged(bridge));
        };
        let bridge_config = match local_first {
            true => BridgeConfig::default(),
            false => BridgeConfig::default().history(depth),
        };
        let started = RedisBridge::start(server, &url, bridge_config)
            .map_err(|e| format!("--redis {url}: {e}"))?;
        // The only set: `setup` runs once.
        let _ = bridge.set(started);
        Ok(Bridged(bridge))
    })
}

/// The Redis bridge, if any, whose counters are printed at exit.
struct Bridged(Arc<OnceLock<RedisBridge>>);

impl std::fmt::Display for Bridged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(bridge) => write!(f, "chat: {}", bridge.counters()),
            None => Ok(()),
        }
    }
}
