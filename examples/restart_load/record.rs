//! What the members record: each its own [`Log`], and together the
//! [`Shared`] state, with the one map of message ids that every member's
//! messages are checked against as they come.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::Value;
use wsloop::MessageId;

use crate::Opts;

/// Where the run is. Lines are counted in `Before` and `During` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Members are joining.
    Joining = 0,
    /// Every member is in; no restart yet.
    Before = 1,
    /// From the first restart on.
    During = 2,
    /// Members say their last lines.
    Ending = 3,
}

impl Phase {
    fn of(n: u8) -> Phase {
        match n {
            0 => Phase::Joining,
            1 => Phase::Before,
            2 => Phase::During,
            _ => Phase::Ending,
        }
    }

    /// The index of the counted phases, `Before` and `During`.
    pub fn counted(self) -> Option<usize> {
        match self {
            Phase::Before => Some(0),
            Phase::During => Some(1),
            Phase::Joining | Phase::Ending => None,
        }
    }
}

/// A restart, as the script announced it.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    pub begun: Duration,
    /// When the script said the old node was gone.
    pub gone: Option<Duration>,
}

/// What all members share.
pub struct Shared {
    pub opts: Opts,
    pub addr: SocketAddr,
    start: Instant,
    phase: AtomicU8,
    /// When each phase began.
    phases: Mutex<[Option<Duration>; 4]>,
    restarts: Mutex<Vec<Restart>>,
    /// Set by SIGTERM, SIGINT or `--seconds`.
    pub stop: AtomicBool,
    /// Set once every member heard every `end`, or the wait is over:
    /// members leave.
    pub finished: AtomicBool,
    /// Members that have been in at least once.
    pub joined: AtomicUsize,
    /// Members not connected now (after having been).
    pub down: AtomicUsize,
    /// Members that heard every `end`.
    pub ended: AtomicUsize,
    /// Sharded by sequence number: every member checks every message.
    ids: Vec<Mutex<Ids>>,
}

const ID_SHARDS: usize = 64;

/// Every numbered message any member got: what it is, and in which phase
/// it was first seen (for lines a second).
#[derive(Default)]
struct Ids {
    seen: HashMap<MessageId, u64>,
    /// Distinct chat lines first seen in each counted phase.
    lines: [u64; 2],
    /// Ids that two members got as different messages (the first few).
    conflicts: Vec<String>,
    conflict_count: u64,
}

impl Shared {
    pub fn new(opts: &Opts) -> Result<Shared, String> {
        let addr = opts
            .addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or(format!("cannot resolve {}", opts.addr))?;
        Ok(Shared {
            opts: opts.clone(),
            addr,
            start: Instant::now(),
            phase: AtomicU8::new(Phase::Joining as u8),
            phases: Mutex::new([Some(Duration::ZERO), None, None, None]),
            restarts: Mutex::default(),
            stop: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            joined: AtomicUsize::new(0),
            down: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            ids: (0..ID_SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    /// Time since the load started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn phase(&self) -> Phase {
        Phase::of(self.phase.load(Ordering::Acquire))
    }

    /// Moves on to `phase`, if it is later than the current one.
    pub fn set_phase(&self, phase: Phase) {
        let now = self.now();
        let before = self.phase.fetch_max(phase as u8, Ordering::AcqRel);
        if before < phase as u8 {
            lock(&self.phases)[phase as usize] = Some(now);
        }
    }

    /// When `phase` began, if it has.
    pub fn phase_began(&self, phase: Phase) -> Option<Duration> {
        lock(&self.phases)[phase as usize]
    }

    /// A restart begins: its number, from 1.
    #[cfg(unix)]
    pub fn restart_begins(&self) -> usize {
        self.set_phase(Phase::During);
        let mut restarts = lock(&self.restarts);
        restarts.push(Restart {
            begun: self.now(),
            gone: None,
        });
        restarts.len()
    }

    /// The old node of the latest restart is gone: that restart's number.
    #[cfg(unix)]
    pub fn node_gone(&self) -> usize {
        let now = self.now();
        let mut restarts = lock(&self.restarts);
        if let Some(last) = restarts.last_mut() {
            last.gone = Some(now);
        }
        restarts.len()
    }

    pub fn restarts(&self) -> Vec<Restart> {
        lock(&self.restarts).clone()
    }

    /// Waits until `done` holds (true) or the load is told to stop (false).
    pub fn wait_until(&self, done: impl Fn() -> bool) -> bool {
        loop {
            if done() {
                return true;
            }
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Records that a member got message `id`; the first member to get an
    /// id says what it is, and every other must get the same.
    fn check_id(&self, who: &str, id: MessageId, msg: &Value, line: bool) {
        let mut hasher = DefaultHasher::new();
        for field in ["kind", "name", "text", "via"] {
            msg[field].as_str().hash(&mut hasher);
        }
        let hash = hasher.finish();
        let phase = self.phase().counted();
        let mut ids = lock(&self.ids[id.seq as usize % ID_SHARDS]);
        match ids.seen.entry(id) {
            Entry::Vacant(slot) => {
                slot.insert(hash);
                if let (true, Some(p)) = (line, phase) {
                    ids.lines[p] += 1;
                }
            }
            Entry::Occupied(known) if *known.get() == hash => {}
            Entry::Occupied(_) => {
                ids.conflict_count += 1;
                if ids.conflicts.len() < 5 {
                    ids.conflicts.push(format!("{who} got {id} as {msg}"));
                }
            }
        }
    }

    /// Distinct lines first seen in each counted phase.
    pub fn lines(&self) -> [u64; 2] {
        self.ids.iter().fold([0, 0], |[a, b], shard| {
            let lines = lock(shard).lines;
            [a + lines[0], b + lines[1]]
        })
    }

    /// How many ids two members got as different messages, and examples.
    pub fn conflicts(&self) -> (u64, Vec<String>) {
        let mut count = 0;
        let mut examples = Vec::new();
        for shard in &self.ids {
            let ids = lock(shard);
            count += ids.conflict_count;
            examples.extend(ids.conflicts.iter().cloned());
        }
        examples.truncate(5);
        (count, examples)
    }
}

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// How one connect or request went.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The TCP connect was refused.
    Refused,
    /// The connection was reset, or closed with no answer.
    Reset,
    /// An answer with a status other than the one expected.
    Status(u16),
    /// No answer in time.
    Timeout,
    /// Anything else, by name.
    Other(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Refused => f.write_str("refused"),
            Outcome::Reset => f.write_str("reset"),
            Outcome::Status(code) => write!(f, "status {code}"),
            Outcome::Timeout => f.write_str("timed out"),
            Outcome::Other(what) => f.write_str(what),
        }
    }
}

impl Outcome {
    pub fn of_io(e: &std::io::Error) -> Outcome {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused => Outcome::Refused,
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => Outcome::Reset,
            WouldBlock | TimedOut => Outcome::Timeout,
            other => Outcome::Other(format!("{other:?}")),
        }
    }
}

/// A failed connect or request: when, what, and how.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: Duration,
    pub what: &'static str,
    pub outcome: Outcome,
}

/// A time a member was not connected: from losing its connection (or a
/// failed poll) to its first successful resume.
#[derive(Debug, Clone)]
pub struct Outage {
    pub lost: Duration,
    /// How: `1012`, `1001`, `dropped`, or a poll's failure.
    pub why: String,
    /// When the reconnect that worked was begun: the load the servers
    /// see, which check (d) bins.
    pub tried: Option<Duration>,
    /// When it worked.
    pub back: Option<Duration>,
}

/// Everything one member records.
pub struct Log {
    pub name: String,
    index: usize,
    pub websocket: bool,
    /// The last id this member has: received, or a poll's cursor.
    pub last: Option<MessageId>,
    pub first: Option<MessageId>,
    pub received: u64,
    /// Gaps, repeats, epoch changes and resets, the first few told.
    pub faults: Vec<String>,
    pub fault_count: u64,
    /// Which members' `end` lines it heard.
    ends: Vec<bool>,
    pub ends_heard: usize,
    /// Connects and requests that worked.
    pub ok: u64,
    /// Whether it has been in once (its first connect or poll worked).
    been_in: bool,
    pub failures: Vec<Failure>,
    pub outages: Vec<Outage>,
    /// This member's lines: sent (or, polling, taken with 204), and heard
    /// back in the room.
    pub said: Vec<bool>,
    pub heard_own: Vec<bool>,
    /// Polling: lines whose `POST /send` failed.
    pub unsent: u64,
    /// Lines delivered to this member, and their latency from being said,
    /// in each counted phase.
    pub delivered: [u64; 2],
    pub latency: [Histogram<u64>; 2],
}

impl Log {
    pub fn new(shared: &Shared, i: usize, websocket: bool) -> Log {
        let histogram =
            || Histogram::new_with_bounds(1, 3_600_000, 2).expect("the bounds are valid");
        Log {
            name: member_name(i),
            index: i,
            websocket,
            last: None,
            first: None,
            received: 0,
            faults: Vec::new(),
            fault_count: 0,
            ends: vec![false; shared.opts.members],
            ends_heard: 0,
            ok: 0,
            been_in: false,
            failures: Vec::new(),
            outages: Vec::new(),
            said: Vec::new(),
            heard_own: Vec::new(),
            unsent: 0,
            delivered: [0, 0],
            latency: [histogram(), histogram()],
        }
    }

    pub fn fault(&mut self, shared: &Shared, what: String) {
        self.fault_count += 1;
        if self.faults.len() < 5 {
            let at = shared.now().as_secs_f64();
            self.faults.push(format!("{at:.1} s: {what}"));
        }
    }

    pub fn failed(&mut self, shared: &Shared, what: &'static str, outcome: Outcome) {
        self.failures.push(Failure {
            at: shared.now(),
            what,
            outcome,
        });
    }

    /// The connection is lost (once per outage).
    pub fn lost(&mut self, shared: &Shared, why: String) {
        if self.outages.last().is_some_and(|o| o.back.is_none()) {
            return;
        }
        shared.down.fetch_add(1, Ordering::AcqRel);
        self.outages.push(Outage {
            lost: shared.now(),
            why,
            tried: None,
            back: None,
        });
    }

    /// Connected, by an attempt begun at `tried`: the first time, or back
    /// from an outage.
    pub fn connected(&mut self, shared: &Shared, tried: Duration) {
        self.ok += 1;
        if !self.been_in {
            self.been_in = true;
            shared.joined.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(outage) = self.outages.last_mut().filter(|o| o.back.is_none()) {
            outage.tried = Some(tried);
            outage.back = Some(shared.now());
            shared.down.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The cursor a poll answer gives, when it brings no message: the
    /// member has everything up to it.
    pub fn cursor(&mut self, shared: &Shared, latest: MessageId) {
        match self.last {
            None => self.last = Some(latest),
            Some(last) if last == latest => {}
            Some(last) => self.fault(shared, format!("cursor {last}, then latest {latest}")),
        }
    }

    /// One message, from either transport.
    pub fn receive(&mut self, shared: &Shared, msg: &Value) {
        if msg["kind"] == "reset" {
            return self.fault(shared, format!("reset notice {msg}"));
        }
        let Some(id) = msg["id"].as_str() else {
            return; // who is here: not numbered
        };
        let Ok(id) = id.parse::<MessageId>() else {
            return self.fault(shared, format!("not an id: {msg}"));
        };
        match self.last {
            Some(last) if last.epoch != id.epoch => {
                self.fault(shared, format!("{id} after {last}: a new epoch"))
            }
            Some(last) if id.seq <= last.seq => {
                return self.fault(shared, format!("{id} again, after {last}"));
            }
            Some(last) if id.seq != last.seq + 1 => {
                let missed = id.seq - last.seq - 1;
                self.fault(shared, format!("{id} after {last}: {missed} missed"))
            }
            _ => {}
        }
        self.first.get_or_insert(id);
        self.last = Some(id);
        self.received += 1;
        let line = msg["kind"] == "say";
        shared.check_id(&self.name, id, msg, line);
        if line {
            self.heard(shared, msg["text"].as_str().unwrap_or(""));
        }
    }

    /// A chat line, `NAME: SEQ MS` or `NAME: end`.
    fn heard(&mut self, shared: &Shared, text: &str) {
        let Some((name, line)) = text.split_once(": ") else {
            return;
        };
        let Some(sender) = member_index(name) else {
            return;
        };
        if line == "end" {
            if let Some(heard) = self.ends.get_mut(sender).filter(|h| !**h) {
                *heard = true;
                self.ends_heard += 1;
                if self.ends_heard == self.ends.len() {
                    shared.ended.fetch_add(1, Ordering::AcqRel);
                }
            }
            return;
        }
        let Some((seq, sent_ms)) = line.split_once(' ') else {
            return;
        };
        let (Ok(seq), Ok(sent_ms)) = (seq.parse::<usize>(), sent_ms.parse::<u64>()) else {
            return;
        };
        if name == self.name {
            if self.heard_own.len() <= seq {
                self.heard_own.resize(seq + 1, false);
            }
            self.heard_own[seq] = true;
        }
        if let Some(p) = shared.phase().counted() {
            self.delivered[p] += 1;
            let now_ms = shared.now().as_millis() as u64;
            let _ = self.latency[p].record(now_ms.saturating_sub(sent_ms).max(1));
        }
    }

    /// Whether it heard every member's `end`.
    pub fn all_ended(&self) -> bool {
        self.ends_heard == self.ends.len()
    }

    /// Whether it heard its own `end`.
    pub fn heard_own_end(&self) -> bool {
        self.ends[self.index]
    }

    /// The next line to say, recorded as not said yet: its number and text
    /// (the number and the time it is said, in ms since the start).
    pub fn next_line(&mut self, shared: &Shared) -> (usize, String) {
        let seq = self.said.len();
        self.said.push(false);
        (seq, format!("{seq} {}", shared.now().as_millis()))
    }

    /// Takes in what a poller's sending thread recorded.
    pub fn merge_sender(&mut self, sender: Log) {
        self.said = sender.said;
        self.unsent = sender.unsent;
        self.ok += sender.ok;
        self.failures.extend(sender.failures);
        self.failures.sort_by_key(|f| f.at);
    }
}

/// `ws-0`, `poll-1`, `ws-2`...: even members use a WebSocket.
pub fn member_name(i: usize) -> String {
    match i % 2 {
        0 => format!("ws-{i}"),
        _ => format!("poll-{i}"),
    }
}

fn member_index(name: &str) -> Option<usize> {
    let (_, i) = name.split_once('-')?;
    i.parse().ok()
}

/// A small xorshift generator: the waits before reconnecting and the
/// offsets of the first lines need no more.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: usize) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        Rng((seed as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ nanos | 1)
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sleeps `wait`, in steps, unless the load finishes meanwhile.
pub fn pause(shared: &Shared, wait: Duration) {
    let until = Instant::now() + wait;
    while !shared.finished.load(Ordering::Acquire) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        thread::sleep(left.min(Duration::from_millis(50)));
    }
}
