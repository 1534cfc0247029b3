//! Servers and the load generator as child processes: one measured run,
//! syscall counts under strace, idle memory and the scaling points.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wsloop_bench::{status_kib, Running};

use crate::nginx::Nginx;
use crate::procfs::{clock_ticks, cpu_ticks, ctx_switches};
use crate::report::num;
use crate::{Server, LOADGEN_THREADS};

/// A server under test, running: its own process, and nginx when it has
/// nginx in front. CPU and memory are those of every process together.
pub struct Launched {
    server: Running,
    front: Option<Nginx>,
    /// Where clients connect: nginx's port when there is nginx.
    pub addr: String,
}

impl Launched {
    pub fn start(server: &Server) -> Result<Launched, String> {
        let running = Running::start(&server.program, &server.args, server.name)?;
        let front = match &server.front {
            Some(front) => Some(front.start(&running.addr)?),
            None => None,
        };
        let addr = match &front {
            Some(nginx) => nginx.addr.to_string(),
            None => running.addr.clone(),
        };
        Ok(Launched {
            server: running,
            front,
            addr,
        })
    }

    /// The server's own process.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.server.pid()];
        if let Some(nginx) = &self.front {
            pids.extend(nginx.pids());
        }
        pids
    }

    /// User and system CPU ticks, summed over the processes.
    pub fn cpu_ticks(&self) -> (u64, u64) {
        self.pids()
            .into_iter()
            .map(cpu_ticks)
            .fold((0, 0), |(u, s), (du, ds)| (u + du, s + ds))
    }

    /// A /proc/PID/status figure (`VmRSS:`, `Threads:`), summed.
    pub fn status(&self, field: &str) -> u64 {
        self.pids().into_iter().map(|p| status_kib(p, field)).sum()
    }
}

pub struct Loadgen {
    pub program: PathBuf,
}

impl Loadgen {
    /// Starts the load generator against `server`.
    fn spawn(&self, server: &Server, running: &Launched, args: &[String]) -> Result<Child, String> {
        let mut cmd = Command::new(&self.program);
        let scheme = if server.tls_ca.is_some() { "wss" } else { "ws" };
        if let Some(ca) = &server.tls_ca {
            cmd.arg("--ca").arg(ca);
        }
        cmd.arg("--url")
            .arg(format!("{scheme}://{}/", running.addr))
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
pub fn finish(
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
pub fn measure(server: &Server, lg: &Loadgen, args: &[String]) -> Result<Value, String> {
    let running = Launched::start(server)?;
    let mut child = lg.spawn(server, &running, args)?;
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let handshakes = args.iter().any(|a| a == "--handshakes");
    if !handshakes {
        // The measured interval starts when every connection is open.
        wait_for_connected(&mut stdout);
    }
    let (cpu0, t0) = (running.cpu_ticks(), Instant::now());
    let mut result = finish(child, stdout, server.name)?;
    let cpu1 = running.cpu_ticks();
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
pub fn add_syscalls(summary: &mut Value, servers: &[Server], lg: &Loadgen, args: &[String]) {
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
pub fn syscalls_per_op(server: &Server, lg: &Loadgen, args: &[String]) -> Result<f64, String> {
    let running = Launched::start(server)?;
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

pub fn wait_for_connected(stdout: &mut BufReader<ChildStdout>) {
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
pub fn idle_memory(server: &Server, lg: &Loadgen, count: usize) -> Result<Value, String> {
    let running = Launched::start(server)?;
    let warm = ["--idle", "--connections", "1", "--duration", "1"].map(String::from);
    let mut child = lg.spawn(server, &running, &warm)?;
    let mut warm_out = BufReader::new(child.stdout.take().expect("stdout is piped"));
    wait_for_connected(&mut warm_out);
    finish(child, warm_out, server.name)?;
    settle();
    let before = running.status("VmRSS:");
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
    let after = running.status("VmRSS:");
    let threads = running.status("Threads:");
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
pub fn scaling_point(
    server: &Server,
    lg: &Loadgen,
    count: usize,
    duration: f64,
) -> Result<Value, String> {
    let running = Launched::start(server)?;
    settle();
    let before = running.status("VmRSS:");
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
    let rss = running.status("VmRSS:");
    let threads = running.status("Threads:");
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
pub fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}
