//! Per-worker counters: relaxed atomics, each written by one worker only.
//! A relaxed `fetch_add` on a cache line that only its worker writes costs
//! a locked add (about 20 cycles on x86), with no contention; other
//! threads read the values at any time.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::{CloseCode, HandshakeError};
use crate::session::{ReadError, SendStatus};

/// Close codes counted one by one; every other code is counted as "other".
pub(crate) const CODES: [u16; 11] = [
    1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011, 1012, 1013,
];

/// Statuses of upgrades refused by `on_upgrade`, counted one by one, in
/// the order of [`Counters::upgrades_refused`]; any other is counted last.
pub const REFUSED_STATUSES: [u16; 6] = [400, 401, 403, 404, 409, 429];

/// Handshake failure reasons, in the order of [`Counters::handshake_failed`].
pub const HANDSHAKE_REASONS: &[&str] = HandshakeError::LABELS;

/// How many handshake reasons are counted.
const REASONS: usize = HandshakeError::LABELS.len();

/// The live counters of one worker.
#[derive(Debug, Default)]
pub struct Stats {
    open: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    upgraded: AtomicU64,
    upgrades_refused: [AtomicU64; REFUSED_STATUSES.len() + 1],
    handshake_failed: [AtomicU64; REASONS],
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    dropped: AtomicU64,
    closes: [AtomicU64; CODES.len() + 1],
    http_requests: AtomicU64,
    held: AtomicU64,
    streams: AtomicU64,
    /// Written by publishing threads, not this worker: only when they
    /// find its inbox full, which is rare.
    publishes_refused: AtomicU64,
    tls_failed: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Relaxed);
}

impl Stats {
    pub(crate) fn accepted(&self) {
        bump(&self.accepted, 1);
        bump(&self.open, 1);
    }
    pub(crate) fn removed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }
    pub(crate) fn refused(&self) {
        bump(&self.refused, 1);
    }
    pub(crate) fn upgraded(&self) {
        bump(&self.upgraded, 1);
    }
    pub(crate) fn upgrade_refused(&self, status: u16) {
        let i = REFUSED_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(REFUSED_STATUSES.len());
        bump(&self.upgrades_refused[i], 1);
    }
    pub(crate) fn read_failed(&self, err: &ReadError) {
        if let ReadError::Handshake(err) = err {
            bump(&self.handshake_failed[err.label_index()], 1);
        }
    }
    pub(crate) fn message_in(&self) {
        bump(&self.messages_in, 1);
    }
    /// Counts a send by its outcome.
    pub(crate) fn sent(&self, status: SendStatus, bytes: usize) {
        match status {
            SendStatus::Queued => {
                bump(&self.messages_out, 1);
                bump(&self.bytes_out, bytes as u64);
            }
            SendStatus::Dropped | SendStatus::NotText => bump(&self.dropped, 1),
            SendStatus::Closed => {}
        }
    }
    pub(crate) fn http_request(&self) {
        bump(&self.http_requests, 1);
    }
    pub(crate) fn hold(&self) {
        bump(&self.held, 1);
    }
    pub(crate) fn unhold(&self) {
        self.held.fetch_sub(1, Relaxed);
    }
    pub(crate) fn stream_opened(&self) {
        bump(&self.streams, 1);
    }
    pub(crate) fn stream_ended(&self) {
        self.streams.fetch_sub(1, Relaxed);
    }
    pub(crate) fn publish_refused(&self) {
        bump(&self.publishes_refused, 1);
    }
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn tls_failed(&self) {
        bump(&self.tls_failed, 1);
    }
    pub(crate) fn bytes_in(&self, n: usize) {
        bump(&self.bytes_in, n as u64);
    }
    pub(crate) fn closed(&self, code: CloseCode) {
        let i = CODES
            .iter()
            .position(|&c| c == code.0)
            .unwrap_or(CODES.len());
        bump(&self.closes[i], 1);
    }

    /// A copy of the counters now.
    pub fn snapshot(&self) -> Counters {
        let load = |c: &AtomicU64| c.load(Relaxed);
        Counters {
            open: load(&self.open),
            accepted: load(&self.accepted),
            refused: load(&self.refused),
            upgraded: load(&self.upgraded),
            upgrades_refused: self.upgrades_refused.each_ref().map(load),
            handshake_failed: self.handshake_failed.each_ref().map(load),
            messages_in: load(&self.messages_in),
            messages_out: load(&self.messages_out),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            dropped: load(&self.dropped),
            closes: self.closes.each_ref().map(load),
            http_requests: load(&self.http_requests),
            held: load(&self.held),
            streams: load(&self.streams),
            publishes_refused: load(&self.publishes_refused),
            tls_failed: load(&self.tls_failed),
        }
    }
}

/// Counter values at one moment, for one worker or summed over all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections open now, handshakes included.
    pub open: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed at accept because the worker was full.
    pub refused: u64,
    /// Handshakes completed.
    pub upgraded: u64,
    /// Upgrades the handler refused ([`Upgrade::reject`](crate::Upgrade::reject)),
    /// by status (see [`REFUSED_STATUSES`]; any other status last).
    pub upgrades_refused: [u64; REFUSED_STATUSES.len() + 1],
    /// Handshakes refused, by reason (see [`HANDSHAKE_REASONS`]).
    pub handshake_failed: [u64; REASONS],
    /// Data messages received.
    pub messages_in: u64,
    /// Data messages queued to be sent.
    pub messages_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes of messages queued (payloads; whole frames for broadcasts).
    pub bytes_out: u64,
    /// Messages dropped by the [`Backpressure::Drop`](crate::Backpressure::Drop) policy.
    pub dropped: u64,
    /// WebSocket connections and event streams ended, by close code (see
    /// [`Counters::closes_by_code`]).
    pub closes: [u64; CODES.len() + 1],
    /// Plain HTTP requests handed to [`Handler::on_http`](crate::Handler::on_http).
    pub http_requests: u64,
    /// Requests held ([`Reply::Hold`](crate::Reply::Hold)) now.
    pub held: u64,
    /// Event streams ([`Reply::Stream`](crate::Reply::Stream)) open now.
    pub streams: u64,
    /// Publishes refused because this worker's inbox was full
    /// ([`PublishStatus::Refused`](crate::PublishStatus::Refused)).
    pub publishes_refused: u64,
    /// Connections ended because TLS failed: a broken or refused
    /// handshake, plain HTTP sent to a TLS port, a bad record (the `tls`
    /// feature; always 0 without it).
    pub tls_failed: u64,
}

impl Counters {
    /// Adds another worker's counters.
    pub fn add(&mut self, other: &Counters) {
        self.open += other.open;
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.upgraded += other.upgraded;
        for (a, b) in self.upgrades_refused.iter_mut().zip(other.upgrades_refused) {
            *a += b;
        }
        for (a, b) in self.handshake_failed.iter_mut().zip(other.handshake_failed) {
            *a += b;
        }
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.dropped += other.dropped;
        for (a, b) in self.closes.iter_mut().zip(other.closes) {
            *a += b;
        }
        self.http_requests += other.http_requests;
        self.held += other.held;
        self.streams += other.streams;
        self.publishes_refused += other.publishes_refused;
        self.tls_failed += other.tls_failed;
    }

    /// Closes counted for one code; codes outside the tracked set count as 0
    /// here and are summed under [`Counters::closes_other`].
    pub fn closes_by_code(&self, code: u16) -> u64 {
        CODES
            .iter()
            .position(|&c| c == code)
            .map_or(0, |i| self.closes[i])
    }

    /// Closes with a code outside the tracked set.
    pub fn closes_other(&self) -> u64 {
        self.closes[CODES.len()]
    }
}

impl fmt::Display for Counters {
    /// One line a group; a group with nothing in it (no handshake failed,
    /// no upgrade refused, no close) prints no line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connections  open {}  accepted {}  refused {}  upgraded {}",
            self.open, self.accepted, self.refused, self.upgraded
        )?;
        let refused = REFUSED_STATUSES
            .iter()
            .map(u16::to_string)
            .chain(["other".into()]);
        group(
            f,
            "upgrades refused by status:",
            refused.zip(self.upgrades_refused),
        )?;
        group(
            f,
            "handshakes failed:",
            HANDSHAKE_REASONS.iter().zip(self.handshake_failed),
        )?;
        write!(
            f,
            "\nmessages  in {}  out {}  dropped {}",
            self.messages_in, self.messages_out, self.dropped
        )?;
        write!(f, "\nbytes  in {}  out {}", self.bytes_in, self.bytes_out)?;
        write!(
            f,
            "\nhttp requests {}  held now {}  streams now {}  publishes refused {}  tls failures {}",
            self.http_requests, self.held, self.streams, self.publishes_refused, self.tls_failed
        )?;
        let codes = CODES.iter().map(u16::to_string).chain(["other".into()]);
        group(f, "closes by code:", codes.zip(self.closes))
    }
}

/// A line `TITLE  name n  name n`, of the names with counts; no line if
/// every count is zero.
fn group<N: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    title: &str,
    counts: impl IntoIterator<Item = (N, u64)>,
) -> fmt::Result {
    let mut counts = counts.into_iter().filter(|&(_, n)| n > 0).peekable();
    if counts.peek().is_none() {
        return Ok(());
    }
    write!(f, "\n{title}")?;
    for (name, n) in counts {
        write!(f, "  {name} {n}")?;
    }
    Ok(())
}
