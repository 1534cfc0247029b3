//! Topics: publish one message to every subscriber on every worker.
//!
//! A published message is encoded once as a server frame. Server frames are
//! not masked, so the same bytes, shared as an `Arc<[u8]>`, go to every
//! subscriber. Each worker owns its subscriptions ([`Topics`]); other
//! workers reach it through its own queue and `Waker`, so no lock is shared
//! by all publishers.
//!
//! Ordering: messages from one publisher to one topic reach every
//! subscriber in the order they were published. A publisher is a handler
//! on one worker, or one [`Broadcaster`] used from one thread. Messages
//! from different publishers may interleave differently at different
//! subscribers.
//!
//! Beyond one process, a [`Bridge`] sees every message published here and
//! which topics have subscribers here; the `wsloop-redis` crate is one,
//! carrying topics between servers through Redis pub/sub.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use mio::Waker;

use crate::protocol::{encode_frame, Message};

/// A message for a topic, as the frame bytes every subscriber receives.
#[derive(Debug, Clone)]
pub(crate) struct Publish {
    pub topic: Arc<str>,
    pub frame: Arc<[u8]>,
}

impl Publish {
    /// Encodes `msg` once.
    pub fn new(topic: &str, msg: Message<'_>) -> Self {
        let mut frame = Vec::with_capacity(msg.as_bytes().len() + 10);
        encode_frame(&mut frame, true, msg.opcode(), None, msg.as_bytes());
        Publish {
            topic: topic.into(),
            frame: frame.into(),
        }
    }
}

/// One worker's subscriptions, by topic and by connection.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    by_topic: HashMap<Arc<str>, Vec<usize>>,
    by_conn: HashMap<usize, Vec<Arc<str>>>,
}

impl Topics {
    /// Subscribes a connection; false if it already was.
    pub fn subscribe(&mut self, key: usize, topic: &str) -> bool {
        let subs = self.by_topic.entry(topic.into()).or_default();
        if subs.contains(&key) {
            return false;
        }
        subs.push(key);
        let name = self
            .by_topic
            .get_key_value(topic)
            .map(|(name, _)| name.clone())
            .expect("inserted above");
        self.by_conn.entry(key).or_default().push(name);
        true
    }

    /// Unsubscribes a connection; false if it was not subscribed.
    pub fn unsubscribe(&mut self, key: usize, topic: &str) -> bool {
        let Some(subs) = self.by_topic.get_mut(topic) else {
            return false;
        };
        let Some(at) = subs.iter().position(|&k| k == key) else {
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
                subs.retain(|&k| k != key);
                if subs.is_empty() {
                    self.by_topic.remove(&topic);
                    emptied.push(topic);
                }
            }
        }
        emptied
    }

    /// The connections subscribed to a topic.
    pub fn subscribers(&self, topic: &str) -> &[usize] {
        self.by_topic.get(topic).map_or(&[], Vec::as_slice)
    }
}

/// How other threads reach one worker.
pub(crate) struct Remote {
    pub waker: Waker,
    pub inbox: mpsc::Sender<Publish>,
    /// Set while the worker has been woken and not yet drained its inbox,
    /// so that a burst of publishes costs one wakeup.
    pub pending: AtomicBool,
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
}

/// What the workers and the handles share: the shutdown flag, each
/// worker's inbox, and the bridge with what it is told of.
pub(crate) struct Hub {
    pub shutdown: AtomicBool,
    pub remotes: Vec<Remote>,
    pub bridge: OnceLock<Arc<dyn Bridge>>,
    /// For each topic with subscribers here, on how many workers.
    pub interest: Mutex<HashMap<Arc<str>, usize>>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("workers", &self.remotes.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Queues a message on every worker but `except`, waking each.
    pub fn send(&self, publish: &Publish, except: Option<usize>) {
        for (i, remote) in self.remotes.iter().enumerate() {
            if Some(i) == except {
                continue;
            }
            // A worker that has exited dropped its receiver; nothing to do.
            if remote.inbox.send(publish.clone()).is_ok()
                && !remote.pending.swap(true, Ordering::AcqRel)
            {
                let _ = remote.waker.wake();
            }
        }
    }

    /// Wakes every worker, for shutdown.
    pub fn wake_all(&self) {
        for remote in &self.remotes {
            let _ = remote.waker.wake();
        }
    }

    /// A worker's first subscriber to `topic` arrived (`gained`) or its
    /// last left. The bridge hears when the whole server's count crosses
    /// zero. Calls are made under the lock, so they come in order.
    pub fn worker_interest(&self, topic: &str, gained: bool) {
        let mut interest = self.interest.lock().unwrap_or_else(|e| e.into_inner());
        let changed = if gained {
            let count = interest.entry(topic.into()).or_default();
            *count += 1;
            *count == 1
        } else {
            match interest.get_mut(topic) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => interest.remove(topic).is_some(),
                None => false,
            }
        };
        if let (true, Some(bridge)) = (changed, self.bridge.get()) {
            bridge.interest(topic, gained);
        }
    }

    /// Tells the bridge, if any, of a message published here.
    pub fn bridge_published(&self, topic: &str, msg: Message<'_>) {
        if let Some(bridge) = self.bridge.get() {
            bridge.published(topic, msg);
        }
    }

    /// Installs the bridge, and tells it of every topic with subscribers
    /// already. False if one was installed before.
    pub fn set_bridge(&self, bridge: Arc<dyn Bridge>) -> bool {
        let interest = self.interest.lock().unwrap_or_else(|e| e.into_inner());
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

/// Publishes to topics from outside any handler, from any thread.
#[derive(Debug, Clone)]
pub struct Broadcaster {
    pub(crate) hub: Arc<Hub>,
}

impl Broadcaster {
    /// Sends `msg` to every subscriber of `topic` on every worker, and to
    /// the bridge, if any.
    pub fn publish(&self, topic: &str, msg: Message<'_>) {
        self.publish_local(topic, msg);
        self.hub.bridge_published(topic, msg);
    }

    /// Sends `msg` to every subscriber of `topic` on this server only, not
    /// to the bridge: how a bridge delivers what other servers published.
    pub fn publish_local(&self, topic: &str, msg: Message<'_>) {
        self.hub.send(&Publish::new(topic, msg), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_kept_both_ways() {
        let mut topics = Topics::default();
        assert!(topics.subscribe(1, "a"));
        assert!(!topics.subscribe(1, "a"));
        assert!(topics.subscribe(2, "a"));
        assert!(topics.subscribe(1, "b"));
        assert_eq!(topics.subscribers("a"), [1, 2]);
        assert_eq!(topics.by_conn[&1].len(), 2);
        assert!(topics.unsubscribe(1, "a"));
        assert!(!topics.unsubscribe(1, "a"));
        assert_eq!(topics.subscribers("a"), [2]);
        assert!(topics.remove_conn(1).iter().map(|t| &**t).eq(["b"]));
        assert!(topics.remove_conn(2).iter().map(|t| &**t).eq(["a"]));
        assert_eq!(topics.subscribers("b"), [] as [usize; 0]);
        assert!(topics.by_topic.is_empty() && topics.by_conn.is_empty());
    }

    #[test]
    fn publish_encodes_an_unmasked_frame_once() {
        let p = Publish::new("room", Message::Text("hi"));
        assert_eq!(&*p.frame, [0x81, 0x02, b'h', b'i']);
        let copy = p.clone();
        assert!(Arc::ptr_eq(&p.frame, &copy.frame));
    }
}
