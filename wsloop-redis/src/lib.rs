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
//! let server = wsloop::Server::bind("127.0.0.1:8080", wsloop::Config::default(), || Chat)?;
//! let bridge = wsloop_redis::RedisBridge::start(&server, "redis://127.0.0.1:6379/", Default::default())?;
//! # Ok(()) }
//! ```
//!
//! # Delivery
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
//! - **At most once across servers.** While Redis cannot be reached,
//!   messages for other servers are dropped and counted, and so are
//!   messages over the bounded queue to the publishing thread. Nothing
//!   waits to be replayed: a chat line from minutes ago is worth less than
//!   a server that never blocks.
//!
//! # Subscriptions follow demand
//! A server subscribes to the channel `<prefix>:<topic>` when the topic
//! gets its first subscriber on that server, and unsubscribes when the
//! last one leaves, all on one Redis connection per server (plus one to
//! publish). `PUBSUB CHANNELS` shows exactly the topics someone listens
//! to, per server.
//!
//! # Faults
//! If Redis goes away, local delivery goes on. Both threads reconnect with
//! a backoff from 50 ms to 2 s, and the subscriber subscribes again to
//! every topic wanted. Every command has a 2 s timeout and the subscriber
//! PINGs a silent connection every 5 s, so a Redis that stops answering
//! without closing the connection is given up on too. A change in the
//! wanted topics wakes the subscriber through a control channel at once,
//! or within its 100 ms read timeout if that message is lost. [`RedisBridge::counters`] tells what was published,
//! received, dropped and reconnected, and what arrived malformed (which is
//! dropped, never a panic).

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            prefix: "wsloop".into(),
            queue: 4096,
            queue_bytes: 8 << 20,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
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
}

impl fmt::Display for BridgeCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "redis: {} published, {} received, {} dropped, {} reconnects, {} malformed",
            self.published, self.received, self.dropped, self.reconnects, self.malformed
        )
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
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::InvalidUrl(e) => write!(f, "not a Redis URL: {e}"),
            BridgeError::AlreadyBridged => f.write_str("the server already has a bridge"),
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
    Publish {
        channel: String,
        payload: Vec<u8>,
    },
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
    wanted: Mutex<BTreeSet<String>>,
    changed: AtomicBool,
    stop: AtomicBool,
    counters: Counters,
}

impl Inner {
    fn channel(&self, topic: &str) -> String {
        format!("{}:{topic}", self.prefix)
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
        let (kind, bytes) = match msg {
            Message::Text(text) => (TEXT, text.as_bytes()),
            Message::Binary(bytes) => (BINARY, bytes),
            _ => return,
        };
        let mut payload = Vec::with_capacity(NODE_LEN + 1 + bytes.len());
        payload.extend_from_slice(&self.node.to_be_bytes());
        payload.push(kind);
        payload.extend_from_slice(bytes);
        let len = payload.len();
        if self.queued_bytes.fetch_add(len, Ordering::AcqRel) + len > self.queue_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            bump(&self.counters.dropped);
            return;
        }
        let channel = self.channel(topic);
        let item = Outgoing::Publish { channel, payload };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.outgoing.try_send(item)
        {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            bump(&self.counters.dropped);
        }
    }

    fn interest(&self, topic: &str, subscribed: bool) {
        let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        if subscribed {
            wanted.insert(topic.to_owned());
        } else {
            wanted.remove(topic);
        }
        self.changed.store(true, Ordering::Release);
        self.poke();
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
    /// Returns at once: the threads connect, and reconnect, on their own,
    /// so a Redis that is down at start is not an error.
    pub fn start(
        server: &Server,
        url: &str,
        config: BridgeConfig,
    ) -> Result<RedisBridge, BridgeError> {
        let client = redis::Client::open(url).map_err(BridgeError::InvalidUrl)?;
        let (outgoing, queue) = mpsc::sync_channel(config.queue.max(1));
        let inner = Arc::new(Inner {
            node: node_id(),
            prefix: config.prefix.clone(),
            outgoing,
            queued_bytes: AtomicUsize::new(0),
            queue_bytes: config.queue_bytes,
            wanted: Mutex::default(),
            changed: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
        });
        if !server.set_bridge(inner.clone()) {
            return Err(BridgeError::AlreadyBridged);
        }
        let backoff = Backoff::new(config.min_backoff, config.max_backoff);
        let publisher = {
            let (inner, client, backoff) = (inner.clone(), client.clone(), backoff.clone());
            std::thread::Builder::new()
                .name("wsloop-redis-pub".into())
                .spawn(move || publish_loop(&inner, &client, queue, backoff))
                .expect("a thread can be spawned at start-up")
        };
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
    let attempt = || -> redis::RedisResult<redis::Connection> {
        let conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(conn)
    };
    match attempt() {
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

/// Publishes what the workers queue, in order. Without a connection, a
/// message is dropped and counted rather than held.
fn publish_loop(
    inner: &Inner,
    client: &redis::Client,
    queue: Receiver<Outgoing>,
    mut backoff: Backoff,
) {
    let mut conn: Option<redis::Connection> = None;
    for item in queue.iter() {
        if inner.stop.load(Ordering::Acquire) {
            // What still waits is dropped, and counted.
            for left in std::iter::once(item).chain(queue.try_iter()) {
                if let Outgoing::Publish { .. } = left {
                    bump(&inner.counters.dropped);
                }
            }
            return;
        }
        if conn.is_none() && backoff.ready() {
            conn = connect(inner, client, &mut backoff);
        }
        let sent = match (&item, conn.as_mut()) {
            (Outgoing::Publish { channel, payload }, Some(c)) => {
                publish(c, channel, payload).is_ok()
            }
            (Outgoing::Poke, Some(c)) => publish(c, &inner.control_channel(), b"").is_ok(),
            (_, None) => false,
        };
        if !sent && conn.is_some() {
            conn = None;
            backoff.failed();
        }
        if let Outgoing::Publish { payload, .. } = &item {
            inner
                .queued_bytes
                .fetch_sub(payload.len(), Ordering::AcqRel);
            bump(if sent {
                &inner.counters.published
            } else {
                &inner.counters.dropped
            });
        }
    }
}

fn publish(conn: &mut redis::Connection, channel: &str, payload: &[u8]) -> redis::RedisResult<i64> {
    redis::cmd("PUBLISH").arg(channel).arg(payload).query(conn)
}

/// Keeps one subscription connection: subscribes to what this server
/// wants, and hands over what other servers publish.
fn subscribe_loop(
    inner: &Inner,
    client: &redis::Client,
    broadcaster: &Broadcaster,
    mut backoff: Backoff,
) {
    while !inner.stop.load(Ordering::Acquire) {
        backoff.sleep(&inner.stop);
        let Some(mut conn) = connect(inner, client, &mut backoff) else {
            continue;
        };
        // Every wanted topic is subscribed afresh on a new connection.
        inner.changed.store(true, Ordering::Release);
        if listen(inner, &mut conn, broadcaster).is_err() {
            backoff.failed();
        }
    }
}

/// Serves one subscription connection until it fails or the bridge stops.
fn listen(
    inner: &Inner,
    conn: &mut redis::Connection,
    broadcaster: &Broadcaster,
) -> redis::RedisResult<()> {
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
            let wanted = inner
                .wanted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for topic in wanted.difference(&subscribed) {
                pubsub.subscribe(inner.channel(topic))?;
            }
            for topic in subscribed.difference(&wanted) {
                pubsub.unsubscribe(inner.channel(topic))?;
            }
            subscribed = wanted;
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
        match deliver(inner.node, topic, msg.get_payload_bytes(), broadcaster) {
            Delivered::Local => {}
            Delivered::Remote => bump(&inner.counters.received),
            Delivered::Refused => bump(&inner.counters.dropped),
            Delivered::Malformed => bump(&inner.counters.malformed),
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

/// Hands a message from Redis to local subscribers, unless it is ours.
fn deliver(node: u64, topic: &str, payload: &[u8], broadcaster: &Broadcaster) -> Delivered {
    let Some((head, body)) = payload.split_at_checked(NODE_LEN + 1) else {
        return Delivered::Malformed;
    };
    let from = u64::from_be_bytes(head[..NODE_LEN].try_into().expect("8 bytes"));
    let msg = match (head[NODE_LEN], std::str::from_utf8(body)) {
        (TEXT, Ok(text)) => Message::Text(text),
        (BINARY, _) => Message::Binary(body),
        _ => return Delivered::Malformed,
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

    fn bridge(queue: usize, queue_bytes: usize) -> (Inner, Receiver<Outgoing>) {
        let (outgoing, receiver) = mpsc::sync_channel(queue);
        let inner = Inner {
            node: 1,
            prefix: "p".into(),
            outgoing,
            queued_bytes: AtomicUsize::new(0),
            queue_bytes,
            wanted: Mutex::default(),
            changed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
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
        let Ok(Outgoing::Publish { channel, payload }) = receiver.try_recv() else {
            panic!("one message queued");
        };
        assert_eq!((channel.as_str(), payload.len()), ("p:t", 59));
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
