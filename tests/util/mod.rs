//! A blocking test client that speaks raw bytes, and server start-up on
//! port 0. Every socket has a read timeout as a watchdog, so a server that
//! hangs fails the test instead of hanging it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use wsloop::frame::{FrameHeader, OpCode, Role};
use wsloop::protocol::encode_frame;
use wsloop::{Config, Handler, Server};

/// How long any single read may block before the test fails.
pub const WATCHDOG: Duration = Duration::from_secs(10);

/// Starts a server on 127.0.0.1:0.
pub fn start<H: Handler + 'static>(
    config: Config,
    factory: impl Fn() -> H + Send + Sync + 'static,
) -> Server {
    Server::bind("127.0.0.1:0", config, factory).expect("bind 127.0.0.1:0")
}

/// A config with small workers count for tests.
pub fn config(workers: usize) -> Config {
    Config::default().workers(workers)
}

/// A raw client connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A frame as the client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    /// RSV1: a compressed message's first frame, with permessage-deflate.
    pub rsv1: bool,
    pub opcode: OpCode,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OpCode::Close && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

impl Client {
    /// Opens a TCP connection with the watchdog set.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and completes a WebSocket upgrade on `path`.
    pub fn open(addr: SocketAddr, path: &str) -> Client {
        Client::open_with(addr, path, "").0
    }

    /// Connects and completes an upgrade with `headers` (each line ending
    /// in CRLF) added to the request; returns the response head too.
    pub fn open_with(addr: SocketAddr, path: &str, headers: &str) -> (Client, String) {
        let mut client = Client::connect(addr);
        let request = upgrade_request(path).replace("\r\n\r\n", &format!("\r\n{headers}\r\n"));
        client.send_raw(request.as_bytes());
        let head = client.read_head();
        assert!(head.starts_with("HTTP/1.1 101 "), "upgrade refused: {head}");
        (client, head)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads an HTTP response head (through the blank line).
    pub fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8(head).expect("ASCII head");
            }
            assert!(self.fill(), "EOF before the response head ended");
        }
    }

    /// Reads a whole HTTP response: head and Content-Length body.
    pub fn read_response(&mut self) -> (String, Vec<u8>) {
        let head = self.read_head();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        while self.buf.len() < len {
            assert!(self.fill(), "EOF inside the body");
        }
        let body = self.buf.drain(..len).collect();
        (head, body)
    }

    /// Sends one masked frame.
    pub fn send_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        let mut out = Vec::new();
        encode_frame(
            &mut out,
            fin,
            opcode,
            Some([0x12, 0x34, 0x56, 0x78]),
            payload,
        );
        self.send_raw(&out);
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, OpCode::Text, text.as_bytes());
    }

    /// Sends a close frame with a code.
    pub fn send_close(&mut self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.send_frame(true, OpCode::Close, &payload);
    }

    /// Reads one frame; `None` on EOF.
    pub fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((header, n)) =
                FrameHeader::parse(&self.buf, Role::Client).expect("valid server frame")
            {
                let len = header.payload_len as usize;
                if self.buf.len() >= n + len {
                    let payload = self.buf[n..n + len].to_vec();
                    self.buf.drain(..n + len);
                    return Some(Frame {
                        fin: header.fin,
                        rsv1: header.rsv1,
                        opcode: header.opcode,
                        payload,
                    });
                }
            }
            if !self.fill() {
                assert!(self.buf.is_empty(), "EOF inside a frame");
                return None;
            }
        }
    }

    /// Reads a frame, which must exist.
    pub fn expect_frame(&mut self) -> Frame {
        self.read_frame().expect("a frame, not EOF")
    }

    /// Reads frames until a close frame, skipping pings; returns its code.
    pub fn expect_close(&mut self) -> Option<u16> {
        loop {
            let frame = self.expect_frame();
            match frame.opcode {
                OpCode::Close => return frame.close_code(),
                OpCode::Ping | OpCode::Pong => continue,
                other => panic!("expected close, got {other:?} {:?}", frame.payload),
            }
        }
    }

    /// Reads until the server closes TCP; returns the bytes that came first.
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
    }

    /// Whether the server has closed the connection (EOF, or a reset).
    pub fn expect_eof(&mut self) {
        let rest = self.read_to_eof();
        assert!(rest.is_empty(), "unexpected bytes before EOF: {rest:?}");
    }

    /// Reads more bytes; false on EOF or reset.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read failed (watchdog {WATCHDOG:?}): {e}"),
        }
    }
}

/// An echo handler for tests.
pub struct Echo;

impl Handler for Echo {
    type Data = ();

    fn on_message(&mut self, conn: &mut wsloop::Conn<'_>, msg: wsloop::Message<'_>) {
        // After our close frame, a message the peer sent before it saw
        // ours still arrives; its echo finds the connection closing.
        let _ = conn.send(msg);
    }
}

/// Everyone is in one room; every message goes to the room.
pub struct Room;

impl Handler for Room {
    type Data = ();

    fn on_open(&mut self, conn: &mut wsloop::Conn<'_>) {
        conn.subscribe("room");
    }

    fn on_message(&mut self, conn: &mut wsloop::Conn<'_>, msg: wsloop::Message<'_>) {
        let _ = conn.publish("room", msg);
    }
}

/// Polls `done` until it holds; fails the test after the watchdog.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < WATCHDOG, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the server holds no connections. The counter drops after
/// `on_close`, so the handler has run by then.
pub fn wait_until_closed(server: &Server) {
    wait_for("connections to be removed", || server.counters().open == 0);
}

/// A built example's executable. `cargo test` builds the examples next
/// to the test binaries.
pub fn example_path(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} missing: build the examples first (the whole `cargo test` does, or `cargo build --example NAME`)",
        path.display()
    );
    path
}

/// Starts a built example on 127.0.0.1:0 and reads its address from the
/// first line it prints (`NAME: ... ws://ADDR/` or `http://ADDR/`).
pub fn spawn_example(name: &str, args: &[&str]) -> (Spawned, BufReader<ChildStdout>, SocketAddr) {
    let path = example_path(name);
    let mut child = Command::new(&path)
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .rsplit("://")
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("no address in {line:?}"));
    (Spawned(child), stdout, addr)
}

/// A running example, killed when dropped, so that a failing test leaves
/// no server behind.
#[derive(Debug)]
pub struct Spawned(pub Child);

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
