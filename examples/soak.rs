//! A chaos soak: a running chat server under a hostile mix of clients,
//! while well-behaved chatters must lose nothing.
//!
//! ```text
//! bash scripts/soak.sh --minutes 1          # builds, starts the chat, runs this
//! soak --addr HOST:PORT --pid PID [--minutes M] [--clients N] [--rooms R]
//! ```
//!
//! The population, all from this one program:
//! - **chatters** (N, default 50, in R rooms): each says a numbered line
//!   ten times a second and reads all the time;
//! - **slow readers** (20): stop reading for 3 s at a time;
//! - **droppers**: connect, upgrade, send half a frame and vanish;
//! - **reconnect storms**: 1,000 clients upgrade at once, then leave;
//! - **ping floods**: 10,000 pings without reading, which the chat's rate
//!   limit closes with 1008;
//! - **line floods**: chat lines of 1,990 bytes back to back, never
//!   reading, until the server closes the connection;
//! - **bad frames**: oversized (1009), unmasked (1002), invalid UTF-8
//!   (1007), a reserved opcode (1002);
//! - **slowloris**: a request head one byte a second, which the server
//!   must drop at its handshake deadline.
//!
//! A **prober** says a line in a room of its own every 100 ms and times
//! its return, and fetches the page every 500 ms: the fairness figure, the
//! latency a well-behaved client sees while the others misbehave.
//!
//! Every 2 s it samples the server's RSS, open fds, CPU and TCP
//! connections by state. At the end it asserts that every chatter got
//! every line of its room exactly once and in each sender's order, that
//! every misbehaving client got its documented outcome, and that fds and
//! RSS came back to near their baseline. The script then stops the chat
//! with SIGTERM and requires a clean exit (no worker died).
//!
//! `--flood-seconds S` runs the memory figure instead: one line flood,
//! reconnecting whenever it is closed, for S seconds, beside the prober;
//! RSS is sampled every second, and must stay within `--rss-ceiling-mib`
//! (64) of the baseline, and once the flood has gone come back to within
//! a fifth of it plus `--kept-mib` (3): what glibc keeps of each worker's
//! arena for reuse, one write buffer cap and one read buffer a worker
//! (2 workers: 2.1 MiB). A flood of 30 s and one of 5 min end at the same
//! RSS: nothing grows with the flood's length.
//!
//! `--posts N` sends N pipelined `POST /send` with distinct names from one
//! address and checks that the chat's presence stays bounded: past the
//! per-address bound the answer is 429, and RSS stays within the ceiling.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wsloop::frame::{FrameHeader, OpCode, Role};
use wsloop::protocol::encode_frame;

const SLOW_READERS: usize = 20;
const STORM: usize = 1000;
const FLOOD: usize = 10_000;
/// A line flood's lines: the chat takes up to 2,000 bytes.
const FLOOD_LINE: usize = 1_990;
/// The chat's MAX_LINE is 2,000 bytes; this frame is over it.
const OVERSIZED: usize = 100_000;
/// The bad frames: what the report calls them, the tally's keys for
/// sent and for closed as documented, and the close code that must come.
const BAD_FRAMES: [(&str, &str, &str, u16); 4] = [
    ("oversized frames", "oversized", "oversized 1009", 1009),
    ("unmasked frames", "unmasked", "unmasked 1002", 1002),
    ("invalid UTF-8 text", "bad utf8", "bad utf8 1007", 1007),
    ("reserved opcodes", "reserved", "reserved 1002", 1002),
];

struct Opts {
    addr: SocketAddr,
    pid: u32,
    minutes: f64,
    clients: usize,
    rooms: usize,
    /// The memory figure instead of the mix: a line flood for this long.
    flood_seconds: Option<f64>,
    rss_ceiling_mib: u64,
    /// What the allocator may keep after the flood, past a fifth of the
    /// baseline: the chat's workers times (write buffer cap + read buffer).
    kept_mib: u64,
    /// Pipelined posts with distinct names, instead of the mix.
    posts: Option<u64>,
}

fn parse_opts() -> Result<Opts, String> {
    let mut addr = None;
    let mut pid = None;
    let (mut minutes, mut clients, mut rooms) = (1.0, 50, 5);
    let (mut flood_seconds, mut rss_ceiling_mib, mut posts) = (None, 64, None);
    let mut kept_mib = 3;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--addr" => addr = Some(value.parse().map_err(|_| format!("bad address {value}"))?),
            "--pid" => pid = Some(value.parse().map_err(bad)?),
            "--minutes" => minutes = value.parse().map_err(|_| format!("bad minutes {value}"))?,
            "--clients" => clients = value.parse().map_err(bad)?,
            "--rooms" => rooms = value.parse().map_err(bad)?,
            "--flood-seconds" => {
                flood_seconds = Some(value.parse().map_err(|_| format!("bad seconds {value}"))?)
            }
            "--rss-ceiling-mib" => rss_ceiling_mib = value.parse().map_err(bad)?,
            "--posts" => posts = Some(value.parse().map_err(bad)?),
            "--kept-mib" => kept_mib = value.parse().map_err(bad)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Opts {
        addr: addr.ok_or("--addr is required")?,
        pid: pid.ok_or("--pid is required")?,
        minutes,
        clients,
        rooms: rooms.max(1),
        flood_seconds,
        rss_ceiling_mib,
        posts,
        kept_mib,
    })
}

/// Tallies of what was thrown and what came of it.
#[derive(Default)]
struct Tally {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Tally {
    fn add(&self, what: &'static str) {
        *self.counts.lock().unwrap().entry(what).or_default() += 1;
    }

    fn get(&self, what: &str) -> u64 {
        self.counts.lock().unwrap().get(what).copied().unwrap_or(0)
    }
}

/// A raw client: the upgrade, masked frames out, server frames in.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> std::io::Result<Raw> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        stream.set_nodelay(true)?;
        Ok(Raw {
            stream,
            buf: Vec::new(),
        })
    }

    fn open(addr: SocketAddr, room: &str, name: &str) -> std::io::Result<Raw> {
        let mut raw = Raw::connect(addr)?;
        let head = format!(
            "GET /ws?room={room}&name={name} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        raw.stream.write_all(head.as_bytes())?;
        loop {
            if let Some(end) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let ok = raw.buf.starts_with(b"HTTP/1.1 101 ");
                raw.buf.drain(..end + 4);
                return if ok {
                    Ok(raw)
                } else {
                    Err(std::io::Error::other("upgrade refused"))
                };
            }
            if !raw.fill()? {
                return Err(std::io::Error::other("EOF before the 101"));
            }
        }
    }

    fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    fn send(&mut self, opcode: OpCode, payload: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::new();
        encode_frame(
            &mut out,
            true,
            opcode,
            Some([0xA5, 0x5A, 0x3C, 0xC3]),
            payload,
        );
        self.stream.write_all(&out)
    }

    /// The next frame, or `None` at EOF, a reset or a read timeout. Pings
    /// are answered, as a browser answers them.
    fn frame(&mut self) -> Option<(OpCode, Vec<u8>)> {
        loop {
            if let Ok(Some((h, n))) = FrameHeader::parse(&self.buf, Role::Client) {
                let end = n + h.payload_len as usize;
                if self.buf.len() >= end {
                    let payload = self.buf[n..end].to_vec();
                    self.buf.drain(..end);
                    if h.opcode == OpCode::Ping {
                        self.send(OpCode::Pong, &payload).ok()?;
                    }
                    return Some((h.opcode, payload));
                }
            }
            if !self.fill().ok()? {
                return None;
            }
        }
    }

    /// The code of the close frame the server sends, skipping other frames.
    fn close_code(&mut self) -> Option<u16> {
        loop {
            let (op, payload) = self.frame()?;
            if op == OpCode::Close {
                return Some(
                    payload
                        .get(..2)
                        .map_or(1005, |b| u16::from_be_bytes([b[0], b[1]])),
                );
            }
        }
    }
}

/// One sample of the server process.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    cpu_ticks: u64,
    established: u64,
    other_tcp: u64,
}

fn sample(pid: u32, port: u16) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat[stat.rfind(')').map_or(0, |i| i + 2)..]
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The server's side of each TCP connection: local port == the chat's.
    let (mut established, mut other_tcp) = (0, 0);
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port != Some(port) {
                continue;
            }
            match cols.get(3).copied() {
                Some("01") => established += 1,
                Some("0A") => {} // the listeners
                _ => other_tcp += 1,
            }
        }
    }
    Sample {
        rss_kib,
        fds,
        cpu_ticks: tick(11) + tick(12),
        established,
        other_tcp,
    }
}

/// Samples the server every `period` until `stop`, printing each sample
/// and keeping the peak RSS.
fn spawn_sampler(
    pid: u32,
    port: u16,
    period: Duration,
    stop: Arc<AtomicBool>,
    peak_rss: Arc<AtomicU64>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let start = Instant::now();
        let mut last = sample(pid, port);
        while !stop.load(Ordering::Acquire) {
            thread::sleep(period);
            let now = sample(pid, port);
            peak_rss.fetch_max(now.rss_kib, Ordering::Relaxed);
            println!(
                "soak: t={:>4.0}s  RSS {:>6} KiB  fds {:>5}  CPU {:>3.0}%  tcp established {:>5} other {:>4}",
                start.elapsed().as_secs_f64(),
                now.rss_kib,
                now.fds,
                (now.cpu_ticks - last.cpu_ticks) as f64 / period.as_secs_f64(),
                now.established,
                now.other_tcp
            );
            last = now;
        }
    })
}

/// A chatter: says numbered lines in its room and records every line.
struct Chatter {
    ws: tungstenite::WebSocket<TcpStream>,
    name: String,
    sent: u64,
    /// Per sender: the numbers received, in order.
    got: HashMap<String, Vec<u64>>,
    done_from: usize,
}

impl Chatter {
    fn join(addr: SocketAddr, room: &str, name: &str) -> Chatter {
        let stream = TcpStream::connect(addr).expect("a chatter connects");
        stream.set_nodelay(true).unwrap();
        let url = format!("ws://{addr}/ws?room={room}&name={name}");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("a chatter upgrades");
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        Chatter {
            ws,
            name: name.into(),
            sent: 0,
            got: HashMap::new(),
            done_from: 0,
        }
    }

    /// Reads what has arrived; false when the connection failed.
    fn read(&mut self) -> bool {
        loop {
            match self.ws.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    // Only chat lines count: joins, leaves and the list of
                    // who is here do not.
                    let Ok(msg) = serde_json::from_str::<serde_json::Value>(&text) else {
                        continue;
                    };
                    let line = msg["text"].as_str().filter(|_| msg["kind"] == "say");
                    let Some((from, body)) = line.and_then(|l| l.split_once(": ")) else {
                        continue;
                    };
                    if body == "done" {
                        self.done_from += 1;
                    } else if let Ok(n) = body.parse() {
                        self.got.entry(from.to_string()).or_default().push(n);
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return true
                }
                Err(_) => return false,
            }
        }
    }

    fn say(&mut self, text: &str) {
        self.ws
            .send(tungstenite::Message::text(text))
            .expect("a chatter can send");
    }
}

fn main() {
    // Its verdicts rest on the server's memory, descriptors and sockets.
    if !cfg!(target_os = "linux") {
        eprintln!("soak: reads the server's RSS, descriptors and sockets from /proc: Linux only");
        std::process::exit(2);
    }
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    let addr = opts.addr;
    let port = addr.port();
    let run_for = Duration::from_secs_f64(opts.minutes * 60.0);

    // Baseline: after one client has come and gone.
    drop(Raw::open(addr, "warm", "warm").expect("the chat answers"));
    thread::sleep(Duration::from_millis(500));
    let baseline = sample(opts.pid, port);
    println!(
        "soak: {} chatters in {} rooms for {:.1} min against {addr} (pid {})",
        opts.clients, opts.rooms, opts.minutes, opts.pid
    );
    println!(
        "soak: baseline RSS {} KiB, {} fds",
        baseline.rss_kib, baseline.fds
    );
    if let Some(seconds) = opts.flood_seconds {
        return flood_figure(&opts, Duration::from_secs_f64(seconds), baseline);
    }
    if let Some(posts) = opts.posts {
        return posts_figure(&opts, posts, baseline);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let peak_rss = Arc::new(AtomicU64::new(baseline.rss_kib));

    let sampler = spawn_sampler(
        opts.pid,
        port,
        Duration::from_secs(2),
        stop.clone(),
        peak_rss.clone(),
    );

    // The chatters, one thread per room, and the prober beside them.
    let deadline = Instant::now() + run_for;
    let probe_stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = probe_stop.clone();
        thread::spawn(move || probe(addr, &stop))
    };
    let mut rooms = Vec::new();
    for r in 0..opts.rooms {
        let names: Vec<String> = (0..opts.clients)
            .filter(|i| i % opts.rooms == r)
            .map(|i| format!("w{i}"))
            .collect();
        rooms.push(thread::spawn(move || chat_room(addr, r, names, deadline)));
    }

    // The misbehavers, each kind on a thread of its own, until the deadline.
    let mut hostile = Vec::new();
    for kind in 0..7 {
        let (stop, tally) = (stop.clone(), tally.clone());
        hostile.push(thread::spawn(move || {
            while Instant::now() < deadline && !stop.load(Ordering::Acquire) {
                match kind {
                    0 => slow_readers(addr, &tally, deadline),
                    1 => dropper(addr, &tally),
                    2 => storm(addr, &tally),
                    3 => ping_flood(addr, &tally),
                    4 => bad_frames(addr, &tally),
                    5 => slowloris(addr, &tally, deadline),
                    // Closed within the close timeout once over the limit.
                    _ => line_flood(addr, &tally, deadline + Duration::from_secs(30)),
                }
            }
        }));
    }
    for h in hostile {
        h.join().expect("a misbehaver thread");
    }
    let (mut chatters, mut said, mut lines) = (0, 0, 0);
    for room in rooms {
        let (n, sent, got) = room
            .join()
            .expect("every chatter got every line of its room once, in order");
        chatters += n;
        said += sent;
        lines += got;
    }
    tally.add("chatters finished");
    probe_stop.store(true, Ordering::Release);
    let probes = prober.join().expect("every probe was answered");

    // Back to baseline: every connection gone, fds and RSS near where they were.
    let settle = Instant::now();
    let mut end = sample(opts.pid, port);
    while (end.established > 0 || end.fds > baseline.fds + 2)
        && settle.elapsed() < Duration::from_secs(30)
    {
        thread::sleep(Duration::from_millis(200));
        end = sample(opts.pid, port);
    }
    stop.store(true, Ordering::Release);
    sampler.join().unwrap();

    let peak = peak_rss.load(Ordering::Relaxed);
    println!("\n| thrown at the server | count | outcome |");
    println!("|---|---|---|");
    println!("| chatters saying a line every 100 ms | {chatters} | {said} lines said, {lines} delivered, every one exactly once and in order |");
    let row =
        |what: &str, count: u64, outcome: String| println!("| {what} | {count} | {outcome} |");
    row(
        "slow readers (3 s without reading, repeatedly)",
        tally.get("slow reader"),
        format!(
            "{} kept up, {} closed with 1008",
            tally.get("slow reader kept"),
            tally.get("slow reader 1008")
        ),
    );
    row(
        "drops mid-frame",
        tally.get("dropper"),
        "freed (fds back to baseline)".into(),
    );
    row(
        &format!("reconnect storms of {STORM}"),
        tally.get("storm"),
        format!("{} upgrades, all answered 101", tally.get("storm upgrade")),
    );
    row(
        &format!("ping floods of {FLOOD}"),
        tally.get("ping flood"),
        format!(
            "{} closed with 1008 by the rate limit",
            tally.get("ping flood 1008")
        ),
    );
    row(
        &format!("line floods ({FLOOD_LINE}-byte lines, never reading)"),
        tally.get("line flood"),
        format!("{} closed by the server", tally.get("line flood closed")),
    );
    println!("{probes}");
    for (label, sent, closed, code) in BAD_FRAMES {
        row(
            label,
            tally.get(sent),
            format!("{} closed with {code}", tally.get(closed)),
        );
    }
    row(
        "slowloris heads",
        tally.get("slowloris"),
        format!(
            "{} dropped at the handshake deadline",
            tally.get("slowloris dropped")
        ),
    );
    println!(
        "\nRSS: baseline {} KiB, peak {} KiB, final {} KiB; fds: baseline {}, final {}; server connections established at the end: {} (and {} in TIME_WAIT or closing)",
        baseline.rss_kib, peak, end.rss_kib, baseline.fds, end.fds, end.established, end.other_tcp
    );

    // The outcomes.
    let same = |a: &str, b: &str| assert_eq!(tally.get(a), tally.get(b), "{b} of {a}");
    for (_, sent, closed, _) in BAD_FRAMES {
        same(sent, closed);
    }
    same("ping flood", "ping flood 1008");
    same("line flood", "line flood closed");
    same("slowloris", "slowloris dropped");
    assert_eq!(
        tally.get("storm") * STORM as u64,
        tally.get("storm upgrade"),
        "every storm client upgraded"
    );
    assert_eq!(
        tally.get("slow reader"),
        tally.get("slow reader kept") + tally.get("slow reader 1008")
    );
    assert!(
        tally.get("dropper") > 0 && tally.get("storm") > 0 && tally.get("slowloris") > 0,
        "every kind ran"
    );
    assert_eq!(end.established, 0, "connections left open");
    assert!(
        end.fds <= baseline.fds + 2,
        "fds {} against a baseline of {}",
        end.fds,
        baseline.fds
    );
    let margin = (baseline.rss_kib / 5).max(8 * 1024);
    assert!(
        end.rss_kib <= baseline.rss_kib + margin,
        "RSS {} KiB against a baseline of {} KiB",
        end.rss_kib,
        baseline.rss_kib
    );
    println!("soak: all checks passed");
}

/// The chatters of one room: each says a line every 100 ms until the
/// deadline, then "done"; everyone reads until all are done. Returns the
/// chatters, the lines said and the lines delivered, after checking them.
fn chat_room(
    addr: SocketAddr,
    room: usize,
    names: Vec<String>,
    deadline: Instant,
) -> (usize, u64, u64) {
    let room = format!("room{room}");
    let mut chatters: Vec<Chatter> = names
        .iter()
        .map(|n| Chatter::join(addr, &room, n))
        .collect();
    let mut next = Instant::now();
    while Instant::now() < deadline {
        if Instant::now() >= next {
            for c in &mut chatters {
                let line = c.sent.to_string();
                c.say(&line);
                c.sent += 1;
            }
            next += Duration::from_millis(100);
        }
        for c in &mut chatters {
            assert!(c.read(), "{} lost its connection", c.name);
        }
    }
    for c in &mut chatters {
        c.say("done");
    }
    let waiting = Instant::now();
    while chatters.iter().any(|c| c.done_from < names.len()) {
        assert!(
            waiting.elapsed() < Duration::from_secs(30),
            "lines still missing 30 s after the end"
        );
        for c in &mut chatters {
            assert!(c.read(), "{} lost its connection", c.name);
        }
    }
    let sent: HashMap<String, u64> = chatters.iter().map(|c| (c.name.clone(), c.sent)).collect();
    let said = sent.values().sum();
    let mut lines = 0;
    for c in &chatters {
        assert_eq!(
            c.got.len(),
            names.len(),
            "{} heard from {} of {}",
            c.name,
            c.got.len(),
            names.len()
        );
        for (from, seq) in &c.got {
            let want: Vec<u64> = (0..sent[from]).collect();
            assert!(
                *seq == want,
                "{} got {}'s lines out of order, twice or not at all",
                c.name,
                from
            );
            lines += seq.len() as u64;
        }
    }
    for mut c in chatters {
        let _ = c.ws.close(None);
        while c.ws.read().is_ok() {}
    }
    (names.len(), said, lines)
}

/// Slow readers: read 1 s, stop for 3 s, until the deadline; then close.
fn slow_readers(addr: SocketAddr, tally: &Tally, deadline: Instant) {
    let readers: Vec<_> = (0..SLOW_READERS)
        .map(|i| {
            thread::spawn(move || {
                let mut raw =
                    Raw::open(addr, &format!("room{}", i % 5), &format!("slow{i}")).ok()?;
                while Instant::now() < deadline {
                    thread::sleep(Duration::from_secs(3));
                    raw.stream
                        .set_read_timeout(Some(Duration::from_millis(50)))
                        .unwrap();
                    let until = Instant::now() + Duration::from_secs(1);
                    while Instant::now() < until {
                        if let Some((OpCode::Close, payload)) = raw.frame() {
                            return payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                        }
                    }
                }
                raw.stream
                    .set_read_timeout(Some(Duration::from_secs(15)))
                    .unwrap();
                raw.send(OpCode::Close, &1000u16.to_be_bytes()).ok()?;
                raw.close_code()
            })
        })
        .collect();
    for r in readers {
        tally.add("slow reader");
        match r.join().unwrap() {
            Some(1000) => tally.add("slow reader kept"),
            Some(1008) => tally.add("slow reader 1008"),
            other => panic!("a slow reader ended with {other:?}"),
        }
    }
}

/// Upgrades, sends half a frame, and vanishes.
fn dropper(addr: SocketAddr, tally: &Tally) {
    if let Ok(mut raw) = Raw::open(addr, "drop", "dropper") {
        let mut frame = Vec::new();
        encode_frame(
            &mut frame,
            true,
            OpCode::Text,
            Some([1, 2, 3, 4]),
            &[b'x'; 100],
        );
        let _ = raw.stream.write_all(&frame[..50]);
        tally.add("dropper");
    }
    thread::sleep(Duration::from_millis(50));
}

/// 1,000 clients upgrade at once, each in a room of its own (a storm of
/// connections, not of join notices), then all leave; one every 10 s.
fn storm(addr: SocketAddr, tally: &Tally) {
    let mut clients = Vec::with_capacity(STORM);
    for i in 0..STORM {
        let mut stream = TcpStream::connect(addr).expect("a storm client connects");
        let head = format!(
            "GET /ws?room=storm{i}&name=s{i} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        clients.push(stream);
    }
    for stream in &mut clients {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut head = [0u8; 12];
        if stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 101" {
            tally.add("storm upgrade");
        }
    }
    tally.add("storm");
    drop(clients);
    thread::sleep(Duration::from_secs(10));
}

/// 10,000 pings without reading, then a close, which comes too late: the
/// rate limit closes the connection with 1008 first.
fn ping_flood(addr: SocketAddr, tally: &Tally) {
    let Ok(mut raw) = Raw::open(addr, "flood", "flooder") else {
        return;
    };
    tally.add("ping flood");
    let mut burst = Vec::new();
    for i in 0..FLOOD {
        encode_frame(
            &mut burst,
            true,
            OpCode::Ping,
            Some([9, 9, 9, 9]),
            &(i as u32).to_be_bytes(),
        );
    }
    // Written from another thread: the server may stop reading while its
    // pongs wait, and this one reads them.
    let mut writer = raw.stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let _ = writer.write_all(&burst);
        let mut close = Vec::new();
        encode_frame(
            &mut close,
            true,
            OpCode::Close,
            Some([9, 9, 9, 9]),
            &1000u16.to_be_bytes(),
        );
        let _ = writer.write_all(&close);
    });
    if raw.close_code() == Some(1008) {
        tally.add("ping flood 1008");
    }
    sender.join().unwrap();
    thread::sleep(Duration::from_secs(2));
}

/// One of each bad frame; each must be closed with its code.
fn bad_frames(addr: SocketAddr, tally: &Tally) {
    for (_, what, outcome, code) in BAD_FRAMES {
        let Ok(mut raw) = Raw::open(addr, "bad", "bad") else {
            continue;
        };
        let mut frame = Vec::new();
        match what {
            "oversized" => encode_frame(
                &mut frame,
                true,
                OpCode::Text,
                Some([1, 2, 3, 4]),
                &vec![b'a'; OVERSIZED],
            ),
            "unmasked" => encode_frame(&mut frame, true, OpCode::Text, None, b"hello"),
            "bad utf8" => encode_frame(
                &mut frame,
                true,
                OpCode::Text,
                Some([1, 2, 3, 4]),
                b"\xff\xfe",
            ),
            _ => frame.extend_from_slice(&[0x83, 0x80, 1, 2, 3, 4]),
        }
        // The server may close before it has read all of an oversized frame.
        let _ = raw.stream.write_all(&frame);
        tally.add(what);
        if raw.close_code() == Some(code) {
            tally.add(outcome);
        }
    }
    thread::sleep(Duration::from_secs(1));
}

/// Five request heads, a byte a second; each must be dropped by the server.
fn slowloris(addr: SocketAddr, tally: &Tally, deadline: Instant) {
    let heads: Vec<_> = (0..5)
        .map(|_| {
            thread::spawn(move || {
                let mut raw = Raw::connect(addr).ok()?;
                raw.stream.set_read_timeout(Some(Duration::from_millis(1))).ok()?;
                let head = b"GET /ws?room=slow&name=loris HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                for byte in head.iter() {
                    if raw.stream.write_all(&[*byte]).is_err() {
                        return Some(true);
                    }
                    thread::sleep(Duration::from_secs(1));
                    let mut probe = [0u8; 256];
                    match raw.stream.read(&mut probe) {
                        Ok(0) => return Some(true),
                        Ok(_) => {} // a 408 or similar, then EOF
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => return Some(true),
                    }
                    if Instant::now() > deadline + Duration::from_secs(15) {
                        return Some(false);
                    }
                }
                Some(false)
            })
        })
        .collect();
    for h in heads {
        tally.add("slowloris");
        if h.join().unwrap() == Some(true) {
            tally.add("slowloris dropped");
        }
    }
}

/// Chat lines back to back, never reading, until the server closes the
/// connection: a write fails once it drops it (after its close timeout,
/// since our close frame never reads its close frame). Gives up at `until`.
fn line_flood(addr: SocketAddr, tally: &Tally, until: Instant) {
    let Ok(mut raw) = Raw::open(addr, "flood", "liner") else {
        return;
    };
    tally.add("line flood");
    let line = vec![b'f'; FLOOD_LINE];
    let mut batch = Vec::new();
    for _ in 0..32 {
        encode_frame(&mut batch, true, OpCode::Text, Some([7, 7, 7, 7]), &line);
    }
    // A server that stopped reading would fail the write here too, and
    // the soak would report it: the server reads and discards what a
    // closed connection sends.
    let _ = raw.stream.set_write_timeout(Some(Duration::from_secs(15)));
    while Instant::now() < until {
        if raw.stream.write_all(&batch).is_err() {
            tally.add("line flood closed");
            return;
        }
    }
}

/// What a well-behaved client saw: its own lines' round trips, and page
/// fetches, each on a fresh connection.
#[derive(Default)]
struct Probes {
    echo: Vec<Duration>,
    page: Vec<Duration>,
}

impl std::fmt::Display for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn stats(v: &[Duration]) -> String {
            let mut v = v.to_vec();
            v.sort();
            let at = |q: usize| v.get((v.len() * q / 100).min(v.len().saturating_sub(1)));
            let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
            format!(
                "{} answered, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                v.len(),
                ms(at(50)),
                ms(at(99)),
                ms(v.last())
            )
        }
        writeln!(
            f,
            "| prober: its own line back, every 100 ms | {} | {} |",
            self.echo.len(),
            stats(&self.echo)
        )?;
        write!(
            f,
            "| prober: GET / on a new connection, every 500 ms | {} | {} |",
            self.page.len(),
            stats(&self.page)
        )
    }
}

/// Says a line every 100 ms in a room of its own and times its return;
/// fetches the page every 500 ms. Panics if either goes unanswered for
/// 15 s: the worker it shares with the misbehavers must keep serving it.
fn probe(addr: SocketAddr, stop: &AtomicBool) -> Probes {
    let stream = TcpStream::connect(addr).expect("the prober connects");
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let url = format!("ws://{addr}/ws?room=probe&name=prober");
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).expect("the prober upgrades");
    let mut probes = Probes::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let line = format!("p{n}");
        let sent = Instant::now();
        ws.send(tungstenite::Message::text(line.clone()))
            .expect("the prober can send");
        let want = format!("prober: {line}");
        loop {
            let msg = ws.read().expect("the prober's line came back");
            let Ok(text) = msg.to_text() else { continue };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
                continue;
            };
            if json["kind"] == "say" && json["text"] == want.as_str() {
                break;
            }
        }
        probes.echo.push(sent.elapsed());
        if n % 5 == 0 {
            probes.page.push(fetch_page(addr));
        }
        n += 1;
        thread::sleep(Duration::from_millis(100));
    }
    let _ = ws.close(None);
    while ws.read().is_ok() {}
    probes
}

/// The time to fetch the chat page whole, on a new connection.
fn fetch_page(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("the page's connection");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut page = Vec::new();
    stream.read_to_end(&mut page).expect("the page came");
    assert!(page.starts_with(b"HTTP/1.1 200 "), "the page was refused");
    start.elapsed()
}

/// The memory figure: one line flood after another for `run_for`, beside
/// the prober, with RSS sampled every second; then the flood goes and RSS
/// must come back.
fn flood_figure(opts: &Opts, run_for: Duration, baseline: Sample) {
    let (addr, pid, port) = (opts.addr, opts.pid, opts.addr.port());
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Tally::default();
    let prober = {
        let stop = stop.clone();
        thread::spawn(move || probe(addr, &stop))
    };
    let peak = Arc::new(AtomicU64::new(baseline.rss_kib));
    let sampler = spawn_sampler(
        pid,
        port,
        Duration::from_secs(1),
        stop.clone(),
        peak.clone(),
    );
    let deadline = Instant::now() + run_for;
    while Instant::now() < deadline {
        line_flood(addr, &tally, deadline);
    }
    stop.store(true, Ordering::Release);
    sampler.join().unwrap();
    let probes = prober.join().expect("every probe was answered");
    // The flood has gone: every connection closes, and RSS settles.
    let settle = Instant::now();
    let mut end = sample(pid, port);
    while end.established > 0 && settle.elapsed() < Duration::from_secs(30) {
        thread::sleep(Duration::from_millis(200));
        end = sample(pid, port);
    }
    thread::sleep(Duration::from_secs(1));
    end = sample(pid, port);
    let peak = peak.load(Ordering::Relaxed).max(end.rss_kib);
    println!(
        "\n| line flood for {:.0} s | value |",
        run_for.as_secs_f64()
    );
    println!("|---|---|");
    println!(
        "| floods (each until the server closed it) | {} opened, {} closed |",
        tally.get("line flood"),
        tally.get("line flood closed")
    );
    println!("| RSS at baseline | {} KiB |", baseline.rss_kib);
    println!(
        "| RSS at the peak | {} KiB (+{} KiB) |",
        peak,
        peak.saturating_sub(baseline.rss_kib)
    );
    println!("| RSS after the flood | {} KiB |", end.rss_kib);
    println!("{probes}");
    let ceiling = baseline.rss_kib + opts.rss_ceiling_mib * 1024;
    assert!(
        peak <= ceiling,
        "RSS peaked at {peak} KiB, over the ceiling of {ceiling} KiB"
    );
    // glibc keeps each worker arena's high-water mark for reuse: about one
    // write buffer cap (1 MiB) and a read buffer a worker. Past that and a
    // fifth of the baseline, memory did not come back.
    let kept = baseline.rss_kib / 5 + opts.kept_mib * 1024;
    assert!(
        end.rss_kib <= baseline.rss_kib + kept,
        "RSS {} KiB after the flood, against a baseline of {} KiB and {kept} KiB kept",
        end.rss_kib,
        baseline.rss_kib
    );
    assert_eq!(end.established, 0, "connections left open");
    println!("soak: all checks passed");
}

/// Pipelined posts, each with a name of its own, on one connection from
/// one address; the answers are read as they come. The chat keeps a
/// poster's name as present, so this would grow its presence without end
/// if nothing bounded it.
fn posts_figure(opts: &Opts, posts: u64, baseline: Sample) {
    let (addr, pid, port) = (opts.addr, opts.pid, opts.addr.port());
    let mut stream = TcpStream::connect(addr).expect("the poster connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut reader = stream.try_clone().unwrap();
    let counter = thread::spawn(move || {
        let (mut ok, mut busy, mut other) = (0u64, 0u64, 0u64);
        let mut buf = vec![0u8; 64 * 1024];
        let mut carry = Vec::new();
        while ok + busy + other < posts {
            let n = reader.read(&mut buf).expect("the answers come");
            assert!(n > 0, "the chat closed the connection");
            carry.extend_from_slice(&buf[..n]);
            // Count status lines; every answer here has no body but 429's
            // short text, which holds no "HTTP/1.1 ".
            let mut at = 0;
            while let Some(i) = find(&carry[at..], b"HTTP/1.1 ") {
                let line = at + i;
                if carry.len() < line + 12 {
                    break;
                }
                match &carry[line + 9..line + 12] {
                    b"204" => ok += 1,
                    b"429" => busy += 1,
                    _ => other += 1,
                }
                at = line + 12;
            }
            carry.drain(..at);
        }
        (ok, busy, other)
    });
    let start = Instant::now();
    let mut batch = Vec::new();
    for i in 0..posts {
        batch.extend_from_slice(
            format!(
                "POST /send?room=posts&name=n{i}&client=poster01 HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 2\r\n\r\nhi"
            )
            .as_bytes(),
        );
        if batch.len() > 60_000 || i + 1 == posts {
            stream.write_all(&batch).expect("the chat reads the posts");
            batch.clear();
        }
    }
    let (ok, busy, other) = counter.join().expect("every post was answered");
    let took = start.elapsed();
    let peak = sample(pid, port);
    drop(stream);
    println!("\n| {posts} pipelined posts, each a new name, one address | value |");
    println!("|---|---|");
    println!(
        "| answered | {ok} with 204, {busy} with 429, {other} otherwise, in {:.1} s |",
        took.as_secs_f64()
    );
    println!(
        "| RSS | {} KiB at baseline, {} KiB after (+{} KiB) |",
        baseline.rss_kib,
        peak.rss_kib,
        peak.rss_kib.saturating_sub(baseline.rss_kib)
    );
    assert_eq!(other, 0, "answers other than 204 and 429");
    assert!(busy > 0, "no post was refused: presence has no bound");
    let ceiling = baseline.rss_kib + opts.rss_ceiling_mib * 1024;
    assert!(
        peak.rss_kib <= ceiling,
        "RSS {} KiB, over the ceiling of {ceiling} KiB",
        peak.rss_kib
    );
    println!("soak: all checks passed");
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
