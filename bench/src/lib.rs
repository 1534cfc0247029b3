//! Peer echo servers and the benchmark runner for wsloop.
//!
//! The binaries: `tokio_tungstenite_echo`, `fastwebsockets_echo` and
//! `raw_mio_echo` (plain TCP, the ceiling), each taking `--addr` and
//! `--threads`, and `runner`, which drives them, wsloop's echo example and
//! the thread-per-connection example with wsloop's load generator. See
//! `bench/run.sh`.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod svg;

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
}

impl ServerArgs {
    /// Parses `--addr HOST:PORT` (default 127.0.0.1:0), `--threads N`
    /// (default 1) and `--tuned`, exiting with status 2 on anything else.
    pub fn parse(name: &str) -> ServerArgs {
        let mut args = ServerArgs {
            addr: "127.0.0.1:0".to_owned(),
            threads: 1,
            tuned: false,
        };
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
                _ => {
                    eprintln!("usage: {name} [--addr HOST:PORT] [--threads N] [--tuned]");
                    std::process::exit(2);
                }
            }
        }
        args
    }
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
