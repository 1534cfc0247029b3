//! Flag parsing and signal handling shared by the examples.
#![allow(dead_code)]

use std::process::ExitCode;
use std::time::Duration;

use wsloop::{Config, Handler, Server, ShutdownHandle};

/// Flags every example takes.
pub struct Args {
    pub addr: String,
    pub workers: usize,
    pub ping_interval: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// Flags this module does not know, as (name, value) pairs.
    pub extra: Vec<(String, Option<String>)>,
}

impl Args {
    /// Parses `--addr`, `--workers`, `--ping-interval SECS` and
    /// `--idle-timeout SECS`; anything else lands in `extra`.
    pub fn parse(default_addr: &str) -> Result<Args, String> {
        let mut args = Args {
            addr: default_addr.to_owned(),
            workers: 0,
            ping_interval: None,
            idle_timeout: None,
            extra: Vec::new(),
        };
        let mut it = std::env::args().skip(1).peekable();
        while let Some(flag) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            match flag.as_str() {
                "--addr" => args.addr = value("--addr")?,
                "--workers" => args.workers = number(&value("--workers")?)?,
                "--ping-interval" => args.ping_interval = Some(seconds(&value("--ping-interval")?)?),
                "--idle-timeout" => args.idle_timeout = Some(seconds(&value("--idle-timeout")?)?),
                "-h" | "--help" => return Err(format!(
                    "flags: --addr HOST:PORT (default {default_addr}) --workers N --ping-interval SECS --idle-timeout SECS"
                )),
                other if other.starts_with("--") => {
                    let takes_value = it.peek().is_some_and(|v| !v.starts_with("--"));
                    let v = if takes_value { it.next() } else { None };
                    args.extra.push((other.to_owned(), v));
                }
                other => return Err(format!("unexpected argument {other:?}")),
            }
        }
        Ok(args)
    }

    /// Applies the common flags to a config.
    pub fn config(&self, mut config: Config) -> Config {
        config.workers = self.workers;
        if self.ping_interval.is_some() {
            config.ping_interval = self.ping_interval;
        }
        config.idle_timeout = self.idle_timeout;
        config
    }
}

fn number(s: &str) -> Result<usize, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or(format!("not a number of seconds: {s:?}"))
}

/// Starts a thread that turns SIGINT and SIGTERM into a graceful shutdown.
pub fn shutdown_on_signals(handle: ShutdownHandle) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .expect("signal handlers can be installed at start-up");
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            handle.shutdown();
        }
    });
}

/// Runs a server until SIGINT or SIGTERM: binds, prints `NAME: BANNER ADDR/`
/// (scripts wait for that line), shuts down gracefully on a signal, and
/// prints the counters.
pub fn serve<H, F>(name: &str, banner: &str, addr: &str, config: Config, factory: F) -> ExitCode
where
    H: Handler + 'static,
    F: Fn() -> H + Send + Sync + 'static,
{
    let server = match Server::bind(addr, config, factory) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("{name}: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Signals first: whoever reads the banner may send SIGTERM at once.
    shutdown_on_signals(server.shutdown_handle());
    println!("{name}: {banner}{}/", server.local_addr());
    match server.join() {
        Ok(counters) => {
            println!("{name}: shut down\n{counters}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: worker failed: {e}");
            ExitCode::FAILURE
        }
    }
}
