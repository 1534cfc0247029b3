//! The hub's and the topics' unit tests.

use super::*;

#[test]
fn subscriptions_are_kept_both_ways() {
    let mut topics = Topics::default();
    let keys = |topics: &Topics, t| {
        topics
            .subscribers(t)
            .iter()
            .map(|s| s.key)
            .collect::<Vec<_>>()
    };
    assert!(topics.subscribe(1, "a", None));
    assert!(!topics.subscribe(1, "a", None));
    assert!(topics.subscribe(2, "a", None));
    assert!(topics.subscribe(1, "b", None));
    assert_eq!(keys(&topics, "a"), [1, 2]);
    assert_eq!(topics.by_conn[&1].len(), 2);
    assert!(topics.unsubscribe(1, "a"));
    assert!(!topics.unsubscribe(1, "a"));
    assert_eq!(keys(&topics, "a"), [2]);
    assert!(topics.remove_conn(1).iter().map(|t| &**t).eq(["b"]));
    assert!(topics.remove_conn(2).iter().map(|t| &**t).eq(["a"]));
    assert!(topics.subscribers("b").is_empty());
    assert!(topics.by_topic.is_empty() && topics.by_conn.is_empty());
}

#[test]
fn a_resumed_subscription_skips_what_it_was_replayed() {
    let id = |epoch, seq| Some(MessageId { epoch, seq });
    let sub = Sub {
        key: 0,
        after: id(7, 5),
        waiting: false,
    };
    assert!(!sub.wants(id(7, 4)) && !sub.wants(id(7, 5)));
    assert!(sub.wants(id(7, 6)));
    assert!(sub.wants(id(8, 1)), "a new epoch is all new");
    assert!(Sub {
        key: 0,
        after: None,
        waiting: false,
    }
    .wants(id(7, 1)));
}

/// A hub of `workers` whose inboxes hold `max` bytes, and its inboxes.
fn hub(
    workers: usize,
    max: usize,
    history: Option<History>,
) -> (Hub, Vec<mpsc::Receiver<Inbound>>, Vec<mio::Poll>) {
    let mut remotes = Vec::new();
    let mut inboxes = Vec::new();
    let mut polls = Vec::new();
    for _ in 0..workers {
        let poll = mio::Poll::new().unwrap();
        let (inbox, receiver) = mpsc::channel();
        remotes.push(Remote {
            waker: Waker::new(poll.registry(), mio::Token(1)).unwrap(),
            inbox,
            pending: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            stats: Arc::default(),
            addresses: Mutex::default(),
        });
        inboxes.push(receiver);
        polls.push(poll);
    }
    let hub = Hub {
        shutdown: AtomicBool::new(false),
        drain_ms: AtomicU64::new(0),
        remotes,
        history: history.map(Mutex::new),
        bridge: OnceLock::new(),
        ordered: OnceLock::new(),
        interest: RwLock::default(),
        max_inbox_bytes: max,
        held_keys: Mutex::default(),
        claims: AtomicU64::new(0),
    };
    (hub, inboxes, polls)
}

#[test]
fn a_worker_without_subscribers_gets_nothing_queued() {
    let (hub, inboxes, _polls) = hub(3, 1 << 20, None);
    hub.worker_interest(2, "room", true);
    let (status, local) = hub.publish("room", Message::Text("hi"), Some(0));
    assert_eq!(status, PublishStatus::Queued);
    assert!(
        local.is_some(),
        "the publisher's own worker delivers itself"
    );
    assert!(inboxes[1].try_recv().is_err(), "worker 1 has no subscriber");
    let Ok(Inbound::Publish(publish)) = inboxes[2].try_recv() else {
        panic!("worker 2 has a subscriber");
    };
    assert_eq!(&*publish.frame, b"\x81\x02hi");
    let status = hub.publish("elsewhere", Message::Text("x"), None).0;
    assert_eq!(status, PublishStatus::Queued);
    assert!(inboxes.iter().all(|inbox| inbox.try_recv().is_err()));
    hub.worker_interest(2, "room", false);
    let _ = hub.publish("room", Message::Text("gone"), None);
    assert!(inboxes[2].try_recv().is_err());
}

#[test]
fn a_full_inbox_refuses_the_publish_for_everyone_and_records_nothing() {
    let history = History::new(crate::HistoryConfig::default(), 1);
    let (hub, inboxes, _polls) = hub(2, 4_096, Some(history));
    hub.worker_interest(0, "room", true);
    hub.worker_interest(1, "room", true);
    let line = "x".repeat(1_000);
    let mut queued = 0;
    while hub.publish("room", Message::Text(&line), None).0 == PublishStatus::Queued {
        queued += 1;
        assert!(queued < 100, "never refused");
    }
    // Full at the bound, by at most the one message that reached it.
    let held = hub.remotes[1].queued.load(Ordering::Acquire);
    let one = inboxes[1].try_recv().unwrap().cost();
    assert!((4_096..4_096 + one).contains(&held), "{held}");
    let refused = |r: &Remote| r.stats.snapshot().publishes_refused;
    assert_eq!(hub.remotes.iter().map(refused).sum::<u64>(), 1);
    // Nothing of the refused message anywhere: not in either inbox,
    // not in the history.
    assert_eq!(inboxes[0].try_iter().count(), queued);
    assert_eq!(inboxes[1].try_iter().count(), queued - 1);
    for _ in 0..queued {
        hub.remotes[0].took(&Inbound::Publish(Publish::new(
            "room",
            Message::Text(&line),
        )));
    }
    let first = MessageId { epoch: 1, seq: 1 };
    assert_eq!(hub.since("room", Some(first)).entries.len(), queued - 1);
    // The worker drains: publishes are taken again.
    for _ in 0..queued {
        hub.remotes[1].took(&Inbound::Publish(Publish::new(
            "room",
            Message::Text(&line),
        )));
    }
    let _ = hub.publish("other", Message::Text("y"), None);
    assert_eq!(
        hub.publish("room", Message::Text("again"), None).0,
        PublishStatus::Queued
    );
}

#[test]
fn a_held_key_claimed_again_tells_its_last_holder_once() {
    let (hub, inboxes, _polls) = hub(2, 1 << 20, None);
    let key: Arc<str> = "client-1".into();
    let first = hub.claim_hold(&key, 0, 7);
    assert!(inboxes.iter().all(|inbox| inbox.try_recv().is_err()));
    // A newer request on worker 1 replaces connection 7 on worker 0,
    // naming the claim it replaces.
    let second = hub.claim_hold(&key, 1, 3);
    assert_ne!(first, second);
    match inboxes[0].try_recv() {
        Ok(Inbound::Replaced { conn: 7, seq }) => assert_eq!(seq, first),
        other => panic!("{other:?}"),
    }
    // The replaced one letting go changes nothing; the holder's does.
    hub.release_hold(&key, first);
    assert_eq!(lock(&hub.held_keys).get(&key), Some(&(1, 3, second)));
    hub.release_hold(&key, second);
    assert!(lock(&hub.held_keys).is_empty());
    let _ = hub.claim_hold(&key, 1, 4);
    assert!(inboxes.iter().all(|inbox| inbox.try_recv().is_err()));
}

#[test]
fn publish_encodes_an_unmasked_frame_once() {
    let p = Publish::new("room", Message::Text("hi"));
    assert_eq!(&*p.frame, [0x81, 0x02, b'h', b'i']);
    let copy = p.clone();
    assert!(Arc::ptr_eq(&p.frame, &copy.frame));
}

/// A bridge that numbers messages: it keeps what it was given.
#[derive(Default)]
struct Numbering {
    submitted: Mutex<Vec<(String, String)>>,
    interest: Mutex<Vec<(String, bool)>>,
}

impl Bridge for Numbering {
    fn published(&self, _: &str, _: Message<'_>) {
        panic!("an ordering bridge is never told of local deliveries");
    }

    fn interest(&self, topic: &str, subscribed: bool) {
        lock(&self.interest).push((topic.to_owned(), subscribed));
    }

    fn orders(&self) -> bool {
        true
    }

    fn submit(&self, topic: &str, msg: Message<'_>) -> PublishStatus {
        let text = String::from_utf8_lossy(msg.as_bytes()).into_owned();
        lock(&self.submitted).push((topic.to_owned(), text));
        PublishStatus::Queued
    }
}

#[test]
fn with_an_ordering_bridge_messages_go_out_and_come_back_numbered() {
    let id = |seq| MessageId { epoch: 7, seq };
    let history = History::new(crate::HistoryConfig::default(), 1);
    let (hub, inboxes, _polls) = hub(2, 1 << 20, Some(history));
    let bridge = Arc::new(Numbering::default());
    assert!(hub.set_bridge(bridge.clone()));
    hub.worker_interest(1, "room", true);
    assert_eq!(*lock(&bridge.interest), [("room".to_owned(), true)]);
    // Published here: handed to the bridge, delivered nowhere yet.
    let (status, local) = hub.publish("room", Message::Text("hi"), Some(1));
    assert_eq!((status, local.is_none()), (PublishStatus::Queued, true));
    assert_eq!(lock(&bridge.submitted).len(), 1);
    assert!(inboxes[1].try_recv().is_err());
    assert_eq!(
        hub.publish_here("room", Message::Text("x"), None).0,
        PublishStatus::Refused,
        "nothing is numbered here"
    );
    // Not loaded: pending, and a delivery is refused.
    assert!(hub.is_pending("room"));
    assert_eq!(
        hub.deliver("room", id(1), Message::Text("hi")),
        PublishStatus::Refused
    );
    assert!(hub.restore("room", 7, 1, []));
    let Ok(Inbound::Loaded { topic, .. }) = inboxes[1].try_recv() else {
        panic!("the worker with subscribers hears of the load");
    };
    assert_eq!(&*topic, "room");
    assert!(inboxes[0].try_recv().is_err());
    assert_eq!(
        hub.deliver("room", id(1), Message::Text("hi")),
        PublishStatus::Queued
    );
    let Ok(Inbound::Publish(publish)) = inboxes[1].try_recv() else {
        panic!("delivered");
    };
    assert_eq!(publish.id, Some(id(1)));
    assert_eq!(hub.since("room", None).latest, Some(id(1)));
    // Out of order: refused, for the bridge to load the topic again.
    assert_eq!(
        hub.deliver("room", id(3), Message::Text("x")),
        PublishStatus::Refused
    );
    // No subscriber here: nothing to do, and the copy is dropped.
    hub.worker_interest(1, "room", false);
    assert!(hub.is_pending("room"));
    assert_eq!(
        hub.deliver("room", id(2), Message::Text("x")),
        PublishStatus::Queued
    );
    assert!(!hub.restore("room", 7, 3, []), "nothing kept for nobody");
    assert!(hub.is_pending("room"));
}

#[test]
fn an_ordering_bridge_needs_history() {
    let (hub, _inboxes, _polls) = hub(1, 1 << 20, None);
    assert!(!hub.set_bridge(Arc::new(Numbering::default())));
}

#[test]
fn a_topic_the_history_does_not_keep_is_published_unnumbered() {
    let config = crate::HistoryConfig::default().keep(|t| !t.starts_with('@'));
    let (hub, inboxes, _polls) = hub(1, 1 << 20, Some(History::new(config, 1)));
    hub.worker_interest(0, "@alice", true);
    hub.worker_interest(0, "room", true);
    let _ = hub.publish("@alice", Message::Text("psst"), None);
    let _ = hub.publish("room", Message::Text("hi"), None);
    let ids: Vec<Option<MessageId>> = inboxes[0]
        .try_iter()
        .map(|inbound| match inbound {
            Inbound::Publish(p) => p.id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0].is_none() && ids[1].is_some(), "{ids:?}");
    assert!(hub.last("@alice", 5).is_empty());
    assert_eq!(hub.last("room", 5).len(), 1);
}
