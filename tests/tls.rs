//! TLS over real sockets (the `tls` feature): WebSocket echo through a
//! rustls client, the handshake deadline covering TLS, input that is not
//! TLS, and a certificate reload while connections are open.
#![cfg(feature = "tls")]

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tungstenite::{Message, WebSocket};
use util::{start, Echo, WATCHDOG};
use wsloop::tls::rustls::pki_types::pem::PemObject;
use wsloop::tls::rustls::pki_types::{CertificateDer, ServerName};
use wsloop::tls::rustls::{ClientConfig, ClientConnection, StreamOwned};
use wsloop::tls::TlsConfig;
use wsloop::{Config, Server};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

fn certs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls")
}

fn tls_config() -> TlsConfig {
    TlsConfig::from_pem_files(certs().join("server.pem"), certs().join("server.key")).unwrap()
}

fn client_config() -> Arc<ClientConfig> {
    wsloop::tls::client_config(certs().join("ca.pem")).unwrap()
}

/// A TLS connection to the server, handshake done.
fn connect(addr: SocketAddr) -> TlsStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WATCHDOG)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(client_config(), name).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    stream
}

/// A WebSocket over TLS.
fn open(addr: SocketAddr) -> WebSocket<TlsStream> {
    let url = format!("wss://localhost:{}/", addr.port());
    tungstenite::client(url, connect(addr)).unwrap().0
}

fn tls_server(config: Config) -> Server {
    start(config.tls(Some(tls_config())), || Echo)
}

/// Reads until the server closes the connection; what it sent first.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("the server did not close the connection: {e}"),
    }
}

#[test]
fn messages_of_every_length_class_echo_over_tls() {
    let server = tls_server(util::config(2));
    let mut ws = open(server.local_addr());
    assert_eq!(
        ws.get_ref().conn.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN http/1.1"
    );
    for len in [
        0usize,
        1,
        125,
        126,
        16_384,
        16_385,
        65_536,
        1 << 20,
        3 << 20,
    ] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(payload.clone())).unwrap();
        match ws.read().unwrap() {
            Message::Binary(got) => assert!(got == payload, "{len} bytes came back changed"),
            other => panic!("{other:?}"),
        }
    }
    // Many small messages in one burst: records carry several frames.
    for i in 0..500 {
        ws.write(Message::text(format!("line {i}"))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..500 {
        assert_eq!(ws.read().unwrap(), Message::text(format!("line {i}")));
    }
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
            }
            Ok(other) => panic!("{other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("a clean close, with close_notify: {e}"),
        }
    }
}

#[test]
fn plain_http_and_garbage_on_a_tls_port_are_refused_and_counted() {
    let server = tls_server(util::config(1));
    let addr = server.local_addr();
    let inputs: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        &[0xff; 64],
        // A handshake record whose message is nonsense.
        &[22, 3, 1, 0, 4, 99, 0, 0, 0],
    ];
    for (i, input) in inputs.iter().enumerate() {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.write_all(input).unwrap();
        let answer = read_to_close(&mut tcp);
        // An alert record (content type 21), or nothing at all.
        assert!(
            answer.is_empty() || answer[0] == 21,
            "input {i}: answered {answer:?}"
        );
        assert!(!answer.starts_with(b"HTTP"), "no plaintext on a TLS port");
        assert_eq!(server.counters().tls_failed, i as u64 + 1);
    }
    // The server still serves.
    let mut ws = open(addr);
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("still here"));
}

#[test]
fn a_client_that_stalls_mid_handshake_is_dropped_at_the_handshake_deadline() {
    let config = util::config(1).handshake_timeout(Duration::from_millis(300));
    let server = tls_server(config);
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(client_config(), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    let mut tcp = TcpStream::connect(server.local_addr()).unwrap();
    tcp.write_all(&hello[..hello.len() / 2]).unwrap();
    let answer = read_to_close(&mut tcp);
    assert!(answer.is_empty(), "half a hello gets no answer: {answer:?}");
    // And one that finished TLS but sends no request is dropped too.
    let mut quiet = connect(server.local_addr());
    let mut buf = [0; 64];
    match quiet.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {}
        other => panic!("expected the connection dropped, got {other:?}"),
    }
}

#[test]
fn a_reload_under_load_keeps_old_connections_and_gives_new_ones_the_new_certificate() {
    let dir = std::env::temp_dir().join(format!("wsloop-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(certs().join("server.pem"), &cert).unwrap();
    std::fs::copy(certs().join("server.key"), &key).unwrap();
    let tls = TlsConfig::from_pem_files(&cert, &key).unwrap();
    let reload = tls.reload_handle();
    let server = start(util::config(2).tls(Some(tls)), || Echo);
    let addr = server.local_addr();
    let leaf = |name: &str| {
        let pem = std::fs::read(certs().join(name)).unwrap();
        CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap()
    };
    let presented =
        |ws: &WebSocket<TlsStream>| ws.get_ref().conn.peer_certificates().unwrap()[0].clone();

    // Clients echoing without pause across the reload, each on its own
    // thread; each counts what came back, in order.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (echoed_tx, echoed_rx) = std::sync::mpsc::channel();
    let busy: Vec<_> = (0..8)
        .map(|c| {
            let stop = stop.clone();
            let echoed_tx = echoed_tx.clone();
            let mut ws = open(addr);
            assert_eq!(presented(&ws), leaf("server.pem"));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 200 {
                    let text = format!("{c}:{n}");
                    ws.send(Message::text(text.clone())).unwrap();
                    assert_eq!(ws.read().unwrap(), Message::text(text));
                    n += 1;
                    if n == 100 {
                        echoed_tx.send(()).unwrap();
                    }
                }
                ws.close(None).unwrap();
                n
            })
        })
        .collect();
    // Every busy client is under way before the reload.
    for _ in 0..busy.len() {
        echoed_rx.recv_timeout(WATCHDOG).unwrap();
    }
    std::fs::copy(certs().join("renewed.pem"), &cert).unwrap();
    std::fs::copy(certs().join("renewed.key"), &key).unwrap();
    reload.reload().unwrap();
    for _ in 0..20 {
        let mut ws = open(addr);
        assert_eq!(
            presented(&ws),
            leaf("renewed.pem"),
            "a new connection sees the new certificate"
        );
        ws.send(Message::text("new")).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text("new"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in busy {
        let n = client
            .join()
            .expect("an old connection kept working through the reload");
        assert!(n >= 200);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// On "flood", sends 64 KiB messages until one is dropped at the write
/// cap, then says how many went; "drained" once the queue is empty.
struct Flooder;

const CHUNK: usize = 64 * 1024;
const CAP: usize = 256 * 1024;

impl wsloop::Handler for Flooder {
    type Data = ();

    fn on_message(&mut self, conn: &mut wsloop::Conn<'_>, msg: wsloop::Message<'_>) {
        if msg == wsloop::Message::Text("flood") {
            let mut queued = 0;
            while conn.send_binary(&[0xAB; CHUNK]) == wsloop::SendStatus::Queued {
                queued += 1;
                assert!(conn.buffered_amount() <= CAP);
            }
            let _ = conn.send_text(&format!("queued {queued}"));
        }
    }

    fn on_drain(&mut self, conn: &mut wsloop::Conn<'_>) {
        let _ = conn.send_text("drained");
    }
}

#[test]
fn the_write_cap_and_the_drain_count_records_not_yet_written() {
    let config = util::config(1)
        .max_write_buffer(CAP)
        .backpressure(wsloop::Backpressure::Drop)
        .tls(Some(tls_config()));
    let server = start(config, || Flooder);
    let mut ws = open(server.local_addr());
    ws.send(Message::text("flood")).unwrap();
    // Not reading yet: the socket fills, and the rest waits sealed or
    // plain in the server. Then everything arrives whole, in order.
    let mut binary = 0;
    let queued = loop {
        match ws.read().unwrap() {
            Message::Binary(b) => {
                assert!(b.iter().all(|&x| x == 0xAB) && b.len() == CHUNK);
                binary += 1;
            }
            Message::Text(t) => break t.strip_prefix("queued ").unwrap().parse::<usize>().unwrap(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(binary, queued);
    assert!(
        queued >= CAP / CHUNK - 1,
        "{queued} messages fit under the cap"
    );
    assert_eq!(ws.read().unwrap(), Message::text("drained"));
    assert_eq!(server.counters().dropped, 1);
}
