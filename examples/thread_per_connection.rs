//! The classic design wsloop exists to replace: a blocking echo server with
//! one OS thread per connection.
//!
//! ```text
//! cargo run --release --example thread_per_connection -- --addr 127.0.0.1:9002
//! ```
//!
//! It speaks the same protocol through the same core (`handshake`,
//! `protocol::Session`, `Outbox`) as the event loop, so the only difference
//! a benchmark sees is the I/O model. Every connection costs a thread: a
//! kernel task, a stack (2 MiB reserved, the touched pages resident), and a
//! context switch for every message that wakes it. `bench/` runs it against
//! the echo example at up to 15,000 mostly idle connections.
//!
//! There is deliberately no limit on threads, no timeout and no keepalive:
//! this is the baseline, not a server to deploy.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;

use wsloop::frame::{OpCode, Role};
use wsloop::handshake::{self, HandshakeLimits, Parsed};
use wsloop::protocol::{Event, Outbox, Session};
use wsloop::{Limits, Message, Response};

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

/// Runs one connection from request head to close, blocking throughout.
fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;

    // The upgrade: read until the head parses.
    let head_len = loop {
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        match handshake::parse(&buf[..filled], &HandshakeLimits::default()) {
            Ok(Parsed::Partial) if filled < buf.len() => continue,
            Ok(Parsed::Partial) => {
                return refuse(&mut stream, Response::status(431));
            }
            Ok(Parsed::Upgrade(request, len)) => {
                let key = request.key().unwrap_or_default();
                stream.write_all(&handshake::accept_response(key, None))?;
                break len;
            }
            Ok(Parsed::Http(_, _)) => return refuse(&mut stream, Response::status(426)),
            Err(e) => return refuse(&mut stream, Response::for_error(&e)),
        }
    };

    // Frames: whatever followed the head first, then the socket.
    let mut session = Session::new(Role::Server, Limits::default());
    let mut out = Outbox::new();
    buf.copy_within(head_len..filled, 0);
    filled -= head_len;
    loop {
        let mut pos = 0;
        while pos < filled && !session.is_done() {
            match session.read(&mut buf[pos..filled], &mut out) {
                Ok(step) => {
                    pos += step.consumed;
                    if let Some(Event::Message(msg)) = step.event {
                        let opcode = match msg {
                            Message::Text(_) => OpCode::Text,
                            Message::Binary(_) => OpCode::Binary,
                        };
                        // Fails only after our close frame, when data may
                        // no longer be sent (§5.5.1).
                        let _ = out.push(opcode, msg.as_bytes());
                    }
                }
                Err(e) => {
                    out.close(e.close_code(), &e.to_string());
                    break;
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out.to_vec())?;
            out.consume(out.len());
        }
        // After the close frames have crossed, the server closes TCP first
        // (RFC 6455 §7.1.1).
        if session.is_done() || out.close_sent() {
            return Ok(());
        }
        filled = stream.read(&mut buf)?;
        if filled == 0 {
            return Ok(());
        }
    }
}

fn refuse(stream: &mut TcpStream, response: Response) -> io::Result<()> {
    stream.write_all(&response.to_bytes())
}
