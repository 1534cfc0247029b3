//! Benchmark: one publisher, many subscribers spread over all workers.
//!
//! ```text
//! cargo run --release --example broadcast_bench -- --subscribers 1000 --messages 2000 --runs 5
//! ```
//!
//! Two ways to fan out the same messages, measured side by side, A B A B:
//! - **topic**: every subscriber is on one topic; each message is encoded
//!   once and the same frame bytes go to everyone.
//! - **per-subscriber**: each subscriber has its own topic, and the
//!   publisher publishes each message once per subscriber, so the frame is
//!   encoded (and routed) once per subscriber: the naive baseline.
//!
//! It prints messages delivered per second for each, the median over the
//! runs, and the ratio.
//!
//! With `--deflate` (built with `--features deflate`) it compares instead
//! the topic fan-out of compressible chat text to subscribers that did not
//! offer permessage-deflate and to subscribers that did, and adds the
//! workers' CPU time per delivered message (from /proc):
//!
//! ```text
//! cargo run --release --features deflate --example broadcast_bench -- --deflate --size 1024
//! ```

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use common::fanout::{collect, median, open};
use wsloop::frame::OpCode;

use wsloop::protocol::encode_frame;
use wsloop::{Config, Conn, Handler, Message, Request, Server, Upgrade};

mod common;

/// Subscribers join `/sub?i=N`; the publisher is `/pub?mode=topic|each&n=S`.
struct Fanout {
    subscribers: usize,
}

impl Handler for Fanout {
    /// The request path, which says what the connection is for.
    type Data = String;

    fn on_upgrade(&mut self, req: &Request<'_>, _peer: SocketAddr) -> Upgrade<String> {
        Upgrade::accept(req.path.to_owned())
    }

    fn on_open(&mut self, conn: &mut Conn<'_, String>) {
        if let Some(i) = conn.data().strip_prefix("/sub?i=") {
            let own = format!("sub-{i}");
            conn.subscribe("all");
            conn.subscribe(&own);
        }
    }

    fn on_message(&mut self, conn: &mut Conn<'_, String>, msg: Message<'_>) {
        if conn.data().starts_with("/pub?mode=topic") {
            let _ = conn.publish("all", msg);
        } else {
            for i in 0..self.subscribers {
                let _ = conn.publish(&format!("sub-{i}"), msg);
            }
        }
    }
}

struct Args {
    subscribers: usize,
    messages: usize,
    size: usize,
    runs: usize,
    workers: usize,
    deflate: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        subscribers: 1000,
        messages: 2000,
        size: 64,
        runs: 5,
        workers: 0,
        deflate: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--deflate" {
            if !cfg!(feature = "deflate") {
                return Err("--deflate needs --features deflate".into());
            }
            args.deflate = true;
            continue;
        }
        let value: usize = it
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--subscribers" => args.subscribers = value,
            "--messages" => args.messages = value,
            "--size" => args.size = value,
            "--runs" => args.runs = value,
            "--workers" => args.workers = value,
            _ => {
                return Err(format!(
                    "unknown flag {flag}; flags: --subscribers --messages --size --runs --workers --deflate"
                ))
            }
        }
    }
    Ok(args)
}

/// CPU time of the server's worker threads (named `wsloop-N`), from
/// /proc/self/task, in seconds.
fn worker_cpu() -> f64 {
    let ticks: u64 = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with("wsloop-"))
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .map(|stat| {
            // Fields after the parenthesised name: utime and stime are the
            // 12th and 13th.
            let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
        })
        .sum();
    // The kernel's USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

/// A chat line of `size` bytes: compressible, as chat text is.
fn chat_text(size: usize) -> Vec<u8> {
    let words = [
        "alice", "bob", "lobby", "meeting", "moved", "to", "room", "four", "at", "noon",
    ];
    let mut text = String::new();
    let mut i = 7usize;
    while text.len() < size {
        i = i.wrapping_mul(31).wrapping_add(17) % 1009;
        text.push_str(words[i % words.len()]);
        text.push(' ');
    }
    text.truncate(size);
    text.into_bytes()
}

/// One run: returns messages delivered per second, and the workers' CPU
/// seconds per delivered message. Subscribers offer permessage-deflate if
/// `offer`.
fn run(addr: SocketAddr, args: &Args, mode: &str, offer: bool) -> (f64, f64) {
    let subs: Vec<TcpStream> = (0..args.subscribers)
        .map(|i| open(addr, &format!("/sub?i={i}"), offer))
        .collect();
    let mut publisher = open(addr, &format!("/pub?mode={mode}"), false);
    let (opcode, payload) = if args.deflate {
        (OpCode::Text, chat_text(args.size))
    } else {
        (OpCode::Binary, vec![0x5A; args.size])
    };
    let mut wire = Vec::new();
    for _ in 0..args.messages {
        encode_frame(&mut wire, true, opcode, Some([1, 2, 3, 4]), &payload);
    }
    let cpu = worker_cpu();
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        publisher.write_all(&wire).unwrap();
        publisher
    });
    collect(subs, args.messages);
    let elapsed = start.elapsed();
    let cpu = worker_cpu() - cpu;
    drop(writer.join().unwrap());
    let delivered = (args.subscribers * args.messages) as f64;
    (delivered / elapsed.as_secs_f64(), cpu / delivered)
}

/// Topic against per-subscriber publishing, plain frames.
fn compare_fanout(addr: SocketAddr, args: &Args) {
    let (mut topic, mut each) = (Vec::new(), Vec::new());
    for r in 0..args.runs {
        topic.push(run(addr, args, "topic", false).0);
        each.push(run(addr, args, "each", false).0);
        println!(
            "  run {}: topic {:>12.0}/s   per-subscriber {:>12.0}/s",
            r + 1,
            topic[r],
            each[r]
        );
    }
    let (t, e) = (median(topic), median(each));
    println!("| fan-out | delivered msgs/s (median) |");
    println!("|---|---|");
    println!("| topic, encoded once | {t:.0} |");
    println!("| per-subscriber encode (baseline) | {e:.0} |");
    println!("ratio topic / baseline: {:.2}x", t / e);
}

/// The topic fan-out of chat text to subscribers without and with
/// permessage-deflate.
fn compare_deflate(addr: SocketAddr, args: &Args) {
    let (mut plain, mut deflate) = (Vec::new(), Vec::new());
    for r in 0..args.runs {
        plain.push(run(addr, args, "topic", false));
        deflate.push(run(addr, args, "topic", true));
        println!(
            "  run {}: plain {:>10.0}/s {:>6.3} us/msg   deflate {:>10.0}/s {:>6.3} us/msg",
            r + 1,
            plain[r].0,
            plain[r].1 * 1e6,
            deflate[r].0,
            deflate[r].1 * 1e6
        );
    }
    let rate = |v: &[(f64, f64)]| median(v.iter().map(|x| x.0).collect());
    let cpu = |v: &[(f64, f64)]| median(v.iter().map(|x| x.1).collect());
    println!(
        "| fan-out of {} B chat text | delivered msgs/s (median) | worker CPU per delivered msg |",
        args.size
    );
    println!("|---|---|---|");
    println!(
        "| plain frames | {:.0} | {:.3} us |",
        rate(&plain),
        cpu(&plain) * 1e6
    );
    println!(
        "| permessage-deflate, compressed once per worker | {:.0} | {:.3} us |",
        rate(&deflate),
        cpu(&deflate) * 1e6
    );
    println!(
        "CPU ratio deflate / plain: {:.2}x",
        cpu(&deflate) / cpu(&plain)
    );
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    common::has_proc("broadcast_bench", "the CPU figures (0 here)");
    let subscribers = args.subscribers;
    let config = Config::default()
        .workers(args.workers)
        .ping_interval(None)
        .max_write_buffer(64 << 20);
    #[cfg(feature = "deflate")]
    let config = config.deflate(Some(wsloop::deflate::DeflateConfig::default()));
    let workers = config.worker_count();
    let server = Server::bind("127.0.0.1:0", config, move || Fanout { subscribers }).expect("bind");
    let addr = server.local_addr();
    println!(
        "broadcast: {} subscribers over {workers} workers, {} messages of {} B, {} runs (A B A B)",
        args.subscribers, args.messages, args.size, args.runs
    );
    if args.deflate {
        compare_deflate(addr, &args);
    } else {
        compare_fanout(addr, &args);
    }
    server.shutdown_handle().shutdown();
    let _ = server.join();
}
