//! Long polling against WebSocket push, on the same chat and the same load:
//! the argument WebSockets won, measured.
//!
//! ```text
//! cargo build --release --example chat
//! cargo run --release -p wsloop-bench --bin polling -- [--clients 100,1000]
//!     [--seconds 10] [--room-size 10] [--every-ms 1000] [--runs 3]
//!     [--svg docs/polling.svg] [--json docs/polling.json]
//! ```
//!
//! It starts the chat example (2 workers) and, for each client count and
//! each transport, fills rooms of `--room-size` members. Every member says
//! a line every `--every-ms` (staggered), carrying the time it was sent;
//! every member of the room receives it. Over WebSocket a member sends a
//! masked frame and reads frames; over long polling it posts the line with
//! `POST /send` on one kept-alive connection and loops on `GET /poll` with
//! its cursor on another, as the chat page does. Reported per run, for the
//! measured window:
//!
//! - bytes on the wire per delivered message: every byte the clients wrote
//!   and read (HTTP heads and bodies, WebSocket frames; not TCP/IP
//!   headers), over deliveries;
//! - server CPU per delivered message (user + system, from /proc);
//! - delivery latency p50 and p99, from the sender's clock to each reader;
//! - HTTP requests per second the server parsed (polls and sends).
//!
//! The load generator runs on the same two cores as the server; CPU per
//! message is the server's own, which the generator cannot inflate, while
//! latency includes the generator's scheduling. Medians of `--runs`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Socket, Type};
use wsloop_bench::{median, svg, Running};

/// How the bench's members listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    WebSocket,
    Polling,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "WebSocket",
            Transport::Polling => "long polling",
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    clients: Vec<usize>,
    seconds: f64,
    room_size: usize,
    every: Duration,
    runs: usize,
    svg: Option<String>,
    json: Option<String>,
}

fn parse_opts() -> Result<Opts, String> {
    let mut opts = Opts {
        clients: vec![100, 1000],
        seconds: 10.0,
        room_size: 10,
        every: Duration::from_millis(1000),
        runs: 3,
        svg: None,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--clients" => {
                opts.clients = value
                    .split(',')
                    .map(|n| n.parse().map_err(bad))
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => {
                opts.seconds = value.parse().map_err(|_| format!("bad seconds {value}"))?
            }
            "--room-size" => opts.room_size = value.parse::<usize>().map_err(bad)?.max(1),
            "--every-ms" => opts.every = Duration::from_millis(value.parse().map_err(bad)?),
            "--runs" => opts.runs = value.parse::<usize>().map_err(bad)?.max(1),
            "--svg" => opts.svg = Some(value),
            "--json" => opts.json = Some(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(opts)
}

/// What every client thread adds to during a run.
#[derive(Debug, Default)]
struct Tally {
    /// Bytes written and read by every client socket.
    wire: AtomicU64,
    /// Messages received, counted while `measuring`.
    deliveries: AtomicU64,
    /// HTTP requests sent while `measuring`.
    requests: AtomicU64,
    /// Polls or sends answered with anything but success, and listeners
    /// that stopped before the end.
    failures: AtomicU64,
    measuring: AtomicBool,
    stop: AtomicBool,
    /// Delivery latencies in microseconds, while measuring.
    latencies: Mutex<Vec<u32>>,
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    deliveries_per_sec: f64,
    bytes_per_msg: f64,
    cpu_us_per_msg: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests_per_sec: f64,
}

/// The chat example, started on a free port.
struct Chat {
    process: Running,
    addr: SocketAddr,
}

impl Chat {
    /// Starts the chat for members that each say a line every `every`.
    fn start(every: Duration) -> Chat {
        let exe = std::env::current_exe().expect("own path");
        let chat = exe
            .parent()
            .expect("target dir")
            .join("examples")
            .join("chat");
        assert!(
            chat.exists(),
            "{} missing: cargo build --release --example chat",
            chat.display()
        );
        let args = [
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--history",
            "1000",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        // The chat's rate limit, 20 lines a second per client, is for
        // strangers: a faster pace asked of the bench is let through.
        let per_sec = (1.0 / every.as_secs_f64()).ceil().min(1e6) as u32;
        if per_sec >= 20 {
            args.extend(["--rate".to_owned(), (per_sec + 1).to_string()]);
        }
        let process = Running::start(&chat, &args, "chat").expect("the chat starts");
        let addr = process.addr.parse().expect("an address");
        Chat { process, addr }
    }

    /// The chat's CPU time so far, user and system, in seconds: the sum of
    /// its threads' run time from schedstat, in nanoseconds (the ticks of
    /// /proc/PID/stat are 10 ms, too coarse for a short window).
    fn cpu(&self) -> f64 {
        let tasks =
            std::fs::read_dir(format!("/proc/{}/task", self.process.pid())).expect("the chat runs");
        let ns: u64 = tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
            .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        ns as f64 / 1e9
    }
}

/// A socket that counts its bytes into the run's tally.
struct Counted {
    stream: TcpStream,
    tally: Arc<Tally>,
}

impl Counted {
    /// Connects from `from`, a loopback address of the member's own, as
    /// clients on the internet each have theirs (the server limits held
    /// polls per address).
    fn connect(addr: SocketAddr, from: IpAddr, tally: &Arc<Tally>) -> Counted {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .expect("bind a loopback address");
        socket.connect(&addr.into()).expect("connect to the chat");
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true).expect("nodelay");
        Counted {
            stream,
            tally: tally.clone(),
        }
    }
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.tally.wire.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.tally.wire.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Microseconds since the bench started: what a line carries.
fn now_us(origin: Instant) -> u64 {
    origin.elapsed().as_micros() as u64
}

/// Records a received chat message: a delivery, and its latency if it is
/// a timed line.
fn received(msg: &Value, origin: Instant, tally: &Tally) {
    if msg["kind"] != "say" || !tally.measuring.load(Relaxed) {
        return;
    }
    tally.deliveries.fetch_add(1, Relaxed);
    let sent = msg["text"]
        .as_str()
        .and_then(|t| t.rsplit("t=").next())
        .and_then(|t| t.parse::<u64>().ok());
    if let Some(sent) = sent {
        let us = now_us(origin).saturating_sub(sent).min(u32::MAX as u64) as u32;
        tally.latencies.lock().unwrap().push(us);
    }
}

// ---- WebSocket, by hand: a client's masked frames, the server's plain ones.

fn ws_open(
    addr: SocketAddr,
    from: IpAddr,
    room: &str,
    name: &str,
    tally: &Arc<Tally>,
) -> BufReader<Counted> {
    let mut conn = Counted::connect(addr, from, tally);
    let head = format!(
        "GET /ws?room={room}&name={name} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).expect("upgrade request");
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).expect("upgrade answer");
    assert!(line.starts_with("HTTP/1.1 101"), "{line}");
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).expect("upgrade head");
    }
    reader
}

/// Writes one masked text frame.
fn ws_send(stream: &mut impl Write, text: &str) -> std::io::Result<()> {
    let payload = text.as_bytes();
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame)
}

/// Reads one server frame's payload; `None` at the end.
fn ws_read(reader: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut head = [0; 2];
    reader.read_exact(&mut head).ok()?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0; 2];
            reader.read_exact(&mut n).ok()?;
            u16::from_be_bytes(n) as usize
        }
        127 => {
            let mut n = [0; 8];
            reader.read_exact(&mut n).ok()?;
            u64::from_be_bytes(n) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0; len];
    reader.read_exact(&mut payload).ok()?;
    Some((head[0] & 0x0f, payload))
}

// ---- Long polling over HTTP/1.1 kept alive.

/// Sends a request and reads the answer's status and body.
fn http(
    conn: &mut BufReader<Counted>,
    method: &str,
    path: &str,
    body: &str,
) -> Option<(u16, Vec<u8>)> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(request.as_bytes()).ok()?;
    let mut line = String::new();
    conn.read_line(&mut line).ok()?;
    let status = line.split(' ').nth(1)?.parse().ok()?;
    let mut len = 0;
    loop {
        line.clear();
        conn.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).ok()?;
    Some((status, body))
}

/// A member's sending side: says lines, as scheduled by its room.
enum Mouth {
    Socket(Counted),
    Poster(BufReader<Counted>, String),
}

impl Mouth {
    fn say(&mut self, text: &str, tally: &Tally) -> bool {
        match self {
            Mouth::Socket(stream) => ws_send(stream, text).is_ok(),
            Mouth::Poster(conn, query) => {
                if tally.measuring.load(Relaxed) {
                    tally.requests.fetch_add(1, Relaxed);
                }
                matches!(
                    http(conn, "POST", &format!("/send?{query}"), text),
                    Some((204, _))
                )
            }
        }
    }
}

/// Opens a member: its listening thread runs until the run stops; the
/// returned mouth says its lines, and the stream is shut down at the end.
fn open_member(
    addr: SocketAddr,
    transport: Transport,
    (room, name, from): (&str, &str, IpAddr),
    tally: &Arc<Tally>,
    origin: Instant,
) -> (Mouth, Vec<TcpStream>, thread::JoinHandle<()>) {
    let tally = tally.clone();
    match transport {
        Transport::WebSocket => {
            let tally_for_mouth = tally.clone();
            let mut reader = ws_open(addr, from, room, name, &tally);
            let stream = reader.get_ref().stream.try_clone().expect("clone");
            let closer = stream.try_clone().expect("clone");
            let listener = thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    while let Some((opcode, payload)) = ws_read(&mut reader) {
                        if opcode == 0x1 {
                            if let Ok(msg) = serde_json::from_slice::<Value>(&payload) {
                                received(&msg, origin, &tally);
                            }
                        }
                    }
                })
                .expect("thread");
            let mouth = Counted {
                stream,
                tally: tally_for_mouth,
            };
            (Mouth::Socket(mouth), vec![closer], listener)
        }
        Transport::Polling => {
            // The token a page makes once: a poll replaces only an
            // earlier poll that carries the same.
            let query = format!("room={room}&name={name}&client=bench-{name}-{room}");
            let mut polls = BufReader::new(Counted::connect(addr, from, &tally));
            let sends = BufReader::new(Counted::connect(addr, from, &tally));
            let closers = vec![
                polls.get_ref().stream.try_clone().expect("clone"),
                sends.get_ref().stream.try_clone().expect("clone"),
            ];
            let (status, body) = http(&mut polls, "GET", &format!("/poll?{query}&after=0"), "")
                .expect("a poller joins");
            assert_eq!(status, 200);
            let joined: Value = serde_json::from_slice(&body).expect("JSON");
            let mut cursor = joined["latest"].as_str().unwrap_or("0").to_owned();
            let poll_query = query.clone();
            let listener = thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    while !tally.stop.load(Relaxed) {
                        if tally.measuring.load(Relaxed) {
                            tally.requests.fetch_add(1, Relaxed);
                        }
                        let path = format!("/poll?{poll_query}&after={cursor}");
                        let Some((200, body)) = http(&mut polls, "GET", &path, "") else {
                            if !tally.stop.load(Relaxed) {
                                tally.failures.fetch_add(1, Relaxed);
                            }
                            return;
                        };
                        let Ok(answer) = serde_json::from_slice::<Value>(&body) else {
                            return;
                        };
                        for msg in answer["messages"].as_array().into_iter().flatten() {
                            received(msg, origin, &tally);
                        }
                        if let Some(latest) = answer["latest"].as_str() {
                            cursor = latest.to_owned();
                        }
                    }
                })
                .expect("thread");
            (Mouth::Poster(sends, query), closers, listener)
        }
    }
}

/// One run: `clients` members in rooms, the measured window, the figures.
fn run(chat: &Chat, transport: Transport, clients: usize, opts: &Opts, tag: usize) -> Figures {
    let origin = Instant::now();
    let tally = Arc::new(Tally::default());
    let rooms = clients.div_ceil(opts.room_size);
    let mut mouths: Vec<Vec<Mouth>> = (0..rooms).map(|_| Vec::new()).collect();
    let mut closers = Vec::new();
    let mut listeners = Vec::new();
    for i in 0..clients {
        let room = format!("r{tag}-{}", i % rooms);
        let name = format!("m{i}");
        let from = IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8));
        let (mouth, close, listener) =
            open_member(chat.addr, transport, (&room, &name, from), &tally, origin);
        mouths[i % rooms].push(mouth);
        closers.extend(close);
        listeners.push(listener);
    }
    // Every room says a line every `every / room size`, members in turn,
    // rooms staggered across the interval.
    let window = Duration::from_secs_f64(opts.seconds);
    let warmup = Duration::from_secs(1);
    let senders: Vec<_> = mouths
        .into_iter()
        .enumerate()
        .map(|(r, mut members)| {
            let tally = tally.clone();
            let gap = opts.every / members.len() as u32;
            let offset = gap.mul_f64(r as f64 / rooms as f64);
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let start = Instant::now() + offset;
                    let mut n = 0u32;
                    while !tally.stop.load(Relaxed) {
                        let due = start + gap * n;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            thread::sleep(wait);
                        }
                        let who = n as usize % members.len();
                        let text = format!("t={}", now_us(origin));
                        if !members[who].say(&text, &tally) {
                            tally.failures.fetch_add(1, Relaxed);
                            return;
                        }
                        n += 1;
                    }
                })
                .expect("thread")
        })
        .collect();
    thread::sleep(warmup);
    let (wire0, cpu0, t0) = (tally.wire.load(Relaxed), chat.cpu(), Instant::now());
    tally.measuring.store(true, Relaxed);
    thread::sleep(window);
    tally.measuring.store(false, Relaxed);
    let (wire1, cpu1, elapsed) = (tally.wire.load(Relaxed), chat.cpu(), t0.elapsed());
    tally.stop.store(true, Relaxed);
    for s in senders {
        let _ = s.join();
    }
    for c in &closers {
        let _ = c.shutdown(Shutdown::Both);
    }
    for l in listeners {
        let _ = l.join();
    }
    let failures = tally.failures.load(Relaxed);
    if failures > 0 {
        eprintln!(
            "polling: {failures} requests failed in the {} run at {clients} clients",
            transport.name()
        );
    }
    let deliveries = tally.deliveries.load(Relaxed).max(1) as f64;
    let mut lat = std::mem::take(&mut *tally.latencies.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Figures {
        deliveries_per_sec: deliveries / elapsed.as_secs_f64(),
        bytes_per_msg: (wire1 - wire0) as f64 / deliveries,
        cpu_us_per_msg: (cpu1 - cpu0) * 1e6 / deliveries,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        requests_per_sec: tally.requests.load(Relaxed) as f64 / elapsed.as_secs_f64(),
    }
}

fn main() {
    let opts = match parse_opts() {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("polling: {e}");
            std::process::exit(2);
        }
    };
    let chat = Chat::start(opts.every);
    println!(
        "polling: chat at {}, rooms of {}, a line per member every {} ms, {} s windows, medians of {}",
        chat.addr,
        opts.room_size,
        opts.every.as_millis(),
        opts.seconds,
        opts.runs
    );
    let transports = [Transport::WebSocket, Transport::Polling];
    let mut table = Vec::new();
    let mut tag = 0;
    for &clients in &opts.clients {
        let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); transports.len()];
        // Interleaved, so that a noisy moment hurts both alike.
        for _ in 0..opts.runs {
            for (i, &t) in transports.iter().enumerate() {
                tag += 1;
                runs[i].push(run(&chat, t, clients, &opts, tag));
            }
        }
        for (i, &t) in transports.iter().enumerate() {
            let pick = |f: fn(&Figures) -> f64| median(runs[i].iter().map(f));
            let figures = Figures {
                deliveries_per_sec: pick(|f| f.deliveries_per_sec),
                bytes_per_msg: pick(|f| f.bytes_per_msg),
                cpu_us_per_msg: pick(|f| f.cpu_us_per_msg),
                p50_ms: pick(|f| f.p50_ms),
                p99_ms: pick(|f| f.p99_ms),
                requests_per_sec: pick(|f| f.requests_per_sec),
            };
            table.push((clients, t, figures));
        }
    }
    println!();
    println!("| clients | transport | deliveries/s | wire bytes/msg | server CPU µs/msg | latency p50 | p99 | HTTP requests/s |");
    println!("|---|---|---|---|---|---|---|---|");
    for (clients, t, f) in &table {
        println!(
            "| {clients} | {} | {:.0} | {:.0} | {:.1} | {:.2} ms | {:.2} ms | {:.0} |",
            t.name(),
            f.deliveries_per_sec,
            f.bytes_per_msg,
            f.cpu_us_per_msg,
            f.p50_ms,
            f.p99_ms,
            f.requests_per_sec
        );
    }
    for &clients in &opts.clients {
        let get = |t: Transport| {
            table
                .iter()
                .find(|r| r.0 == clients && r.1 == t)
                .map(|r| r.2)
        };
        if let (Some(ws), Some(poll)) = (get(Transport::WebSocket), get(Transport::Polling)) {
            println!(
                "polling against WebSocket at {clients} clients: {:.1}x the bytes, {:.1}x the server CPU per message",
                poll.bytes_per_msg / ws.bytes_per_msg,
                poll.cpu_us_per_msg / ws.cpu_us_per_msg
            );
        }
    }
    if let Some(path) = &opts.json {
        let rows: Vec<Value> = table
            .iter()
            .map(|(clients, t, f)| {
                serde_json::json!({
                    "clients": clients, "transport": t.name(),
                    "deliveries_per_sec": f.deliveries_per_sec, "bytes_per_msg": f.bytes_per_msg,
                    "cpu_us_per_msg": f.cpu_us_per_msg, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms,
                    "requests_per_sec": f.requests_per_sec,
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&rows).unwrap() + "\n")
            .expect("write JSON");
    }
    if let Some(path) = &opts.svg {
        let panel = |title: &str, f: fn(&Figures) -> f64| svg::Panel {
            title: title.into(),
            groups: opts
                .clients
                .iter()
                .map(|&c| svg::Group {
                    label: format!("{c} clients"),
                    values: transports
                        .iter()
                        .map(|&t| table.iter().find(|r| r.0 == c && r.1 == t).map(|r| f(&r.2)))
                        .collect(),
                })
                .collect(),
        };
        let chart = svg::Chart {
            title: "Long polling against WebSocket push, same chat, same load".into(),
            subtitle: format!(
                "rooms of {}, a line per member every {} ms; 2 workers, 2 cores shared with the load; medians of {}",
                opts.room_size,
                opts.every.as_millis(),
                opts.runs
            ),
            series: transports.iter().map(|t| t.name().to_owned()).collect(),
            columns: 2,
            panels: vec![
                panel("wire bytes per delivered message", |f| f.bytes_per_msg),
                panel("server CPU µs per delivered message", |f| f.cpu_us_per_msg),
                panel("delivery latency p99, ms", |f| f.p99_ms),
                panel("HTTP requests parsed per second", |f| f.requests_per_sec),
            ],
        };
        std::fs::write(path, svg::render(&chart)).expect("write SVG");
    }
}
