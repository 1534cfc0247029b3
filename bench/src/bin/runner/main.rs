//! Runs the whole benchmark: wsloop against its peers in echo, fan-out,
//! handshakes and idle memory, then the scaling demonstration against a
//! thread per connection. `bench/run.sh` builds everything and calls this.
//!
//! ```text
//! runner [--quick] [--repeats N] [--out DIR] [--uws DIR]
//! runner --tls [--quick] [--repeats N] [--out DIR] [--uws DIR]
//! ```
//!
//! `--tls` runs the TLS comparison instead (`tls.rs`): wsloop's own wss://
//! against tokio-rustls in front of the tokio peers and nginx in front of
//! a plain wsloop (and uWebSockets on OpenSSL, `uws_tls_echo` in the
//! `--uws` DIR), and writes `DIR/bench-tls.json`.
//!
//! `--uws DIR` adds uWebSockets: DIR holds `uws_echo` and `uws_pubsub`,
//! built from `bench/uws/` by `bench/run.sh --uws CHECKOUT`.
//!
//! Every measurement starts a fresh server process and runs the load
//! generator (`examples/loadgen.rs`, or `fanout_client` for fan-out)
//! against it. The servers take turns
//! (A B C D, then B C D A, ...) so that a slow minute on this shared machine
//! hits all of them alike; the table shows medians. The machine has 2 cores:
//! each server gets 1 thread and the load generator the other core.
//!
//! Results go to `DIR/bench.json`, `DIR/scaling.json` (raw runs and
//! medians) and `DIR/bench.svg`, `DIR/scaling.svg`.

mod fanout;
mod measure;
mod nginx;
mod procfs;
mod report;
mod tls;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use serde_json::{json, Value};

use fanout::FanoutClient;
use measure::{add_syscalls, idle_memory, measure, scaling_point, Loadgen};
use procfs::machine;
use report::{num, print_tables, scenario_name, summarize, write_outputs};

/// Server threads, and load generator threads: one core each.
pub const SERVER_THREADS: usize = 1;
pub const LOADGEN_THREADS: usize = 1;

/// The settings of one run of the whole benchmark.
struct Plan {
    quick: bool,
    repeats: usize,
    duration: f64,
    handshake_duration: f64,
    handshake_slots: usize,
    idle_connections: usize,
    scaling_counts: Vec<usize>,
    scaling_duration: f64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                repeats: 1,
                duration: 1.0,
                handshake_duration: 1.0,
                handshake_slots: 32,
                idle_connections: 2_000,
                scaling_counts: vec![100, 1_000],
                scaling_duration: 4.0,
            }
        } else {
            Plan {
                quick,
                repeats: 5,
                duration: 3.0,
                handshake_duration: 2.0,
                handshake_slots: 32,
                idle_connections: 10_000,
                scaling_counts: vec![100, 1_000, 5_000, 15_000],
                scaling_duration: 10.0,
            }
        }
    }
}

/// The throughput scenarios: connections, payload bytes, and messages in
/// flight per connection. One in flight is ping-pong, bound by two
/// syscalls per message for every server; several in flight (pipelined)
/// show what batching the replies of one read is worth; 10,000
/// connections show what each server pays per connection it polls.
const SCENARIOS: [(usize, usize, usize); 6] = [
    (100, 20, 1),
    (1_000, 1_024, 1),
    (200, 16_384, 1),
    (100, 20, 16),
    (1_000, 1_024, 4),
    (10_000, 20, 1),
];

/// A server under test and how to start it.
#[derive(Debug, Clone)]
pub struct Server {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Plain TCP: the load generator runs with `--raw`.
    pub raw: bool,
    /// The path and query a fan-out client upgrades on.
    pub path: &'static str,
    /// wss://: the load generator trusts this CA certificate.
    pub tls_ca: Option<PathBuf>,
    /// nginx in front of the server, terminating TLS.
    pub front: Option<nginx::Front>,
}

fn main() -> ExitCode {
    let mut quick = false;
    let mut repeats = None;
    let mut out = PathBuf::from("docs");
    let mut uws = None;
    let mut tls = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--quick" => quick = true,
            "--tls" => tls = true,
            "--repeats" => match args.next().and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n > 0 => repeats = Some(n),
                _ => return usage(),
            },
            "--out" => match args.next() {
                Some(dir) => out = dir.into(),
                None => return usage(),
            },
            "--uws" => match args.next() {
                Some(dir) => uws = Some(PathBuf::from(dir)),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    let result = if tls {
        tls::run(quick, repeats, &out, uws.as_deref())
    } else {
        let mut plan = Plan::new(quick);
        plan.repeats = repeats.unwrap_or(plan.repeats);
        run(&plan, &out, uws.as_deref())
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("runner: FAILED: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: runner [--tls] [--quick] [--repeats N] [--out DIR] [--uws DIR]");
    ExitCode::from(2)
}

/// The directory of the runner, where the other binaries are too.
fn bin_dir() -> Result<PathBuf, String> {
    Ok(std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .ok_or("the runner has no directory")?
        .to_owned())
}

/// The load generator's flags for an echo scenario.
pub(crate) fn echo_args(
    plan: &Plan,
    connections: usize,
    size: usize,
    in_flight: usize,
) -> [String; 8] {
    [
        "--connections".into(),
        connections.to_string(),
        "--size".into(),
        size.to_string(),
        "--in-flight".into(),
        in_flight.to_string(),
        "--duration".into(),
        plan.duration.to_string(),
    ]
}

/// The load generator's flags for the handshake measurement.
pub(crate) fn handshake_args(plan: &Plan) -> [String; 5] {
    [
        "--handshakes".into(),
        "--connections".into(),
        plan.handshake_slots.to_string(),
        "--duration".into(),
        plan.handshake_duration.to_string(),
    ]
}

/// The tokio-based echo peers, each as it comes and in the fastest set-up
/// we found (see their binaries), made by `server` from a name, a program
/// and its flags.
pub fn tokio_peers(
    bins: &Path,
    threads: &str,
    server: impl Fn(&'static str, PathBuf, &[&str]) -> Server,
) -> Vec<Server> {
    [
        ("tokio-tungstenite", "tokio_tungstenite_echo", false),
        ("tokio-tungstenite tuned", "tokio_tungstenite_echo", true),
        ("fastwebsockets", "fastwebsockets_echo", false),
        ("fastwebsockets tuned", "fastwebsockets_echo", true),
    ]
    .into_iter()
    .map(|(name, program, tuned)| {
        let args = ["--threads", threads, "--tuned"];
        server(name, bins.join(program), &args[..if tuned { 3 } else { 2 }])
    })
    .collect()
}

fn run(plan: &Plan, out: &Path, uws: Option<&Path>) -> Result<(), String> {
    let started = Instant::now();
    let bins = bin_dir()?;
    let examples = bins.join("examples");
    let threads = SERVER_THREADS.to_string();
    let server = |name, program: PathBuf, args: &[&str], raw| Server {
        name,
        program,
        args: args.iter().map(|s| s.to_string()).collect(),
        raw,
        path: "/",
        tls_ca: None,
        front: None,
    };
    let wsloop = server(
        "wsloop",
        examples.join("echo"),
        &["--addr", "127.0.0.1:0", "--workers", &threads],
        false,
    );
    let mut peers = vec![wsloop.clone()];
    peers.extend(tokio_peers(&bins, &threads, |name, program, args| {
        server(name, program, args, false)
    }));
    peers.extend([server(
        "raw mio TCP",
        bins.join("raw_mio_echo"),
        &["--threads", &threads],
        true,
    )]);
    let blocking = server(
        "thread per connection",
        examples.join("thread_per_connection"),
        &["--addr", "127.0.0.1:0"],
        false,
    );
    // uWebSockets when it was built (`--uws`), right after wsloop: it is
    // the reference the others are read against.
    if let Some(dir) = uws {
        peers.insert(
            1,
            server("uWebSockets", dir.join("uws_echo"), &["0"], false),
        );
    } else {
        eprintln!(
            "runner: without uWebSockets: to add it, get a checkout (docs/BENCHMARKS.md says how) and run bash bench/run.sh --uws DIR"
        );
    }
    // Fan-out: the same servers' broadcast set-ups, one thread each.
    let mut fanout_servers = vec![
        Server {
            path: "/?room=bench",
            ..server(
                "wsloop",
                examples.join("rooms"),
                &["--addr", "127.0.0.1:0", "--workers", &threads],
                false,
            )
        },
        server(
            "tokio-tungstenite",
            bins.join("tokio_tungstenite_fanout"),
            &["--threads", &threads],
            false,
        ),
        server(
            "fastwebsockets",
            bins.join("fastwebsockets_fanout"),
            &["--threads", &threads],
            false,
        ),
    ];
    if let Some(dir) = uws {
        fanout_servers.insert(
            1,
            server("uWebSockets", dir.join("uws_pubsub"), &["0"], false),
        );
    }
    let loadgen = examples.join("loadgen");
    let fanout_client = FanoutClient {
        program: bins.join("fanout_client"),
    };
    for program in peers
        .iter()
        .chain(&fanout_servers)
        .map(|s| &s.program)
        .chain([&blocking.program, &loadgen, &fanout_client.program])
    {
        if !program.exists() {
            return Err(format!(
                "{} is missing: run bench/run.sh",
                program.display()
            ));
        }
    }
    let lg = Loadgen { program: loadgen };
    let machine = machine();
    eprintln!(
        "runner: {}; servers {SERVER_THREADS} thread, loadgen {LOADGEN_THREADS} thread, {} repeats x {} s{}",
        machine["cpu"].as_str().unwrap_or("?"),
        plan.repeats,
        plan.duration,
        if plan.quick { " (quick)" } else { "" }
    );

    // 1. Echo throughput, servers taking turns within each repeat.
    let mut scenarios = Vec::new();
    for &(connections, size, in_flight) in &SCENARIOS {
        let args = echo_args(plan, connections, size, in_flight);
        let runs = rounds(
            &peers,
            plan,
            |s| measure(s, &lg, &args),
            |server, rep, result| {
                format!(
                "runner: {connections} x {size} B x {in_flight}  {:<24} #{}  {:>9.0} msg/s  p99 {:>8.0} us  cpu: server {:>3.0}%, loadgen {:>3.0}%",
                server.name,
                rep + 1,
                num(result, "per_s"),
                num(result, "p99_us"),
                num(result, "server_cpu") * 100.0,
                num(result, "loadgen_cpu") * 100.0
            )
            },
        )?;
        let mut summary = summarize(
            json!({"name": scenario_name(connections, size, in_flight), "connections": connections, "size": size, "in_flight": in_flight}),
            &peers,
            runs,
        );
        // A smoke run counts no syscalls: one strace run per server and
        // scenario would double its length.
        if !plan.quick {
            add_syscalls(&mut summary, &peers, &lg, &args);
        }
        scenarios.push(summary);
    }

    // 2. Fan-out: one publisher, every connection a subscriber.
    let mut fanouts = Vec::new();
    for size in fanout::SIZES {
        let measure = |s: &Server| fanout::measure(s, &fanout_client, size, plan.duration);
        let runs = rounds(&fanout_servers, plan, measure, |server, rep, result| {
            format!(
                "runner: fan-out {} x {size} B  {:<24} #{}  {:>9.0} deliveries/s  {:>6.3} us cpu each  cpu: server {:>3.0}%, client {:>3.0}%",
                fanout::SUBSCRIBERS,
                server.name,
                rep + 1,
                num(result, "per_s"),
                num(result, "server_us_per_op"),
                num(result, "server_cpu") * 100.0,
                num(result, "loadgen_cpu") * 100.0
            )
        })?;
        fanouts.push(summarize(
            json!({
                "name": format!("{} subscribers x {}, {} in flight", fanout::SUBSCRIBERS, report::bytes(size), fanout::IN_FLIGHT),
                "subscribers": fanout::SUBSCRIBERS,
                "size": size,
                "in_flight": fanout::IN_FLIGHT,
            }),
            &fanout_servers,
            runs,
        ));
    }

    // 3. Handshakes per second: connect, upgrade, close, in a loop.
    let args = handshake_args(plan);
    let runs = rounds(
        &peers,
        plan,
        |s| measure(s, &lg, &args),
        |server, rep, result| {
            format!(
                "runner: handshakes  {:<24} #{}  {:>9.0} /s",
                server.name,
                rep + 1,
                num(result, "per_s")
            )
        },
    )?;
    let mut handshakes = summarize(
        json!({"name": "handshakes", "slots": plan.handshake_slots}),
        &peers,
        runs,
    );
    if !plan.quick {
        add_syscalls(&mut handshakes, &peers, &lg, &args);
    }

    // 4. Memory per idle connection.
    let mut idle = Vec::new();
    for server in &peers {
        let result = idle_memory(server, &lg, plan.idle_connections)?;
        eprintln!(
            "runner: idle {} conns  {:<24} {:>7.0} B per connection, {} threads",
            plan.idle_connections,
            server.name,
            num(&result, "bytes_per_connection"),
            result["threads"]
        );
        idle.push(result);
    }

    // 5. The scaling demonstration: mostly idle connections, 1 msg/s each.
    let mut scaling = Vec::new();
    for &connections in &plan.scaling_counts {
        for server in [&wsloop, &blocking] {
            let result = scaling_point(server, &lg, connections, plan.scaling_duration)?;
            eprintln!(
                "runner: scaling {connections:>6} conns  {:<24} rss {:>8.1} MiB  threads {:>6}  ctx switches {:>8.0}/s  p99 {:>8.0} us",
                server.name,
                num(&result, "rss_kib") / 1024.0,
                result["threads"],
                num(&result, "ctx_switches_per_s"),
                num(&result, "p99_us"),
            );
            scaling.push(result);
        }
    }

    let wall = started.elapsed().as_secs_f64();
    let settings = json!({
        "quick": plan.quick,
        "server_threads": SERVER_THREADS,
        "loadgen_threads": LOADGEN_THREADS,
        "repeats": plan.repeats,
        "duration_s": plan.duration,
        "handshake_duration_s": plan.handshake_duration,
        "wall_s": wall,
    });
    let bench = json!({
        "machine": machine,
        "settings": settings,
        "scenarios": scenarios,
        "fanout": fanouts,
        "handshakes": handshakes,
        "idle": {"connections": plan.idle_connections, "servers": idle},
    });
    let scaling = json!({
        "machine": machine,
        "settings": {"rate_per_connection": 1, "duration_s": plan.scaling_duration, "wsloop_workers": SERVER_THREADS, "quick": plan.quick},
        "points": scaling,
    });
    print_tables(&bench, &scaling);
    write_outputs(out, &bench, &scaling)?;
    println!(
        "\nwall time {wall:.0} s; wrote {}/bench.{{json,svg}} and scaling.{{json,svg}}",
        out.display()
    );
    Ok(())
}

/// Runs `measure` against every server, `plan.repeats` times, the servers
/// taking turns; prints `line` for each run. Returns each server's results,
/// in the order of `servers`.
fn rounds(
    servers: &[Server],
    plan: &Plan,
    measure: impl Fn(&Server) -> Result<Value, String>,
    line: impl Fn(&Server, usize, &Value) -> String,
) -> Result<Vec<Vec<Value>>, String> {
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); servers.len()];
    for rep in 0..plan.repeats {
        for (i, server) in turns(servers, rep) {
            let result = measure(server)?;
            eprintln!("{}", line(server, rep, &result));
            runs[i].push(result);
        }
    }
    Ok(runs)
}

/// The servers in turn for repeat `rep`, each repeat starting one later, so
/// that no server always runs right after the same other one.
fn turns(servers: &[Server], rep: usize) -> impl Iterator<Item = (usize, &Server)> {
    (0..servers.len()).map(move |k| {
        let i = (k + rep) % servers.len();
        (i, &servers[i])
    })
}
