//! A load generator for WebSocket echo servers: many connections on a few
//! mio event loops, wsloop's own codec in the client role, and every echo
//! checked byte for byte.
//!
//! ```text
//! cargo run --release --example echo -- --addr 127.0.0.1:9001 --workers 1
//! cargo run --release --example loadgen -- --url ws://127.0.0.1:9001/ \
//!     --connections 100 --size 20 --in-flight 1 --duration 5
//! ```
//!
//! Modes:
//! - echo (the default): each connection keeps `--in-flight` binary messages
//!   outstanding, or sends `--rate` messages a second, and times each round
//!   trip from the moment the message is queued for the socket to the moment
//!   its echo has been verified.
//! - `--idle`: opens the connections and holds them without traffic for
//!   `--duration` (answering pings), for a benchmark to read the server's
//!   memory meanwhile.
//! - `--handshakes`: each of the `--connections` slots loops connect,
//!   upgrade, close handshake, and reports handshakes per second.
//! - `--raw`: plain TCP with no WebSocket framing, against a raw echo server
//!   (the ceiling). Combines with the modes above.
//!
//! A `wss://` URL (with the `tls` feature) runs the same modes over TLS:
//! rustls with ring, trusting only the CA certificates of `--ca FILE`, and
//! never resuming a session, so that each connection costs the server a
//! full handshake. The JSON line then names the version, cipher suite and
//! key exchange group the first connection agreed on.
//!
//! ```text
//! cargo run --release --features tls --example loadgen -- \
//!     --url wss://127.0.0.1:9001/ --ca tests/tls/ca.pem --handshakes
//! ```
//!
//! Every payload is a slice of a random pattern at an offset that depends on
//! the connection and the message number, and starts with an 8-byte tag made
//! of both, so a lost, repeated, reordered or crossed message is caught. A
//! mismatch stops the run and exits with status 1. Masking keys and the
//! pattern come from a fast generator seeded once from /dev/urandom.
//!
//! Once every connection is open (in all modes but `--handshakes`),
//! `loadgen: connected N` goes to stdout and the measured interval starts.
//!
//! Output: a table on stdout (messages/s, MB/s of echoed payload with
//! 1 MB = 10^6 bytes, latency percentiles from a histogram), and with
//! `--json` one JSON line after it. A progress line goes to stderr each
//! second.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, IsTerminal, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use wsloop::frame::{apply_mask, FrameHeader, OpCode, Role, MAX_HEADER_LEN};
use wsloop::protocol::{encode_frame, Event, MessageReader};
use wsloop::{Limits, Message};

/// Connects (and upgrades) at most this many sockets at once per thread, so
/// that a listen backlog of a few hundred does not drop SYNs.
const MAX_PENDING: usize = 256;
/// Above this many connections, sources spread over 127.0.0.1..=16 so that
/// the ephemeral port range (about 28,000 per address) is no limit.
const SPREAD_ABOVE: usize = 5_000;
const SPREAD_ADDRESSES: u8 = 16;
/// Longest a poll sleeps before it looks at the run phase again.
const TICK: Duration = Duration::from_millis(20);
/// Tags take the first bytes of each payload.
const TAG_LEN: usize = 8;
/// Payloads start at one of this many offsets into the pattern.
const OFFSETS: usize = 256;

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(msg) => {
            eprintln!("loadgen: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("\nloadgen: FAILED: {msg}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: loadgen --url ws://HOST:PORT/PATH [--connections N] [--size BYTES] \
[--duration SECS] [--in-flight K] [--threads T] [--rate MSGS_PER_SEC] [--raw] [--idle] \
[--handshakes] [--connect-timeout SECS] [--json] [--ca FILE (wss:// URLs)]";

/// What one run does: which mode, against what, with how much.
#[derive(Debug, Clone)]
struct Options {
    url: String,
    /// Client settings for a `wss://` URL.
    tls: Option<tls::Config>,
    addr: SocketAddr,
    host: String,
    path: String,
    connections: usize,
    size: usize,
    duration: Duration,
    in_flight: usize,
    threads: usize,
    /// Messages per second per connection; `None` sends as fast as echoes
    /// come back.
    rate: Option<f64>,
    raw: bool,
    mode: Mode,
    connect_timeout: Duration,
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Echo,
    Idle,
    Handshakes,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut url = "ws://127.0.0.1:9001/".to_owned();
        let mut connections = 100;
        let mut size = 20;
        let mut duration = 5.0;
        let mut in_flight = 1;
        let mut threads = 1;
        let mut rate = None;
        let mut raw = false;
        let mut mode = Mode::Echo;
        let mut connect_timeout = 60.0;
        let mut json = false;
        let mut ca = None;
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--url" => url = value()?,
                "--connections" => connections = number(&value()?)?,
                "--size" => size = number(&value()?)?,
                "--duration" => duration = positive(&value()?)?,
                "--in-flight" => in_flight = number(&value()?)?,
                "--threads" => threads = number(&value()?)?,
                "--rate" => rate = Some(positive(&value()?)?).filter(|r| *r > 0.0),
                "--connect-timeout" => connect_timeout = positive(&value()?)?,
                "--raw" => raw = true,
                "--idle" => mode = Mode::Idle,
                "--handshakes" => mode = Mode::Handshakes,
                "--json" => json = true,
                "--ca" => ca = Some(value()?),
                "-h" | "--help" => return Err("help".into()),
                other => return Err(format!("unknown flag {other:?}")),
            }
        }
        if connections == 0 || threads == 0 || in_flight == 0 {
            return Err("--connections, --threads and --in-flight must be at least 1".into());
        }
        let threads = threads.min(connections);
        let (secure, rest) = match url.split_once("://") {
            Some(("ws", rest)) => (false, rest),
            Some(("wss", rest)) => (true, rest),
            _ => {
                return Err(format!(
                    "only ws:// and wss:// URLs are supported, not {url:?}"
                ))
            }
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let tls = match (secure, ca) {
            (true, Some(ca)) => Some(tls::Config::new(&ca, host)?),
            (true, None) => return Err("a wss:// URL needs --ca FILE".into()),
            (false, Some(_)) => return Err("--ca goes with a wss:// URL".into()),
            (false, None) => None,
        };
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
            .next()
            .ok_or(format!("{host:?} has no address"))?;
        Ok(Options {
            host: host.to_owned(),
            path: path.to_owned(),
            url,
            tls,
            addr,
            connections,
            size,
            duration: Duration::from_secs_f64(duration),
            in_flight,
            threads,
            rate,
            raw,
            mode,
            connect_timeout: Duration::from_secs_f64(connect_timeout),
            json,
        })
    }

    /// The source address for connection `id`, when connections spread.
    fn source(&self, id: u64) -> Option<SocketAddr> {
        let IpAddr::V4(ip) = self.addr.ip() else {
            return None;
        };
        let spread =
            self.mode != Mode::Handshakes && self.connections > SPREAD_ABOVE && ip.is_loopback();
        spread.then(|| {
            let last = 1 + (id % u64::from(SPREAD_ADDRESSES)) as u8;
            SocketAddr::new(Ipv4Addr::new(127, 0, 0, last).into(), 0)
        })
    }
}

fn number(s: &str) -> Result<usize, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

fn positive(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or(format!("not a positive number: {s:?}"))
}

// ---------------------------------------------------------------------------
// The run: threads, phases, progress and the report.

/// What the threads share: the phase, counters for the progress line, and
/// the first failure.
struct Shared {
    phase: AtomicU8,
    connected: AtomicU64,
    done: AtomicU64,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
}

const CONNECTING: u8 = 0;
const RUNNING: u8 = 1;
const STOPPED: u8 = 2;

impl Shared {
    fn fail(&self, msg: String) {
        let mut first = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(msg);
        }
        self.failed.store(true, Ordering::Release);
        self.phase.store(STOPPED, Ordering::Release);
    }

    fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        let first = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        Some(first.clone().unwrap_or_default())
    }
}

/// One thread's results.
struct Report {
    /// Messages echoed and verified, or handshake cycles completed.
    done: u64,
    /// Round trip (or cycle) times in nanoseconds.
    latency: Histogram<u64>,
}

fn run(opts: &Options) -> Result<(), String> {
    let seed = urandom_seed().map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(CONNECTING),
        connected: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        failure: Mutex::new(None),
    });
    let mut threads = Vec::new();
    let mut first = 0;
    for t in 0..opts.threads {
        let count =
            opts.connections / opts.threads + usize::from(t < opts.connections % opts.threads);
        let worker = Worker::new(
            opts.clone(),
            shared.clone(),
            first as u64,
            count,
            seed ^ t as u64,
        )
        .map_err(|e| format!("cannot create a poll: {e}"))?;
        first += count;
        let shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || {
                let result = worker.run();
                if let Err(msg) = &result {
                    shared.fail(msg.clone());
                }
                result.ok()
            })
            .map_err(|e| format!("cannot spawn a thread: {e}"))?;
        threads.push(handle);
    }
    let progress = Progress::new();

    // Phase 1: open every connection (except in handshake mode, where the
    // connections are the thing measured).
    let target = if opts.mode == Mode::Handshakes {
        0
    } else {
        opts.connections as u64
    };
    let deadline = Instant::now() + opts.connect_timeout;
    let mut last_print = Instant::now();
    loop {
        let connected = shared.connected.load(Ordering::Relaxed);
        if connected >= target || shared.failed.load(Ordering::Acquire) {
            break;
        }
        if Instant::now() > deadline {
            shared.fail(format!(
                "only {connected} of {target} connections opened in {:?}",
                opts.connect_timeout
            ));
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            progress.show(&format!("connected {connected}/{target}"));
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if shared.failure().is_none() && opts.mode != Mode::Handshakes {
        // The benchmark runner waits for this line before it reads memory.
        println!("loadgen: connected {}", opts.connections);
        let _ = io::stdout().flush();
    }

    if !cfg!(target_os = "linux") {
        eprintln!("loadgen: its own CPU use comes from /proc, which only Linux has: 0 here");
    }
    // Phase 2: the measured interval.
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    shared.phase.store(RUNNING, Ordering::Release);
    let mut last = (start, 0);
    while shared.failure().is_none() && start.elapsed() < opts.duration {
        std::thread::sleep(
            Duration::from_millis(50).min(opts.duration.saturating_sub(start.elapsed())),
        );
        if last.0.elapsed() >= Duration::from_secs(1) {
            let done = shared.done.load(Ordering::Relaxed);
            let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
            let what = if opts.mode == Mode::Handshakes {
                "handshakes/s"
            } else {
                "msg/s"
            };
            progress.show(&format!(
                "{:.0}s connected {}, {rate:.0} {what}",
                start.elapsed().as_secs_f64(),
                shared.connected.load(Ordering::Relaxed),
            ));
            last = (Instant::now(), done);
        }
    }
    let elapsed = start.elapsed();
    let cpu = (cpu_seconds() - cpu_start) / elapsed.as_secs_f64();
    shared.phase.store(STOPPED, Ordering::Release);
    let reports: Vec<Option<Report>> = threads
        .into_iter()
        .map(|t| t.join().unwrap_or(None))
        .collect();
    progress.finish();
    if let Some(msg) = shared.failure() {
        return Err(msg);
    }
    let mut total = Report {
        done: 0,
        latency: new_histogram(),
    };
    for report in reports.into_iter().flatten() {
        total.done += report.done;
        total
            .latency
            .add(&report.latency)
            .map_err(|e| format!("histograms do not merge: {e}"))?;
    }
    print_report(opts, &total, elapsed, cpu);
    Ok(())
}

/// This process's user plus system CPU time, from /proc/self/stat (0 where
/// there is no /proc). Clock ticks are 100 a second on Linux.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name, which may hold spaces; utime and
    // stime are the 12th and 13th of them.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns to 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("the bounds are valid")
}

/// Prints the table and the JSON line. `cpu` is this process's CPU use
/// over the interval, in cores: near 1.0 per thread means the load
/// generator, not the server, set the pace.
fn print_report(opts: &Options, total: &Report, elapsed: Duration, cpu: f64) {
    let secs = elapsed.as_secs_f64();
    let rate = total.done as f64 / secs;
    let mb = if opts.mode == Mode::Echo {
        rate * opts.size as f64 / 1e6
    } else {
        0.0
    };
    let us = |q: f64| total.latency.value_at_quantile(q) as f64 / 1e3;
    let (p50, p99, p999, max) = (
        us(0.5),
        us(0.99),
        us(0.999),
        total.latency.max() as f64 / 1e3,
    );
    let mode = match opts.mode {
        Mode::Echo => "echo",
        Mode::Idle => "idle",
        Mode::Handshakes => "handshakes",
    };
    let pace = match opts.rate {
        Some(r) => format!("{r} msg/s each"),
        None => format!("in flight {}", opts.in_flight),
    };
    println!(
        "loadgen: {} {mode}{}, {} connections x {} B, {pace}, {} thread(s), {secs:.2} s",
        opts.url,
        if opts.raw { " (raw TCP)" } else { "" },
        opts.connections,
        opts.size,
        opts.threads,
    );
    let unit = if opts.mode == Mode::Handshakes {
        "handshakes/s"
    } else {
        "messages/s"
    };
    println!(
        "  {unit:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "MB/s", "p50 us", "p99 us", "p99.9 us", "max us", "own cpu"
    );
    println!(
        "  {rate:>12.0} {mb:>9.2} {p50:>9.1} {p99:>9.1} {p999:>9.1} {max:>9.1} {:>8.0}%",
        cpu * 100.0
    );
    if opts.json {
        println!(
            "{{\"mode\":\"{mode}\",\"raw\":{},\"url\":\"{}\",\"connections\":{},\"size\":{},\
\"in_flight\":{},\"rate\":{},\"threads\":{},\"duration_s\":{secs:.3},\"count\":{},\
\"per_s\":{rate:.1},\"mb_per_s\":{mb:.3},\"p50_us\":{p50:.1},\"p99_us\":{p99:.1},\
\"p999_us\":{p999:.1},\"max_us\":{max:.1},\"loadgen_cpu\":{cpu:.3},\"tls\":{}}}",
            opts.raw,
            opts.url.replace('\\', "\\\\").replace('"', "\\\""),
            opts.connections,
            opts.size,
            opts.in_flight,
            opts.rate.map_or("null".to_owned(), |r| r.to_string()),
            opts.threads,
            total.done,
            tls::agreed().map_or("null".to_owned(), |t| format!("\"{t}\"")),
        );
    }
}

/// The progress line on stderr: rewritten in place on a terminal, one line
/// per second otherwise.
struct Progress {
    tty: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            tty: io::stderr().is_terminal(),
        }
    }

    fn show(&self, line: &str) {
        if self.tty {
            eprint!("\rloadgen: {line}\x1b[K");
        } else {
            eprintln!("loadgen: {line}");
        }
    }

    fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }
}

// ---------------------------------------------------------------------------
// One thread: an event loop over its share of the connections.

/// What a client's readiness came to.
enum Outcome {
    /// Nothing the loop needs to know.
    Busy,
    /// The connection just became open (connected, and upgraded unless raw).
    Opened,
    /// A handshake cycle finished; the socket can go.
    Cycled,
}

/// The per-thread state clients use while handling readiness.
struct Env {
    opts: Options,
    rng: Rng,
    pattern: Vec<u8>,
    latency: Histogram<u64>,
    /// Verified echoes (or cycles) while running.
    done: u64,
    running: bool,
}

struct Worker {
    shared: Arc<Shared>,
    poll: Poll,
    clients: Slab<Client>,
    buf: Vec<u8>,
    env: Env,
    /// The connection ids this thread owns: `first..first + count`.
    first: u64,
    count: usize,
    /// Connections started, and those not yet open.
    started: usize,
    pending: usize,
    /// When each rate-limited client sends next.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    published: u64,
}

impl Worker {
    fn new(
        opts: Options,
        shared: Arc<Shared>,
        first: u64,
        count: usize,
        seed: u64,
    ) -> io::Result<Worker> {
        let mut rng = Rng::new(seed);
        let mut pattern = vec![0; opts.size + OFFSETS];
        rng.fill(&mut pattern);
        Ok(Worker {
            shared,
            poll: Poll::new()?,
            clients: Slab::with_capacity(count),
            buf: vec![0; 256 * 1024],
            env: Env {
                opts,
                rng,
                pattern,
                latency: new_histogram(),
                done: 0,
                running: false,
            },
            first,
            count,
            started: 0,
            pending: 0,
            due: BinaryHeap::new(),
            published: 0,
        })
    }

    fn run(mut self) -> Result<Report, String> {
        let mut events = Events::with_capacity(1024);
        let mode = self.env.opts.mode;
        loop {
            match self.shared.phase.load(Ordering::Acquire) {
                STOPPED => break,
                RUNNING if !self.env.running => self.begin(Instant::now())?,
                _ => {}
            }
            if mode != Mode::Handshakes {
                while self.started < self.count && self.pending < MAX_PENDING {
                    let id = self.first + self.started as u64;
                    self.connect(id)?;
                    self.started += 1;
                }
            }
            let now = Instant::now();
            let timeout = match self.due.peek() {
                Some(Reverse((at, _))) => at.saturating_duration_since(now).min(TICK),
                None => TICK,
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll failed: {e}"));
            }
            let now = Instant::now();
            for event in events.iter() {
                self.ready(event.token().0, now)?;
            }
            if self.env.running && self.env.opts.rate.is_some() {
                self.send_due(now)?;
            }
            if self.env.done > self.published {
                self.shared
                    .done
                    .fetch_add(self.env.done - self.published, Ordering::Relaxed);
                self.published = self.env.done;
            }
        }
        Ok(Report {
            done: self.env.done,
            latency: self.env.latency,
        })
    }

    /// The measured interval starts: traffic begins.
    fn begin(&mut self, now: Instant) -> Result<(), String> {
        self.env.running = true;
        match self.env.opts.mode {
            Mode::Idle => {}
            Mode::Handshakes => {
                for slot in 0..self.count {
                    self.connect(self.first + slot as u64)?;
                }
            }
            Mode::Echo => {
                let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
                for key in keys {
                    self.kick(key, now)?;
                }
            }
        }
        Ok(())
    }

    /// Starts an open client's traffic: a full window, or its first slot
    /// on the rate schedule, at a random phase so that sends spread evenly.
    fn kick(&mut self, key: usize, now: Instant) -> Result<(), String> {
        match self.env.opts.rate {
            Some(rate) => {
                let period = 1.0 / rate;
                let phase = self.env.rng.unit() * period;
                self.due
                    .push(Reverse((now + Duration::from_secs_f64(phase), key)));
                Ok(())
            }
            None => {
                let client = &mut self.clients[key];
                client.top_up(&mut self.env, now);
                client.flush()
            }
        }
    }

    fn send_due(&mut self, now: Instant) -> Result<(), String> {
        let period = Duration::from_secs_f64(1.0 / self.env.opts.rate.unwrap_or(1.0));
        while let Some(&Reverse((at, key))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            let Some(client) = self.clients.get_mut(key) else {
                continue;
            };
            // A connection still waiting for its last echo skips its turn.
            if client.track.outstanding() < self.env.opts.in_flight as u64 {
                client.send_one(&mut self.env, now);
                client.flush()?;
            }
            self.due.push(Reverse((at + period, key)));
        }
        Ok(())
    }

    fn connect(&mut self, id: u64) -> Result<(), String> {
        let opts = &self.env.opts;
        let stream = match opts.source(id) {
            Some(source) => connect_from(source, opts.addr),
            None => TcpStream::connect(opts.addr),
        }
        .map_err(|e| format!("cannot connect to {}: {e}", opts.addr))?;
        let _ = stream.set_nodelay(true);
        let tls = opts.tls.as_ref().map(tls::Config::connect).transpose()?;
        let entry = self.clients.vacant_entry();
        let mut client = Client::new(id, stream, tls, Instant::now());
        self.poll
            .registry()
            .register(
                &mut client.stream,
                Token(entry.key()),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("cannot register a socket: {e}"))?;
        entry.insert(client);
        self.pending += 1;
        Ok(())
    }

    fn ready(&mut self, key: usize, now: Instant) -> Result<(), String> {
        let Some(client) = self.clients.get_mut(key) else {
            // A spurious event for a socket already gone.
            return Ok(());
        };
        match client.ready(&mut self.buf, &mut self.env, now)? {
            Outcome::Busy => {}
            Outcome::Opened => {
                self.pending -= 1;
                self.shared.connected.fetch_add(1, Ordering::Relaxed);
                if self.env.running && self.env.opts.mode == Mode::Echo {
                    self.kick(key, now)?;
                }
            }
            Outcome::Cycled => {
                let client = self.clients.remove(key);
                self.pending -= 1;
                self.env.done += 1;
                self.env
                    .latency
                    .saturating_record(nanos(now - client.started));
                if self.env.running {
                    self.connect(client.track.id)?;
                }
            }
        }
        Ok(())
    }
}

/// A non-blocking connect from a chosen source address.
fn connect_from(source: SocketAddr, to: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(source))?;
    match socket.connect(&SockAddr::from(to)) {
        Ok(()) => {}
        // EINPROGRESS: the handshake goes on; writable readiness ends it.
        Err(e) if e.raw_os_error() == Some(115) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

// ---------------------------------------------------------------------------
// One connection.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    /// The upgrade request is sent; the 101 is awaited.
    Upgrading,
    Open,
    /// Handshake mode: our close frame (or raw probe byte) is sent.
    Closing,
}

struct Client {
    stream: TcpStream,
    /// The TLS session over `stream`, for a wss:// URL.
    tls: Option<tls::Session>,
    state: State,
    reader: MessageReader,
    track: Track,
    /// Bytes queued for the socket, and how many of them are written.
    out: Vec<u8>,
    written: usize,
    /// The 101 response as it arrives, and the accept key it must carry.
    head: Vec<u8>,
    accept: String,
    /// When the connection was started (for handshake cycles).
    started: Instant,
}

/// What was sent and what came back on one connection.
struct Track {
    id: u64,
    sent: u64,
    received: u64,
    /// Send times of the messages not yet echoed, oldest first.
    sent_at: VecDeque<Instant>,
    /// Raw mode: bytes of the current message already verified.
    raw_pos: usize,
}

impl Track {
    fn outstanding(&self) -> u64 {
        self.sent - self.received
    }

    /// Checks `got` against bytes `at..` of the oldest outstanding message.
    /// Returns whether that message is now complete.
    fn check(
        &mut self,
        env: &mut Env,
        got: &[u8],
        at: usize,
        now: Instant,
    ) -> Result<bool, String> {
        let size = env.opts.size;
        if self.received >= self.sent {
            return Err(format!(
                "connection {} received {} bytes it never sent",
                self.id,
                got.len()
            ));
        }
        if at + got.len() > size {
            return Err(format!(
                "connection {}, message {}: echo is {} bytes long, sent {size}",
                self.id,
                self.received,
                at + got.len()
            ));
        }
        if let Some(i) = mismatch(&env.pattern, self.id, self.received, got, at) {
            let expected = expected_byte(&env.pattern, self.id, self.received, at + i);
            return Err(format!(
                "echo mismatch on connection {}, message {}, byte {}: expected {expected:#04x}, got {:#04x}",
                self.id,
                self.received,
                at + i,
                got[i]
            ));
        }
        if at + got.len() < size {
            return Ok(false);
        }
        let sent_at = self
            .sent_at
            .pop_front()
            .expect("an outstanding message has a send time");
        self.received += 1;
        if env.running {
            env.done += 1;
            env.latency.saturating_record(nanos(now - sent_at));
        }
        Ok(true)
    }
}

impl Client {
    fn new(id: u64, stream: TcpStream, tls: Option<tls::Session>, now: Instant) -> Client {
        Client {
            stream,
            tls,
            state: State::Connecting,
            reader: MessageReader::new(Role::Client),
            track: Track {
                id,
                sent: 0,
                received: 0,
                sent_at: VecDeque::new(),
                raw_pos: 0,
            },
            out: Vec::new(),
            written: 0,
            head: Vec::new(),
            accept: String::new(),
            started: now,
        }
    }

    fn ready(&mut self, buf: &mut [u8], env: &mut Env, now: Instant) -> Result<Outcome, String> {
        let mut outcome = Outcome::Busy;
        if self.state == State::Connecting {
            // A peer address means connected: one syscall in the usual case.
            // Without one, the connect either failed or is still under way
            // (a spurious wakeup), which SO_ERROR tells apart.
            match self.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if let Ok(Some(e)) | Err(e) = self.stream.take_error() {
                        return Err(format!("connect to {} failed: {e}", env.opts.addr));
                    }
                    return Ok(Outcome::Busy);
                }
                Err(e) => return Err(format!("connect to {} failed: {e}", env.opts.addr)),
            }
            if env.opts.raw && env.opts.mode != Mode::Handshakes {
                self.state = State::Open;
                outcome = Outcome::Opened;
            } else {
                if env.opts.raw {
                    // The raw cycle: connect, echo one byte, close.
                    self.out.push(b'!');
                    self.state = State::Closing;
                } else {
                    self.send_upgrade(env);
                    self.state = State::Upgrading;
                }
                // Nothing can arrive before the server has our bytes, and
                // what it sends raises a new edge: no read now.
                self.flush()?;
                return Ok(outcome);
            }
        }
        loop {
            let read = match &mut self.tls {
                Some(tls) => tls.read(&mut self.stream, buf),
                None => self.stream.read(buf),
            };
            match read {
                Ok(0) => {
                    return Err(format!(
                        "connection {} closed by the server ({:?})",
                        self.track.id, self.state
                    ))
                }
                Ok(n) => {
                    match self.input(&mut buf[..n], env, now)? {
                        Outcome::Busy => {}
                        Outcome::Cycled => return Ok(Outcome::Cycled),
                        Outcome::Opened => outcome = Outcome::Opened,
                    }
                    // A short read emptied the socket. Data arriving later
                    // raises a new edge, so the read that would only say
                    // WouldBlock is skipped (as tokio does on Linux). Not
                    // so for TLS: one record's plaintext says nothing about
                    // what else the socket holds.
                    if n < buf.len() && self.tls.is_none() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read on connection {} failed: {e}", self.track.id)),
            }
        }
        if self.state == State::Open
            && env.running
            && env.opts.mode == Mode::Echo
            && env.opts.rate.is_none()
        {
            self.top_up(env, now);
        }
        self.flush()?;
        Ok(outcome)
    }

    fn send_upgrade(&mut self, env: &mut Env) {
        let mut nonce = [0u8; 16];
        env.rng.fill(&mut nonce);
        let key = STANDARD.encode(nonce);
        self.accept = wsloop::handshake::AcceptKey::for_key(&key)
            .as_str()
            .to_owned();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            env.opts.path, env.opts.host
        );
        self.out.extend_from_slice(request.as_bytes());
    }

    /// Handles bytes read from the socket.
    fn input(&mut self, data: &mut [u8], env: &mut Env, now: Instant) -> Result<Outcome, String> {
        match self.state {
            State::Connecting => unreachable!("connected before reading"),
            State::Upgrading => {
                self.head.extend_from_slice(data);
                let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                    if self.head.len() > 16 * 1024 {
                        return Err("the upgrade response has no end".into());
                    }
                    return Ok(Outcome::Busy);
                };
                let mut rest = self.head.split_off(end + 4);
                self.check_upgrade()?;
                self.head = Vec::new();
                let outcome = if env.opts.mode == Mode::Handshakes {
                    // RFC 6455 §7.1.2: start the close handshake with our
                    // close frame; the cycle ends with the server's.
                    let payload = 1000u16.to_be_bytes();
                    encode_frame(
                        &mut self.out,
                        true,
                        OpCode::Close,
                        Some(env.rng.mask()),
                        &payload,
                    );
                    self.state = State::Closing;
                    Outcome::Busy
                } else {
                    self.state = State::Open;
                    Outcome::Opened
                };
                match self.frames(&mut rest, env, now)? {
                    Outcome::Cycled => Ok(Outcome::Cycled),
                    _ => Ok(outcome),
                }
            }
            State::Open | State::Closing if env.opts.raw => self.raw(data, env, now),
            State::Open | State::Closing => self.frames(data, env, now),
        }
    }

    fn check_upgrade(&self) -> Result<(), String> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&self.head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err("malformed upgrade response".into()),
        }
        if response.code != Some(101) {
            return Err(format!(
                "upgrade refused: {} {}",
                response.code.unwrap_or(0),
                response.reason.unwrap_or("")
            ));
        }
        let accept = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|h| h.value);
        if accept != Some(self.accept.as_bytes()) {
            return Err("wrong Sec-WebSocket-Accept in the upgrade response".into());
        }
        Ok(())
    }

    /// Feeds server frames through the client-role reader.
    fn frames(&mut self, data: &mut [u8], env: &mut Env, now: Instant) -> Result<Outcome, String> {
        let mut pos = 0;
        let mut outcome = Outcome::Busy;
        while pos < data.len() {
            let step = self
                .reader
                .read(&mut data[pos..], &Limits::default())
                .map_err(|e| {
                    format!(
                        "protocol error from the server on connection {}: {e}",
                        self.track.id
                    )
                })?;
            pos += step.consumed;
            match step.event {
                Some(Event::Message(incoming)) if self.state == State::Open => {
                    let Message::Binary(bytes) = incoming.message() else {
                        return Err(format!("connection {} got text", self.track.id));
                    };
                    self.track.check(env, bytes, 0, now)?;
                }
                Some(Event::Message(_)) => {
                    return Err(format!(
                        "connection {} got a message it did not expect (text, or after close)",
                        self.track.id
                    ))
                }
                Some(Event::Ping(payload)) => {
                    encode_frame(
                        &mut self.out,
                        true,
                        OpCode::Pong,
                        Some(env.rng.mask()),
                        payload.as_bytes(),
                    );
                }
                Some(Event::Pong(_)) => {}
                Some(Event::Close { .. }) if self.state == State::Closing => {
                    outcome = Outcome::Cycled
                }
                Some(Event::Close { code, reason }) => {
                    return Err(format!(
                        "connection {} closed by the server: {} {}",
                        self.track.id,
                        code.0,
                        String::from_utf8_lossy(reason.as_bytes())
                    ))
                }
                Some(other) => {
                    return Err(format!(
                        "connection {} got an unexpected {other:?}",
                        self.track.id
                    ))
                }
                None if step.consumed == 0 => break,
                None => {}
            }
        }
        Ok(outcome)
    }

    /// Verifies a raw TCP echo, which arrives in pieces of any size.
    fn raw(&mut self, mut data: &[u8], env: &mut Env, now: Instant) -> Result<Outcome, String> {
        if self.state == State::Closing {
            return Ok(Outcome::Cycled);
        }
        let size = env.opts.size;
        while !data.is_empty() {
            let take = data.len().min(size - self.track.raw_pos);
            let at = self.track.raw_pos;
            let complete = self.track.check(env, &data[..take], at, now)?;
            self.track.raw_pos = if complete { 0 } else { at + take };
            data = &data[take..];
        }
        Ok(Outcome::Busy)
    }

    /// Queues messages until `--in-flight` are outstanding.
    fn top_up(&mut self, env: &mut Env, now: Instant) {
        while self.track.outstanding() < env.opts.in_flight as u64 {
            self.send_one(env, now);
        }
    }

    fn send_one(&mut self, env: &mut Env, now: Instant) {
        let seq = self.track.sent;
        let size = env.opts.size;
        let off = offset(self.track.id, seq);
        let mask = if env.opts.raw {
            None
        } else {
            let key = env.rng.mask();
            let mut head = [0u8; MAX_HEADER_LEN];
            let n = FrameHeader {
                fin: true,
                rsv1: false,
                opcode: OpCode::Binary,
                mask: Some(key),
                payload_len: size as u64,
            }
            .encode(&mut head);
            self.out.extend_from_slice(&head[..n]);
            Some(key)
        };
        let at = self.out.len();
        self.out.extend_from_slice(&env.pattern[off..off + size]);
        let tag = tag(self.track.id, seq);
        let t = size.min(TAG_LEN);
        self.out[at..at + t].copy_from_slice(&tag[..t]);
        if let Some(key) = mask {
            apply_mask(&mut self.out[at..], key, 0);
        }
        self.track.sent += 1;
        self.track.sent_at.push_back(now);
    }

    /// Writes queued bytes until done or the socket is full; writable
    /// readiness brings us back for the rest.
    fn flush(&mut self) -> Result<(), String> {
        if let Some(tls) = &mut self.tls {
            // rustls takes all of it (as plaintext until the handshake is
            // done) and keeps the records the socket refuses.
            tls.send(&mut self.stream, &self.out)
                .map_err(|e| format!("TLS write on connection {} failed: {e}", self.track.id))?;
            self.out.clear();
            return Ok(());
        }
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(format!("connection {} wrote nothing", self.track.id)),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write on connection {} failed: {e}", self.track.id)),
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Payloads: a random pattern at a per-message offset, behind a tag.

fn offset(id: u64, seq: u64) -> usize {
    (id.wrapping_mul(7).wrapping_add(seq.wrapping_mul(31)) % OFFSETS as u64) as usize
}

fn tag(id: u64, seq: u64) -> [u8; TAG_LEN] {
    ((id << 40) ^ seq).to_le_bytes()
}

fn expected_byte(pattern: &[u8], id: u64, seq: u64, i: usize) -> u8 {
    if i < TAG_LEN {
        tag(id, seq)[i]
    } else {
        pattern[offset(id, seq) + i]
    }
}

/// The index in `got` of the first byte that differs from bytes `at..` of
/// message `seq` on connection `id`.
fn mismatch(pattern: &[u8], id: u64, seq: u64, got: &[u8], at: usize) -> Option<usize> {
    let tagged = TAG_LEN.saturating_sub(at).min(got.len());
    let tag = tag(id, seq);
    if let Some(i) = (0..tagged).find(|&i| got[i] != tag[at + i]) {
        return Some(i);
    }
    let from = offset(id, seq) + at + tagged;
    let want = &pattern[from..from + got.len() - tagged];
    if got[tagged..] == *want {
        return None;
    }
    (tagged..got.len()).find(|&i| got[i] != want[i - tagged])
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------
// Randomness: one seed from the kernel, then wyrand.

fn urandom_seed() -> io::Result<u64> {
    let mut seed = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(u64::from_ne_bytes(seed))
}

/// wyrand: fast, and good enough for masking keys, which RFC 6455 §5.3
/// asks to be unpredictable to the page's script, not cryptographic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut rng = Rng(seed);
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) ^ t) as u64
    }

    fn mask(&mut self) -> [u8; 4] {
        (self.next() as u32).to_ne_bytes()
    }

    /// A float in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next().to_ne_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

// ---------------------------------------------------------------------------
// TLS for wss:// URLs: rustls's buffered client over the mio socket. Without
// the tls feature the types are empty enums, so that the code above needs
// no cfg of its own.

#[cfg(feature = "tls")]
mod tls {
    use std::io::{self, Read, Write};
    use std::sync::{Arc, OnceLock};

    use mio::net::TcpStream;
    use rustls::client::Resumption;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection};

    /// What the first connection agreed on: version, suite, group.
    static AGREED: OnceLock<String> = OnceLock::new();

    pub fn agreed() -> Option<&'static str> {
        AGREED.get().map(String::as_str)
    }

    /// The client settings every connection of a run shares.
    #[derive(Debug, Clone)]
    pub struct Config {
        client: Arc<ClientConfig>,
        name: ServerName<'static>,
    }

    impl Config {
        /// Trusts the certificates in the PEM file `ca` and checks the
        /// server's against `host` (a name or an IP address, port dropped).
        pub fn new(ca: &str, host: &str) -> Result<Config, String> {
            let mut client = (*wsloop::tls::client_config(ca).map_err(|e| e.to_string())?).clone();
            // Every connection a full handshake: what the server pays for a
            // new client, which is what the benchmark measures.
            client.resumption = Resumption::disabled();
            let bare = match host.rsplit_once(':') {
                Some((name, port)) if port.parse::<u16>().is_ok() => name,
                _ => host,
            };
            let bare = bare.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(bare.to_owned())
                .map_err(|e| format!("{bare:?} is no server name: {e}"))?;
            Ok(Config {
                client: Arc::new(client),
                name,
            })
        }

        pub fn connect(&self) -> Result<Session, String> {
            ClientConnection::new(self.client.clone(), self.name.clone())
                .map(|conn| Session(Box::new(conn)))
                .map_err(|e| format!("cannot start a TLS session: {e}"))
        }
    }

    /// One connection's TLS session.
    pub struct Session(Box<ClientConnection>);

    impl Session {
        /// Reads plaintext into `buf`, reading and handling records from
        /// the socket (handshake messages too) until some arrives. Ok(0)
        /// after the server's close_notify; WouldBlock once the socket is
        /// drained.
        pub fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
            loop {
                match self.0.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => return other,
                }
                // At the end of the stream the reader above answers next
                // time: Ok(0) after close_notify, UnexpectedEof without.
                self.0.read_tls(stream)?;
                let state = self.0.process_new_packets();
                // Handshake replies, or the alert rustls queued on an error.
                self.write_records(stream)?;
                state.map_err(io::Error::other)?;
                if !self.0.is_handshaking() && AGREED.get().is_none() {
                    let _ = AGREED.set(self.agreed());
                }
            }
        }

        /// "TLSv1_3 TLS13_AES_256_GCM_SHA384 X25519", once handshaken.
        fn agreed(&self) -> String {
            let known = |v: Option<String>| v.unwrap_or_else(|| "?".to_owned());
            format!(
                "{} {} {}",
                known(self.0.protocol_version().map(|v| format!("{v:?}"))),
                known(
                    self.0
                        .negotiated_cipher_suite()
                        .map(|s| format!("{:?}", s.suite()))
                ),
                known(
                    self.0
                        .negotiated_key_exchange_group()
                        .map(|g| format!("{:?}", g.name()))
                ),
            )
        }

        /// Seals `plain` (held as plaintext until the handshake is done)
        /// and writes what records the socket takes; writable readiness
        /// brings the caller back for the rest.
        pub fn send(&mut self, stream: &mut TcpStream, plain: &[u8]) -> io::Result<()> {
            if !plain.is_empty() {
                self.0.writer().write_all(plain)?;
            }
            self.write_records(stream)
        }

        fn write_records(&mut self, stream: &mut TcpStream) -> io::Result<()> {
            while self.0.wants_write() {
                match self.0.write_tls(stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
    }
}

#[cfg(not(feature = "tls"))]
mod tls {
    use std::io;

    use mio::net::TcpStream;

    pub fn agreed() -> Option<&'static str> {
        None
    }

    /// No TLS in this build: there is no value of this type.
    #[derive(Debug, Clone)]
    pub enum Config {}

    impl Config {
        pub fn new(_ca: &str, _host: &str) -> Result<Config, String> {
            Err("wss:// needs the tls feature: cargo run --release --features tls --example loadgen".into())
        }

        pub fn connect(&self) -> Result<Session, String> {
            match *self {}
        }
    }

    pub enum Session {}

    impl Session {
        pub fn read(&mut self, _: &mut TcpStream, _: &mut [u8]) -> io::Result<usize> {
            match *self {}
        }

        pub fn send(&mut self, _: &mut TcpStream, _: &[u8]) -> io::Result<()> {
            match *self {}
        }
    }
}
