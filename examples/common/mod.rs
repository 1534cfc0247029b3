//! Flag parsing and signal handling shared by the examples.
#![allow(dead_code)]

pub mod fanout;

use std::process::ExitCode;
use std::time::Duration;

use wsloop::{Config, Handler, Server, ShutdownHandle};

/// The permessage-deflate mode asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deflate {
    Off,
    Lean,
    Takeover,
}

/// Flags every example takes.
pub struct Args {
    pub addr: String,
    pub workers: usize,
    pub ping_interval: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// `--deflate`: take up permessage-deflate offers, in the lean mode,
    /// or with `--deflate-takeover` keeping context both ways.
    pub deflate: Deflate,
    /// `--deflate-min-size N`: messages shorter than N bytes go plain;
    /// 0 compresses every message.
    pub deflate_min_size: Option<usize>,
    /// `--deflate-window BITS`: the largest window either side may use.
    pub deflate_window: Option<u8>,
    /// `--drain-secs SECS`: on SIGTERM, close the WebSockets over this
    /// window with 1012, for a restart ([`ShutdownHandle::drain`]); 0, the
    /// default, closes them all at once with 1001.
    pub drain: Duration,
    /// `--tls-cert FILE --tls-key FILE` (with the `tls` feature): serve
    /// `https://` and `wss://` with this PEM certificate chain and key,
    /// read again on SIGHUP.
    pub tls: Option<(String, String)>,
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
            deflate: Deflate::Off,
            deflate_min_size: None,
            deflate_window: None,
            drain: Duration::ZERO,
            tls: None,
            extra: Vec::new(),
        };
        let (mut cert, mut key) = (None, None);
        let mut it = std::env::args().skip(1).peekable();
        while let Some(flag) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            match flag.as_str() {
                "--addr" => args.addr = value("--addr")?,
                "--workers" => args.workers = number(&value("--workers")?)?,
                "--ping-interval" => args.ping_interval = Some(seconds(&value("--ping-interval")?)?),
                "--idle-timeout" => args.idle_timeout = Some(seconds(&value("--idle-timeout")?)?),
                "--drain-secs" => args.drain = seconds(&value("--drain-secs")?)?,
                "--tls-cert" => cert = Some(value("--tls-cert")?),
                "--tls-key" => key = Some(value("--tls-key")?),
                "--deflate" => args.deflate = Deflate::Lean,
                "--deflate-takeover" => args.deflate = Deflate::Takeover,
                "--deflate-window" => {
                    let bits = number(&value("--deflate-window")?)?;
                    args.deflate_window = Some(u8::try_from(bits).map_err(|_| format!("not a window size: {bits}"))?)
                }
                "--deflate-min-size" => {
                    args.deflate_min_size = Some(number(&value("--deflate-min-size")?)?)
                }
                "-h" | "--help" => return Err(format!(
                    "flags: --addr HOST:PORT (default {default_addr}) --workers N --ping-interval SECS --idle-timeout SECS --drain-secs SECS --deflate --deflate-takeover --deflate-min-size N --deflate-window BITS --tls-cert FILE --tls-key FILE"
                )),
                other if other.starts_with("--") => {
                    let takes_value = it.peek().is_some_and(|v| !v.starts_with("--"));
                    let v = if takes_value { it.next() } else { None };
                    args.extra.push((other.to_owned(), v));
                }
                other => return Err(format!("unexpected argument {other:?}")),
            }
        }
        args.tls = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        if args.tls.is_some() && !cfg!(feature = "tls") {
            return Err("--tls-cert needs the tls feature: cargo run --release --features tls --example NAME -- --tls-cert FILE --tls-key FILE".into());
        }
        if args.deflate != Deflate::Off && !cfg!(feature = "deflate") {
            return Err("--deflate needs the deflate feature: cargo run --release --features deflate --example NAME -- --deflate".into());
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
        #[cfg(feature = "deflate")]
        {
            use wsloop::deflate::DeflateConfig;
            let mut deflate = DeflateConfig::default();
            if let Some(n) = self.deflate_min_size {
                deflate = deflate.min_size(n);
            }
            if let Some(bits) = self.deflate_window {
                deflate = deflate
                    .server_max_window_bits(bits)
                    .client_max_window_bits(bits);
            }
            config.deflate = match self.deflate {
                Deflate::Off => None,
                Deflate::Lean => Some(deflate),
                Deflate::Takeover => Some(
                    deflate
                        .server_context_takeover(true)
                        .client_context_takeover(true),
                ),
            };
        }
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

/// The library's own signal handling (its `signals` feature), compiled
/// here from the same file: the examples build without that feature.
#[path = "../../src/signals.rs"]
mod signals;

/// Stops the server on SIGTERM (a drain over `drain`, if not zero), SIGINT
/// or Ctrl-C, printing what happens as `NAME: ...`.
pub fn shutdown_on_signals(name: &str, handle: ShutdownHandle, drain: Duration) {
    let name = name.to_owned();
    signals::stop_on_signals(handle, drain, move |line| println!("{name}: {line}"))
        .expect("signal handlers can be installed at start-up");
}

/// Reads the certificate and key again on each SIGHUP, saying how it went
/// as `NAME: ...`; a failed reload keeps the certificate in use.
#[cfg(feature = "tls")]
fn reload_on_sighup(name: &str, reload: wsloop::tls::TlsReload) {
    #[cfg(unix)]
    {
        let name = name.to_owned();
        let mut hups = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
            .expect("signal handlers can be installed at start-up");
        std::thread::spawn(move || {
            for _ in hups.forever() {
                match reload.reload() {
                    Ok(()) => println!("{name}: certificate reloaded"),
                    Err(e) => println!("{name}: certificate not reloaded: {e}"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (name, reload);
}

/// Whether this platform has the /proc files the benchmark and soak tools
/// read for memory, CPU and sockets; where it does not, says so on stderr.
pub fn has_proc(name: &str, what: &str) -> bool {
    if cfg!(target_os = "linux") {
        return true;
    }
    eprintln!("{name}: {what} come from /proc, which only Linux has");
    false
}

/// Runs a server until SIGINT or SIGTERM (Ctrl-C on Windows): binds, prints `NAME: BANNER ADDR/`
/// (scripts wait for that line), shuts down gracefully on a signal, and
/// prints the counters.
pub fn serve<H, F>(name: &str, banner: &str, args: &Args, config: Config, factory: F) -> ExitCode
where
    H: Handler + 'static,
    F: Fn() -> H + Send + Sync + 'static,
{
    serve_with(name, banner, args, config, factory, |_| Ok(String::new()))
}

/// [`serve`], with `setup` run on the bound server before the banner; an
/// error from it stops the example. What it returns lives until exit, and
/// is printed after the counters unless it prints as nothing.
pub fn serve_with<H, F, T>(
    name: &str,
    banner: &str,
    args: &Args,
    #[allow(unused_mut)] mut config: Config,
    factory: F,
    setup: impl FnOnce(&Server) -> Result<T, String>,
) -> ExitCode
where
    H: Handler + 'static,
    F: Fn() -> H + Send + Sync + 'static,
    T: std::fmt::Display,
{
    let addr = &args.addr;
    #[allow(unused_mut)]
    let mut banner = banner.to_owned();
    #[cfg(feature = "tls")]
    if let Some((cert, key)) = &args.tls {
        let tls = match wsloop::tls::TlsConfig::from_pem_files(cert, key) {
            Ok(tls) => tls,
            Err(e) => {
                eprintln!("{name}: {e}");
                return ExitCode::FAILURE;
            }
        };
        reload_on_sighup(name, tls.reload_handle());
        config.tls = Some(tls);
        banner = banner
            .replace("ws://", "wss://")
            .replace("http://", "https://");
    }
    // Bound but not serving until setup is done: a server taking over a
    // port from one that drains must not answer before its Redis bridge
    // is in place. Connections wait in the kernel's queue meanwhile.
    let mut server = match Server::bind_paused(addr, config, factory) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("{name}: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let kept = match setup(&server) {
        Ok(kept) => kept,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = server.start() {
        eprintln!("{name}: cannot start the workers: {e}");
        return ExitCode::FAILURE;
    }
    // Signals first: whoever reads the banner may send SIGTERM at once.
    shutdown_on_signals(name, server.shutdown_handle(), args.drain);
    println!("{name}: {banner}{}/", server.local_addr());
    match server.join() {
        Ok(counters) => {
            println!("{name}: shut down\n{counters}");
            let report = kept.to_string();
            if !report.is_empty() {
                println!("{report}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: worker failed: {e}");
            ExitCode::FAILURE
        }
    }
}
