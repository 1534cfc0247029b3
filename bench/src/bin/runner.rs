//! Runs the whole benchmark: wsloop against its peers, then the scaling
//! demonstration against a thread per connection. `bench/run.sh` builds
//! everything and calls this.
//!
//! ```text
//! runner [--quick] [--repeats N] [--out DIR]
//! ```
//!
//! Every measurement starts a fresh server process and runs the load
//! generator (`examples/loadgen.rs`) against it. The servers take turns
//! (A B C D, then B C D A, ...) so that a slow minute on this shared machine
//! hits all of them alike; the table shows medians. The machine has 2 cores:
//! each server gets 1 thread and the load generator the other core.
//!
//! Results go to `DIR/bench.json`, `DIR/scaling.json` (raw runs and
//! medians) and `DIR/bench.svg`, `DIR/scaling.svg`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wsloop_bench::svg::{self, Chart, Group, Panel};
use wsloop_bench::{status_kib, Running};

/// Server threads, and load generator threads: one core each.
const SERVER_THREADS: usize = 1;
const LOADGEN_THREADS: usize = 1;

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
                duration: 2.0,
                handshake_duration: 2.0,
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
struct Server {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    /// Plain TCP: the load generator runs with `--raw`.
    raw: bool,
}

fn main() -> ExitCode {
    let mut quick = false;
    let mut repeats = None;
    let mut out = PathBuf::from("docs");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--quick" => quick = true,
            "--repeats" => match args.next().and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n > 0 => repeats = Some(n),
                _ => return usage(),
            },
            "--out" => match args.next() {
                Some(dir) => out = dir.into(),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    let mut plan = Plan::new(quick);
    plan.repeats = repeats.unwrap_or(plan.repeats);
    match run(&plan, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("runner: FAILED: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: runner [--quick] [--repeats N] [--out DIR]");
    ExitCode::from(2)
}

fn run(plan: &Plan, out: &Path) -> Result<(), String> {
    let started = Instant::now();
    let bins = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .ok_or("the runner has no directory")?
        .to_owned();
    let examples = bins.join("examples");
    let threads = SERVER_THREADS.to_string();
    let server = |name, program: PathBuf, args: &[&str], raw| Server {
        name,
        program,
        args: args.iter().map(|s| s.to_string()).collect(),
        raw,
    };
    let wsloop = server(
        "wsloop",
        examples.join("echo"),
        &["--addr", "127.0.0.1:0", "--workers", &threads],
        false,
    );
    let peers = vec![
        wsloop.clone(),
        server(
            "tokio-tungstenite",
            bins.join("tokio_tungstenite_echo"),
            &["--threads", &threads],
            false,
        ),
        // Each peer also in the fastest set-up we found (see its binary).
        server(
            "tokio-tungstenite tuned",
            bins.join("tokio_tungstenite_echo"),
            &["--threads", &threads, "--tuned"],
            false,
        ),
        server(
            "fastwebsockets",
            bins.join("fastwebsockets_echo"),
            &["--threads", &threads],
            false,
        ),
        server(
            "fastwebsockets tuned",
            bins.join("fastwebsockets_echo"),
            &["--threads", &threads, "--tuned"],
            false,
        ),
        server(
            "raw mio TCP",
            bins.join("raw_mio_echo"),
            &["--threads", &threads],
            true,
        ),
    ];
    let blocking = server(
        "thread per connection",
        examples.join("thread_per_connection"),
        &["--addr", "127.0.0.1:0"],
        false,
    );
    let loadgen = examples.join("loadgen");
    for program in peers
        .iter()
        .map(|s| &s.program)
        .chain([&blocking.program, &loadgen])
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
        let args = [
            "--connections".into(),
            connections.to_string(),
            "--size".into(),
            size.to_string(),
            "--in-flight".into(),
            in_flight.to_string(),
            "--duration".into(),
            plan.duration.to_string(),
        ];
        let runs = rounds(&peers, plan, &lg, &args, |server, rep, result| {
            format!(
                "runner: {connections} x {size} B x {in_flight}  {:<24} #{}  {:>9.0} msg/s  p99 {:>8.0} us  cpu: server {:>3.0}%, loadgen {:>3.0}%",
                server.name,
                rep + 1,
                num(result, "per_s"),
                num(result, "p99_us"),
                num(result, "server_cpu") * 100.0,
                num(result, "loadgen_cpu") * 100.0
            )
        })?;
        let mut summary = summarize(
            json!({"name": scenario_name(connections, size, in_flight), "connections": connections, "size": size, "in_flight": in_flight}),
            &peers,
            runs,
        );
        add_syscalls(&mut summary, &peers, &lg, &args);
        scenarios.push(summary);
    }

    // 2. Handshakes per second: connect, upgrade, close, in a loop.
    let args = [
        "--handshakes".into(),
        "--connections".into(),
        plan.handshake_slots.to_string(),
        "--duration".into(),
        plan.handshake_duration.to_string(),
    ];
    let runs = rounds(&peers, plan, &lg, &args, |server, rep, result| {
        format!(
            "runner: handshakes  {:<24} #{}  {:>9.0} /s",
            server.name,
            rep + 1,
            num(result, "per_s")
        )
    })?;
    let mut handshakes = summarize(
        json!({"name": "handshakes", "slots": plan.handshake_slots}),
        &peers,
        runs,
    );
    add_syscalls(&mut handshakes, &peers, &lg, &args);

    // 3. Memory per idle connection.
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

    // 4. The scaling demonstration: mostly idle connections, 1 msg/s each.
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

/// The servers in turn for repeat `rep`, each repeat starting one later, so
/// that no server always runs right after the same other one.
/// Runs the load generator with `args` against every server, `plan.repeats`
/// times, the servers taking turns; prints `line` for each run. Returns
/// each server's results, in the order of `servers`.
fn rounds(
    servers: &[Server],
    plan: &Plan,
    lg: &Loadgen,
    args: &[String],
    line: impl Fn(&Server, usize, &Value) -> String,
) -> Result<Vec<Vec<Value>>, String> {
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); servers.len()];
    for rep in 0..plan.repeats {
        for (i, server) in turns(servers, rep) {
            let result = measure(server, lg, args)?;
            eprintln!("{}", line(server, rep, &result));
            runs[i].push(result);
        }
    }
    Ok(runs)
}

fn turns(servers: &[Server], rep: usize) -> impl Iterator<Item = (usize, &Server)> {
    (0..servers.len()).map(move |k| {
        let i = (k + rep) % servers.len();
        (i, &servers[i])
    })
}

// ---------------------------------------------------------------------------
// Servers and the load generator as child processes.

struct Loadgen {
    program: PathBuf,
}

impl Loadgen {
    /// Starts the load generator against `server`.
    fn spawn(&self, server: &Server, running: &Running, args: &[String]) -> Result<Child, String> {
        let mut cmd = Command::new(&self.program);
        cmd.arg("--url")
            .arg(format!("ws://{}/", running.addr))
            .arg("--threads")
            .arg(LOADGEN_THREADS.to_string())
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if server.raw {
            cmd.arg("--raw");
        }
        cmd.spawn()
            .map_err(|e| format!("cannot start the load generator: {e}"))
    }
}

/// Waits for the load generator (whose stdout may be partly read) and
/// returns its JSON line, or its stderr as the error.
fn finish(
    mut child: Child,
    mut stdout: BufReader<std::process::ChildStdout>,
    what: &str,
) -> Result<Value, String> {
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("load generator failed on {what}:\n{stderr}"));
    }
    rest.lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or(format!("load generator printed no JSON on {what}"))
}

/// One load generator run against a fresh server, with the server's CPU
/// use over the run (1.0 = one core busy).
fn measure(server: &Server, lg: &Loadgen, args: &[String]) -> Result<Value, String> {
    let running = Running::start(&server.program, &server.args, server.name)?;
    let mut child = lg.spawn(server, &running, args)?;
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let handshakes = args.iter().any(|a| a == "--handshakes");
    if !handshakes {
        // The measured interval starts when every connection is open.
        wait_for_connected(&mut stdout);
    }
    let pid = running.pid();
    let (cpu0, t0) = (cpu_ticks(pid), Instant::now());
    let mut result = finish(child, stdout, server.name)?;
    let cpu1 = cpu_ticks(pid);
    let secs = t0.elapsed().as_secs_f64();
    // Fractions of one core over the interval, user and system.
    let user = (cpu1.0 - cpu0.0) as f64 / clock_ticks() / secs;
    let sys = (cpu1.1 - cpu0.1) as f64 / clock_ticks() / secs;
    result["server_cpu"] = json!(user + sys);
    // Per message or handshake: what a load generator that is itself at
    // 100% cannot cap.
    let per_s = num(&result, "per_s");
    let per_op = |per_second: f64| if per_s > 0.0 { per_second / per_s } else { 0.0 };
    result["server_us_per_op"] = json!(per_op((user + sys) * 1e6));
    result["server_user_us_per_op"] = json!(per_op(user * 1e6));
    result["server_sys_us_per_op"] = json!(per_op(sys * 1e6));
    Ok(result)
}

/// Adds each server's syscalls per message or handshake to a summary,
/// counted by `strace -c` in one extra run per server (strace slows the
/// server, so that run's rate is not used). Skipped without strace.
fn add_syscalls(summary: &mut Value, servers: &[Server], lg: &Loadgen, args: &[String]) {
    let have_strace = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_strace {
        return;
    }
    let Some(results) = summary["results"].as_array_mut() else {
        return;
    };
    for (server, result) in servers.iter().zip(results) {
        match syscalls_per_op(server, lg, args) {
            Ok(per_op) => {
                eprintln!("runner: syscalls  {:<24} {per_op:>6.2} per op", server.name);
                result["syscalls_per_op"] = json!(per_op);
            }
            Err(e) => eprintln!("runner: syscalls  {:<24} not counted: {e}", server.name),
        }
    }
}

/// One run with `strace -c -f` attached to the server: its syscalls
/// divided by the messages or handshakes the load generator counted.
/// For messages, strace attaches once every connection is open and
/// detaches when the measured interval ends, so that the handshakes and
/// closes of 10,000 connections are not counted against the messages.
fn syscalls_per_op(server: &Server, lg: &Loadgen, args: &[String]) -> Result<f64, String> {
    let running = Running::start(&server.program, &server.args, server.name)?;
    let out = std::env::temp_dir().join(format!("wsloop-strace-{}.txt", running.pid()));
    let attach = || {
        Command::new("strace")
            .args(["-c", "-f", "-p", &running.pid().to_string(), "-o"])
            .arg(&out)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("strace: {e}"))
    };
    let handshakes = args.iter().any(|a| a == "--handshakes");
    let duration: f64 = args
        .iter()
        .position(|a| a == "--duration")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(1.0);
    // SIGINT makes strace detach and write its table.
    let (result, mut strace) = if handshakes {
        let strace = attach()?;
        settle();
        let mut child = lg.spawn(server, &running, args)?;
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let result = finish(child, stdout, server.name)?;
        let _ = Command::new("kill")
            .args(["-INT", &strace.id().to_string()])
            .status();
        (result, strace)
    } else {
        let mut child = lg.spawn(server, &running, args)?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        wait_for_connected(&mut stdout);
        let strace = attach()?;
        std::thread::sleep(Duration::from_secs_f64(duration));
        let _ = Command::new("kill")
            .args(["-INT", &strace.id().to_string()])
            .status();
        (finish(child, stdout, server.name)?, strace)
    };
    let _ = strace.wait();
    let table = std::fs::read_to_string(&out).map_err(|e| format!("strace output: {e}"))?;
    let _ = std::fs::remove_file(&out);
    // The last line: "100.00 seconds usecs/call calls [errors] total".
    let calls = table
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with("total"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or("no total line in the strace table")?;
    let ops = num(&result, "count");
    if ops > 0.0 {
        Ok(calls / ops)
    } else {
        Err("no operations counted".into())
    }
}

fn wait_for_connected(stdout: &mut BufReader<ChildStdout>) {
    let mut line = String::new();
    while stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line.starts_with("loadgen: connected") {
            return;
        }
        line.clear();
    }
}

/// Server memory before and after opening `count` idle connections. One
/// connection is opened and closed first, so that what every server sets
/// up once (buffers, tables, the first slab page) is not charged to the
/// connections.
fn idle_memory(server: &Server, lg: &Loadgen, count: usize) -> Result<Value, String> {
    let running = Running::start(&server.program, &server.args, server.name)?;
    let warm = ["--idle", "--connections", "1", "--duration", "1"].map(String::from);
    let mut child = lg.spawn(server, &running, &warm)?;
    let mut warm_out = BufReader::new(child.stdout.take().expect("stdout is piped"));
    wait_for_connected(&mut warm_out);
    finish(child, warm_out, server.name)?;
    settle();
    let before = status_kib(running.pid(), "VmRSS:");
    let args = [
        "--idle".into(),
        "--connections".into(),
        count.to_string(),
        "--duration".into(),
        "2".into(),
    ];
    let mut child = lg.spawn(server, &running, &args)?;
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    wait_for_connected(&mut stdout);
    settle();
    let after = status_kib(running.pid(), "VmRSS:");
    let threads = status_kib(running.pid(), "Threads:");
    finish(child, stdout, server.name)?;
    Ok(json!({
        "server": server.name,
        "connections": count,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "threads": threads,
        "bytes_per_connection": (after.saturating_sub(before) * 1024) as f64 / count as f64,
    }))
}

/// One point of the scaling demonstration.
fn scaling_point(
    server: &Server,
    lg: &Loadgen,
    count: usize,
    duration: f64,
) -> Result<Value, String> {
    let running = Running::start(&server.program, &server.args, server.name)?;
    settle();
    let before = status_kib(running.pid(), "VmRSS:");
    let args = [
        "--connections".into(),
        count.to_string(),
        "--size".into(),
        "64".into(),
        "--rate".into(),
        "1".into(),
        "--duration".into(),
        duration.to_string(),
    ];
    let mut child = lg.spawn(server, &running, &args)?;
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    wait_for_connected(&mut stdout);
    // Context switches over most of the interval, while every connection is
    // up; memory and threads at its end.
    let t0 = Instant::now();
    let switches0 = ctx_switches(running.pid());
    std::thread::sleep(Duration::from_secs_f64((duration - 1.0).max(0.5)));
    let switches1 = ctx_switches(running.pid());
    let secs = t0.elapsed().as_secs_f64();
    let rss = status_kib(running.pid(), "VmRSS:");
    let threads = status_kib(running.pid(), "Threads:");
    let result = finish(child, stdout, server.name)?;
    Ok(json!({
        "server": server.name,
        "connections": count,
        "rss_before_kib": before,
        "rss_kib": rss,
        "threads": threads,
        "ctx_switches": switches1 - switches0,
        "ctx_switches_per_s": (switches1 - switches0) as f64 / secs,
        "messages_per_s": result["per_s"],
        "p50_us": result["p50_us"],
        "p99_us": result["p99_us"],
    }))
}

/// Lets a new process or a burst of connections settle before reading
/// its memory.
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

// ---------------------------------------------------------------------------
// /proc.

/// Voluntary plus involuntary context switches of every thread.
fn ctx_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        total += status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

/// User plus system CPU time of a process, in clock ticks.
/// User and system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0, 0);
    };
    // The command name may hold spaces; the fields after it do not.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return (0, 0);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line.
    (field(11), field(12))
}

fn scenario_name(connections: usize, size: usize, in_flight: usize) -> String {
    if in_flight > 1 {
        format!("{connections} x {}, {in_flight} in flight", bytes(size))
    } else {
        format!("{connections} x {}", bytes(size))
    }
}

/// Clock ticks per second; 100 on every Linux this runs on.
fn clock_ticks() -> f64 {
    100.0
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let memory = status_file_kib("/proc/meminfo", "MemTotal:");
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_mib": memory / 1024,
        "kernel": kernel.trim(),
    })
}

fn status_file_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Summaries, tables and charts.

/// Medians per server and the ratio of each to wsloop (the first server).
fn summarize(mut head: Value, servers: &[Server], runs: Vec<Vec<Value>>) -> Value {
    let keys = [
        "per_s",
        "p99_us",
        "server_cpu",
        "loadgen_cpu",
        "server_us_per_op",
        "server_user_us_per_op",
        "server_sys_us_per_op",
    ];
    let medians: Vec<[f64; 7]> = runs
        .iter()
        .map(|r| keys.map(|key| median(r, key)))
        .collect();
    let (base, base_us) = (medians[0][0], medians[0][4]);
    let results: Vec<Value> = servers
        .iter()
        .zip(runs)
        .zip(&medians)
        .map(|((server, runs), m)| {
            let [per_s, p99, cpu, loadgen_cpu, us_per_op, user_us, sys_us] = *m;
            json!({
                "server": server.name,
                "median_per_s": per_s,
                "median_p99_us": p99,
                "median_server_cpu": cpu,
                "median_loadgen_cpu": loadgen_cpu,
                "median_server_us_per_op": us_per_op,
                "median_server_user_us_per_op": user_us,
                "median_server_sys_us_per_op": sys_us,
                "wsloop_ratio": if per_s > 0.0 { base / per_s } else { 0.0 },
                // Above 1: this server spends more CPU per operation than wsloop.
                "cpu_ratio": if base_us > 0.0 { us_per_op / base_us } else { 0.0 },
                "runs": runs,
            })
        })
        .collect();
    head["results"] = json!(results);
    head
}

fn median(runs: &[Value], key: &str) -> f64 {
    wsloop_bench::median(runs.iter().map(|r| num(r, key)))
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(0.0)
}

fn bytes(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn print_tables(bench: &Value, scaling: &Value) {
    println!(
        "\nEcho throughput and handshakes, medians ({} server thread, {} load generator thread):",
        SERVER_THREADS, LOADGEN_THREADS
    );
    println!(
        "  {:<26} {:<24} {:>10} {:>11} {:>9} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "scenario",
        "server",
        "per s",
        "wsloop/this",
        "p99 us",
        "srv cpu",
        "lg cpu",
        "user us",
        "sys us",
        "cpu/wsloop",
        "syscalls"
    );
    let rows = bench["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&bench["handshakes"]));
    for scenario in rows {
        for r in scenario["results"].as_array().into_iter().flatten() {
            println!(
                "  {:<26} {:<24} {:>10.0} {:>10.2}x {:>9.0} {:>6.0}% {:>7.0}% {:>8.1} {:>8.1} {:>8.2}x {:>9}",
                scenario["name"].as_str().unwrap_or(""),
                r["server"].as_str().unwrap_or(""),
                num(r, "median_per_s"),
                num(r, "wsloop_ratio"),
                num(r, "median_p99_us"),
                num(r, "median_server_cpu") * 100.0,
                num(r, "median_loadgen_cpu") * 100.0,
                num(r, "median_server_user_us_per_op"),
                num(r, "median_server_sys_us_per_op"),
                num(r, "cpu_ratio"),
                r["syscalls_per_op"]
                    .as_f64()
                    .map_or("-".to_owned(), |v| format!("{v:.2}"))
            );
        }
    }
    println!(
        "  (user us, sys us: server CPU per message or handshake; cpu/wsloop above 1: more CPU than wsloop;\n   syscalls: per message or handshake, strace -c in one extra run)"
    );
    println!("\nIdle connections ({}):", bench["idle"]["connections"]);
    println!(
        "  {:<24} {:>12} {:>12} {:>10}",
        "server", "RSS before", "RSS after", "B/conn"
    );
    for r in bench["idle"]["servers"].as_array().into_iter().flatten() {
        println!(
            "  {:<24} {:>9.0} KiB {:>9.0} KiB {:>10.0}",
            r["server"].as_str().unwrap_or(""),
            num(r, "rss_before_kib"),
            num(r, "rss_after_kib"),
            num(r, "bytes_per_connection")
        );
    }
    println!("\nScaling, mostly idle connections at 1 msg/s each:");
    println!(
        "  {:>7} {:<24} {:>10} {:>8} {:>14} {:>10}",
        "conns", "server", "RSS MiB", "threads", "ctx switch/s", "p99 us"
    );
    for p in scaling["points"].as_array().into_iter().flatten() {
        println!(
            "  {:>7} {:<24} {:>10.1} {:>8} {:>14.0} {:>10.0}",
            num(p, "connections"),
            p["server"].as_str().unwrap_or(""),
            num(p, "rss_kib") / 1024.0,
            num(p, "threads"),
            num(p, "ctx_switches_per_s"),
            num(p, "p99_us")
        );
    }
}

fn write_outputs(out: &Path, bench: &Value, scaling: &Value) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write("bench.json", pretty(bench))?;
    write("scaling.json", pretty(scaling))?;
    write("bench.svg", svg::render(&bench_chart(bench)))?;
    write("scaling.svg", svg::render(&scaling_chart(scaling)))?;
    Ok(())
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

fn subtitle(v: &Value, extra: &str) -> String {
    let m = &v["machine"];
    format!(
        "{}, {} cores, Linux {}; {extra}",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
    )
}

fn bench_chart(bench: &Value) -> Chart {
    let series: Vec<String> = bench["handshakes"]["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["server"].as_str().unwrap_or("").to_owned())
        .collect();
    let bars = |results: &Value, key: &str| Group {
        label: String::new(),
        values: results
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| Some(num(r, key)))
            .collect(),
    };
    let mut panels: Vec<Panel> = bench["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Panel {
            title: format!("echo {}: messages/s", s["name"].as_str().unwrap_or("")),
            groups: vec![bars(&s["results"], "median_per_s")],
        })
        .collect();
    panels.push(Panel {
        title: "handshakes/s (connect, upgrade, close)".into(),
        groups: vec![bars(&bench["handshakes"]["results"], "median_per_s")],
    });
    panels.push(Panel {
        title: format!(
            "bytes per idle connection at {} (lower is better)",
            bench["idle"]["connections"]
        ),
        groups: vec![bars(&bench["idle"]["servers"], "bytes_per_connection")],
    });
    let s = &bench["settings"];
    Chart {
        title: "wsloop against its peers (medians; higher is better unless noted)".into(),
        subtitle: subtitle(
            bench,
            &format!(
                "{} server thread, {} loadgen thread, {} repeats x {} s",
                s["server_threads"], s["loadgen_threads"], s["repeats"], s["duration_s"]
            ),
        ),
        series,
        columns: 2,
        panels,
    }
}

fn scaling_chart(scaling: &Value) -> Chart {
    let points: Vec<&Value> = scaling["points"].as_array().into_iter().flatten().collect();
    let mut servers: Vec<String> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    for p in &points {
        let name = p["server"].as_str().unwrap_or("").to_owned();
        if !servers.contains(&name) {
            servers.push(name);
        }
        let count = p["connections"].as_u64().unwrap_or(0);
        if !counts.contains(&count) {
            counts.push(count);
        }
    }
    let panel = |title: &str, value: &dyn Fn(&Value) -> f64| Panel {
        title: title.to_owned(),
        groups: counts
            .iter()
            .map(|&c| Group {
                label: format!("{c} conns"),
                values: servers
                    .iter()
                    .map(|s| {
                        points
                            .iter()
                            .find(|p| {
                                p["connections"].as_u64() == Some(c)
                                    && p["server"].as_str() == Some(s)
                            })
                            .map(|p| value(p))
                    })
                    .collect(),
            })
            .collect(),
    };
    Chart {
        title: "Event loop vs thread per connection, mostly idle connections".into(),
        subtitle: subtitle(
            scaling,
            &format!(
                "1 message/s per connection, {} s each, wsloop with {} worker",
                scaling["settings"]["duration_s"], scaling["settings"]["wsloop_workers"]
            ),
        ),
        series: servers.clone(),
        columns: 2,
        panels: vec![
            panel("server RSS, MiB (lower is better)", &|p| {
                num(p, "rss_kib") / 1024.0
            }),
            panel("server threads", &|p| num(p, "threads")),
            panel("context switches per second", &|p| {
                num(p, "ctx_switches_per_s")
            }),
            panel("echo latency p99, ms", &|p| num(p, "p99_us") / 1000.0),
        ],
    }
}
