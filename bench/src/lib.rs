//! Peer echo servers and the benchmark runner for wsloop.
//!
//! The binaries: `tokio_tungstenite_echo`, `fastwebsockets_echo` and
//! `raw_mio_echo` (plain TCP, the ceiling), and the fan-out servers
//! `tokio_tungstenite_fanout` and `fastwebsockets_fanout`, each taking
//! `--addr` and `--threads` (the two echo peers also `--tls-cert` and
//! `--tls-key`, for wss:// through tokio-rustls); `fanout_client`, the fan-out load generator;
//! and `runner`, which drives them, wsloop's echo, rooms and
//! thread-per-connection examples, and the uWebSockets servers of
//! `bench/uws/` when built, with wsloop's load generator. See
//! `bench/run.sh`.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod svg;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The median of some figures: the middle one, or the mean of the middle
/// two for an even count; 0 for none.
pub fn median(figures: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = figures.into_iter().collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A `kB` (or plain count) field of /proc/PID/status, such as `VmRSS:`
/// or `Threads:`; 0 if there is none.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    field_kib(&format!("/proc/{pid}/status"), field)
}

/// A `Name: value` field of a /proc file in that form (status, meminfo);
/// 0 if there is none.
pub fn field_kib(path: &str, field: &str) -> u64 {
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

/// A server process that printed its address, killed when dropped.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// `HOST:PORT`, from the first line the server printed
    /// (`NAME: ... SCHEME://HOST:PORT/`).
    pub addr: String,
}

impl Running {
    /// Starts `program` with `args` and reads its address from its first
    /// line; what it prints after that is read and dropped, so that it
    /// never blocks on a full pipe.
    pub fn start(program: &Path, args: &[String], name: &str) -> Result<Running, String> {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let Some((_, addr)) = line.trim().split_once("://") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{name} did not print its address: {line:?}"));
        };
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Ok(Running {
            addr: addr.trim_end_matches('/').to_owned(),
            child,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags every peer server takes.
#[derive(Debug, Clone)]
pub struct ServerArgs {
    /// Where to listen; port 0 picks a free one.
    pub addr: String,
    /// Worker threads (runtime workers, or event loops).
    pub threads: usize,
    /// `--tuned`: the fastest set-up we found for the library, rather than
    /// the one its examples show (each binary says what that means).
    pub tuned: bool,
    /// `--tls-cert FILE --tls-key FILE`: serve wss:// with this PEM
    /// certificate chain and key (the echo peers only).
    pub tls: Option<(String, String)>,
}

impl ServerArgs {
    /// Parses `--addr HOST:PORT` (default 127.0.0.1:0), `--threads N`
    /// (default 1) and `--tuned`, exiting with status 2 on anything else.
    pub fn parse(name: &str) -> ServerArgs {
        Self::parse_from(name, false)
    }

    /// As [`ServerArgs::parse`], and `--tls-cert FILE --tls-key FILE`.
    pub fn parse_with_tls(name: &str) -> ServerArgs {
        Self::parse_from(name, true)
    }

    fn parse_from(name: &str, tls_flags: bool) -> ServerArgs {
        let mut args = ServerArgs {
            addr: "127.0.0.1:0".to_owned(),
            threads: 1,
            tuned: false,
            tls: None,
        };
        let (mut cert, mut key) = (None, None);
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--tuned" {
                args.tuned = true;
                continue;
            }
            let value = it.next();
            match (flag.as_str(), value) {
                ("--addr", Some(v)) => args.addr = v,
                ("--threads", Some(v)) if v.parse::<usize>().is_ok_and(|n| n > 0) => {
                    args.threads = v.parse().expect("checked above");
                }
                ("--tls-cert", Some(v)) if tls_flags => cert = Some(v),
                ("--tls-key", Some(v)) if tls_flags => key = Some(v),
                _ => usage(name, tls_flags),
            }
        }
        args.tls = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => usage(name, tls_flags),
        };
        args
    }

    /// The TLS acceptor for `--tls-cert` and `--tls-key`, if given.
    pub fn tls_acceptor(&self) -> std::io::Result<Option<TlsAcceptor>> {
        let Some((cert, key)) = &self.tls else {
            return Ok(None);
        };
        let config = tls_server_config(Path::new(cert), Path::new(key))?;
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }
}

fn usage(name: &str, tls_flags: bool) -> ! {
    let tls = if tls_flags {
        " [--tls-cert FILE --tls-key FILE]"
    } else {
        ""
    };
    eprintln!("usage: {name} [--addr HOST:PORT] [--threads N] [--tuned]{tls}");
    std::process::exit(2);
}

/// The rustls settings of the TLS peers: wsloop's (`src/tls/mod.rs`), so that
/// both sides do the same work per handshake: the ring provider, TLS 1.3
/// and 1.2, ALPN `http/1.1`, and no session tickets.
pub fn tls_server_config(cert: &Path, key: &Path) -> std::io::Result<ServerConfig> {
    let bad = |file: &Path, e: &dyn std::fmt::Display| {
        std::io::Error::other(format!("{}: {e}", file.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(std::io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The tokio runtime both tokio peers use: multi-threaded with `threads`
/// workers; tuned for one thread, the current-thread runtime, which skips
/// work stealing and polls I/O on the thread that runs the tasks.
pub fn tokio_runtime(args: &ServerArgs) -> std::io::Result<tokio::runtime::Runtime> {
    if args.tuned && args.threads == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_or_the_mean_of_the_two_middles() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median([]), 0.0);
    }
}
