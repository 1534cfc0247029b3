//! Topics: publish one message to every subscriber on every worker.
//!
//! A published message is encoded once as a server frame. Server frames are
//! not masked, so the same bytes, shared as an `Arc<[u8]>`, go to every
//! subscriber. Each worker owns its subscriptions ([`Topics`]); other
//! workers reach it through its own queue and `Waker`. Publishers share
//! one read lock, on the list of which workers have subscribers to each
//! topic (and, with history, the history lock). A message is queued only for the workers with
//! subscribers to its topic, and each queue is bounded in bytes
//! ([`Config::max_inbox_bytes`](crate::Config::max_inbox_bytes)): a
//! publish goes to all of those workers or, when one is full, to none
//! ([`PublishStatus::Refused`]).
//!
//! Ordering: messages from one publisher to one topic reach every
//! subscriber in the order they were published. A publisher is a handler
//! on one worker, or one [`Broadcaster`] used from one thread. Messages
//! from different publishers may interleave differently at different
//! subscribers, unless the server keeps history
//! ([`Config::history`](crate::Config::history)): then every message is
//! numbered under one lock and queued to every worker with subscribers, its
//! own included, under the same lock, so every subscriber sees every topic
//! in one order.
//!
//! Beyond one process, a [`Bridge`] sees every message published here and
//! which topics have subscribers here; the `wsloop-redis` crate is one,
//! carrying topics between servers through Redis pub/sub. A bridge may
//! also number messages itself ([`Bridge::orders`]): then every message
//! goes out first, comes back numbered through [`Broadcaster::deliver`],
//! and the history here is a copy of the bridge's, loaded by
//! [`Broadcaster::restore`]. A bridge's methods are called under the
//! interest lock: they must neither block nor publish.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, RwLock};

use mio::Waker;

use crate::history::{Catchup, Entry, History, MessageId};
use crate::protocol::{encode_frame, Message};
use crate::stats::{Counters, Stats};

/// A message for a topic, as the frame bytes every subscriber receives.
#[derive(Debug, Clone)]
pub(crate) struct Publish {
    pub topic: Arc<str>,
    pub frame: Arc<[u8]>,
    /// Its id, when the server keeps history.
    pub id: Option<MessageId>,
}

impl Publish {
    /// What this message costs in a worker's inbox, for the inbox's byte
    /// bound: its frame, its topic and the queue's own slot.
    pub fn cost(&self) -> usize {
        self.frame.len() + self.topic.len() + std::mem::size_of::<Publish>()
    }

    /// Encodes `msg` once.
    pub fn new(topic: &str, msg: Message<'_>) -> Self {
        let mut frame = Vec::with_capacity(msg.as_bytes().len() + 10);
        encode_frame(&mut frame, true, msg.opcode(), None, msg.as_bytes());
        Publish {
            topic: topic.into(),
            frame: frame.into(),
            id: None,
        }
    }
}

/// One subscription: a connection, and the last message id it has had
/// from elsewhere (a replay), below which deliveries are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sub {
    pub key: usize,
    pub after: Option<MessageId>,
    /// Subscribed while the topic's history, kept by an ordering bridge,
    /// was not here: it takes nothing until the history is loaded
    /// ([`Inbound::Loaded`]), which tells it what followed `after`.
    pub waiting: bool,
}

impl Sub {
    /// Whether a message with this id is new to the subscriber. Ids of
    /// another epoch are: the ring was made again since the cursor.
    pub fn wants(&self, id: Option<MessageId>) -> bool {
        match (self.after, id) {
            (Some(after), Some(id)) => id.epoch != after.epoch || id.seq > after.seq,
            _ => true,
        }
    }
}

/// One worker's subscriptions, by topic and by connection.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    by_topic: HashMap<Arc<str>, Vec<Sub>>,
    by_conn: HashMap<usize, Vec<Arc<str>>>,
}

impl Topics {
    /// Subscribes a connection, to messages after `after` if given; false
    /// if it already was.
    pub fn subscribe(&mut self, key: usize, topic: &str, after: Option<MessageId>) -> bool {
        let subs = self.by_topic.entry(topic.into()).or_default();
        if subs.iter().any(|s| s.key == key) {
            return false;
        }
        subs.push(Sub {
            key,
            after,
            waiting: false,
        });
        let name = self
            .by_topic
            .get_key_value(topic)
            .map(|(name, _)| name.clone())
            .expect("inserted above");
        self.by_conn.entry(key).or_default().push(name);
        true
    }

    /// Marks a subscription as waiting for its topic's history, or done
    /// waiting.
    pub fn set_waiting(&mut self, key: usize, topic: &str, waiting: bool) {
        if let Some(sub) = self
            .by_topic
            .get_mut(topic)
            .and_then(|subs| subs.iter_mut().find(|s| s.key == key))
        {
            sub.waiting = waiting;
        }
    }

    /// Moves a subscription's cursor to `id`: it has had everything up to
    /// there by other means.
    pub fn advance(&mut self, key: usize, topic: &str, id: MessageId) {
        if let Some(sub) = self
            .by_topic
            .get_mut(topic)
            .and_then(|subs| subs.iter_mut().find(|s| s.key == key))
        {
            sub.after = Some(id);
        }
    }

    /// Unsubscribes a connection; false if it was not subscribed.
    pub fn unsubscribe(&mut self, key: usize, topic: &str) -> bool {
        let Some(subs) = self.by_topic.get_mut(topic) else {
            return false;
        };
        let Some(at) = subs.iter().position(|s| s.key == key) else {
            return false;
        };
        subs.swap_remove(at);
        if subs.is_empty() {
            self.by_topic.remove(topic);
        }
        if let Some(names) = self.by_conn.get_mut(&key) {
            names.retain(|n| &**n != topic);
            if names.is_empty() {
                self.by_conn.remove(&key);
            }
        }
        true
    }

    /// Drops every subscription of a closing connection; returns the
    /// topics that have no subscriber here any more.
    pub fn remove_conn(&mut self, key: usize) -> Vec<Arc<str>> {
        let mut emptied = Vec::new();
        for topic in self.by_conn.remove(&key).unwrap_or_default() {
            if let Some(subs) = self.by_topic.get_mut(&topic) {
                subs.retain(|s| s.key != key);
                if subs.is_empty() {
                    self.by_topic.remove(&topic);
                    emptied.push(topic);
                }
            }
        }
        emptied
    }

    /// The subscriptions to a topic.
    pub fn subscribers(&self, topic: &str) -> &[Sub] {
        self.by_topic.get(topic).map_or(&[], Vec::as_slice)
    }

    /// The subscriptions to a topic, to move their cursors.
    pub fn subscribers_mut(&mut self, topic: &str) -> &mut [Sub] {
        self.by_topic
            .get_mut(topic)
            .map_or(&mut [], Vec::as_mut_slice)
    }
}

/// What other threads hand a worker.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A message for the topic's subscribers on the worker.
    Publish(Publish),
    /// A newer held request took this one's key: answer it now, if the
    /// connection still holds the request that claimed it as `seq`.
    Replaced { conn: usize, seq: u64 },
    /// The topic's history was loaded, or loaded again, from where it is
    /// kept: bring every subscription to it up to date. `start` is where
    /// this load ended (its newest id, or its epoch's zero): where a
    /// subscription that waited for it with no cursor starts. Read from
    /// the history when the notice is handled, it could be a later load's.
    Loaded { topic: Arc<str>, start: MessageId },
    /// A message for one connection ([`Address`]): its slab key and the
    /// serial it was given, and the frame.
    Direct {
        conn: usize,
        serial: u64,
        frame: Arc<[u8]>,
    },
}

impl Inbound {
    /// What it costs in the inbox, for the inbox's byte bound.
    pub fn cost(&self) -> usize {
        match self {
            Inbound::Publish(publish) => publish.cost(),
            Inbound::Replaced { .. } => std::mem::size_of::<Inbound>(),
            Inbound::Loaded { topic, .. } => std::mem::size_of::<Inbound>() + topic.len(),
            Inbound::Direct { frame, .. } => std::mem::size_of::<Inbound>() + frame.len(),
        }
    }
}

/// How other threads reach one worker.
pub(crate) struct Remote {
    pub waker: Waker,
    pub inbox: mpsc::Sender<Inbound>,
    /// Set while the worker has been woken and not yet drained its inbox,
    /// so that a burst of publishes costs one wakeup.
    pub pending: AtomicBool,
    /// What the inbox holds, by [`Publish::cost`]: added by senders,
    /// taken off by the worker as it drains.
    pub queued: AtomicUsize,
    /// The worker's counters, where refused publishes are counted.
    pub stats: Arc<Stats>,
    /// The worker's connections that were given an [`Address`], by slab
    /// key, with the serial that tells them from a later connection with
    /// the same key.
    pub addresses: Mutex<HashMap<usize, u64>>,
}

impl Remote {
    /// Whether the inbox is at its bound.
    fn is_full(&self, max: usize) -> bool {
        self.queued.load(Ordering::Acquire) >= max
    }

    /// Queues a message and wakes the worker, once per burst.
    fn push(&self, inbound: Inbound) {
        self.queued.fetch_add(inbound.cost(), Ordering::AcqRel);
        // A worker that has exited dropped its receiver; nothing to do.
        if self.inbox.send(inbound).is_ok() && !self.pending.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    /// The worker took a message off its inbox.
    pub fn took(&self, inbound: &Inbound) {
        self.queued.fetch_sub(inbound.cost(), Ordering::AcqRel);
    }
}

/// Where one connection can be reached from anywhere in the server: its
/// worker, its [`ConnId`](crate::ConnId) there, and a serial that no
/// later connection with the same id shares. Get one with
/// [`Conn::address`](crate::Conn::address); send to it with
/// [`Conn::send_to`](crate::Conn::send_to),
/// [`Publisher::send_to`](crate::Publisher::send_to) or
/// [`Broadcaster::send_to`]. It is plain data: keep it in shared state
/// (a map from user name to address, say), or send it across threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    worker: usize,
    conn: usize,
    serial: u64,
}

impl Address {
    /// The worker the connection is on.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The connection's id on its worker.
    pub fn conn(&self) -> crate::ConnId {
        crate::ConnId(self.conn)
    }
}

/// What became of a message sent to one [`Address`]. `#[must_use]`
/// because `Gone` usually means the application's own record of the
/// address is stale and should be dropped.
#[must_use = "the connection may be gone"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectStatus {
    /// Queued for the connection's worker, which sends it unless the
    /// connection closes first.
    Queued,
    /// The connection has closed: nothing was sent.
    Gone,
    /// The connection's worker has
    /// [`Config::max_inbox_bytes`](crate::Config::max_inbox_bytes) waiting:
    /// nothing was sent.
    Refused,
}

/// What became of a publish. `#[must_use]` because a refused message
/// reached nobody: a publisher that ignores it loses a message its sender
/// thinks was said (the chat closes such a sender with 1013).
#[must_use = "a publish can be refused when a worker is overloaded"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishStatus {
    /// Queued for every worker with subscribers to the topic (and
    /// recorded in the topic's history, if kept).
    Queued,
    /// Not published, for anyone: a worker with subscribers to the topic
    /// has [`Config::max_inbox_bytes`](crate::Config::max_inbox_bytes)
    /// queued and not yet delivered. Nothing was recorded either, so no
    /// subscriber sees a gap. Counted in
    /// [`Counters::publishes_refused`](crate::Counters::publishes_refused)
    /// of the worker that was full.
    Refused,
}

/// Carries a server's topics beyond its process: it is told of every
/// message published here and of which topics have subscribers here, and
/// delivers what other processes publish through
/// [`Broadcaster::publish_local`]. Install one with
/// [`Server::set_bridge`](crate::Server::set_bridge).
///
/// Both methods are called on worker threads (and on threads using a
/// [`Broadcaster`]): they must not block, so a bridge hands the work to a
/// thread of its own.
pub trait Bridge: Send + Sync + 'static {
    /// A message was published on this server, by a handler or a
    /// [`Broadcaster::publish`]. Local subscribers get it anyway; the
    /// bridge takes it to the other servers. Calls for one topic from one
    /// publisher come in the order of publishing.
    fn published(&self, topic: &str, msg: Message<'_>);

    /// `topic` gained its first subscriber on this server (`true`), or
    /// lost its last (`false`). Calls come in order, one at a time.
    fn interest(&self, topic: &str, subscribed: bool);

    /// Whether this bridge numbers every message itself, in one order for
    /// all servers. Asked once, when the bridge is installed. If so, a
    /// message published here is handed to [`Bridge::submit`] instead of
    /// being numbered and delivered here, and reaches this server's
    /// subscribers only when the bridge brings it back with its id through
    /// [`Broadcaster::deliver`]. History is then a copy of the bridge's:
    /// [`Broadcaster::restore`] loads a topic when it gains its first
    /// subscriber here, and a topic with none here keeps no ring. The
    /// server must keep history ([`Config::history`](crate::Config::history)).
    /// By default false: [`Bridge::published`] is told of messages
    /// already delivered here.
    fn orders(&self) -> bool {
        false
    }

    /// Takes a message published here to be numbered, for a bridge that
    /// [orders](Bridge::orders). `Refused` tells the publisher that it was
    /// not sent (the bridge's store cannot be reached, or its queue is
    /// full). By default every message is refused.
    fn submit(&self, topic: &str, msg: Message<'_>) -> PublishStatus {
        let _ = (topic, msg);
        PublishStatus::Refused
    }
}

/// What the workers and the handles share: the shutdown flag, each
/// worker's inbox, topic history, and the bridge with what it is told of.
pub(crate) struct Hub {
    pub shutdown: AtomicBool,
    /// With the shutdown: the window, in milliseconds, over which the
    /// workers close their connections ([`ShutdownHandle::drain`]); 0 to
    /// close them all at once.
    ///
    /// [`ShutdownHandle::drain`]: crate::ShutdownHandle::drain
    pub drain_ms: AtomicU64,
    pub remotes: Vec<Remote>,
    /// Every topic's numbered messages, when the server keeps history.
    pub history: Option<Mutex<History>>,
    pub bridge: OnceLock<Arc<dyn Bridge>>,
    /// Set with a bridge that [orders](Bridge::orders) messages.
    pub ordered: OnceLock<Arc<dyn Bridge>>,
    /// For each topic with subscribers here, the workers that have some,
    /// in order: a message is queued for those workers only.
    pub interest: RwLock<HashMap<Arc<str>, Vec<usize>>>,
    /// Most bytes one worker's inbox may hold
    /// ([`Config::max_inbox_bytes`](crate::Config::max_inbox_bytes)).
    pub max_inbox_bytes: usize,
    /// Held requests by their [`Hold::key`](crate::Hold::key): the worker,
    /// connection and claim number of the request that holds each key now.
    pub held_keys: Mutex<HashMap<Arc<str>, (usize, usize, u64)>>,
    /// The last claim number given out: each claim is told apart by its
    /// own, so a notice for an older request never answers a newer one on
    /// the same connection.
    pub claims: AtomicU64,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("workers", &self.remotes.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Publishes a message from worker `from` (or from outside any worker),
    /// to the workers with subscribers to `topic`. Without history it is
    /// queued on those workers but `from`, and returned for `from` to
    /// deliver itself. With history it is numbered and queued on each of
    /// them under the history lock, so that all see one order, and `None`
    /// is returned. Either way it goes to all or to none: if one of those
    /// workers' inboxes is full, it is refused.
    pub fn publish(
        &self,
        topic: &str,
        msg: Message<'_>,
        from: Option<usize>,
    ) -> (PublishStatus, Option<Publish>) {
        match self.ordered.get() {
            Some(bridge) => (bridge.submit(topic, msg), None),
            None => self.publish_here(topic, msg, from),
        }
    }

    /// [`Hub::publish`] on this server alone, numbered here if history is
    /// kept.
    pub fn publish_here(
        &self,
        topic: &str,
        msg: Message<'_>,
        from: Option<usize>,
    ) -> (PublishStatus, Option<Publish>) {
        // An ordering bridge numbers every message: none is numbered here.
        if self.ordered.get().is_some() {
            return (PublishStatus::Refused, None);
        }
        // Topics the history does not keep go as without history.
        let kept = self.history.as_ref().map(lock).filter(|h| h.keeps(topic));
        let Some(mut history) = kept else {
            return self.with_interested(topic, |workers| {
                let others = || workers.iter().copied().filter(|&w| Some(w) != from);
                if self.refuse_if_full(others()) {
                    return (PublishStatus::Refused, None);
                }
                let publish = Publish::new(topic, msg);
                for worker in others() {
                    self.remotes[worker].push(Inbound::Publish(publish.clone()));
                }
                (PublishStatus::Queued, from.map(|_| publish))
            });
        };
        // Read under the history lock: a worker that gains its first
        // subscriber after this reads the history after this message is
        // in it (see `Conn::subscribe_after`).
        self.with_interested(topic, |workers| {
            if self.refuse_if_full(workers.iter().copied()) {
                return (PublishStatus::Refused, None);
            }
            let entry = history.record(topic, msg);
            let publish = Publish {
                topic: topic.into(),
                frame: entry.frame().clone(),
                id: Some(entry.id()),
            };
            for &worker in workers {
                self.remotes[worker].push(Inbound::Publish(publish.clone()));
            }
            (PublishStatus::Queued, None)
        })
    }

    /// Delivers message `id`, numbered by an ordering bridge, to the
    /// workers with subscribers to `topic`, keeping it in the topic's
    /// history first. All or none, as [`Hub::publish`]; also refused when
    /// `id` does not follow the newest message the history holds. With no
    /// subscriber here there is nothing to do, and nothing is kept.
    pub fn deliver(&self, topic: &str, id: MessageId, msg: Message<'_>) -> PublishStatus {
        let Some(history) = &self.history else {
            return PublishStatus::Refused;
        };
        let mut history = lock(history);
        self.with_interested(topic, |workers| {
            // Nobody here to deliver to, and no copy kept.
            if workers.is_empty() {
                return PublishStatus::Queued;
            }
            if self.refuse_if_full(workers.iter().copied()) {
                return PublishStatus::Refused;
            }
            // A topic this history does not keep goes as it came, with
            // no envelope and no id to skip by.
            let publish = if !history.keeps(topic) {
                Publish::new(topic, msg)
            } else {
                let Some(entry) = history.append(topic, id, msg) else {
                    return PublishStatus::Refused;
                };
                Publish {
                    topic: topic.into(),
                    frame: entry.frame().clone(),
                    id: Some(id),
                }
            };
            for &worker in workers {
                self.remotes[worker].push(Inbound::Publish(publish.clone()));
            }
            PublishStatus::Queued
        })
    }

    /// Loads `topic`'s history from an ordering bridge, if this server has
    /// subscribers to it, and tells the workers that have some to bring
    /// them up to date. False if it has none: nothing was kept.
    pub fn restore<'m>(
        &self,
        topic: &str,
        epoch: u32,
        next_seq: u64,
        messages: impl IntoIterator<Item = (u64, Message<'m>)>,
    ) -> bool {
        let Some(history) = &self.history else {
            return false;
        };
        let mut history = lock(history);
        self.with_interested(topic, |workers| {
            if workers.is_empty() {
                return false;
            }
            history.restore(topic, epoch, next_seq, messages);
            let start = MessageId {
                epoch,
                seq: next_seq.max(1) - 1,
            };
            let topic: Arc<str> = topic.into();
            for &worker in workers {
                let topic = topic.clone();
                self.remotes[worker].push(Inbound::Loaded { topic, start });
            }
            true
        })
    }

    /// The [`Address`] of `worker`'s connection `conn`, giving it one if it
    /// has none.
    pub fn address(&self, worker: usize, conn: usize) -> Address {
        let mut addresses = lock(&self.remotes[worker].addresses);
        let serial = *addresses
            .entry(conn)
            .or_insert_with(|| self.claims.fetch_add(1, Ordering::Relaxed) + 1);
        Address {
            worker,
            conn,
            serial,
        }
    }

    /// Forgets the address of `worker`'s connection `conn`, which ended.
    pub fn forget_address(&self, worker: usize, conn: usize) {
        lock(&self.remotes[worker].addresses).remove(&conn);
    }

    /// Whether `to` still names an open connection.
    pub fn is_current(&self, to: &Address) -> bool {
        self.is_current_here(to.worker, to.conn, to.serial)
    }

    /// Whether `worker`'s connection `conn` still has the address with
    /// `serial`.
    pub fn is_current_here(&self, worker: usize, conn: usize, serial: u64) -> bool {
        self.remotes
            .get(worker)
            .is_some_and(|remote| lock(&remote.addresses).get(&conn) == Some(&serial))
    }

    /// Queues `msg` for the connection at `to`, through its worker's inbox.
    pub fn send_to(&self, to: &Address, msg: Message<'_>) -> DirectStatus {
        if !self.is_current(to) {
            return DirectStatus::Gone;
        }
        if self.refuse_if_full(std::iter::once(to.worker)) {
            return DirectStatus::Refused;
        }
        let mut frame = Vec::with_capacity(msg.as_bytes().len() + 10);
        encode_frame(&mut frame, true, msg.opcode(), None, msg.as_bytes());
        self.remotes[to.worker].push(Inbound::Direct {
            conn: to.conn,
            serial: to.serial,
            frame: frame.into(),
        });
        DirectStatus::Queued
    }

    /// Gives `key` to the request held on `worker`'s connection `conn`,
    /// and returns the claim's number. The request that had it before, on
    /// any worker, is told it was replaced.
    pub fn claim_hold(&self, key: &Arc<str>, worker: usize, conn: usize) -> u64 {
        let seq = self.claims.fetch_add(1, Ordering::Relaxed) + 1;
        let before = lock(&self.held_keys).insert(key.clone(), (worker, conn, seq));
        if let Some((w, c, s)) = before {
            self.remotes[w].push(Inbound::Replaced { conn: c, seq: s });
        }
        seq
    }

    /// Lets go of `key` if the claim numbered `seq` still holds it.
    pub fn release_hold(&self, key: &str, seq: u64) {
        let mut keys = lock(&self.held_keys);
        if keys.get(key).is_some_and(|&(_, _, s)| s == seq) {
            keys.remove(key);
        }
    }

    /// Runs `f` on the workers with subscribers to `topic` now, under a
    /// read lock: publishers on different workers go on side by side, and
    /// no list is copied per message.
    fn with_interested<R>(&self, topic: &str, f: impl FnOnce(&[usize]) -> R) -> R {
        let interest = self.interest.read().unwrap_or_else(|e| e.into_inner());
        f(interest.get(topic).map_or(&[], Vec::as_slice))
    }

    /// Whether any of `workers` has a full inbox, counting the refusal
    /// there if so.
    fn refuse_if_full(&self, mut workers: impl Iterator<Item = usize>) -> bool {
        let full = workers.find(|&w| self.remotes[w].is_full(self.max_inbox_bytes));
        if let Some(w) = full {
            self.remotes[w].stats.publish_refused();
        }
        full.is_some()
    }

    /// The last `n` messages `topic`'s history holds, oldest first.
    pub fn last(&self, topic: &str, n: usize) -> Vec<Entry> {
        match &self.history {
            Some(history) => lock(history).last(topic, n),
            None => Vec::new(),
        }
    }

    /// What `topic`'s history holds after `after`; without history, nothing,
    /// and any cursor is a reset.
    pub fn since(&self, topic: &str, after: Option<MessageId>) -> Catchup {
        match &self.history {
            Some(history) => lock(history).since(topic, after),
            None => Catchup {
                reset: after.is_some(),
                ..Catchup::default()
            },
        }
    }

    /// Whether `topic`'s history is kept by an ordering bridge and not
    /// loaded here yet.
    #[cfg(test)]
    pub fn is_pending(&self, topic: &str) -> bool {
        self.ordered_place(topic).is_some_and(|now| now.pending)
    }

    /// With an ordering bridge, where `topic`'s copy here stands now: its
    /// latest id, or [pending](Catchup::pending). `None` without one.
    pub fn ordered_place(&self, topic: &str) -> Option<Catchup> {
        match (&self.history, self.ordered.get()) {
            (Some(history), Some(_)) => Some(lock(history).since(topic, None)),
            _ => None,
        }
    }

    /// Every worker's counters, summed.
    pub fn counters(&self) -> Counters {
        let mut total = Counters::default();
        for remote in &self.remotes {
            total.add(&remote.stats.snapshot());
        }
        total
    }

    /// Wakes every worker, for shutdown.
    pub fn wake_all(&self) {
        for remote in &self.remotes {
            let _ = remote.waker.wake();
        }
    }

    /// Worker `worker`'s first subscriber to `topic` arrived (`gained`) or
    /// its last left. The bridge hears when the whole server's count
    /// crosses zero. Calls are made under the lock, so they come in order.
    pub fn worker_interest(&self, worker: usize, topic: &str, gained: bool) {
        // With an ordering bridge, history is a copy kept only while this
        // server has subscribers: taken in the publishers' order (history,
        // then interest), so a restore never lands between the two.
        let mut history = match (&self.history, self.ordered.get()) {
            (Some(history), Some(_)) => Some(lock(history)),
            _ => None,
        };
        let mut interest = self.interest.write().unwrap_or_else(|e| e.into_inner());
        let changed = if gained {
            let workers = interest.entry(topic.into()).or_default();
            if let Err(at) = workers.binary_search(&worker) {
                workers.insert(at, worker);
            }
            workers.len() == 1
        } else {
            match interest.get_mut(topic) {
                Some(workers) => {
                    workers.retain(|&w| w != worker);
                    workers.is_empty() && interest.remove(topic).is_some()
                }
                None => false,
            }
        };
        if changed && !gained {
            if let Some(history) = history.as_mut() {
                history.forget(topic);
            }
        }
        if let (true, Some(bridge)) = (changed, self.bridge.get()) {
            bridge.interest(topic, gained);
        }
    }

    /// Tells the bridge, if any, of a message published and delivered
    /// here. A bridge that orders messages took it already.
    pub fn bridge_published(&self, topic: &str, msg: Message<'_>) {
        if let (Some(bridge), None) = (self.bridge.get(), self.ordered.get()) {
            bridge.published(topic, msg);
        }
    }

    /// Installs the bridge, and tells it of every topic with subscribers
    /// already. False if one was installed before.
    pub fn set_bridge(&self, bridge: Arc<dyn Bridge>) -> bool {
        // History first, then interest: the publishers' order.
        let mut history = self.history.as_ref().map(lock);
        let interest = self.interest.read().unwrap_or_else(|e| e.into_inner());
        if self.bridge.get().is_some() || (bridge.orders() && history.is_none()) {
            return false;
        }
        if bridge.orders() {
            if let Some(history) = history.as_mut() {
                history.set_mirror();
            }
            let _ = self.ordered.set(bridge.clone());
        }
        drop(history);
        if self.bridge.set(bridge).is_err() {
            return false;
        }
        let bridge = self.bridge.get().expect("set above");
        for topic in interest.keys() {
            bridge.interest(topic, true);
        }
        true
    }
}

/// Takes a lock that a panicking thread may have poisoned: the data under
/// these locks stays consistent between statements.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Publishes to topics from outside any handler, from any thread.
#[derive(Debug, Clone)]
pub struct Broadcaster {
    pub(crate) hub: Arc<Hub>,
}

impl Broadcaster {
    /// Sends `msg` to every subscriber of `topic` on every worker, and to
    /// the bridge, if any. A refused message goes to neither.
    pub fn publish(&self, topic: &str, msg: Message<'_>) -> PublishStatus {
        let status = self.hub.publish(topic, msg, None).0;
        if status == PublishStatus::Queued {
            self.hub.bridge_published(topic, msg);
        }
        status
    }

    /// Sends `msg` to every subscriber of `topic` on this server only, not
    /// to the bridge: how a bridge delivers what other servers published.
    pub fn publish_local(&self, topic: &str, msg: Message<'_>) -> PublishStatus {
        self.hub.publish_here(topic, msg, None).0
    }

    /// What `topic`'s history holds after `after` (see
    /// [`Conn::history`](crate::Conn::history)).
    pub fn history(&self, topic: &str, after: Option<MessageId>) -> Catchup {
        self.hub.since(topic, after)
    }

    /// The last `n` messages of `topic`'s history, oldest first.
    pub fn last(&self, topic: &str, n: usize) -> Vec<Entry> {
        self.hub.last(topic, n)
    }

    /// Sends `msg` to the one connection at `to`, on whatever worker it
    /// is, through that worker's inbox.
    pub fn send_to(&self, to: &Address, msg: Message<'_>) -> DirectStatus {
        self.hub.send_to(to, msg)
    }

    /// Delivers message `id` of `topic`, numbered by a bridge that
    /// [orders](Bridge::orders) messages, to this server's subscribers,
    /// keeping it in the topic's history. Each topic's messages must come
    /// in the bridge's order, each once: `Refused` when `id` is not the
    /// one after the newest the history holds (a gap, a repeat, a new
    /// epoch, or a topic not loaded; [`Broadcaster::restore`] it), or when
    /// a worker's inbox is full.
    pub fn deliver(&self, topic: &str, id: MessageId, msg: Message<'_>) -> PublishStatus {
        self.hub.deliver(topic, id, msg)
    }

    /// Loads `topic`'s history as a bridge that [orders](Bridge::orders)
    /// messages keeps it: its `epoch`, the number its next message will
    /// get, and its messages by number, oldest first. Every subscriber
    /// here is then brought up to date: one that subscribed with a cursor
    /// before the history was here gets what followed it
    /// ([`Handler::on_history`](crate::Handler::on_history)), and so does
    /// one that missed messages the bridge did not deliver. False, keeping
    /// nothing, if the topic has no subscriber on this server.
    pub fn restore<'m>(
        &self,
        topic: &str,
        epoch: u32,
        next_seq: u64,
        messages: impl IntoIterator<Item = (u64, Message<'m>)>,
    ) -> bool {
        self.hub.restore(topic, epoch, next_seq, messages)
    }

    /// The counters of every worker, summed, as
    /// [`Server::counters`](crate::Server::counters): for a thread that
    /// reports them while the server runs.
    pub fn counters(&self) -> Counters {
        self.hub.counters()
    }
}

#[cfg(test)]
mod tests;
