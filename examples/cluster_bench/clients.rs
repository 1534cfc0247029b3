//! The clients' side: what the publisher sends, and the subscribers that
//! read it through one mio poll and check every message.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use wsloop::frame::{FrameHeader, OpCode, Role};
use wsloop::protocol::encode_frame;
use wsloop::MessageId;

/// Bytes the publisher sends per message: a kind, an index, padding.
pub const SIZE: usize = 64;
/// Kinds of message. Probes only show that every subscription is in place.
const PROBE: u8 = b'P';
pub const MEASURED: u8 = b'M';

/// What the publisher sends: a kind, an index, padding to [`SIZE`].
pub fn frame(kind: u8, index: u64) -> Vec<u8> {
    let mut payload = vec![0x5A; SIZE];
    payload[0] = kind;
    payload[1..9].copy_from_slice(&index.to_be_bytes());
    let mut out = Vec::new();
    encode_frame(&mut out, true, OpCode::Binary, Some([1, 2, 3, 4]), &payload);
    out
}

/// Splits what a subscriber got into the id its node wrote before the
/// payload (the default envelope, `EPOCH-SEQ `) and the payload.
fn split_id(got: &[u8]) -> Option<(MessageId, &[u8])> {
    let space = got.iter().position(|&b| b == b' ')?;
    let id = std::str::from_utf8(&got[..space]).ok()?.parse().ok()?;
    Some((id, &got[space + 1..]))
}

/// What the checks found wrong, per mode.
#[derive(Debug, Default, Clone, Copy)]
pub struct Anomalies {
    /// Not an id and a payload the publisher sent.
    pub malformed: u64,
    /// Measured messages that never came.
    pub lost: u64,
    /// Measured messages that came after a later one.
    pub out_of_order: u64,
    /// Ids that did not follow the client's previous one.
    pub id_gaps: u64,
    /// Ordered: one message with different ids on the two nodes.
    pub id_mismatch: u64,
}

impl std::fmt::Display for Anomalies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} lost, {} out of order, {} id gaps, {} ids differing between nodes, {} malformed",
            self.lost, self.out_of_order, self.id_gaps, self.id_mismatch, self.malformed
        )
    }
}

impl Anomalies {
    pub fn total(&self) -> u64 {
        self.malformed + self.lost + self.out_of_order + self.id_gaps + self.id_mismatch
    }
}

/// What one client has had so far, to check the next against.
#[derive(Debug, Default, Clone)]
pub struct Track {
    last_id: Option<MessageId>,
    /// The index of the next measured message.
    pub next: u64,
}

impl Track {
    /// Checks one payload as the client got it; its id and what the
    /// publisher sent (kind, index), or `None` if it is not that.
    pub fn check(&mut self, got: &[u8], seen: &mut Anomalies) -> Option<(MessageId, u8, u64)> {
        let Some((id, body)) = split_id(got).filter(|(_, body)| body.len() == SIZE) else {
            seen.malformed += 1;
            return None;
        };
        let index = u64::from_be_bytes(body[1..9].try_into().expect("8 bytes"));
        if let Some(last) = self.last_id {
            if id.epoch != last.epoch || id.seq != last.seq + 1 {
                seen.id_gaps += 1;
            }
        }
        self.last_id = Some(id);
        if body[0] == MEASURED {
            if index < self.next {
                seen.out_of_order += 1;
            } else {
                seen.lost += index - self.next;
                self.next = index + 1;
            }
        }
        Some((id, body[0], index))
    }

    /// Counts the measured messages still missing of the first `sent`.
    pub fn finish(&self, sent: u64, seen: &mut Anomalies) {
        seen.lost += sent.saturating_sub(self.next);
    }
}

/// Many clients' sockets read through one mio poll.
pub struct Clients {
    poll: Poll,
    events: Events,
    socks: Vec<(MioStream, Vec<u8>)>,
    chunk: Vec<u8>,
}

impl Clients {
    pub fn new(streams: Vec<TcpStream>) -> Clients {
        let poll = Poll::new().unwrap();
        let socks = streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.set_nonblocking(true).unwrap();
                let mut m = MioStream::from_std(s);
                poll.registry()
                    .register(&mut m, Token(i), Interest::READABLE)
                    .unwrap();
                (m, Vec::new())
            })
            .collect();
        Clients {
            poll,
            events: Events::with_capacity(1024),
            socks,
            chunk: vec![0; 64 * 1024],
        }
    }

    pub fn len(&self) -> usize {
        self.socks.len()
    }

    /// Waits up to `timeout` for input, and hands each whole frame's
    /// payload to `each` with its client's index; false if none came.
    pub fn read(&mut self, timeout: Duration, mut each: impl FnMut(usize, &[u8])) -> bool {
        self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        for event in self.events.iter() {
            let k = event.token().0;
            let (sock, buf) = &mut self.socks[k];
            // Edge-triggered: read until the socket is empty.
            loop {
                match sock.read(&mut self.chunk) {
                    Ok(0) => panic!("a node closed a client"),
                    Ok(n) => buf.extend_from_slice(&self.chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            let mut at = 0;
            while let Some((h, n)) = FrameHeader::parse(&buf[at..], Role::Client).unwrap() {
                let end = at + n + h.payload_len as usize;
                if end > buf.len() {
                    break;
                }
                assert_eq!(h.opcode, OpCode::Binary);
                each(k, &buf[at + n..end]);
                at = end;
            }
            buf.drain(..at);
        }
        !self.events.is_empty()
    }
}

/// Sends probes until every client has had one: then every subscription
/// is in place on both nodes (and, ordered, every copy of the topic is
/// loaded). Probes come before what the publisher sends next on every
/// path, so a late one is only checked, not counted. Returns how many
/// were sent.
pub fn settle(
    publisher: &mut TcpStream,
    clients: &mut Clients,
    tracks: &mut [Track],
    seen: &mut Anomalies,
) -> u64 {
    let mut heard = vec![false; clients.len()];
    let mut left = clients.len();
    let start = Instant::now();
    for probe in 0.. {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{left} clients heard no probe in 10 s"
        );
        publisher.write_all(&frame(PROBE, probe)).unwrap();
        let sent = Instant::now();
        while left > 0 && sent.elapsed() < Duration::from_millis(50) {
            clients.read(Duration::from_millis(10), |k, got| {
                if tracks[k].check(got, seen).is_some() && !heard[k] {
                    heard[k] = true;
                    left -= 1;
                }
            });
        }
        if left == 0 {
            return probe + 1;
        }
    }
    unreachable!("the loop returns or panics")
}
