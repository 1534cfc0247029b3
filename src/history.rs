//! Topic history: each topic keeps its last messages, numbered, so that a
//! client that reconnects, or long-polls, can ask for everything after the
//! last message it saw. Pure: the hub keeps one history under its lock,
//! which is also what puts every topic's messages in one order.
//!
//! A message id is the topic ring's epoch and the message's number in it,
//! written `EPOCH-SEQ` in hex and decimal (`5f3a09c1-57`). Numbers run 1,
//! 2, 3, … without gaps within an epoch. A ring gets a fresh epoch when it
//! is made: in a new process, or after the ring was dropped to make room
//! for busier topics. A cursor from another epoch, or one older than the
//! ring's oldest message, cannot be continued from without a gap: the
//! answer says so ([`Catchup::reset`]) and holds what the ring has, the
//! epoch idea of Centrifugo.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::frame::OpCode;
use crate::protocol::{encode_frame, Message};

/// How much history topics keep; see [`Config::history`](crate::Config::history).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct HistoryConfig {
    /// Messages kept per topic. Default 100: a page that was away for a
    /// minute in a busy room catches up without a reset. At least 1.
    pub depth: usize,
    /// Most bytes of frames kept per topic; the oldest go first. Default
    /// 256 KiB. The newest message is always kept, whatever its size.
    pub max_topic_bytes: usize,
    /// Most topics with history. Default 1,024; past it the topic
    /// published to least recently loses its history (its next message
    /// starts a new epoch). With the defaults history holds at most
    /// 256 MiB.
    pub max_topics: usize,
    /// Writes what subscribers receive for message `id`: the payload with
    /// its id, in the application's format. Default [`prefix_id`]:
    /// `ID` and a space before the payload. A text message must stay
    /// UTF-8, or it is sent as binary.
    pub envelope: fn(MessageId, Message<'_>, &mut Vec<u8>),
    /// Which topics keep history. Default [`every_topic`]. A topic it says
    /// no to is published as without history: no id, no envelope, no
    /// ring, so per-user or private topics (`|t| !t.starts_with('@')`)
    /// never push the rooms' histories out under `max_topics`.
    pub keep: fn(&str) -> bool,
}

setters! {
    HistoryConfig {
        depth: usize,
        max_topic_bytes: usize,
        max_topics: usize,
        envelope: fn(MessageId, Message<'_>, &mut Vec<u8>),
        keep: fn(&str) -> bool,
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            depth: 100,
            max_topic_bytes: 256 * 1024,
            max_topics: 1024,
            envelope: prefix_id,
            keep: every_topic,
        }
    }
}

/// The default [`HistoryConfig::keep`]: every topic keeps history.
pub fn every_topic(_: &str) -> bool {
    true
}

/// The default envelope: the id, a space, then the payload.
pub fn prefix_id(id: MessageId, msg: Message<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(id.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg.as_bytes());
}

/// A message's place in its topic's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// The ring's epoch: which numbering the sequence belongs to.
    pub epoch: u32,
    /// The number within the epoch, from 1.
    pub seq: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{}", self.epoch, self.seq)
    }
}

/// Text that is not an `EPOCH-SEQ` message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadMessageId;

impl fmt::Display for BadMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("message id is not EPOCH-SEQ (8 hex digits, a dash, a decimal number)")
    }
}

impl std::error::Error for BadMessageId {}

impl FromStr for MessageId {
    type Err = BadMessageId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, seq) = s.split_once('-').ok_or(BadMessageId)?;
        let digits = |t: &str, hex: bool| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_digit() || (hex && b.is_ascii_hexdigit()))
        };
        if epoch.len() != 8 || !digits(epoch, true) || !digits(seq, false) {
            return Err(BadMessageId);
        }
        Ok(MessageId {
            epoch: u32::from_str_radix(epoch, 16).map_err(|_| BadMessageId)?,
            seq: seq.parse().map_err(|_| BadMessageId)?,
        })
    }
}

/// One message kept: its id and the frame subscribers got.
#[derive(Debug, Clone)]
pub struct Entry {
    id: MessageId,
    frame: Arc<[u8]>,
    /// Where the payload starts in `frame`.
    header_len: u8,
    text: bool,
}

impl Entry {
    /// The message's id.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The message as delivered, envelope included.
    pub fn message(&self) -> Message<'_> {
        let payload = &self.frame[usize::from(self.header_len)..];
        match std::str::from_utf8(payload) {
            Ok(text) if self.text => Message::Text(text),
            _ => Message::Binary(payload),
        }
    }

    /// The encoded frame, shared with every subscriber's queue.
    pub(crate) fn frame(&self) -> &Arc<[u8]> {
        &self.frame
    }
}

/// What a topic's history holds after a cursor.
#[derive(Debug, Clone, Default)]
pub struct Catchup {
    /// The cursor could not be continued without a gap (another epoch, or
    /// older than the ring): `entries` is the whole ring instead.
    pub reset: bool,
    /// The history is kept elsewhere (a [`Bridge`](crate::Bridge) that
    /// numbers messages) and this server has not loaded it yet: nothing
    /// is known beyond the cursor, which `latest` repeats. Subscribe with
    /// it anyway
    /// ([`Conn::subscribe_after`](crate::Conn::subscribe_after)); once the
    /// history is here, [`Handler::on_history`](crate::Handler::on_history)
    /// is called with what followed the cursor, and held requests are
    /// woken.
    pub pending: bool,
    /// The messages after the cursor, oldest first.
    pub entries: Vec<Entry>,
    /// The topic's newest message id, if it has history.
    pub latest: Option<MessageId>,
}

/// One topic's ring.
#[derive(Debug)]
struct Ring {
    epoch: u32,
    entries: VecDeque<Entry>,
    bytes: usize,
    /// The number the next message gets.
    next_seq: u64,
    /// When it was last published to, in `History::clock` ticks.
    used: u64,
}

impl Ring {
    fn new(epoch: u32, next_seq: u64, used: u64) -> Self {
        Ring {
            epoch,
            entries: VecDeque::new(),
            bytes: 0,
            next_seq,
            used,
        }
    }

    /// Appends an entry, then drops the oldest past the bounds.
    fn push(&mut self, entry: Entry, config: &HistoryConfig) {
        self.bytes += entry.frame.len();
        self.entries.push_back(entry);
        while self.entries.len() > config.depth.max(1)
            || (self.bytes > config.max_topic_bytes && self.entries.len() > 1)
        {
            let old = self.entries.pop_front().expect("more than one entry");
            self.bytes -= old.frame.len();
        }
    }

    /// The id before the next: the newest message's, or the epoch's zero
    /// when none has been numbered.
    fn latest(&self) -> MessageId {
        MessageId {
            epoch: self.epoch,
            seq: self.next_seq - 1,
        }
    }
}

/// Every topic's ring, and the least recently used order for eviction.
#[derive(Debug)]
pub(crate) struct History {
    config: HistoryConfig,
    /// The next ring's epoch.
    next_epoch: u32,
    rings: HashMap<Arc<str>, Ring>,
    /// Topics by the tick of their last message.
    by_use: BTreeMap<u64, Arc<str>>,
    clock: u64,
    /// Rings are copies of a history kept elsewhere, numbered there
    /// ([`History::append`], [`History::restore`]): a topic without a
    /// ring here is not known yet, rather than empty.
    mirror: bool,
}

impl History {
    /// Empty history; `epoch` is where ring epochs start, different in
    /// every process.
    pub fn new(config: HistoryConfig, epoch: u32) -> Self {
        History {
            config,
            next_epoch: epoch,
            rings: HashMap::new(),
            by_use: BTreeMap::new(),
            clock: 0,
            mirror: false,
        }
    }

    /// From now on, rings copy a history numbered elsewhere: topics are
    /// numbered only by [`History::append`] and [`History::restore`].
    pub fn set_mirror(&mut self) {
        self.mirror = true;
        self.rings.clear();
        self.by_use.clear();
    }

    /// Whether `topic` keeps history ([`HistoryConfig::keep`]).
    pub fn keeps(&self, topic: &str) -> bool {
        (self.config.keep)(topic)
    }

    /// The last `n` messages `topic` holds, oldest first.
    pub fn last(&self, topic: &str, n: usize) -> Vec<Entry> {
        let Some(ring) = self.rings.get(topic) else {
            return Vec::new();
        };
        let skip = ring.entries.len().saturating_sub(n);
        ring.entries.iter().skip(skip).cloned().collect()
    }

    /// Makes `topic` the most recently used, with a ring, evicting the
    /// least recently used past `max_topics`; returns the ring.
    fn touch(&mut self, topic: &str, make: impl FnOnce(u64) -> Ring) -> &mut Ring {
        self.clock += 1;
        let clock = self.clock;
        if !self.rings.contains_key(topic) {
            if self.rings.len() >= self.config.max_topics.max(1) {
                self.evict_least_used();
            }
            self.rings.insert(topic.into(), make(clock));
        }
        let (name, ring) = self.rings.get_key_value(topic).expect("inserted above");
        let (name, used) = (name.clone(), ring.used);
        self.by_use.remove(&used);
        self.by_use.insert(clock, name);
        let ring = self.rings.get_mut(topic).expect("inserted above");
        ring.used = clock;
        ring
    }

    /// Keeps message `id`, numbered elsewhere, if it is the one after the
    /// newest `topic` holds; returns it to send. `None`, keeping nothing,
    /// when the topic is not here or `id` does not follow: the caller then
    /// [`History::restore`]s the topic.
    pub fn append(&mut self, topic: &str, id: MessageId, msg: Message<'_>) -> Option<Entry> {
        let ring = self.rings.get(topic)?;
        if id.epoch != ring.epoch || id.seq != ring.next_seq || id.seq == u64::MAX {
            return None;
        }
        let config = self.config;
        let ring = self.touch(topic, |_| unreachable!("the ring is there"));
        ring.next_seq = id.seq + 1;
        let entry = wrap(id, msg, config.envelope);
        ring.push(entry.clone(), &config);
        Some(entry)
    }

    /// Replaces `topic`'s ring with a copy of a history kept elsewhere:
    /// its epoch, the next number it will give, and its messages, oldest
    /// first. Messages that do not fit the epoch and the numbering (not
    /// below `next_seq`, or not rising) are left out.
    pub fn restore<'m>(
        &mut self,
        topic: &str,
        epoch: u32,
        next_seq: u64,
        messages: impl IntoIterator<Item = (u64, Message<'m>)>,
    ) {
        let config = self.config;
        if !self.keeps(topic) {
            return;
        }
        let next_seq = next_seq.max(1);
        let ring = self.touch(topic, |used| Ring::new(epoch, next_seq, used));
        *ring = Ring::new(epoch, next_seq, ring.used);
        let mut last = 0;
        for (seq, msg) in messages {
            if seq <= last || seq >= next_seq {
                continue;
            }
            last = seq;
            ring.push(
                wrap(MessageId { epoch, seq }, msg, config.envelope),
                &config,
            );
        }
    }

    /// Forgets `topic`'s ring: in a mirror, its copy stops being kept up
    /// to date.
    pub fn forget(&mut self, topic: &str) {
        if let Some(ring) = self.rings.remove(topic) {
            self.by_use.remove(&ring.used);
        }
    }

    /// Numbers a message for `topic`, wraps it in the envelope, keeps it
    /// and returns it to send.
    pub fn record(&mut self, topic: &str, msg: Message<'_>) -> Entry {
        let config = self.config;
        let epoch = self.next_epoch;
        let mut made = false;
        let ring = self.touch(topic, |used| {
            made = true;
            Ring::new(epoch, 1, used)
        });
        let id = MessageId {
            epoch: ring.epoch,
            seq: ring.next_seq,
        };
        ring.next_seq += 1;
        let entry = wrap(id, msg, config.envelope);
        ring.push(entry.clone(), &config);
        if made {
            self.next_epoch = self.next_epoch.wrapping_add(1);
        }
        entry
    }

    /// What `topic` holds after `after`. With no cursor, nothing but the
    /// latest id: a new reader starts from now.
    pub fn since(&self, topic: &str, after: Option<MessageId>) -> Catchup {
        let Some(ring) = self.rings.get(topic) else {
            // A mirror has not loaded the topic yet. Otherwise there is no
            // history: a cursor from before cannot be continued.
            return match self.mirror && self.keeps(topic) {
                // Not loaded: nothing known beyond the cursor.
                true => Catchup {
                    pending: true,
                    latest: after,
                    ..Catchup::default()
                },
                false => Catchup {
                    reset: after.is_some(),
                    ..Catchup::default()
                },
            };
        };
        // A mirror's empty ring still has a place: the epoch's zero.
        let latest = match ring.entries.back() {
            Some(entry) => Some(entry.id),
            None if self.mirror => Some(ring.latest()),
            None => None,
        };
        let Some(after) = after else {
            return Catchup {
                latest,
                ..Catchup::default()
            };
        };
        // The cursor is the peer's: no arithmetic on it may overflow. It
        // continues the ring when it names one of the ring's ids or the one
        // just before the oldest, so that the next id is still held.
        let first = ring.entries.front().map_or(ring.next_seq, |e| e.id.seq);
        let continues = after.epoch == ring.epoch
            && after.seq < ring.next_seq
            && after.seq >= first.saturating_sub(1);
        // `after.seq < next_seq`, so the +1 cannot wrap; the count is at
        // most the ring's length, and a usize of 32 bits that could not
        // hold it would skip everything rather than truncate.
        let skip = if continues {
            usize::try_from(after.seq + 1 - first).unwrap_or(usize::MAX)
        } else {
            0
        };
        Catchup {
            reset: !continues,
            pending: false,
            entries: ring.entries.iter().skip(skip).cloned().collect(),
            latest,
        }
    }

    fn evict_least_used(&mut self) {
        if let Some((_, topic)) = self.by_use.pop_first() {
            self.rings.remove(&topic);
        }
    }
}

/// Encodes the enveloped message as a server frame.
fn wrap(
    id: MessageId,
    msg: Message<'_>,
    envelope: fn(MessageId, Message<'_>, &mut Vec<u8>),
) -> Entry {
    let mut payload = Vec::with_capacity(msg.as_bytes().len() + 24);
    envelope(id, msg, &mut payload);
    let text = matches!(msg, Message::Text(_)) && std::str::from_utf8(&payload).is_ok();
    let opcode = if text { OpCode::Text } else { OpCode::Binary };
    let mut frame = Vec::with_capacity(payload.len() + 10);
    encode_frame(&mut frame, true, opcode, None, &payload);
    let header_len = (frame.len() - payload.len()) as u8;
    Entry {
        id,
        frame: frame.into(),
        header_len,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8_lossy(e.message().as_bytes()).into_owned())
            .collect()
    }

    fn id(epoch: u32, seq: u64) -> MessageId {
        MessageId { epoch, seq }
    }

    #[test]
    fn ids_print_and_parse_both_ways() {
        let a = id(0x5f3a_09c1, 57);
        assert_eq!(a.to_string(), "5f3a09c1-57");
        assert_eq!("5f3a09c1-57".parse(), Ok(a));
        assert_eq!("0000000a-1".parse(), Ok(id(10, 1)));
        for bad in [
            "",
            "57",
            "5f3a09c1",
            "5f3a09c1-",
            "-57",
            "5f3a09c-57",
            "5f3a09c1-5x",
            "5f3a09c1--1",
            "5f3a09g1-1",
            "5f3a09c1-+1",
            "5f3a09c1-99999999999999999999999",
        ] {
            assert_eq!(bad.parse::<MessageId>(), Err(BadMessageId), "{bad:?}");
        }
    }

    #[test]
    fn messages_are_numbered_and_wrapped_per_topic() {
        let mut h = History::new(HistoryConfig::default(), 7);
        let a1 = h.record("a", Message::Text("one"));
        let b1 = h.record("b", Message::Text("uno"));
        let a2 = h.record("a", Message::Binary(b"two"));
        assert_eq!((a1.id(), b1.id(), a2.id()), (id(7, 1), id(8, 1), id(7, 2)));
        assert_eq!(a1.message(), Message::Text("00000007-1 one"));
        assert_eq!(a2.message(), Message::Binary(b"00000007-2 two"));
        assert_eq!(&a1.frame()[..2], [0x81, 14]);
    }

    #[test]
    fn a_cursor_in_the_ring_gets_exactly_what_followed_it() {
        let mut h = History::new(HistoryConfig::default().depth(5), 1);
        for i in 1..=8 {
            h.record("r", Message::Text(&i.to_string()));
        }
        // The ring holds 4..=8.
        let at = |seq| h.since("r", Some(id(1, seq)));
        assert_eq!(
            texts(&at(5).entries),
            ["00000001-6 6", "00000001-7 7", "00000001-8 8"]
        );
        assert!(!at(5).reset);
        assert!(at(8).entries.is_empty() && !at(8).reset);
        assert_eq!(at(3).entries.len(), 5, "the oldest kept follows 3");
        assert!(!at(3).reset);
        assert_eq!(at(8).latest, Some(id(1, 8)));
        // Too old, from the future, or another epoch: a reset with the ring.
        // The largest and smallest sequence numbers are a peer's to send.
        for cursor in [id(1, 2), id(1, 9), id(2, 5), id(1, u64::MAX), id(1, 0)] {
            let c = h.since("r", Some(cursor));
            assert!(c.reset, "{cursor}");
            assert_eq!(c.entries.len(), 5);
        }
        // No cursor: nothing, but the latest id to start from.
        let fresh = h.since("r", None);
        assert!(fresh.entries.is_empty() && !fresh.reset);
        assert_eq!(fresh.latest, Some(id(1, 8)));
        // A topic with no history.
        assert!(h.since("none", Some(id(1, 1))).reset);
        assert!(!h.since("none", None).reset);
    }

    #[test]
    fn cursors_at_the_top_of_the_numbering() {
        let mut h = History::new(HistoryConfig::default(), 1);
        h.record("r", Message::Text("x"));
        // As if the ring had numbered all but its last few ids.
        let ring = h.rings.get_mut("r").unwrap();
        ring.entries.clear();
        ring.bytes = 0;
        ring.next_seq = u64::MAX - 2;
        h.record("r", Message::Text("y"));
        h.record("r", Message::Text("z"));
        // The ring holds MAX-2 and MAX-1; the next id would be MAX.
        let at = |seq| h.since("r", Some(id(1, seq)));
        let oldest = at(u64::MAX - 3);
        assert!(oldest.entries.len() == 2 && !oldest.reset);
        assert_eq!(
            texts(&at(u64::MAX - 2).entries),
            ["00000001-18446744073709551614 z"]
        );
        let newest = at(u64::MAX - 1);
        assert!(newest.entries.is_empty() && !newest.reset);
        assert_eq!(newest.latest, Some(id(1, u64::MAX - 1)));
        for cursor in [u64::MAX, u64::MAX - 4, 0] {
            let c = at(cursor);
            assert!(c.reset && c.entries.len() == 2, "{cursor}");
        }
    }

    #[test]
    fn rings_are_bounded_in_bytes_but_keep_the_newest() {
        let config = HistoryConfig::default().max_topic_bytes(100);
        let mut h = History::new(config, 1);
        for _ in 0..10 {
            h.record("r", Message::Binary(&[0; 30]));
        }
        let ring = &h.rings["r"];
        assert!(ring.bytes <= 100, "{}", ring.bytes);
        assert_eq!(ring.entries.len(), 2);
        h.record("r", Message::Binary(&[0; 500]));
        assert_eq!(h.rings["r"].entries.len(), 1, "a big message stays alone");
    }

    #[test]
    fn the_least_recently_used_topic_loses_its_history_first() {
        let mut h = History::new(HistoryConfig::default().max_topics(2), 1);
        h.record("a", Message::Text("a"));
        h.record("b", Message::Text("b"));
        h.record("a", Message::Text("a again"));
        h.record("c", Message::Text("c"));
        assert!(h.rings.contains_key("a") && h.rings.contains_key("c"));
        assert!(!h.rings.contains_key("b"));
        assert_eq!(h.by_use.len(), 2);
        // b's next message starts a new epoch, so old cursors reset.
        let b = h.record("b", Message::Text("b again"));
        assert_eq!(b.id(), id(4, 1));
        assert!(h.since("b", Some(id(2, 1))).reset);
    }

    #[test]
    fn a_text_envelope_that_is_not_utf8_goes_as_binary() {
        fn bad(_: MessageId, _: Message<'_>, out: &mut Vec<u8>) {
            out.push(0xff);
        }
        let mut h = History::new(HistoryConfig::default().envelope(bad), 1);
        let e = h.record("r", Message::Text("x"));
        assert_eq!(e.message(), Message::Binary(&[0xff]));
        assert_eq!(e.frame()[0], 0x82);
    }

    #[test]
    fn a_mirror_knows_only_topics_it_was_given() {
        let mut h = History::new(HistoryConfig::default().depth(3), 1);
        h.set_mirror();
        // Not loaded: pending, and the cursor is all that is known.
        let unknown = h.since("r", Some(id(9, 4)));
        assert!(unknown.pending && !unknown.reset && unknown.entries.is_empty());
        assert_eq!(unknown.latest, Some(id(9, 4)));
        assert!(h.append("r", id(9, 1), Message::Text("x")).is_none());
        // An empty topic has a place: the epoch's zero.
        h.restore("e", 5, 1, []);
        let empty = h.since("e", None);
        assert!(!empty.pending && empty.latest == Some(id(5, 0)));
        assert!(!h.since("e", Some(id(5, 0))).reset);
        // Loaded with messages 3..=5 (6 is next); out-of-order ones dropped.
        let log = [
            (3, Message::Text("c")),
            (2, Message::Text("b")),
            (4, Message::Text("d")),
            (6, Message::Text("from the future")),
            (5, Message::Text("e")),
        ];
        h.restore("r", 9, 6, log);
        assert_eq!(
            texts(&h.since("r", Some(id(9, 3))).entries),
            ["00000009-4 d", "00000009-5 e"]
        );
        assert!(h.since("r", Some(id(9, 1))).reset, "older than the log");
        // Only the next number is appended; the depth still holds.
        assert!(h.append("r", id(9, 7), Message::Text("gap")).is_none());
        assert!(h.append("r", id(9, 5), Message::Text("again")).is_none());
        assert!(h
            .append("r", id(8, 6), Message::Text("old epoch"))
            .is_none());
        let six = h.append("r", id(9, 6), Message::Text("f")).unwrap();
        assert_eq!(six.id(), id(9, 6));
        assert_eq!(texts(&h.since("r", Some(id(9, 3))).entries).len(), 3);
        assert!(h.since("r", Some(id(9, 2))).reset, "4 is the oldest kept");
        // Forgotten, it is unknown again.
        h.forget("r");
        assert!(h.since("r", Some(id(9, 6))).pending);
        assert_eq!(h.by_use.len(), 1);
    }

    #[test]
    fn a_mirror_numbers_nothing_itself() {
        let mut h = History::new(HistoryConfig::default(), 1);
        h.record("r", Message::Text("local"));
        h.set_mirror();
        assert!(h.since("r", None).pending, "local rings are dropped");
        h.restore("r", 3, u64::MAX, []);
        // The last number there is can never be appended after.
        assert!(h.append("r", id(3, u64::MAX), Message::Text("x")).is_none());
    }

    #[test]
    fn the_last_n_are_the_newest_oldest_first() {
        let mut h = History::new(HistoryConfig::default().depth(4), 1);
        assert!(h.last("r", 3).is_empty());
        for i in 1..=6 {
            h.record("r", Message::Text(&i.to_string()));
        }
        assert_eq!(texts(&h.last("r", 2)), ["00000001-5 5", "00000001-6 6"]);
        assert_eq!(h.last("r", 10).len(), 4, "no more than the ring holds");
        assert!(h.last("r", 0).is_empty());
    }

    #[test]
    fn topics_the_config_does_not_keep_never_push_kept_ones_out() {
        let config = HistoryConfig::default()
            .max_topics(2)
            .keep(|topic| !topic.starts_with('@'));
        let mut h = History::new(config, 1);
        h.record("a", Message::Text("a"));
        h.record("b", Message::Text("b"));
        assert!(h.keeps("a") && !h.keeps("@alice"));
        // A thousand private topics: the hub never records them, and a
        // mirror's restore ignores them.
        for i in 0..1000 {
            h.restore(&format!("@user{i}"), 1, 5, [(4, Message::Text("x"))]);
        }
        assert!(h.rings.contains_key("a") && h.rings.contains_key("b"));
        assert_eq!(h.rings.len(), 2);
        // Asked for, a topic that keeps no history has none: a cursor
        // resets, as without history, even in a mirror.
        h.set_mirror();
        let private = h.since("@alice", Some(id(1, 1)));
        assert!(private.reset && !private.pending);
    }
}
