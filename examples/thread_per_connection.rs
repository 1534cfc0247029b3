//! Drive a `Session` yourself, in about 45 lines of code: a blocking echo
//! server with one OS thread per connection.
//!
//! ```text
//! cargo run --release --example thread_per_connection -- --addr 127.0.0.1:9002
//! ```
//!
//! This file is two things.
//!
//! **The sans-IO tutorial.** wsloop's protocol core, `session::Session`,
//! never touches a socket or reads a clock: bytes and the time go in, and
//! bytes to write, deliveries and deadlines come out. `serve` below is the
//! whole of what a driver must do with it, over a plain blocking
//! `std::net::TcpStream`: read, feed the session, answer what it delivers,
//! write what it queued, send FIN when it says so. The session's module
//! docs state the call order that `serve` follows step by step; wsloop's
//! reactor (`src/conn.rs`, `src/worker.rs`) makes the very same calls,
//! only around readiness events on non-blocking sockets. Read this before
//! those two files.
//!
//! **The baseline.** It is the classic design wsloop exists to replace.
//! It speaks the same protocol through the same core as the event loop,
//! so the only difference a benchmark sees is the I/O model. Every
//! connection costs a thread: a kernel task, a stack (2 MiB reserved, the
//! touched pages resident), and a context switch for every message that
//! wakes it. `bench/` runs it against the echo example at up to 15,000
//! mostly idle connections.
//!
//! There is deliberately no limit on threads, no timeout and no keepalive:
//! this is a lesson and a baseline, not a server to deploy.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Instant;

use wsloop::session::{Answer, Delivery, Session, Time};
use wsloop::{Config, Request, Response};

mod common;

fn main() -> ExitCode {
    let args = match common::Args::parse("127.0.0.1:9002") {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(args.addr.as_str()) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("thread_per_connection: cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("thread_per_connection: listening on ws://{addr}"),
        Err(e) => {
            eprintln!("thread_per_connection: {e}");
            return ExitCode::FAILURE;
        }
    }
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            // A connection reset before accept, or out of file descriptors:
            // keep serving the others.
            Err(e) => {
                eprintln!("thread_per_connection: accept: {e}");
                continue;
            }
        };
        let spawned = std::thread::Builder::new().spawn(move || {
            // A peer that misbehaves or vanishes ends only its own thread.
            let _ = serve(stream);
        });
        if let Err(e) = spawned {
            eprintln!("thread_per_connection: cannot spawn a thread: {e}");
        }
    }
    ExitCode::SUCCESS
}

/// Runs one connection from request head to close, blocking throughout:
/// read, let the session turn the bytes into messages and replies, echo,
/// write what the session queued. The numbered steps are those of the
/// call order in the `session` module's docs.
fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let config = Config::default();
    // The session's clock is whatever the driver says it is: milliseconds
    // since this connection started, here.
    let started = Instant::now();
    let mut session = Session::<()>::new(Time::from_millis(0), stream.peer_addr()?);
    // The driver owns the buffers. The session borrows the read buffer for
    // one call at a time and keeps only what it must (a split frame).
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    // 5. The session decides when the connection is over.
    while !session.is_ended() {
        // A read error (a reset, say) ends this thread; dropping the
        // stream closes the socket.
        let n = stream.read(&mut buf)?;
        let now = Time::from_millis(started.elapsed().as_millis() as u64);
        if n == 0 {
            // 1. A read of 0 bytes is the peer's FIN.
            session.handle_eof();
        }
        // 1. Feed the read to the session until it has used all of it. Each
        // call consumes some bytes and delivers at most one thing.
        let mut pos = 0;
        while pos < n && !session.is_ended() {
            // Asked once a request head is complete: accept an upgrade,
            // answer anything else with 426.
            let answer = |req: &Request<'_>, _peer| {
                if req.is_upgrade() {
                    Answer::Accept {
                        protocol: None,
                        data: (),
                    }
                } else {
                    Answer::Respond(Response::status(426))
                }
            };
            let Ok(step) = session.handle_read(now, &config, &mut buf[pos..n], answer) else {
                break; // the session queued the refusal or close frame
            };
            pos += step.consumed;
            // The message borrows `buf`; this is the application's turn.
            // `send` only queues: nothing is written until step 2.
            if let Some(Delivery::Message(incoming)) = step.delivery {
                // Refused only after our close frame, when data may no
                // longer be sent (RFC 6455 §5.5.1).
                let _ = session.send(now, &config, incoming.message());
            }
        }
        // 2. Write everything queued for this read in one go: the 101, the
        // echoes, pongs and close frames the session added by itself. A
        // blocking `write_all` takes it all, so there is no short write to
        // report with `handle_write_blocked`.
        out.clear();
        session
            .poll_transmit()
            .for_each(|piece| out.extend_from_slice(piece));
        stream.write_all(&out)?;
        session.transmitted(out.len());
        // 3. After a closing HTTP answer, or the close frame of a failed
        // connection: FIN, and keep reading until the peer's.
        if session.poll_shutdown() {
            stream.shutdown(Shutdown::Write)?;
        }
        // 4. would arm a timer at `session.poll_timeout(now, &config)` (a
        // blocking driver would set the socket's read timeout from it, and
        // call `handle_timeout` when a read times out); this baseline
        // keeps no deadlines.
    }
    Ok(())
}
