//! The fan-out load generator: N WebSocket clients on one topic of a
//! server under test, one of them also the publisher.
//!
//! ```text
//! fanout_client --url ws://HOST:PORT/PATH [--subscribers N] [--size BYTES]
//!               [--in-flight K] [--duration SECS]
//! ```
//!
//! Every connection is a subscriber. Connection 0 also publishes: it keeps
//! K messages in flight, counted by its own copies coming back, until the
//! duration is over, then waits until every subscriber has every message.
//! Each message carries its sequence number; every subscriber checks that
//! it gets each one once and in order, with its length and last byte
//! intact. Any gap, repeat, bad frame, close from the server or 10 s
//! without progress ends the run with a message on stderr and exit status
//! 1: a bench that lost a message has no figure.
//!
//! Prints `fanout: connected N` once every connection is upgraded (the
//! runner starts its CPU window there), then one JSON line: messages,
//! deliveries (messages x subscribers), deliveries/s over the window from
//! the first publish to the last delivery, and this process' CPU.
//!
//! The servers subscribe every connection before answering its upgrade,
//! so no message can go out before a subscriber is in place. One thread,
//! one mio poll; frames from the server are parsed here (client role:
//! unmasked in, masked out), so the tool depends on no server's code.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

const FIN_BINARY: u8 = 0x82;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
const MASK_BIT: u8 = 0x80;
const MASK_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// A run with no event for this long has lost a message (or a server).
const STALL: Duration = Duration::from_secs(10);

struct Opts {
    addr: SocketAddr,
    host: String,
    path: String,
    subscribers: usize,
    size: usize,
    in_flight: u64,
    duration: Duration,
}

/// One connection: its socket, bytes of a frame not yet complete, and the
/// sequence number it expects next.
struct Subscriber {
    stream: MioStream,
    partial: Vec<u8>,
    next: u64,
}

fn main() -> ExitCode {
    let opts = match parse() {
        Ok(opts) => opts,
        Err(msg) => {
            eprintln!("fanout_client: {msg}\nusage: fanout_client --url ws://HOST:PORT/PATH [--subscribers N] [--size BYTES] [--in-flight K] [--duration SECS]");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("fanout_client: FAILED: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn parse() -> Result<Opts, String> {
    let mut url = None;
    let (mut subscribers, mut size, mut in_flight, mut duration) = (1_000, 20, 8, 3.0);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<f64>()
                .map_err(|_| format!("not a number: {value}"))
        };
        match flag.as_str() {
            "--url" => url = Some(value.clone()),
            "--subscribers" => subscribers = number()? as usize,
            "--size" => size = number()? as usize,
            "--in-flight" => in_flight = number()? as u64,
            "--duration" => duration = number()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let rest = url
        .strip_prefix("ws://")
        .ok_or("the URL must start with ws://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = host
        .parse()
        .map_err(|_| format!("not HOST:PORT with an IP: {host}"))?;
    if subscribers == 0 || in_flight == 0 || duration.is_nan() || duration <= 0.0 {
        return Err("--subscribers, --in-flight and --duration must be positive".into());
    }
    // The sequence number takes the first 8 bytes; 125 bytes and more take
    // a longer header than this tool writes (2 or 4 bytes before the key).
    if !(8..=65_535).contains(&size) {
        return Err("--size must be 8 to 65,535 bytes".into());
    }
    Ok(Opts {
        addr,
        host: host.to_owned(),
        path: path.to_owned(),
        subscribers,
        size,
        in_flight,
        duration: Duration::from_secs_f64(duration),
    })
}

fn run(opts: &Opts) -> Result<(), String> {
    let poll = Poll::new().map_err(|e| e.to_string())?;
    let mut subs = Vec::with_capacity(opts.subscribers);
    for i in 0..opts.subscribers {
        let (stream, partial) =
            upgrade(opts).map_err(|e| format!("subscriber {i}: upgrade: {e}"))?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut stream = MioStream::from_std(stream);
        let interest = if i == 0 {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        poll.registry()
            .register(&mut stream, Token(i), interest)
            .map_err(|e| e.to_string())?;
        subs.push(Subscriber {
            stream,
            partial,
            next: 0,
        });
    }
    println!("fanout: connected {}", opts.subscribers);
    let _ = io::stdout().flush();

    let cpu0 = own_cpu_ticks();
    let mut publisher = Publisher::new(opts.size);
    let start = Instant::now();
    let deadline = start + opts.duration;
    for _ in 0..opts.in_flight {
        publisher.queue();
    }
    publisher.flush(&mut subs[0].stream)?;
    let mut poll = poll;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    // Subscribers that have every message sent so far (only counted once
    // the publisher has stopped).
    let mut done = false;
    while !done {
        poll.poll(&mut events, Some(STALL))
            .map_err(|e| format!("poll: {e}"))?;
        if events.is_empty() {
            let behind = subs.iter().filter(|s| s.next < publisher.sent).count();
            return Err(format!(
                "no progress for {} s: {behind} of {} subscribers lack messages (of {} sent)",
                STALL.as_secs(),
                subs.len(),
                publisher.sent
            ));
        }
        for event in events.iter() {
            let i = event.token().0;
            if event.is_readable() {
                let got = read(i, &mut subs[i], &mut buf, opts.size)?;
                if i == 0 && got > 0 {
                    // The publisher's own copies: each one back frees a slot.
                    let in_flight = publisher.sent - subs[0].next;
                    if Instant::now() < deadline {
                        for _ in in_flight..opts.in_flight {
                            publisher.queue();
                        }
                    }
                }
            }
            if i == 0 {
                publisher.flush(&mut subs[0].stream)?;
            }
        }
        if Instant::now() >= deadline && subs[0].next == publisher.sent {
            done = subs.iter().all(|s| s.next == publisher.sent);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (own_cpu_ticks() - cpu0) as f64 / 100.0;
    let deliveries = publisher.sent * subs.len() as u64;
    println!(
        "{}",
        json!({
            "subscribers": subs.len(),
            "size": opts.size,
            "in_flight": opts.in_flight,
            "messages": publisher.sent,
            "count": deliveries,
            "seconds": secs,
            "per_s": deliveries as f64 / secs,
            "messages_per_s": publisher.sent as f64 / secs,
            "loadgen_cpu": cpu / secs,
        })
    );
    Ok(())
}

/// Opens a connection and upgrades it with a blocking socket; returns it
/// with any bytes that came after the response.
fn upgrade(opts: &Opts) -> io::Result<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(opts.addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(STALL))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        opts.path, opts.host
    );
    stream.write_all(request.as_bytes())?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("closed before the upgrade response"));
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(&head[..end]);
                return Err(io::Error::other(format!("refused: {line}")));
            }
            return Ok((stream, head.split_off(end + 4)));
        }
    }
}

/// Reads what the socket has and checks every whole frame in it; returns
/// how many messages it took.
fn read(i: usize, sub: &mut Subscriber, buf: &mut [u8], size: usize) -> Result<u64, String> {
    let before = sub.next;
    loop {
        match sub.stream.read(buf) {
            Ok(0) => return Err(format!("subscriber {i}: the server closed the connection")),
            Ok(n) => {
                sub.partial.extend_from_slice(&buf[..n]);
                let used = frames(i, &sub.partial, &mut sub.next, size)?;
                sub.partial.drain(..used);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("subscriber {i}: read: {e}")),
        }
    }
    Ok(sub.next - before)
}

/// Checks the whole frames at the start of `bytes`, advancing `next` for
/// each message; returns the bytes they took.
fn frames(i: usize, bytes: &[u8], next: &mut u64, size: usize) -> Result<usize, String> {
    let mut at = 0;
    while bytes.len() - at >= 2 {
        let (b0, b1) = (bytes[at], bytes[at + 1]);
        if b1 & MASK_BIT != 0 {
            return Err(format!("subscriber {i}: a masked frame from the server"));
        }
        let (header, len) = match b1 & 0x7f {
            126 if bytes.len() - at >= 4 => (
                4,
                u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize,
            ),
            127 if bytes.len() - at >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&bytes[at + 2..at + 10]);
                (10, u64::from_be_bytes(n) as usize)
            }
            126 | 127 => break,
            n => (2, n as usize),
        };
        if bytes.len() - at < header + len {
            break;
        }
        let payload = &bytes[at + header..at + header + len];
        at += header + len;
        match b0 & 0x0f {
            OP_PING | OP_PONG => continue,
            OP_CLOSE => return Err(format!("subscriber {i}: the server sent close {payload:?}")),
            _ if b0 != FIN_BINARY => {
                return Err(format!(
                    "subscriber {i}: an unexpected frame, first byte {b0:#04x}"
                ))
            }
            _ => {}
        }
        if len != size {
            return Err(format!(
                "subscriber {i}: a message of {len} bytes, not {size}"
            ));
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&payload[..8]);
        let seq = u64::from_le_bytes(seq);
        if seq != *next {
            return Err(format!(
                "subscriber {i}: got message {seq}, expected {}: {}",
                *next,
                if seq < *next {
                    "a repeat or reorder"
                } else {
                    "one was lost"
                }
            ));
        }
        if payload[len - 1] != filler(seq) {
            return Err(format!("subscriber {i}: message {seq} arrived corrupted"));
        }
        *next += 1;
    }
    Ok(at)
}

/// The byte that fills a message after its sequence number.
fn filler(seq: u64) -> u8 {
    (seq % 251) as u8
}

/// The publisher's side of connection 0: masked frames queued and written
/// as the socket takes them.
struct Publisher {
    size: usize,
    sent: u64,
    out: Vec<u8>,
    payload: Vec<u8>,
}

impl Publisher {
    fn new(size: usize) -> Publisher {
        Publisher {
            size,
            sent: 0,
            out: Vec::new(),
            payload: vec![0; size],
        }
    }

    /// Appends the next message as a masked binary frame.
    fn queue(&mut self) {
        let seq = self.sent;
        self.payload.fill(filler(seq));
        self.payload[..8].copy_from_slice(&seq.to_le_bytes());
        self.out.push(FIN_BINARY);
        if self.size < 126 {
            self.out.push(MASK_BIT | self.size as u8);
        } else {
            self.out.push(MASK_BIT | 126);
            self.out
                .extend_from_slice(&(self.size as u16).to_be_bytes());
        }
        self.out.extend_from_slice(&MASK_KEY);
        self.out.extend(
            self.payload
                .iter()
                .zip(MASK_KEY.iter().cycle())
                .map(|(b, k)| b ^ k),
        );
        self.sent += 1;
    }

    /// Writes what the socket takes; the rest waits for the next writable
    /// event.
    fn flush(&mut self, stream: &mut MioStream) -> Result<(), String> {
        while !self.out.is_empty() {
            match stream.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("publisher: write: {e}")),
            }
        }
        Ok(())
    }
}

/// This process' user plus system CPU time, in clock ticks (100 a second).
fn own_cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    // utime and stime are fields 14 and 15 of the whole line.
    rest.split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}
