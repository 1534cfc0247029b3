//! Topics across wsloop servers through Redis pub/sub.
//!
//! A chat that outgrows one machine runs several wsloop processes behind a
//! proxy. [`RedisBridge`] makes a topic span all of them: what a handler
//! publishes on one server reaches the topic's subscribers on every server
//! started with the same Redis URL and prefix.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # struct Chat;
//! # impl wsloop::Handler for Chat {
//! #     type Data = ();
//! #     fn on_message(&mut self, _: &mut wsloop::Conn<'_>, _: wsloop::Message<'_>) {}
//! # }
//! // Paused: nothing is served before the bridge is in place.
//! let mut server = wsloop::Server::bind_paused("127.0.0.1:8080", wsloop::Config::default(), || Chat)?;
//! let bridge = wsloop_redis::RedisBridge::start(&server, "redis://127.0.0.1:6379/", Default::default())?;
//! server.start()?;
//! # Ok(()) }
//! ```
//!
//! Two ways to deliver, chosen by [`BridgeConfig::history`].
//!
//! # Ordered: history in Redis
//! With `BridgeConfig::default().history(depth)` Redis numbers every
//! message, and every server delivers each topic in that one order, its
//! own publishers' messages included. The server must keep history
//! ([`wsloop::Config::history`]); its history becomes a copy of Redis's.
//! - **One numbering.** A Lua script numbers the message in the topic's
//!   hash, appends it to the topic's log (a list capped at `depth`), and
//!   publishes it, in one step. Ids keep wsloop's `EPOCH-SEQ` form. The
//!   epoch lives in Redis with the topic: a restarted server finds it
//!   again, and only a Redis that lost its data starts a new one.
//! - **Resume on any server.** A server keeps a copy of the log of each
//!   topic it has subscribers to, and answers cursors from it with no
//!   round trip. A topic with no subscriber here has no copy: the first
//!   subscriber's history is [pending](wsloop::history::Catchup::pending),
//!   and [`wsloop::Handler::on_history`] tells it what followed its
//!   cursor once the log is loaded. A subscriber with no cursor gets every
//!   message published once the server listens, and every message its own
//!   server publishes after it subscribed.
//! - **Nothing lost while Redis is up.** A message that does not follow
//!   the copy (the subscription dropped and came back, or a worker could
//!   not take it) has the topic loaded again from the log, which brings
//!   every subscriber up to date; one already seen is skipped. Within the
//!   log's depth, every subscriber gets every message once, in order.
//! - **Redis away: refused.** While Redis cannot be reached a publish
//!   returns [`PublishStatus::Refused`], so the publisher can tell its
//!   client; nothing is delivered, here or elsewhere. A message taken in
//!   the instant Redis went away, before the bridge noticed, is dropped
//!   and counted, never numbered twice. When Redis comes back with its
//!   data, copies are loaded again; if it lost its data, topics start new
//!   epochs, and every subscriber gets one reset.
//! - **Cost.** Every message crosses Redis before anyone gets it, its
//!   publisher's neighbours too: one round trip more for them than
//!   local-first delivery.
//!
//! # Local-first (the default)
//! - **Each subscriber gets each message once.** A message published on a
//!   server is delivered to that server's subscribers at once, as without
//!   Redis, and sent to Redis tagged with the server's random node id.
//!   Every server delivers what Redis brings it, except its own messages,
//!   which it already delivered (Socket.IO's adapter works the same way).
//!   Local delivery so needs no round trip through Redis, and goes on
//!   when Redis is away.
//! - **Order** is kept per publisher and topic: one thread publishes to
//!   Redis in the order of publishing, Redis keeps the order on each
//!   connection, and one thread hands over what arrives in that order.
//!   Two publishers on two servers may be seen in different orders, and
//!   each server numbers its own history.
//! - **At most once across servers.** While Redis cannot be reached,
//!   messages for other servers are dropped and counted, and so are
//!   messages over the bounded queue to the publishing thread. Nothing
//!   waits to be replayed.
//!
//! # Subscriptions follow demand
//! A server subscribes to the channel `<prefix>:<topic>` when the topic
//! gets its first subscriber on that server, and unsubscribes when the
//! last one leaves, all on one Redis connection per server (plus one to
//! publish, and with history in Redis one to load logs). `PUBSUB
//! CHANNELS` shows exactly the topics someone listens to, per server.
//!
//! # Faults
//! If Redis goes away, local-first delivery goes on; ordered delivery
//! refuses. Both threads reconnect with a backoff from 50 ms to 2 s, and
//! the subscriber subscribes again to every topic wanted (and loads each
//! again). Every command has a 2 s timeout and the subscriber PINGs a
//! silent connection every 5 s, so a Redis that stops answering without
//! closing the connection is given up on too. A change in the wanted
//! topics wakes the subscriber through a control channel at once, or
//! within its 100 ms read timeout if that message is lost.
//! [`RedisBridge::counters`] tells what was published,
//! received, dropped and reconnected, and what arrived malformed (which is
//! dropped, never a panic).

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod ordered;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wsloop::metrics::Exposition;
use wsloop::{Bridge, Broadcaster, Message, PublishStatus, Server};

/// The Redis client this crate uses, for callers that want to talk to the
/// same Redis (the benchmark checks subscriptions with it).
pub use redis;

/// How the bridge connects and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeConfig {
    /// Channels are `<prefix>:<topic>`. Servers that share a prefix share
    /// topics. Default `"wsloop"`.
    pub prefix: String,
    /// Most messages waiting for the publishing thread; more are dropped
    /// and counted. Default 4,096.
    pub queue: usize,
    /// Most payload bytes waiting for the publishing thread, whatever the
    /// count; more are dropped and counted. Default 8 MiB.
    pub queue_bytes: usize,
    /// The first wait before reconnecting, doubled after each failure up
    /// to `max_backoff`. Default 50 ms.
    pub min_backoff: Duration,
    /// The longest wait between reconnection attempts. Default 2 s.
    pub max_backoff: Duration,
    /// Keep each topic's last `history` messages in Redis, numbered there
    /// (see [Ordered history](crate#ordered-history-in-redis)): one order
    /// on every server, and a cursor any server can resume. The server
    /// must keep history ([`wsloop::Config::history`]). Default `None`:
    /// local-first delivery.
    pub history: Option<usize>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            prefix: "wsloop".into(),
            queue: 4096,
            queue_bytes: 8 << 20,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            history: None,
        }
    }
}

impl BridgeConfig {
    /// Sets [`BridgeConfig::prefix`].
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`BridgeConfig::queue`].
    pub fn queue(mut self, queue: usize) -> Self {
        self.queue = queue;
        self
    }

    /// Sets [`BridgeConfig::queue_bytes`].
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// Sets [`BridgeConfig::history`]: `depth` messages per topic, kept
    /// and numbered in Redis (at least 1).
    pub fn history(mut self, depth: usize) -> Self {
        self.history = Some(depth.max(1));
        self
    }
}

/// What the bridge has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeCounters {
    /// Messages published to Redis.
    pub published: u64,
    /// Messages from other servers handed to local subscribers.
    pub received: u64,
    /// Messages for other servers that were dropped: Redis was away or the
    /// queue was full; and messages from them that this server refused
    /// because a worker's inbox was full (`PublishStatus::Refused`).
    pub dropped: u64,
    /// Connections to Redis made again after one was lost.
    pub reconnects: u64,
    /// Messages from Redis that were not in the bridge's format, dropped.
    pub malformed: u64,
    /// With history in Redis: messages refused to their publisher because
    /// Redis could not be reached or the queue was full.
    pub refused: u64,
    /// With history in Redis: topics loaded from Redis, when they gained
    /// a subscriber here and when this server's copy fell behind.
    pub loads: u64,
    /// With history in Redis: messages that did not follow this server's
    /// copy of their topic (missed while the subscription was down, or
    /// not taken by a worker), each repaired by a load.
    pub gaps: u64,
}

impl fmt::Display for BridgeCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "redis: {} published, {} received, {} dropped, {} reconnects, {} malformed, \
             {} refused, {} loads, {} gaps",
            self.published,
            self.received,
            self.dropped,
            self.reconnects,
            self.malformed,
            self.refused,
            self.loads,
            self.gaps
        )
    }
}

impl BridgeCounters {
    /// Appends these counters in the Prometheus text format, as
    /// [`wsloop::Counters::write_prometheus`] writes the server's, for a
    /// `/metrics` route to answer with both: `wsloop_redis_published_total`,
    /// `wsloop_redis_received_total`, `wsloop_redis_dropped_total`,
    /// `wsloop_redis_reconnects_total`, `wsloop_redis_malformed_total`,
    /// `wsloop_redis_refused_total`, `wsloop_redis_loads_total` and
    /// `wsloop_redis_gaps_total`, each the field of the same name.
    pub fn write_prometheus(&self, out: &mut String) {
        let mut m = Exposition::new(out);
        m.counter(
            "wsloop_redis_published_total",
            "Messages published to Redis.",
            self.published,
        );
        m.counter(
            "wsloop_redis_received_total",
            "Messages from other servers handed to local subscribers.",
            self.received,
        );
        m.counter(
            "wsloop_redis_dropped_total",
            "Messages for other servers dropped (Redis away or the queue full), \
             and messages from them refused by a full worker inbox.",
            self.dropped,
        );
        m.counter(
            "wsloop_redis_reconnects_total",
            "Connections to Redis made again after one was lost.",
            self.reconnects,
        );
        m.counter(
            "wsloop_redis_malformed_total",
            "Messages from Redis not in the bridge's format, dropped.",
            self.malformed,
        );
        m.counter(
            "wsloop_redis_refused_total",
            "With history in Redis: publishes refused because Redis was away or the queue full.",
            self.refused,
        );
        m.counter(
            "wsloop_redis_loads_total",
            "With history in Redis: topics loaded from Redis.",
            self.loads,
        );
        m.counter(
            "wsloop_redis_gaps_total",
            "With history in Redis: messages that did not follow this server's copy, \
             each repaired by a load.",
            self.gaps,
        );
    }
}

/// Why the bridge did not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum BridgeError {
    /// The URL is not a Redis URL.
    InvalidUrl(redis::RedisError),
    /// The server already has a bridge.
    AlreadyBridged,
    /// [`BridgeConfig::history`] needs a server that keeps history
    /// ([`wsloop::Config::history`]).
    NoHistory,
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::InvalidUrl(e) => write!(f, "not a Redis URL: {e}"),
            BridgeError::AlreadyBridged => f.write_str("the server already has a bridge"),
            BridgeError::NoHistory => {
                f.write_str("history in Redis needs a server that keeps history (Config::history)")
            }
        }
    }
}

impl std::error::Error for BridgeError {}

/// The first bytes of every message: the publishing node, then the kind.
const NODE_LEN: usize = 8;
const TEXT: u8 = 1;
const BINARY: u8 = 2;

/// What the publishing thread is asked to do.
enum Outgoing {
    /// Publish a message: its kind byte and payload, after the node id
    /// for local-first delivery.
    Publish { topic: String, payload: Vec<u8> },
    /// With history in Redis: load the topic, which gained a subscriber
    /// here, in line with what this server publishes (see
    /// [`Wanted::first`]).
    Mark { topic: String },
    /// Wake the subscribing thread: the wanted topics changed, or stop.
    Poke,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    malformed: AtomicU64,
    refused: AtomicU64,
    loads: AtomicU64,
    gaps: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What the server's workers and the bridge's two threads share.
struct Inner {
    node: u64,
    prefix: String,
    outgoing: SyncSender<Outgoing>,
    /// Payload bytes in the queue, and the most it may hold.
    queued_bytes: AtomicUsize,
    queue_bytes: usize,
    /// Topics with subscribers on this server.
    wanted: Mutex<Wanted>,
    changed: AtomicBool,
    stop: AtomicBool,
    counters: Counters,
    /// With history in Redis, its depth; `None` for local-first delivery.
    history: Option<usize>,
    depth: usize,
    scripts: ordered::Scripts,
    /// The publishing thread has a connection to Redis.
    up: AtomicBool,
}

/// The topics this server wants, and those that gained a subscriber again
/// since the subscribing thread last looked, whose copies must be loaded
/// again even if they never stopped being wanted.
#[derive(Debug, Default)]
struct Wanted {
    topics: BTreeSet<String>,
    regained: BTreeSet<String>,
    /// With history in Redis, each regained topic's first load, made by
    /// the publishing thread in the order of what it publishes: every
    /// message this server publishes after the topic gained its
    /// subscriber is numbered after this load, so a subscriber with no
    /// cursor, which starts from it, gets all of them, its own included.
    /// `None`: the load failed; the subscribing thread makes its own.
    first: HashMap<String, Option<ordered::Loaded>>,
}

impl Inner {
    fn new(config: &BridgeConfig, outgoing: SyncSender<Outgoing>) -> Self {
        Inner {
            node: node_id(),
            prefix: config.prefix.clone(),
            outgoing,
            queued_bytes: AtomicUsize::new(0),
            queue_bytes: config.queue_bytes,
            wanted: Mutex::default(),
            changed: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            history: config.history,
            depth: config.history.unwrap_or(0),
            scripts: ordered::Scripts::new(),
            up: AtomicBool::new(false),
        }
    }

    fn channel(&self, topic: &str) -> String {
        format!("{}:{topic}", self.prefix)
    }

    /// Whether `topic` gained a subscriber again and waits for its first
    /// load.
    fn regaining(&self, topic: &str) -> bool {
        let wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        wanted.regained.contains(topic)
    }

    fn meta_key(&self, topic: &str) -> String {
        format!("{}:meta:{topic}", self.prefix)
    }

    fn log_key(&self, topic: &str) -> String {
        format!("{}:log:{topic}", self.prefix)
    }

    /// Queues a message for the publishing thread, within the queue's
    /// bounds; false, counting nothing, if it does not fit.
    fn enqueue(&self, topic: &str, head: &[u8], msg: Message<'_>) -> bool {
        let (kind, bytes) = match msg {
            Message::Text(text) => (TEXT, text.as_bytes()),
            Message::Binary(bytes) => (BINARY, bytes),
            _ => return false,
        };
        let mut payload = Vec::with_capacity(head.len() + 1 + bytes.len());
        payload.extend_from_slice(head);
        payload.push(kind);
        payload.extend_from_slice(bytes);
        let len = payload.len();
        if self.queued_bytes.fetch_add(len, Ordering::AcqRel) + len > self.queue_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        let item = Outgoing::Publish {
            topic: topic.to_owned(),
            payload,
        };
        if self.outgoing.try_send(item).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// The channel on which the publisher wakes this node's subscriber.
    fn control_channel(&self) -> String {
        format!("{}\u{0}control:{:016x}", self.prefix, self.node)
    }

    fn poke(&self) {
        // A full queue wakes the subscriber soon anyway.
        let _ = self.outgoing.try_send(Outgoing::Poke);
    }
}

impl Bridge for Inner {
    fn published(&self, topic: &str, msg: Message<'_>) {
        if !self.enqueue(topic, &self.node.to_be_bytes(), msg) {
            bump(&self.counters.dropped);
        }
    }

    fn interest(&self, topic: &str, subscribed: bool) {
        let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        if subscribed {
            wanted.topics.insert(topic.to_owned());
            wanted.regained.insert(topic.to_owned());
            wanted.first.remove(topic);
            let mark = Outgoing::Mark {
                topic: topic.to_owned(),
            };
            if self.history.is_some() && self.outgoing.try_send(mark).is_err() {
                wanted.first.insert(topic.to_owned(), None);
            }
        } else {
            wanted.topics.remove(topic);
            wanted.regained.remove(topic);
            wanted.first.remove(topic);
        }
        self.changed.store(true, Ordering::Release);
        self.poke();
    }

    fn orders(&self) -> bool {
        self.history.is_some()
    }

    /// Refused at once while Redis cannot be reached: the publisher hears
    /// that its message was not sent, rather than believe it was.
    fn submit(&self, topic: &str, msg: Message<'_>) -> PublishStatus {
        if self.up.load(Ordering::Acquire) && self.enqueue(topic, &[], msg) {
            return PublishStatus::Queued;
        }
        bump(&self.counters.refused);
        PublishStatus::Refused
    }
}

/// A running bridge between one server and Redis. Dropping it stops its
/// threads; the server keeps running on its own.
pub struct RedisBridge {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for RedisBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBridge")
            .field("node", &format_args!("{:016x}", self.inner.node))
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBridge {
    /// Connects `server`'s topics to Redis at `url` (`redis://HOST:PORT/`).
    /// Returns once the first connection was tried: the threads connect,
    /// and reconnect, on their own, so a Redis that is down at start is not
    /// an error. Start it on a server bound with
    /// [`Server::bind_paused`](wsloop::Server::bind_paused), and start the
    /// server after it: with history in Redis, a message published before
    /// the bridge is in place would be numbered by the server itself.
    pub fn start(
        server: &Server,
        url: &str,
        config: BridgeConfig,
    ) -> Result<RedisBridge, BridgeError> {
        let client = redis::Client::open(url).map_err(BridgeError::InvalidUrl)?;
        let (outgoing, queue) = mpsc::sync_channel(config.queue.max(1));
        let inner = Arc::new(Inner::new(&config, outgoing));
        if inner.history.is_some() && !server.keeps_history() {
            return Err(BridgeError::NoHistory);
        }
        if !server.set_bridge(inner.clone()) {
            return Err(BridgeError::AlreadyBridged);
        }
        let backoff = Backoff::new(config.min_backoff, config.max_backoff);
        // The first connection is tried before this returns, so that a
        // message published just after start is not refused for nothing.
        let (tried, first_try) = mpsc::sync_channel(1);
        let publisher = {
            let (inner, client, backoff) = (inner.clone(), client.clone(), backoff.clone());
            std::thread::Builder::new()
                .name("wsloop-redis-pub".into())
                .spawn(move || publish_loop(&inner, &client, queue, backoff, tried))
                .expect("a thread can be spawned at start-up")
        };
        let _ = first_try.recv();
        let subscriber = {
            let (inner, broadcaster) = (inner.clone(), server.broadcaster());
            std::thread::Builder::new()
                .name("wsloop-redis-sub".into())
                .spawn(move || subscribe_loop(&inner, &client, &broadcaster, backoff))
                .expect("a thread can be spawned at start-up")
        };
        Ok(RedisBridge {
            inner,
            threads: vec![publisher, subscriber],
        })
    }

    /// What the bridge has done so far.
    pub fn counters(&self) -> BridgeCounters {
        let c = &self.inner.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        BridgeCounters {
            published: get(&c.published),
            received: get(&c.received),
            dropped: get(&c.dropped),
            reconnects: get(&c.reconnects),
            malformed: get(&c.malformed),
            refused: get(&c.refused),
            loads: get(&c.loads),
            gaps: get(&c.gaps),
        }
    }

    /// This server's random node id, which tags what it publishes.
    pub fn node_id(&self) -> u64 {
        self.inner.node
    }
}

impl Drop for RedisBridge {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        // Blocking: the publisher takes items whether Redis is there or
        // not (every Redis call has a timeout), so this waits at most for
        // one call. The subscriber sees the flag within one read timeout.
        let _ = self.inner.outgoing.send(Outgoing::Poke);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A node id unlikely to repeat: the time and process id, hashed with
/// std's random keys.
fn node_id() -> u64 {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now();
    std::collections::hash_map::RandomState::new().hash_one((now, std::process::id()))
}

/// Waits between connection attempts, doubling to a cap, and knows
/// whether a connection was ever made, so the next one is a reconnect.
#[derive(Debug, Clone)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    not_before: Option<Instant>,
    connected_before: bool,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
            not_before: None,
            connected_before: false,
        }
    }

    fn ready(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }

    fn failed(&mut self) {
        self.not_before = Some(Instant::now() + self.next);
        self.next = (self.next * 2).min(self.max);
    }

    fn succeeded(&mut self) {
        self.next = self.min;
        self.not_before = None;
    }

    /// Waits out the backoff, waking early if `stop` is set.
    fn sleep(&self, stop: &AtomicBool) {
        while let Some(left) = self
            .not_before
            .map(|t| t.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
        {
            if stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(left.min(TICK));
        }
    }
}

/// The longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest any one command may take: a Redis that stops answering
/// without closing the connection is given up after this.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the subscriber looks at the wanted topics and the stop flag
/// while no message comes; a poke on the control channel wakes it sooner.
const TICK: Duration = Duration::from_millis(100);
/// How long the subscription may be silent before the subscriber PINGs.
const PING_AFTER: Duration = Duration::from_secs(5);

/// Connects with the timeouts every command then keeps. A failure
/// lengthens the backoff; a success after an earlier connection counts as
/// a reconnect.
fn connect(
    inner: &Inner,
    client: &redis::Client,
    backoff: &mut Backoff,
) -> Option<redis::Connection> {
    match open(client) {
        Ok(conn) => {
            if std::mem::replace(&mut backoff.connected_before, true) {
                bump(&inner.counters.reconnects);
            }
            backoff.succeeded();
            Some(conn)
        }
        Err(_) => {
            backoff.failed();
            None
        }
    }
}

/// A connection with the timeouts every command then keeps.
fn open(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(conn)
}

/// The most messages the publishing thread sends in one pipeline: one
/// round trip for all of them, rather than one each.
const BATCH: usize = 256;

/// Publishes what the workers queue, in order, and keeps
/// [`Inner::up`] true while it has a connection. Without one, a message
/// is dropped and counted rather than held. `tried` hears once the first
/// connection was tried.
fn publish_loop(
    inner: &Inner,
    client: &redis::Client,
    queue: Receiver<Outgoing>,
    backoff: Backoff,
    tried: SyncSender<()>,
) {
    let mut link = PublishLink {
        inner,
        client,
        conn: None,
        backoff,
    };
    link.reconnect();
    let _ = tried.send(());
    loop {
        let first = match queue.recv_timeout(TICK) {
            Ok(item) => Some(item),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if inner.stop.load(Ordering::Acquire) {
            // What still waits is dropped, and counted.
            for left in first.into_iter().chain(queue.try_iter()) {
                if let Outgoing::Publish { .. } = left {
                    bump(&inner.counters.dropped);
                }
            }
            return;
        }
        link.check();
        let Some(first) = first else {
            continue;
        };
        // Whatever else waits goes too: runs of messages in one pipeline
        // each, and marks and pokes in their place between them.
        let mut run = Vec::new();
        for item in std::iter::once(first).chain(queue.try_iter().take(BATCH - 1)) {
            match item {
                Outgoing::Publish { topic, payload } => run.push((topic, payload)),
                Outgoing::Mark { topic } => {
                    link.send(&mut run);
                    let ok = mark(inner, link.conn.as_mut(), &topic);
                    link.settle(ok);
                }
                Outgoing::Poke => {
                    link.send(&mut run);
                    let ok = link
                        .conn
                        .as_mut()
                        .is_some_and(|c| publish(c, &inner.control_channel(), b"").is_ok());
                    link.settle(ok);
                }
            }
        }
        link.send(&mut run);
    }
}

/// The publishing thread's connection, and what it does with it.
struct PublishLink<'a> {
    inner: &'a Inner,
    client: &'a redis::Client,
    conn: Option<redis::Connection>,
    backoff: Backoff,
}

impl PublishLink<'_> {
    /// Connects, and with history in Redis makes sure Redis has the
    /// numbering script, which the pipelines call by its SHA1.
    fn reconnect(&mut self) {
        self.conn = connect(self.inner, self.client, &mut self.backoff);
        if let (Some(c), Some(_)) = (self.conn.as_mut(), self.inner.history) {
            if ordered::prepare(c, self.inner).is_err() {
                self.conn = None;
                self.backoff.failed();
            }
        }
        self.inner.up.store(self.conn.is_some(), Ordering::Release);
    }

    /// Reconnects when it is time, and checks a connection the
    /// subscribing thread doubts (it lost Redis).
    fn check(&mut self) {
        if self.conn.is_none() && self.backoff.ready() {
            return self.reconnect();
        }
        if let (Some(c), false) = (self.conn.as_mut(), self.inner.up.load(Ordering::Acquire)) {
            let alive = redis::cmd("PING").query::<redis::Value>(c).is_ok();
            self.settle(alive);
        }
    }

    /// After a command: a failure drops the connection.
    fn settle(&mut self, ok: bool) {
        if !ok && self.conn.is_some() {
            self.conn = None;
            self.backoff.failed();
        }
        self.inner.up.store(self.conn.is_some(), Ordering::Release);
    }

    /// Sends a run of messages in one pipeline, and empties it. Without a
    /// connection, or if the pipeline fails, they are dropped and counted.
    fn send(&mut self, run: &mut Vec<(String, Vec<u8>)>) {
        if run.is_empty() {
            return;
        }
        let inner = self.inner;
        let sent = self.conn.as_mut().is_some_and(|c| {
            let mut pipe = redis::pipe();
            for (topic, payload) in run.iter() {
                match inner.history {
                    Some(_) => pipe.add_command(ordered::append_cmd(inner, topic, payload)),
                    None => pipe.add_command(publish_cmd(&inner.channel(topic), payload)),
                };
            }
            pipe.query::<redis::Value>(c).is_ok()
        });
        self.settle(sent);
        let counter = match sent {
            true => &inner.counters.published,
            false => &inner.counters.dropped,
        };
        for (_, payload) in run.drain(..) {
            inner
                .queued_bytes
                .fetch_sub(payload.len(), Ordering::AcqRel);
            bump(counter);
        }
    }
}

/// Makes a regained topic's first load (see [`Wanted::first`]) and wakes
/// the subscribing thread to use it; false if the connection failed.
fn mark(inner: &Inner, conn: Option<&mut redis::Connection>, topic: &str) -> bool {
    let (first, ok) = match conn {
        Some(c) => match ordered::fetch(c, inner, topic) {
            Ok(first) => (
                Some(first),
                publish(c, &inner.control_channel(), b"").is_ok(),
            ),
            Err(_) => (None, false),
        },
        None => (None, false),
    };
    let mut wanted = inner.wanted.lock().unwrap_or_else(|e| e.into_inner());
    if wanted.regained.contains(topic) {
        wanted.first.insert(topic.to_owned(), first);
    }
    drop(wanted);
    inner.changed.store(true, Ordering::Release);
    ok
}

fn publish(conn: &mut redis::Connection, channel: &str, payload: &[u8]) -> redis::RedisResult<i64> {
    publish_cmd(channel, payload).query(conn)
}

fn publish_cmd(channel: &str, payload: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg(channel).arg(payload);
    cmd
}

/// Keeps one subscription connection: subscribes to what this server
/// wants, and hands over what other servers publish. With history in
/// Redis it keeps a second connection for loading topics, as the first
/// can only listen.
fn subscribe_loop(
    inner: &Inner,
    client: &redis::Client,
    broadcaster: &Broadcaster,
    mut backoff: Backoff,
) {
    let mut places = ordered::Places::default();
    while !inner.stop.load(Ordering::Acquire) {
        backoff.sleep(&inner.stop);
        let Some(mut conn) = connect(inner, client, &mut backoff) else {
            continue;
        };
        // The second connection is part of the first: it is not counted
        // as a reconnect of its own.
        let mut loads = None;
        if inner.history.is_some() {
            loads = open(client).ok();
            if loads.is_none() {
                backoff.failed();
                continue;
            }
        }
        // Every wanted topic is subscribed afresh on a new connection, and
        // loaded afresh: messages may have been missed in between.
        inner.changed.store(true, Ordering::Release);
        places.clear();
        let mut link = Link {
            inner,
            broadcaster,
            loads: loads.as_mut(),
            places: &mut places,
        };
        if link.listen(&mut conn).is_err() {
            backoff.failed();
            // Redis itself may be away, not only this connection: then
            // publishers are refused until the publishing thread has
            // checked its own.
            if client.get_connection_with_timeout(CONNECT_TIMEOUT).is_err() {
                inner.up.store(false, Ordering::Release);
            }
        }
    }
}

/// What the subscribing thread works with on one connection.
struct Link<'a> {
    inner: &'a Inner,
    broadcaster: &'a Broadcaster,
    /// With history in Redis, the connection that loads topics.
    loads: Option<&'a mut redis::Connection>,
    places: &'a mut ordered::Places,
}

impl Link<'_> {
    /// The topics wanted now; with history in Redis, the regained topics
    /// whose first load is in, taken; and those whose first load is not,
    /// which wait to be subscribed.
    #[allow(clippy::type_complexity)]
    fn take_wanted(
        &self,
    ) -> (
        BTreeSet<String>,
        Vec<(String, Option<ordered::Loaded>)>,
        BTreeSet<String>,
    ) {
        let mut wanted = self.inner.wanted.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = &mut *wanted;
        if self.loads.is_none() {
            wanted.regained.clear();
            return (wanted.topics.clone(), Vec::new(), BTreeSet::new());
        }
        let mut ready = Vec::new();
        let first = &mut wanted.first;
        wanted.regained.retain(|topic| match first.remove(topic) {
            Some(loaded) => {
                ready.push((topic.clone(), loaded));
                false
            }
            None => true,
        });
        (wanted.topics.clone(), ready, wanted.regained.clone())
    }

    /// Serves one subscription connection until it fails or the bridge
    /// stops.
    fn listen(&mut self, conn: &mut redis::Connection) -> redis::RedisResult<()> {
        let inner = self.inner;
        let mut pubsub = conn.as_pubsub();
        pubsub.subscribe(inner.control_channel())?;
        let mut subscribed = BTreeSet::new();
        let mut heard = Instant::now();
        // Commands get IO_TIMEOUT for their replies; waiting for messages
        // gets TICK, so that the loop comes round often.
        let mut ticking = false;
        loop {
            if inner.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            if inner.changed.swap(false, Ordering::AcqRel) {
                if ticking {
                    pubsub.set_read_timeout(Some(IO_TIMEOUT))?;
                    ticking = false;
                }
                let (wanted, ready, waiting) = self.take_wanted();
                let new: Vec<String> = wanted
                    .difference(&subscribed)
                    .filter(|t| !waiting.contains(*t))
                    .cloned()
                    .collect();
                // With history in Redis, a topic is loaded twice when it
                // gains its first subscriber here. First before this
                // server subscribes (see `Wanted::first`): a subscriber
                // with no cursor starts from there. Then once subscribed:
                // what comes after that load comes on the channel, so the
                // copy is whole from there on.
                if let Some(loads) = self.loads.as_deref_mut() {
                    for (topic, first) in &ready {
                        match first {
                            Some(first) => self.places.apply(inner, topic, first, self.broadcaster),
                            None => self.places.load(loads, inner, topic, self.broadcaster)?,
                        }
                    }
                    for topic in new.iter().filter(|t| !ready.iter().any(|(r, _)| r == *t)) {
                        self.places.load(loads, inner, topic, self.broadcaster)?;
                    }
                }
                for topic in &new {
                    pubsub.subscribe(inner.channel(topic))?;
                }
                for topic in subscribed.difference(&wanted) {
                    pubsub.unsubscribe(inner.channel(topic))?;
                    self.places.remove(topic);
                }
                if let Some(loads) = self.loads.as_deref_mut() {
                    let again = new.iter().chain(ready.iter().map(|(topic, _)| topic));
                    for topic in again.collect::<BTreeSet<_>>() {
                        self.places.load(loads, inner, topic, self.broadcaster)?;
                    }
                }
                subscribed.retain(|t| wanted.contains(t));
                subscribed.extend(new);
            }
            if let Some(loads) = self.loads.as_deref_mut() {
                self.places.reload_stale(loads, inner, self.broadcaster)?;
            }
            if !ticking {
                pubsub.set_read_timeout(Some(TICK))?;
                ticking = true;
            }
            let msg = match pubsub.get_message() {
                Ok(msg) => msg,
                Err(e) if e.is_timeout() => {
                    // Silent for long: make sure Redis is still there.
                    if heard.elapsed() >= PING_AFTER {
                        pubsub.set_read_timeout(Some(IO_TIMEOUT))?;
                        ticking = false;
                        pubsub.ping::<redis::Value>()?;
                        heard = Instant::now();
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            heard = Instant::now();
            let channel = msg.get_channel_name();
            let Some(topic) = channel
                .strip_prefix(&inner.prefix)
                .and_then(|rest| rest.strip_prefix(':'))
            else {
                // The control channel wakes us to look again; anything else
                // was not ours to get.
                if channel != inner.control_channel() {
                    bump(&inner.counters.malformed);
                }
                continue;
            };
            let payload = msg.get_payload_bytes();
            if let Some(loads) = self.loads.as_deref_mut() {
                self.places
                    .heard(loads, inner, topic, payload, self.broadcaster)?;
                continue;
            }
            match deliver(inner.node, topic, payload, self.broadcaster) {
                Delivered::Local => {}
                Delivered::Remote => bump(&inner.counters.received),
                Delivered::Refused => bump(&inner.counters.dropped),
                Delivered::Malformed => bump(&inner.counters.malformed),
            }
        }
    }
}

enum Delivered {
    /// Our own message, delivered here when it was published.
    Local,
    Remote,
    /// A worker here was too far behind to take it.
    Refused,
    Malformed,
}

/// A kind byte and its payload as a message; `None` for an unknown kind
/// or text that is not UTF-8.
fn message_of(bytes: &[u8]) -> Option<Message<'_>> {
    let (&kind, body) = bytes.split_first()?;
    match (kind, std::str::from_utf8(body)) {
        (TEXT, Ok(text)) => Some(Message::Text(text)),
        (BINARY, _) => Some(Message::Binary(body)),
        _ => None,
    }
}

/// Hands a message from Redis to local subscribers, unless it is ours.
fn deliver(node: u64, topic: &str, payload: &[u8], broadcaster: &Broadcaster) -> Delivered {
    let Some((head, body)) = payload.split_at_checked(NODE_LEN) else {
        return Delivered::Malformed;
    };
    let from = u64::from_be_bytes(head.try_into().expect("8 bytes"));
    let Some(msg) = message_of(body) else {
        return Delivered::Malformed;
    };
    if from == node {
        return Delivered::Local;
    }
    match broadcaster.publish_local(topic, msg) {
        PublishStatus::Queued => Delivered::Remote,
        _ => Delivered::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_written_in_the_prometheus_format() {
        let counters = BridgeCounters {
            published: 1,
            received: 2,
            dropped: 3,
            reconnects: 4,
            malformed: 5,
            refused: 6,
            loads: 7,
            gaps: 8,
        };
        let mut out = String::new();
        counters.write_prometheus(&mut out);
        let fields = [
            "published",
            "received",
            "dropped",
            "reconnects",
            "malformed",
            "refused",
            "loads",
            "gaps",
        ];
        // Each family: its HELP, its TYPE and its one sample, in that order.
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3 * fields.len(), "{out}");
        for ((n, field), family) in (1..).zip(fields).zip(lines.chunks(3)) {
            let name = format!("wsloop_redis_{field}_total");
            assert!(family[0].starts_with(&format!("# HELP {name} ")), "{out}");
            assert_eq!(family[1], format!("# TYPE {name} counter"));
            assert_eq!(family[2], format!("{name} {n}"));
        }
        assert!(out.ends_with('\n'));
    }

    fn bridge(queue: usize, queue_bytes: usize) -> (Inner, Receiver<Outgoing>) {
        let (outgoing, receiver) = mpsc::sync_channel(queue);
        let config = BridgeConfig::default().prefix("p").queue_bytes(queue_bytes);
        let inner = Inner {
            node: 1,
            ..Inner::new(&config, outgoing)
        };
        (inner, receiver)
    }

    #[test]
    fn the_queue_is_bounded_in_messages_and_in_bytes() {
        // 9 bytes of header per message: 100 bytes hold one 50-byte message.
        let (inner, receiver) = bridge(10, 100);
        inner.published("t", Message::Binary(&[0; 50]));
        inner.published("t", Message::Binary(&[0; 50]));
        assert_eq!(inner.counters.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(inner.queued_bytes.load(Ordering::Relaxed), 59);
        let Ok(Outgoing::Publish { topic, payload }) = receiver.try_recv() else {
            panic!("one message queued");
        };
        assert_eq!((topic.as_str(), payload.len()), ("t", 59));
        assert_eq!(payload[..9], [0, 0, 0, 0, 0, 0, 0, 1, BINARY]);

        let (inner, _receiver) = bridge(1, 1 << 20);
        inner.published("t", Message::Text("a"));
        inner.published("t", Message::Text("b"));
        assert_eq!(inner.counters.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(inner.queued_bytes.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn the_wanted_topics_follow_interest() {
        let (inner, _receiver) = bridge(1, 100);
        let wanted = |topic: &str, on: bool| {
            inner.interest(topic, on);
            inner
                .wanted
                .lock()
                .unwrap()
                .topics
                .iter()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(wanted("a", true), ["a"]);
        assert_eq!(wanted("b", true), ["a", "b"]);
        assert_eq!(wanted("a", false), ["b"]);
        assert!(inner.changed.load(Ordering::Relaxed));
    }
}
