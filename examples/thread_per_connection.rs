//! The classic design wsloop exists to replace: a blocking echo server with
//! one OS thread per connection.
//!
//! ```text
//! cargo run --release --example thread_per_connection -- --addr 127.0.0.1:9002
//! ```
//!
//! It speaks the same protocol through the same pure core
//! (`session::Session`) as the event loop, so the only difference a
//! benchmark sees is the I/O model. Every connection costs a thread: a
//! kernel task, a stack (2 MiB reserved, the touched pages resident), and a
//! context switch for every message that wakes it. `bench/` runs it against
//! the echo example at up to 15,000 mostly idle connections.
//!
//! There is deliberately no limit on threads, no timeout and no keepalive:
//! this is the baseline, not a server to deploy.

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
/// write what the session queued.
fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let config = Config::default();
    let started = Instant::now();
    let mut session = Session::<()>::new(Time::from_millis(0), stream.peer_addr()?);
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    while !session.is_ended() {
        let n = stream.read(&mut buf)?;
        let now = Time::from_millis(started.elapsed().as_millis() as u64);
        if n == 0 {
            session.handle_eof();
        }
        let mut pos = 0;
        while pos < n && !session.is_ended() {
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
            if let Some(Delivery::Message(incoming)) = step.delivery {
                // Refused only after our close frame, when data may no
                // longer be sent (§5.5.1).
                let _ = session.send(now, &config, incoming.message());
            }
        }
        out.clear();
        session
            .poll_transmit()
            .for_each(|piece| out.extend_from_slice(piece));
        stream.write_all(&out)?;
        session.transmitted(out.len());
        if session.poll_shutdown() {
            stream.shutdown(Shutdown::Write)?;
        }
    }
    Ok(())
}
