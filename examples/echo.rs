//! An echo server: every text and binary message comes straight back.
//!
//! ```text
//! cargo run --release --example echo -- --addr 127.0.0.1:9001 --workers 2
//! ```
//!
//! With `--features deflate`, `--deflate` takes up permessage-deflate
//! offers (no context kept between messages), and `--deflate-takeover`
//! keeps context both ways. With `--features tls`, `--tls-cert FILE
//! --tls-key FILE` serves `wss://` instead, and SIGHUP reads the two files
//! again, for a renewed certificate.
//!
//! Ctrl-C or SIGTERM shuts it down gracefully: every client gets close 1001
//! and the counters are printed.

use std::process::ExitCode;

use wsloop::{Config, Conn, Handler, Message};

mod common;

/// The whole application: echo what arrives.
struct Echo;

impl Handler for Echo {
    type Data = ();

    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        // The message borrows the worker's read buffer; the reply is queued
        // and written with every other reply of this read, in one send
        // (sendmsg for several pieces).
        // A send is refused only when the client stops reading and its
        // queue passes `max_write_buffer`; the default policy then closes
        // with 1008, which is all an echo server wants.
        let _ = conn.send(msg);
    }
}

fn main() -> ExitCode {
    let args = match common::Args::parse("127.0.0.1:9001") {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let config = args.config(Config::default());
    common::serve("echo", "listening on ws://", &args, config, || Echo)
}
