//! The clients' side of each transport, by hand, over sockets that count
//! their bytes: the WebSocket upgrade and frames, HTTP/1.1 requests on a
//! kept-alive connection, and a Server-Sent Events stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use socket2::{Domain, Socket, Type};

use crate::Tally;

/// A socket that counts its bytes into the run's tally.
pub struct Counted {
    pub stream: TcpStream,
    tally: Arc<Tally>,
}

impl Counted {
    /// Connects from `from`, a loopback address of the member's own, as
    /// clients on the internet each have theirs (the server limits held
    /// polls per address).
    pub fn connect(addr: SocketAddr, from: IpAddr, tally: &Arc<Tally>) -> Counted {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .expect("bind a loopback address");
        socket.connect(&addr.into()).expect("connect to the chat");
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true).expect("nodelay");
        Counted {
            stream,
            tally: tally.clone(),
        }
    }

    /// A second handle on the same socket, counting into the same tally:
    /// one thread reads while another writes.
    pub fn try_clone(&self) -> Counted {
        Counted {
            stream: self.stream.try_clone().expect("clone"),
            tally: self.tally.clone(),
        }
    }
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.tally.wire.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.tally.wire.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---- WebSocket, by hand: a client's masked frames, the server's plain ones.

pub fn ws_open(
    addr: SocketAddr,
    from: IpAddr,
    room: &str,
    name: &str,
    tally: &Arc<Tally>,
) -> BufReader<Counted> {
    let mut conn = Counted::connect(addr, from, tally);
    let head = format!(
        "GET /ws?room={room}&name={name} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).expect("upgrade request");
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).expect("upgrade answer");
    assert!(line.starts_with("HTTP/1.1 101"), "{line}");
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).expect("upgrade head");
    }
    reader
}

/// Writes one masked text frame.
pub fn ws_send(stream: &mut impl Write, text: &str) -> std::io::Result<()> {
    let payload = text.as_bytes();
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame)
}

/// Reads one server frame's payload; `None` at the end.
pub fn ws_read(reader: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut head = [0; 2];
    reader.read_exact(&mut head).ok()?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0; 2];
            reader.read_exact(&mut n).ok()?;
            u16::from_be_bytes(n) as usize
        }
        127 => {
            let mut n = [0; 8];
            reader.read_exact(&mut n).ok()?;
            u64::from_be_bytes(n) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0; len];
    reader.read_exact(&mut payload).ok()?;
    Some((head[0] & 0x0f, payload))
}

// ---- HTTP/1.1 kept alive: long polling, and saying a line.

/// Writes a request with the smallest head HTTP/1.1 allows.
pub fn request(conn: &mut BufReader<Counted>, method: &str, path: &str, body: &str) -> Option<()> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(request.as_bytes()).ok()
}

/// Reads an answer's head: its status and its `Content-Length`, 0 if none.
fn head(conn: &mut BufReader<Counted>) -> Option<(u16, usize)> {
    let mut line = String::new();
    conn.read_line(&mut line).ok()?;
    let status = line.split(' ').nth(1)?.parse().ok()?;
    let mut len = 0;
    loop {
        line.clear();
        conn.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            len = v.trim().parse().ok()?;
        }
    }
    Some((status, len))
}

/// Reads an answer's status and body.
pub fn answer(conn: &mut BufReader<Counted>) -> Option<(u16, Vec<u8>)> {
    let (status, len) = head(conn)?;
    let mut body = vec![0; len];
    conn.read_exact(&mut body).ok()?;
    Some((status, body))
}

/// Sends a request and reads the answer's status and body.
pub fn http(
    conn: &mut BufReader<Counted>,
    method: &str,
    path: &str,
    body: &str,
) -> Option<(u16, Vec<u8>)> {
    request(conn, method, path, body)?;
    answer(conn)
}

// ---- Server-Sent Events: one answer that never ends, read line by line.

/// Opens the member's event stream with the head `EventSource` sends
/// (less its `User-Agent` and cookies), and reads the answer's head; the
/// events follow on the returned reader.
pub fn sse_open(
    addr: SocketAddr,
    from: IpAddr,
    room: &str,
    name: &str,
    tally: &Arc<Tally>,
) -> BufReader<Counted> {
    let mut conn = BufReader::new(Counted::connect(addr, from, tally));
    // The token a member's POST /send carries too: one member, not two.
    let path = format!("/events?room={room}&name={name}&client=bench-{name}-{room}");
    let head_lines = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
    conn.get_mut()
        .write_all(head_lines.as_bytes())
        .expect("stream request");
    let (status, _) = head(&mut conn).expect("stream answer");
    assert_eq!(status, 200, "GET {path}");
    conn
}

/// Reads the stream up to the next event and returns its data; `None`
/// at the end. An event is `field: value` lines ended by a blank line;
/// only `data:` matters here. Comments (`:`, the heartbeat) and `retry:`
/// are skipped, and so is `id:`, the cursor that `EventSource` would send
/// back as `Last-Event-ID` if it reconnected, which this bench never does.
pub fn sse_next(conn: &mut impl BufRead) -> Option<String> {
    let mut data = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let field = line.trim_end_matches(['\r', '\n']);
        if field.is_empty() && !data.is_empty() {
            return Some(data);
        }
        if let Some(value) = field.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
}
