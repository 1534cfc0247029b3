//! History kept in Redis: one numbering per topic for every server, and
//! each server's copy of it kept whole.
//!
//! A topic has two keys besides its channel. `<prefix>:meta:<topic>` is a
//! hash holding the topic's epoch and the last number given out;
//! `<prefix>:log:<topic>` is a list of its last `depth` messages. One Lua
//! script numbers a message, appends it to the log, trims the log and
//! publishes it, all in one step, so every server hears the topic's
//! messages in the order of their numbers, and the log holds what the
//! channel carried. Log entries and channel messages have one form: the
//! id as `EPOCH-SEQ`, a space, a kind byte, then the payload.
//!
//! The epoch is made the first time a topic is used and lives as long as
//! its hash: a server that restarts finds it again, and only a Redis that
//! lost its data gives the topic a new one.
//!
//! Each server keeps a copy of the history of the topics it has
//! subscribers to, in wsloop's own rings. [`Places`] follows where each
//! copy stands: a message that is the next one is delivered; one seen
//! already is skipped; a gap, a new epoch, or a message the server could
//! not take has the copy loaded again from the log, which brings every
//! subscriber up to date through wsloop.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wsloop::{Broadcaster, Message, MessageId, PublishStatus};

use crate::{bump, message_of, Inner};

/// Every script starts here: the topic's epoch, made from the epoch given
/// (ARGV[1]) if the topic has none yet. KEYS[1] is the topic's hash.
const EPOCH: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
";

/// Numbers a message, keeps it in the log and publishes it.
/// KEYS: meta, log. ARGV: an epoch, the log's depth, the kind byte and
/// payload, the channel.
const APPEND: &str = r"
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local entry = epoch .. '-' .. string.format('%d', seq) .. ' ' .. ARGV[3]
redis.call('RPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('PUBLISH', ARGV[4], entry)
return seq
";

/// A topic's epoch, its last number and its log, read in one step.
/// KEYS: meta, log. ARGV: an epoch.
const LOAD: &str = r"
local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
return {epoch, seq, redis.call('LRANGE', KEYS[2], 0, -1)}
";

/// The two scripts, sent by their SHA1 and loaded when Redis lacks them.
#[derive(Debug)]
pub(crate) struct Scripts {
    append: redis::Script,
    load: redis::Script,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            append: redis::Script::new(&format!("{EPOCH}{APPEND}")),
            load: redis::Script::new(&format!("{EPOCH}{LOAD}")),
        }
    }
}

/// Loads the numbering script into Redis, so that pipelines can call it
/// by its SHA1 ([`append_cmd`]). A Redis that restarts forgets it, but
/// also drops the connection, and a new connection loads it again.
pub(crate) fn prepare(conn: &mut redis::Connection, inner: &Inner) -> redis::RedisResult<()> {
    inner.scripts.append.load(conn).map(drop)
}

/// Numbers and publishes one message (a kind byte and its payload), as a
/// command for a pipeline: the script by its SHA1, loaded by [`prepare`].
pub(crate) fn append_cmd(inner: &Inner, topic: &str, payload: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(inner.scripts.append.get_hash())
        .arg(2)
        .arg(inner.meta_key(topic))
        .arg(inner.log_key(topic))
        .arg(new_epoch())
        .arg(inner.depth)
        .arg(payload)
        .arg(inner.channel(topic));
    cmd
}

/// A topic as Redis keeps it: its epoch, its last number, and its log.
#[derive(Debug)]
pub(crate) struct Loaded {
    epoch: u32,
    last: u64,
    log: Vec<Vec<u8>>,
}

/// Reads a topic as Redis keeps it, making its epoch if it has none.
pub(crate) fn fetch(
    conn: &mut redis::Connection,
    inner: &Inner,
    topic: &str,
) -> redis::RedisResult<Loaded> {
    let (epoch, last, log): (String, u64, Vec<Vec<u8>>) = inner
        .scripts
        .load
        .key(inner.meta_key(topic))
        .key(inner.log_key(topic))
        .arg(new_epoch())
        .invoke(conn)?;
    // An epoch not of this form was not written by this crate.
    let epoch = u32::from_str_radix(&epoch, 16).map_err(|_| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "epoch is not 8 hex digits",
        ))
    })?;
    Ok(Loaded { epoch, last, log })
}

/// A fresh epoch, in the `EPOCH` form of ids: used only if the topic has
/// none, so it need only differ from the one Redis lost.
fn new_epoch() -> String {
    format!("{:08x}", crate::node_id() as u32)
}

/// Splits a log entry or channel message into its id and message.
pub(crate) fn parse(entry: &[u8]) -> Option<(MessageId, Message<'_>)> {
    let space = entry.iter().position(|&b| b == b' ')?;
    let id = std::str::from_utf8(&entry[..space]).ok()?.parse().ok()?;
    Some((id, message_of(&entry[space + 1..])?))
}

/// The shortest time between two loads of one topic: a server that cannot
/// keep up is not made to load on every message.
const RELOAD_EVERY: Duration = Duration::from_millis(50);

/// Where this server's copy of a topic stands.
#[derive(Debug)]
struct Place {
    epoch: u32,
    /// The number of the next message the copy takes.
    next: u64,
    loaded_at: Instant,
    /// The copy is behind and waits to be loaded again.
    stale: bool,
}

/// Where this server's copy of each subscribed topic stands.
#[derive(Debug, Default)]
pub(crate) struct Places {
    places: HashMap<String, Place>,
}

impl Places {
    /// Forgets everything: a new subscription connection loads each topic
    /// again.
    pub fn clear(&mut self) {
        self.places.clear();
    }

    /// The topic is no longer subscribed.
    pub fn remove(&mut self, topic: &str) {
        self.places.remove(topic);
    }

    /// Loads `topic` from Redis into the server's copy, which brings every
    /// subscriber up to date.
    pub fn load(
        &mut self,
        conn: &mut redis::Connection,
        inner: &Inner,
        topic: &str,
        broadcaster: &Broadcaster,
    ) -> redis::RedisResult<()> {
        let loaded = fetch(conn, inner, topic)?;
        self.apply(inner, topic, &loaded, broadcaster);
        Ok(())
    }

    /// Makes the server's copy of `topic` what was loaded, unless the copy
    /// is ahead of it already.
    pub fn apply(
        &mut self,
        inner: &Inner,
        topic: &str,
        loaded: &Loaded,
        broadcaster: &Broadcaster,
    ) {
        if let Some(place) = self.places.get(topic) {
            if place.epoch == loaded.epoch && loaded.last.saturating_add(1) < place.next {
                return;
            }
        }
        let messages = loaded.log.iter().filter_map(|entry| match parse(entry) {
            Some((id, msg)) if id.epoch == loaded.epoch => Some((id.seq, msg)),
            _ => {
                bump(&inner.counters.malformed);
                None
            }
        });
        let next = loaded.last.saturating_add(1);
        broadcaster.restore(topic, loaded.epoch, next, messages);
        bump(&inner.counters.loads);
        let place = Place {
            epoch: loaded.epoch,
            next,
            loaded_at: Instant::now(),
            stale: false,
        };
        self.places.insert(topic.to_owned(), place);
    }

    /// Hands a message from the channel to the server's copy: the next
    /// one is delivered, one seen already is skipped, and anything else
    /// has the topic loaded again (at once, or within [`RELOAD_EVERY`]).
    pub fn heard(
        &mut self,
        conn: &mut redis::Connection,
        inner: &Inner,
        topic: &str,
        payload: &[u8],
        broadcaster: &Broadcaster,
    ) -> redis::RedisResult<()> {
        let Some((id, msg)) = parse(payload) else {
            bump(&inner.counters.malformed);
            return Ok(());
        };
        let Some(place) = self.places.get_mut(topic) else {
            // Not loaded yet: the log has this message.
            return self.load(conn, inner, topic, broadcaster);
        };
        if place.stale {
            return Ok(());
        }
        if id.epoch == place.epoch && id.seq < place.next {
            return Ok(());
        }
        if id.epoch == place.epoch && id.seq == place.next {
            if broadcaster.deliver(topic, id, msg) == PublishStatus::Queued {
                place.next += 1;
                bump(&inner.counters.received);
                return Ok(());
            }
            bump(&inner.counters.dropped);
        }
        // A gap, a new epoch, or a message a worker here could not take.
        bump(&inner.counters.gaps);
        // A topic that just gained a subscriber again waits for its first
        // load (`Wanted::first`): loading it now, from here, would start
        // that subscriber after what its own server said meanwhile.
        if place.loaded_at.elapsed() < RELOAD_EVERY || inner.regaining(topic) {
            place.stale = true;
            return Ok(());
        }
        self.load(conn, inner, topic, broadcaster)
    }

    /// Loads the topics that have waited long enough to be loaded again.
    pub fn reload_stale(
        &mut self,
        conn: &mut redis::Connection,
        inner: &Inner,
        broadcaster: &Broadcaster,
    ) -> redis::RedisResult<()> {
        let due: Vec<String> = self
            .places
            .iter()
            .filter(|(topic, p)| {
                p.stale && p.loaded_at.elapsed() >= RELOAD_EVERY && !inner.regaining(topic)
            })
            .map(|(topic, _)| topic.clone())
            .collect();
        for topic in due {
            self.load(conn, inner, &topic, broadcaster)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_split_into_id_and_message() {
        let id = MessageId {
            epoch: 0xabcd_0001,
            seq: 42,
        };
        assert_eq!(
            parse(b"abcd0001-42 \x01hello"),
            Some((id, Message::Text("hello")))
        );
        assert_eq!(
            parse(b"abcd0001-42 \x02\xff"),
            Some((id, Message::Binary(b"\xff")))
        );
        assert_eq!(parse(b"abcd0001-42 \x01"), Some((id, Message::Text(""))));
        for bad in [
            &b""[..],
            b"abcd0001-42",
            b"abcd0001-42 ",
            b"abcd0001-42 \x03x",
            b"abcd0001-42 \x01\xff",
            b"abcd0001 \x01x",
            b"zzzz0001-1 \x01x",
            b" \x01x",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
