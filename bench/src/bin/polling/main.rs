//! WebSocket push, Server-Sent Events and long polling, on the same chat
//! and the same load: the argument WebSockets won, measured, beside the
//! middle road.
//!
//! ```text
//! cargo build --release --example chat
//! cargo run --release -p wsloop-bench --bin polling -- [--clients 100,1000]
//!     [--seconds 10] [--room-size 10] [--every-ms 1000] [--runs 3]
//!     [--idle 10000] [--svg docs/polling.svg] [--json docs/polling.json]
//! ```
//!
//! It starts the chat example (2 workers) and, for each client count and
//! each transport, fills rooms of `--room-size` members. Every member says
//! a line every `--every-ms` (staggered), carrying the time it was sent;
//! every member of the room receives it. Over WebSocket a member sends a
//! masked frame and reads frames. Over SSE it reads events from one
//! `GET /events` answer that never ends, and posts its lines with
//! `POST /send` on a second, kept-alive connection. Over long polling it
//! posts its lines the same way and loops on `GET /poll` with its cursor
//! on another connection, as the chat page does. Reported per run, for the
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
//!
//! Then, for each transport, a fresh chat and `--idle` members that say
//! nothing (0 skips it): the chat's resident memory per idle member (see
//! `idle.rs`).

mod idle;
mod members;
mod report;
mod wire;

use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wsloop_bench::{median, Running};

use crate::idle::Idle;
use crate::members::{now_us, open_member, Mouth};

/// How the bench's members listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    WebSocket,
    Sse,
    Polling,
}

impl Transport {
    /// Every transport, in the order of the table and the chart.
    const ALL: [Transport; 3] = [Transport::WebSocket, Transport::Sse, Transport::Polling];

    fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "WebSocket",
            Transport::Sse => "SSE",
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
    /// Idle members per transport for the memory figure; 0 skips it.
    idle: usize,
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
        idle: 10_000,
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
            "--idle" => opts.idle = value.parse().map_err(bad)?,
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
    /// Starts the chat for members that each say a line every `every`,
    /// with `extra` flags.
    fn start(every: Duration, extra: &[&str]) -> Chat {
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
        let mut args: Vec<String> = args.iter().chain(extra).map(|a| a.to_string()).collect();
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

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The chat's CPU time so far, user and system, in seconds: the sum of
    /// its threads' run time from schedstat, in nanoseconds (the ticks of
    /// /proc/PID/stat are 10 ms, too coarse for a short window).
    fn cpu(&self) -> f64 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).expect("the chat runs");
        let ns: u64 = tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
            .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        ns as f64 / 1e9
    }
}

/// Member `i`'s loopback address, one of its own, as clients on the
/// internet each have theirs: the chat bounds held polls and streams per
/// address, and each address has its own ephemeral ports, enough for
/// tens of thousands of members.
fn address_of(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// Raises this process's soft limit on open files to its hard limit, as
/// `ulimit -n $(ulimit -Hn)` does: 10,000 idle members are 10,000 sockets
/// here, and as many in the chat, which inherits the limit.
#[cfg(unix)]
fn raise_open_files() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    if let Err(e) = setrlimit(Resource::Nofile, limit) {
        eprintln!("polling: cannot raise the open-file limit: {e}");
    }
}

#[cfg(not(unix))]
fn raise_open_files() {}

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
        let from = address_of(i);
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
    raise_open_files();
    let chat = Chat::start(opts.every, &[]);
    println!(
        "polling: chat at {}, rooms of {}, a line per member every {} ms, {} s windows, medians of {}",
        chat.addr,
        opts.room_size,
        opts.every.as_millis(),
        opts.seconds,
        opts.runs
    );
    let mut table = Vec::new();
    let mut tag = 0;
    for &clients in &opts.clients {
        let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); Transport::ALL.len()];
        // Interleaved, so that a noisy moment hurts every transport alike.
        for _ in 0..opts.runs {
            for (i, &t) in Transport::ALL.iter().enumerate() {
                tag += 1;
                runs[i].push(run(&chat, t, clients, &opts, tag));
            }
        }
        for (i, &t) in Transport::ALL.iter().enumerate() {
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
    drop(chat);
    let mut idle = Vec::new();
    if opts.idle > 0 {
        let mut runs: Vec<Vec<Idle>> = vec![Vec::new(); Transport::ALL.len()];
        for _ in 0..opts.runs {
            for (i, &t) in Transport::ALL.iter().enumerate() {
                runs[i].push(idle::measure(t, opts.idle, opts.room_size));
            }
        }
        // The middle run, whole, so that its figures add up.
        for (i, &t) in Transport::ALL.iter().enumerate() {
            runs[i].sort_by(|a, b| a.bytes_per_member().total_cmp(&b.bytes_per_member()));
            idle.push((t, runs[i][runs[i].len() / 2]));
        }
    }
    report::print_table(&table);
    report::print_idle(&idle);
    if let Some(path) = &opts.json {
        report::write_json(path, &table, &idle);
    }
    if let Some(path) = &opts.svg {
        report::write_svg(path, &table, &idle, &opts);
    }
}
