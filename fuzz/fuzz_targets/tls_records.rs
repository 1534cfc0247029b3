//! The TLS layer of a server connection (`wsloop::tls::ServerTls`), sans
//! IO, on records a client sent and the fuzzer then cut up and spoiled.
//!
//! Input: a mode byte, a chunk-size byte, then the rest. Mode bit 0 clear:
//! the rest is the whole input, fed to the server in chunks. Mode bit 0
//! set: a real rustls client makes its first flight, the rest is a list of
//! 3-byte edits on it (flip a byte, cut the flight short, repeat a range,
//! drop a range), and the spoiled flight is fed in chunks; the server's
//! answer goes back to the client, whose second flight follows, then a
//! request and the client's close_notify. Bit 1 gives the server a small
//! limit on what it may hold of an unfinished record.
//!
//! Asserts: no panic; an error fails the layer for good (nothing more is
//! taken, nothing can be sealed) and leaves only whole records queued;
//! what is held between reads stays within the limit; plaintext comes out
//! only after the handshake; and with no edits, the handshake completes at
//! any chunk size, the request arrives exactly as sent, a sealed answer
//! reads back exactly at the client, and the close_notify is reported.
#![no_main]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use wsloop::tls::rustls::pki_types::ServerName;
use wsloop::tls::rustls::{ClientConfig, ClientConnection};
use wsloop::tls::{Records, ServerTls, TlsConfig, TlsFailure};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

fn configs() -> &'static (TlsConfig, Arc<ClientConfig>) {
    static CONFIGS: OnceLock<(TlsConfig, Arc<ClientConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tls");
        let server = TlsConfig::from_pem_files(dir.join("server.pem"), dir.join("server.key"))
            .expect("the test certificate loads");
        let client = wsloop::tls::client_config(dir.join("ca.pem")).expect("the test CA loads");
        (server, client)
    })
}

/// The server side and what the checks need to know of it.
struct Server {
    tls: ServerTls,
    limit: usize,
    plain: Vec<u8>,
    failed: bool,
    peer_closed: bool,
}

impl Server {
    /// Feeds `input` in chunks of `step`, checking each read.
    fn feed(&mut self, input: &[u8], step: usize) {
        for chunk in input.chunks(step) {
            let mut chunk = chunk.to_vec();
            let mut plain = Vec::new();
            let read = self
                .tls
                .read_records(&mut chunk, self.limit, |p| plain.extend_from_slice(p));
            if self.failed {
                assert_eq!(read, Ok(Records::Open), "a failed layer takes nothing");
                assert!(plain.is_empty());
                continue;
            }
            self.plain.extend_from_slice(&plain);
            match read {
                Ok(Records::Open) => {}
                Ok(Records::PeerClosed) => self.peer_closed = true,
                Err(e) => {
                    self.failed = true;
                    assert!(self.tls.is_failed(), "{e}");
                    assert!(plain.is_empty() || matches!(e, TlsFailure::Protocol(_)));
                    whole_records(self.tls.queued());
                    assert!(self.tls.seal(b"x", &mut Vec::new()).is_none());
                }
            }
            if !self.failed {
                assert!(
                    self.tls.buffered() <= self.limit + 2 * step + (64 << 10),
                    "held {} past the limit {}",
                    self.tls.buffered(),
                    self.limit
                );
            }
        }
    }

    /// What the server queued to send, taken.
    fn take_output(&mut self) -> Vec<u8> {
        let out = self.tls.queued().to_vec();
        assert_eq!(self.tls.sent(out.len()), 0, "no plaintext was owed");
        out
    }
}

/// Asserts that `out` is whole TLS records: the server's flight, then an
/// alert, nothing torn.
fn whole_records(mut out: &[u8]) {
    while !out.is_empty() {
        assert!(out.len() >= 5, "a torn record header: {out:?}");
        assert!((20..=23).contains(&out[0]), "content type {}", out[0]);
        let len = usize::from(u16::from_be_bytes([out[3], out[4]]));
        assert!(len <= 16_384 + 256 && out.len() >= 5 + len, "a torn record");
        out = &out[5 + len..];
    }
}

/// Applies 3-byte edits to a client flight.
fn spoil(flight: &mut Vec<u8>, edits: &[u8]) {
    for edit in edits.chunks_exact(3) {
        if flight.is_empty() {
            return;
        }
        let at = (usize::from(edit[1]) << 4 | usize::from(edit[2] >> 4)) % flight.len();
        let len = usize::from(edit[2] & 0x0f) + 1;
        let end = (at + len).min(flight.len());
        match edit[0] % 4 {
            0 => flight[at] ^= edit[2] | 1,
            1 => flight.truncate(at),
            2 => {
                let range = flight[at..end].to_vec();
                flight.splice(at..at, range);
            }
            _ => {
                flight.drain(at..end);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, step, rest @ ..] = data else {
        return;
    };
    let step = usize::from(*step).max(1);
    let (server_config, client_config) = configs();
    let limit = if mode & 2 != 0 {
        300
    } else {
        server_config.max_pending_input
    };
    let mut server = Server {
        tls: server_config.accept().unwrap(),
        limit,
        plain: Vec::new(),
        failed: false,
        peer_closed: false,
    };
    if mode & 1 == 0 {
        server.feed(rest, step);
        // Nothing but a real handshake gives plaintext, and these bytes
        // come from no key.
        assert!(server.plain.is_empty() || !server.failed);
        return;
    }

    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(client_config.clone(), name).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    let clean = rest.len() < 3;
    spoil(&mut hello, rest);
    server.feed(&hello, step);
    if server.failed || !clean {
        return;
    }
    // The server's flight to the client, and the client's second flight
    // with the request behind it.
    let answer = server.take_output();
    client.read_tls(&mut &answer[..]).unwrap();
    client
        .process_new_packets()
        .expect("the client takes the server's flight");
    assert!(!client.is_handshaking());
    client.writer().write_all(REQUEST).unwrap();
    client.send_close_notify();
    let mut second = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut second).unwrap();
    }
    server.feed(&second, step);
    assert!(!server.failed, "a clean handshake at chunk size {step}");
    assert_eq!(server.plain, REQUEST);
    assert!(server.peer_closed, "close_notify is reported");

    let mut records = Vec::new();
    server
        .tls
        .seal(b"HTTP/1.1 200 OK\r\n\r\n", &mut records)
        .unwrap();
    client.read_tls(&mut &records[..]).unwrap();
    client.process_new_packets().unwrap();
    let mut got = [0; 19];
    client.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"HTTP/1.1 200 OK\r\n\r\n");
});
