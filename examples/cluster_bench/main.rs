//! What crossing Redis costs, in wsloop-redis's two modes side by side:
//! local-first delivery against Redis-ordered delivery.
//!
//! ```text
//! cargo run --release --example cluster_bench -- --runs 5 --out docs
//! ```
//!
//! It starts its own redis-server (Debian's; it must be installed) on a
//! free port, and two pairs of wsloop servers in this process, one pair
//! per mode. Each server has one worker and its own RedisBridge, so each
//! is a node of its own; the two pairs use different prefixes, so they do
//! not hear each other. Every client is in one room, and every message
//! sent to a server is published to it.
//!
//! - **local-first** (`BridgeConfig::default()`): the publisher's node
//!   delivers at once and sends the message to Redis for the other node.
//! - **ordered** (`BridgeConfig::default().history(100)`): a Lua script in
//!   Redis numbers the message, appends it to the topic's log and
//!   publishes it; every node delivers what Redis publishes, in Redis's
//!   order, its own publishers' messages included.
//!
//! Every node keeps history (100 messages per topic), as the chat does in
//! both modes, so in both a subscriber gets `EPOCH-SEQ ` before each
//! payload and the frames are the same size: the modes differ in who
//! numbers the message and in whether the publisher's node waits for
//! Redis.
//!
//! - **Latency**: per mode, one publisher on node A sends a message and
//!   waits until a subscriber on A and one on B both have it, then sends
//!   the next; the rounds alternate between the modes. It reports p50 and
//!   p99 of the time to each, and a Redis PING round trip for scale.
//! - **Fan-out**: one publisher on A sends M messages as fast as it can
//!   to S subscribers, all on A (one node), or half on A and half on B
//!   (two nodes). Each of R runs does one node local-first, one node
//!   ordered, two nodes local-first, two nodes ordered, in that order, so
//!   the machine's noise falls on both modes alike. It reports delivered
//!   messages per second, and the CPU Redis used against the wall time
//!   until every subscriber had every message and A's bridge had handed
//!   them all to Redis; the medians of the runs, and ordered over
//!   local-first; then Redis's own time per PUBLISH and per run of the
//!   ordering script.
//!
//! Every client checks what it gets: the payload behind the id, the
//! messages in the order they were sent with none missing, ids one apart,
//! and (ordered, latency test) the same id on both nodes. Anything else is
//! counted and printed. `--out DIR` writes DIR/cluster.json (every run and
//! the medians) and DIR/cluster.svg (a bar chart of the figures).

use std::fmt::Write as _;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fanout::median;
use wsloop::{Config, Conn, Handler, HistoryConfig, Message, MessageId, PublishStatus, Server};
use wsloop_redis::{redis, BridgeConfig, BridgeCounters, RedisBridge};

use clients::{frame, settle, Anomalies, Clients, Track, MEASURED, SIZE};
use report::Report;

mod clients;
#[path = "../common/mod.rs"]
mod common;
mod report;

/// Messages each topic keeps, on the nodes and (ordered) in Redis.
const DEPTH: usize = 100;
/// Rounds of the latency test that warm up and are not counted.
const WARM_UP: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    LocalFirst,
    Ordered,
}

impl Mode {
    const ALL: [Mode; 2] = [Mode::LocalFirst, Mode::Ordered];

    fn name(self) -> &'static str {
        match self {
            Mode::LocalFirst => "local-first",
            Mode::Ordered => "ordered",
        }
    }

    fn bridge_config(self) -> BridgeConfig {
        let config = BridgeConfig::default().queue(1 << 16);
        match self {
            Mode::LocalFirst => config.prefix("bench-local-first"),
            Mode::Ordered => config.prefix("bench-ordered").history(DEPTH),
        }
    }
}

struct Room {
    /// Publishes the server refused: ordered mode refuses while Redis is
    /// away or the bridge's queue is full.
    refused: Arc<AtomicU64>,
}

impl Handler for Room {
    type Data = ();

    fn on_open(&mut self, conn: &mut Conn<'_>) {
        conn.subscribe("room");
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        if conn.publish("room", msg) == PublishStatus::Refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Two nodes, A and B, bridged in one mode.
struct Pair {
    mode: Mode,
    // Bridges first: each stops before its server.
    bridges: [RedisBridge; 2],
    servers: [Server; 2],
    refused: Arc<AtomicU64>,
}

impl Pair {
    fn start(mode: Mode, redis_url: &str) -> Pair {
        let refused = Arc::new(AtomicU64::new(0));
        let node = || {
            let config = Config::default()
                .workers(1)
                .ping_interval(None)
                .max_write_buffer(64 << 20)
                .history(Some(HistoryConfig::default().depth(DEPTH)));
            let refused = refused.clone();
            let factory = move || Room {
                refused: refused.clone(),
            };
            let server = Server::bind("127.0.0.1:0", config, factory).expect("bind");
            let bridge =
                RedisBridge::start(&server, redis_url, mode.bridge_config()).expect("bridge");
            (server, bridge)
        };
        let ((a, bridge_a), (b, bridge_b)) = (node(), node());
        Pair {
            mode,
            bridges: [bridge_a, bridge_b],
            servers: [a, b],
            refused,
        }
    }

    fn addr(&self, node: usize) -> SocketAddr {
        self.servers[node].local_addr()
    }

    fn counters(&self) -> [BridgeCounters; 2] {
        [self.bridges[0].counters(), self.bridges[1].counters()]
    }
}

/// Opens a WebSocket on `/`.
fn open(addr: SocketAddr) -> TcpStream {
    common::fanout::open(addr, "/", false)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// p50 and p99 in microseconds.
fn p50_p99(mut t: Vec<Duration>) -> [f64; 2] {
    t.sort();
    [0.5, 0.99].map(|p| percentile(&t, p).as_secs_f64() * 1e6)
}

/// One mode's latency test: a publisher and a subscriber on A, one on B.
struct LatencyTest {
    publisher: TcpStream,
    clients: Clients,
    tracks: [Track; 2],
    ordered: bool,
    /// Time to the subscriber on A, and to the one on B.
    times: [Vec<Duration>; 2],
}

impl LatencyTest {
    fn new(pair: &Pair, seen: &mut Anomalies) -> LatencyTest {
        let publisher = open(pair.addr(0));
        let mut test = LatencyTest {
            publisher,
            clients: Clients::new(vec![open(pair.addr(0)), open(pair.addr(1))]),
            tracks: Default::default(),
            ordered: pair.mode == Mode::Ordered,
            times: Default::default(),
        };
        settle(
            &mut test.publisher,
            &mut test.clients,
            &mut test.tracks,
            seen,
        );
        test
    }

    /// Sends message `i` and waits for both subscribers to have it.
    fn round(&mut self, i: u64, seen: &mut Anomalies) {
        let wire = frame(MEASURED, i);
        let sent = Instant::now();
        // The publisher's own copy is left unread: the nodes buffer it.
        self.publisher.write_all(&wire).unwrap();
        let mut got: [Option<(Duration, MessageId)>; 2] = [None, None];
        while got.iter().any(Option::is_none) {
            let came = self.clients.read(Duration::from_secs(5), |k, payload| {
                let at = sent.elapsed();
                if let Some((id, MEASURED, index)) = self.tracks[k].check(payload, seen) {
                    if index == i {
                        got[k] = Some((at, id));
                    }
                }
            });
            if !came {
                // Lost: the next message's index shows it.
                return;
            }
        }
        let [Some((same, id_a)), Some((across, id_b))] = got else {
            unreachable!("both came");
        };
        if self.ordered && id_a != id_b {
            seen.id_mismatch += 1;
        }
        if i >= WARM_UP as u64 {
            self.times[0].push(same);
            self.times[1].push(across);
        }
    }
}

/// p50 and p99, same node and across nodes, per mode; the rounds
/// alternate between the modes.
fn latency(pairs: &[Pair], rounds: usize, seen: &mut [Anomalies]) -> Vec<[[f64; 2]; 2]> {
    let mut tests: Vec<LatencyTest> = pairs
        .iter()
        .zip(seen.iter_mut())
        .map(|(pair, seen)| LatencyTest::new(pair, seen))
        .collect();
    let total = (WARM_UP + rounds) as u64;
    for i in 0..total {
        for (test, seen) in tests.iter_mut().zip(seen.iter_mut()) {
            test.round(i, seen);
        }
    }
    tests
        .into_iter()
        .zip(seen.iter_mut())
        .map(|(test, seen)| {
            for track in &test.tracks {
                track.finish(total, seen);
            }
            test.times.map(p50_p99)
        })
        .collect()
}

/// p50 and p99 of a PING to Redis, in microseconds: one round trip.
fn ping(client: &redis::Client, rounds: usize) -> [f64; 2] {
    let mut conn = client.get_connection().unwrap();
    let mut times = Vec::new();
    for i in 0..WARM_UP + rounds {
        let start = Instant::now();
        let _: String = redis::cmd("PING").query(&mut conn).unwrap();
        if i >= WARM_UP {
            times.push(start.elapsed());
        }
    }
    p50_p99(times)
}

/// Redis's own time per call of each command, in microseconds, from
/// INFO commandstats (a command a script calls is counted on its own
/// too, and within the script's time).
fn usec_per_call(client: &redis::Client, commands: [&str; 2]) -> [f64; 2] {
    let mut conn = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    commands.map(|command| {
        let head = format!("cmdstat_{command}:");
        info.lines()
            .find_map(|line| line.strip_prefix(&head))
            .and_then(|rest| {
                rest.split(',')
                    .find_map(|f| f.strip_prefix("usec_per_call="))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    })
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields
        .get(11)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
}

/// One fan-out run, on one node or both: msgs/s delivered, and Redis's
/// CPU share of the wall time until the bridge had published everything.
fn fanout(
    pair: &Pair,
    nodes: usize,
    subscribers: usize,
    messages: usize,
    redis_pid: u32,
    seen: &mut Anomalies,
) -> (f64, f64) {
    let subs: Vec<TcpStream> = (0..subscribers)
        .map(|i| open(pair.addr(i % nodes)))
        .collect();
    let mut publisher = open(pair.addr(0));
    let mut clients = Clients::new(subs);
    let mut tracks = vec![Track::default(); subscribers];
    // Every message the publisher sends is handed to Redis by A's bridge,
    // or refused by the node.
    let handed = || {
        let c = pair.bridges[0].counters();
        c.published + c.dropped + pair.refused.load(Ordering::Relaxed)
    };
    let before = handed();
    let probes = settle(&mut publisher, &mut clients, &mut tracks, seen);
    let mut wire = Vec::new();
    for i in 0..messages {
        wire.extend(frame(MEASURED, i as u64));
    }
    let ticks = cpu_ticks(redis_pid);
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        publisher.write_all(&wire).unwrap();
        publisher
    });
    let mut done = 0;
    while done < subscribers {
        let came = clients.read(Duration::from_secs(10), |k, got| {
            let before = tracks[k].next;
            tracks[k].check(got, seen);
            if before < messages as u64 && tracks[k].next >= messages as u64 {
                done += 1;
            }
        });
        if !came {
            eprintln!("  no progress for 10 s: counting what is missing as lost");
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Local-first, one node: the subscribers can have every message before
    // A's bridge has published them all. Redis's work for this run is
    // counted in this run, not in the next.
    while handed() < before + probes + messages as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the bridge did not hand everything to Redis"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let busy = start.elapsed().as_secs_f64();
    let redis_cpu = (cpu_ticks(redis_pid) - ticks) as f64 / 100.0;
    for track in &tracks {
        track.finish(messages as u64, seen);
    }
    drop(writer.join().unwrap());
    ((subscribers * messages) as f64 / elapsed, redis_cpu / busy)
}

/// One fan-out run's figures.
struct Run {
    run: usize,
    mode: Mode,
    nodes: usize,
    msgs_per_s: f64,
    redis_cpu: f64,
}

struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    common::has_proc("cluster_bench", "redis-server's CPU figures (0 here)");
    let mut args = std::env::args().skip(1);
    let (mut subscribers, mut messages, mut runs, mut rounds) = (1000, 1000, 5, 2000);
    let mut out: Option<PathBuf> = None;
    while let Some(flag) = args.next() {
        let value = args.next().expect("a value after each flag");
        let number = || -> usize { value.parse().expect("a number after the flag") };
        match flag.as_str() {
            "--subscribers" => subscribers = number().max(1),
            "--messages" => messages = number().max(1),
            "--runs" => runs = number().max(1),
            "--rounds" => rounds = number().max(1),
            "--out" => out = Some(value.into()),
            _ => panic!("flags: --subscribers N --messages N --runs N --rounds N --out DIR"),
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install redis-server)");
    let redis_pid = child.id();
    let _redis = RedisServer(child);
    let url = format!("redis://127.0.0.1:{port}/");
    let client = redis::Client::open(url.as_str()).unwrap();
    let start = Instant::now();
    while client.get_connection().is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pairs = Mode::ALL.map(|mode| Pair::start(mode, &url));
    let version = redis_version();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "cluster bench: two nodes per mode (one worker each) and redis-server {version}, on this machine ({cores} cores)"
    );

    let mut seen = [Anomalies::default(); 2];
    let lat = latency(&pairs, rounds, &mut seen);
    let ping = ping(&client, rounds);

    let mut all = Vec::new();
    for run in 1..=runs {
        let mut line = format!("  run {run}:");
        for nodes in [1, 2] {
            for (pair, seen) in pairs.iter().zip(seen.iter_mut()) {
                let (msgs_per_s, redis_cpu) =
                    fanout(pair, nodes, subscribers, messages, redis_pid, seen);
                let _ = write!(
                    line,
                    "  {nodes} node(s) {} {msgs_per_s:>9.0}/s redis {:>3.0}%",
                    pair.mode.name(),
                    redis_cpu * 100.0
                );
                all.push(Run {
                    run,
                    mode: pair.mode,
                    nodes,
                    msgs_per_s,
                    redis_cpu,
                });
            }
        }
        eprintln!("{line}");
    }
    let per_call = usec_per_call(&client, ["publish", "evalsha"]);
    // medians[mode][nodes - 1] = (msgs/s, Redis CPU share)
    let medians = Mode::ALL.map(|mode| {
        [1, 2].map(|nodes| {
            let of = |f: fn(&Run) -> f64| {
                median(
                    all.iter()
                        .filter(|r| r.mode == mode && r.nodes == nodes)
                        .map(f)
                        .collect(),
                )
            };
            (of(|r| r.msgs_per_s), of(|r| r.redis_cpu))
        })
    });

    println!();
    println!(
        "| latency, {rounds} messages one at a time | local-first p50 | p99 | ordered p50 | p99 |"
    );
    println!("|---|---|---|---|---|");
    for (w, name) in ["same node", "across nodes"].iter().enumerate() {
        let [lf, or] = [lat[0][w], lat[1][w]];
        println!(
            "| {name} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs |",
            lf[0], lf[1], or[0], or[1]
        );
    }
    println!(
        "\nA PING to Redis, for scale: p50 {:.0} µs, p99 {:.0} µs.\n",
        ping[0], ping[1]
    );
    println!(
        "| fan-out, 1 publisher → {subscribers} subscribers, {messages} x {SIZE} B, medians of {runs} | local-first msgs/s | ordered msgs/s | ordered / local-first | Redis CPU, local-first | Redis CPU, ordered |"
    );
    println!("|---|---|---|---|---|---|");
    for (n, name) in ["all on one node", "half on each of two nodes"]
        .iter()
        .enumerate()
    {
        let [(lf, lf_cpu), (or, or_cpu)] = [medians[0][n], medians[1][n]];
        println!(
            "| {name} | {lf:.0} | {or:.0} | {:.2}x | {:.0}% of a core | {:.0}% of a core |",
            or / lf,
            lf_cpu * 100.0,
            or_cpu * 100.0
        );
    }
    println!(
        "\nRedis's own time per call (INFO commandstats): PUBLISH {:.1} µs, the ordering script (EVALSHA) {:.1} µs.\n",
        per_call[0], per_call[1]
    );
    for (pair, seen) in pairs.iter().zip(&seen) {
        let [a, b] = pair.counters();
        println!(
            "{}: checks: {seen}; {} publishes refused\n  A {a}\n  B {b}",
            pair.mode.name(),
            pair.refused.load(Ordering::Relaxed)
        );
    }

    if let Some(dir) = out {
        let report = Report {
            version: &version,
            cores,
            settings: [subscribers, messages, runs, rounds],
            lat: &lat,
            ping,
            per_call,
            all: &all,
            medians: &medians,
            pairs: &pairs,
            seen: &seen,
        };
        std::fs::create_dir_all(&dir).expect("create --out DIR");
        let json = serde_json::to_string_pretty(&report.json()).unwrap() + "\n";
        std::fs::write(dir.join("cluster.json"), json).expect("write cluster.json");
        std::fs::write(dir.join("cluster.svg"), report.svg()).expect("write cluster.svg");
        println!("wrote {0}/cluster.json and {0}/cluster.svg", dir.display());
    }
    if seen.iter().any(|s| s.total() > 0) {
        eprintln!("cluster_bench: the checks found something wrong (see above)");
    }
}

fn redis_version() -> String {
    let out = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or("?")
        .to_string()
}
