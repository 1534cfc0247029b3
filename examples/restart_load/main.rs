//! The load for a rolling restart: chat members in one room, through a
//! proxy, who must lose nothing while the servers behind it restart.
//!
//! ```text
//! bash scripts/rolling-restart.sh          # nginx, two chats, Redis, this
//! restart_load --addr HOST:PORT [--members M] [--every SECS] [--window SECS]
//!              [--slack SECS] [--seconds S] [--kill]
//! ```
//!
//! M members (default 200) join the room `restart` of the chat example at
//! `--addr`, half over WebSocket and half by long polling, and each says
//! a numbered line every `--every` seconds (2) while reading everything.
//! A WebSocket member that is closed (1012, 1001) or dropped reconnects as
//! the chat's page does: after a random wait between half and one and a
//! half times a backoff that starts at 500 ms and doubles while connecting
//! fails, with `after=` its last id. A poller keeps polling with its
//! cursor, waiting `--poll-gap-ms` (500) between answers so that a busy
//! room is fetched in batches.
//!
//! The script tells it what happens, by signal:
//! - SIGUSR1: a restart begins (sent just before the old node gets SIGTERM,
//!   or SIGKILL);
//! - SIGUSR2: the old node is gone. Once every member is connected again,
//!   it prints `restart_load: restart K: all members back`;
//! - SIGTERM or SIGINT, or `--seconds` after every member is in: stop.
//!
//! To stop, every member says a last line, `end`, and reads until it has
//! heard all M of them. Then it checks, and exits 1 naming each check that
//! failed:
//! - (a) each member's message ids run on one by one in one epoch from its
//!   first to its last: nothing lost, nothing twice, no reset; every id
//!   means the same message for every member, so all see one order; and
//!   every line a poller was told was taken (204) came back;
//! - (b) no connect was refused or reset and no request failed, through
//!   the proxy (which retries another node for a GET, so its error log
//!   must be read too; the script does);
//! - (c) every member came back and resumed, the longest outage within
//!   `--window` plus `--slack` (3 s);
//! - (d) in each restart, reconnects per second (counted by the second
//!   each successful one was begun: the load the servers see) peak at
//!   most at twice the even rate, the WebSockets closed in that restart
//!   over `--window`.
//!
//! `--events FILE` writes every outage (member, how, when lost and when
//! back, in seconds from the start) and every failed connect or request.
//!
//! With `--kill` (a node killed with SIGKILL) a request the dead node was
//! answering fails (nginx answers a `POST /send` with 502) and its
//! members come back at once, so (b) and (d) are reported, not checked;
//! (a) and (c) hold as ever.
//!
//! Where things are: `record.rs`, what each member keeps and the one map
//! of ids all members check against; `ws.rs`, the WebSocket member;
//! `poll.rs`, the poller and its small HTTP/1.1 client; `report.rs`, the
//! checks and the table.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use record::{Log, Phase, Shared};

mod poll;
mod record;
mod report;
mod ws;

/// How long members may take, once told to stop, to hear every `end`.
const END_WAIT: Duration = Duration::from_secs(30);
/// A thread per WebSocket member and two per poller: small stacks.
const STACK: usize = 256 * 1024;

/// The command line.
#[derive(Debug, Clone)]
pub struct Opts {
    pub addr: String,
    pub room: String,
    pub members: usize,
    pub every: Duration,
    pub window: Duration,
    pub slack: Duration,
    pub seconds: Option<Duration>,
    pub poll_gap: Duration,
    pub backoff: Duration,
    pub kill: bool,
    /// `--events FILE`: every outage and failure, one a line, for a closer
    /// look.
    pub events: Option<String>,
}

fn parse_opts() -> Result<Opts, String> {
    let mut opts = Opts {
        addr: "127.0.0.1:8000".into(),
        room: "restart".into(),
        members: 200,
        every: Duration::from_secs(2),
        window: Duration::from_secs(10),
        slack: Duration::from_secs(3),
        seconds: None,
        poll_gap: Duration::from_millis(500),
        backoff: Duration::from_millis(500),
        kill: false,
        events: None,
    };
    let secs = |v: String| -> Result<Duration, String> {
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or(format!("not a number of seconds: {v:?}"))
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => opts.addr = value()?,
            "--room" => opts.room = value()?,
            "--members" => {
                let v = value()?;
                opts.members = v.parse().map_err(|_| format!("not a number: {v:?}"))?;
            }
            "--every" => opts.every = secs(value()?)?,
            "--window" => opts.window = secs(value()?)?,
            "--slack" => opts.slack = secs(value()?)?,
            "--seconds" => opts.seconds = Some(secs(value()?)?),
            "--poll-gap-ms" => opts.poll_gap = secs(value()?)? / 1000,
            "--backoff-ms" => opts.backoff = secs(value()?)? / 1000,
            "--kill" => opts.kill = true,
            "--events" => opts.events = Some(value()?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if opts.members < 2 || opts.every.is_zero() || opts.window.is_zero() {
        return Err("--members must be 2 or more, --every and --window above 0".into());
    }
    Ok(opts)
}

const USAGE: &str = "restart_load --addr HOST:PORT [--members M (200)] [--every SECS (2)] \
[--window SECS (10)] [--slack SECS (3)] [--seconds S] [--poll-gap-ms MS (500)] \
[--backoff-ms MS (500)] [--room NAME (restart)] [--kill] [--events FILE]";

fn main() -> ExitCode {
    let opts = match parse_opts() {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("restart_load: {e}");
            return ExitCode::from(2);
        }
    };
    let shared = match Shared::new(&opts) {
        Ok(shared) => Arc::new(shared),
        Err(e) => {
            eprintln!("restart_load: {e}");
            return ExitCode::from(2);
        }
    };
    listen_for_signals(&shared);
    println!(
        "restart_load: {} members ({} WebSocket, {} long polling) in room {:?} at {}, a line each every {:?}",
        opts.members,
        opts.members.div_ceil(2),
        opts.members / 2,
        opts.room,
        opts.addr,
        opts.every
    );

    // Even members listen on a WebSocket, odd ones poll.
    let mut members = Vec::with_capacity(opts.members);
    for i in 0..opts.members {
        let shared = shared.clone();
        let builder = thread::Builder::new()
            .name(format!("member-{i}"))
            .stack_size(STACK);
        let spawned = match i % 2 {
            0 => builder.spawn(move || ws::member(&shared, i)),
            _ => builder.spawn(move || poll::member(&shared, i)),
        };
        members.push(spawned.expect("a member thread starts"));
    }

    // Every member in, then the steady chat until told to stop.
    if shared.wait_until(|| shared.joined.load(Ordering::Acquire) == opts.members) {
        shared.set_phase(Phase::Before);
        println!(
            "restart_load: all {} members in after {:.1} s",
            opts.members,
            shared.now().as_secs_f64()
        );
        let until = opts.seconds.map(|run| Instant::now() + run);
        shared.wait_until(|| until.is_some_and(|t| Instant::now() >= t));
    }

    // Everyone says `end`, and reads until it has heard every `end`.
    shared.set_phase(Phase::Ending);
    println!("restart_load: stopping: every member says its last line");
    let deadline = Instant::now() + END_WAIT;
    while shared.ended.load(Ordering::Acquire) < opts.members && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    shared.finished.store(true, Ordering::Release);
    let logs: Vec<Log> = members
        .into_iter()
        .map(|m| m.join().expect("a member thread does not panic"))
        .collect();
    if let Some(path) = &opts.events {
        if let Err(e) = report::write_events(path, &logs) {
            eprintln!("restart_load: cannot write {path}: {e}");
        }
    }
    let failures = report::report(&opts, &shared, &logs);
    if failures.is_empty() {
        println!("restart_load: all checks passed");
        ExitCode::SUCCESS
    } else {
        for failure in &failures {
            println!("restart_load: FAILED {failure}");
        }
        ExitCode::FAILURE
    }
}

/// SIGUSR1 marks a restart's start, SIGUSR2 the old node's end; SIGTERM
/// and SIGINT stop the load.
#[cfg(unix)]
fn listen_for_signals(shared: &Arc<Shared>) {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let mut signals = signal_hook::iterator::Signals::new([SIGUSR1, SIGUSR2, SIGTERM, SIGINT])
        .expect("signal handlers can be installed at start-up");
    let shared = shared.clone();
    thread::spawn(move || {
        for signal in signals.forever() {
            match signal {
                SIGUSR1 => {
                    let k = shared.restart_begins();
                    println!(
                        "restart_load: restart {k} begins at {:.1} s",
                        shared.now().as_secs_f64()
                    );
                }
                SIGUSR2 => {
                    let k = shared.node_gone();
                    let waiter = shared.clone();
                    thread::spawn(move || announce_back(&waiter, k));
                }
                _ => shared.stop.store(true, Ordering::Release),
            }
        }
    });
}

/// Windows has no SIGUSR1 or SIGUSR2, and signal-hook no signal iterator
/// there: Ctrl-C (or `--seconds`) stops the load, and restarts go
/// unmarked.
#[cfg(windows)]
fn listen_for_signals(shared: &Arc<Shared>) {
    use std::sync::atomic::AtomicBool;
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())
        .expect("the Ctrl-C handler can be installed at start-up");
    let shared = shared.clone();
    thread::spawn(move || {
        while !interrupted.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(100));
        }
        shared.stop.store(true, Ordering::Release);
    });
}

/// Prints `restart K: all members back` once every member has been
/// connected for a moment, after the old node of restart K is gone.
#[cfg(unix)]
fn announce_back(shared: &Shared, k: usize) {
    let settle = Duration::from_millis(200);
    let mut since = None;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        match (shared.down.load(Ordering::Acquire), since) {
            (0, None) => since = Some(Instant::now()),
            (0, Some(at)) if at.elapsed() >= settle => break,
            (0, Some(_)) => {}
            _ => since = None,
        }
        thread::sleep(Duration::from_millis(20));
    }
    println!(
        "restart_load: restart {k}: all members back at {:.1} s",
        shared.now().as_secs_f64()
    );
}
