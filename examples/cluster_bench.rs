//! What crossing Redis costs: latency and fan-out across two servers
//! against the same on one.
//!
//! ```text
//! cargo run --release --example cluster_bench
//! ```
//!
//! It starts its own redis-server (Debian's; it must be installed) on a
//! free port, and two wsloop servers in this process, each with one worker
//! and its own RedisBridge, so each is a node of its own. Every client is
//! in one room, and every message sent to a server is published to it.
//!
//! - **Latency**: one publisher on node A sends a message, waits until a
//!   subscriber on A and one on B both have it, and sends the next. It
//!   reports p50 and p99 of the time to each.
//! - **Fan-out**: one publisher on A sends M messages as fast as it can
//!   to S subscribers, all on A (one node), or half on A and half on B
//!   (two nodes). It reports delivered messages per second, the medians
//!   of R runs, and the CPU Redis used against the wall time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fanout::{collect, median};
use wsloop::frame::{FrameHeader, OpCode, Role};
use wsloop::protocol::encode_frame;
use wsloop::{Config, Conn, Handler, Message, Server};
use wsloop_redis::{redis, BridgeConfig, RedisBridge};

mod common;

/// Opens a WebSocket on `/`.
fn open(addr: SocketAddr) -> TcpStream {
    common::fanout::open(addr, "/", false)
}

struct Room;

impl Handler for Room {
    type Data = ();

    fn on_open(&mut self, conn: &mut Conn<'_>) {
        conn.subscribe("room");
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        let _ = conn.publish("room", msg);
    }
}

fn node(redis_url: &str) -> (Server, RedisBridge) {
    let config = Config::default()
        .workers(1)
        .ping_interval(None)
        .max_write_buffer(64 << 20);
    let server = Server::bind("127.0.0.1:0", config, || Room).expect("bind");
    let bridge = RedisBridge::start(&server, redis_url, BridgeConfig::default().queue(1 << 16))
        .expect("bridge");
    (server, bridge)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, true, OpCode::Binary, Some([1, 2, 3, 4]), payload);
    out
}

/// Reads one server frame's payload from a blocking stream.
fn read_payload(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    loop {
        if let Some((h, n)) = FrameHeader::parse(buf, Role::Client).unwrap() {
            let end = n + h.payload_len as usize;
            if buf.len() >= end {
                let payload = buf[n..end].to_vec();
                buf.drain(..end);
                return payload;
            }
        }
        let mut chunk = [0u8; 4096];
        let got = stream.read(&mut chunk).expect("read");
        assert!(got > 0, "closed");
        buf.extend_from_slice(&chunk[..got]);
    }
}

fn wait_subscribed(redis: &redis::Client, nodes: i64) {
    let mut conn = redis.get_connection().unwrap();
    let start = Instant::now();
    loop {
        let reply: Vec<redis::Value> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("wsloop:room")
            .query(&mut conn)
            .unwrap();
        let n: i64 = redis::from_redis_value_ref(&reply[1]).unwrap();
        if n >= nodes {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nodes did not subscribe"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn latency(a: SocketAddr, b: SocketAddr, redis: &redis::Client, rounds: usize) {
    let mut publisher = open(a);
    let mut same = open(a);
    let mut cross = open(b);
    wait_subscribed(redis, 2);
    let (mut pbuf, mut sbuf, mut cbuf) = (Vec::new(), Vec::new(), Vec::new());
    let (mut same_t, mut cross_t) = (Vec::new(), Vec::new());
    for i in 0..rounds + 100 {
        let payload = (i as u64).to_be_bytes();
        let sent = Instant::now();
        publisher.write_all(&frame(&payload)).unwrap();
        assert_eq!(read_payload(&mut same, &mut sbuf), payload);
        let t_same = sent.elapsed();
        assert_eq!(read_payload(&mut cross, &mut cbuf), payload);
        let t_cross = sent.elapsed();
        assert_eq!(read_payload(&mut publisher, &mut pbuf), payload);
        if i >= 100 {
            // The first hundred warm up.
            same_t.push(t_same);
            cross_t.push(t_cross);
        }
    }
    same_t.sort();
    cross_t.sort();
    println!("| latency, {rounds} messages one at a time | p50 | p99 |");
    println!("|---|---|---|");
    for (name, t) in [("same node", &same_t), ("across Redis", &cross_t)] {
        println!(
            "| {name} | {:.0} µs | {:.0} µs |",
            percentile(t, 0.5).as_secs_f64() * 1e6,
            percentile(t, 0.99).as_secs_f64() * 1e6
        );
    }
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

/// One fan-out run: msgs/s delivered and Redis's CPU share of the wall time.
fn fanout(
    a: SocketAddr,
    b: Option<SocketAddr>,
    subscribers: usize,
    messages: usize,
    redis_pid: u32,
) -> (f64, f64) {
    let subs: Vec<TcpStream> = (0..subscribers)
        .map(|i| open(if i % 2 == 1 { b.unwrap_or(a) } else { a }))
        .collect();
    let mut publisher = open(a);
    let mut wire = Vec::new();
    for _ in 0..messages {
        wire.extend(frame(&[0x5A; 64]));
    }
    // Everyone, publisher included, is in the room.
    std::thread::sleep(Duration::from_millis(200));
    let ticks = cpu_ticks(redis_pid);
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        publisher.write_all(&wire).unwrap();
        publisher
    });
    collect(subs, messages);
    let elapsed = start.elapsed().as_secs_f64();
    let redis_cpu = (cpu_ticks(redis_pid) - ticks) as f64 / 100.0;
    drop(writer.join().unwrap());
    (
        (subscribers * messages) as f64 / elapsed,
        redis_cpu / elapsed,
    )
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
    while let Some(flag) = args.next() {
        let value: usize = args
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a number after each flag");
        match flag.as_str() {
            "--subscribers" => subscribers = value,
            "--messages" => messages = value,
            "--runs" => runs = value,
            "--rounds" => rounds = value,
            _ => panic!("flags: --subscribers --messages --runs --rounds"),
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
    let (a, bridge_a) = node(&url);
    let (b, bridge_b) = node(&url);
    println!(
        "cluster bench: two nodes (one worker each) and redis-server {}, on this machine",
        redis_version()
    );
    latency(a.local_addr(), b.local_addr(), &client, rounds);

    let (mut one, mut two, mut redis_share) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        let (rate_one, _) = fanout(a.local_addr(), None, subscribers, messages, redis_pid);
        let (rate_two, share) = fanout(
            a.local_addr(),
            Some(b.local_addr()),
            subscribers,
            messages,
            redis_pid,
        );
        println!("  run {}: one node {rate_one:>10.0}/s   two nodes {rate_two:>10.0}/s   redis CPU {:.0}%", r + 1, share * 100.0);
        one.push(rate_one);
        two.push(rate_two);
        redis_share.push(share);
    }
    let (one, two) = (median(one), median(two));
    println!("| fan-out, 1 publisher, {subscribers} subscribers, {messages} x 64 B | delivered msgs/s (median of {runs}) | Redis CPU |");
    println!("|---|---|---|");
    println!("| one node, one worker | {one:.0} | — |");
    println!("| two nodes through Redis, half the subscribers on each | {two:.0} ({:.2}x) | {:.0}% of a core |", two / one, median(redis_share) * 100.0);
    println!("{}\n{}", bridge_a.counters(), bridge_b.counters());
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
