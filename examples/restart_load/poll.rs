//! A member that long-polls: one thread polls with its cursor, another
//! says its lines with `POST /send`, each on an HTTP/1.1 connection of its
//! own kept alive through the proxy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use wsloop::MessageId;

use crate::record::{pause, Log, Outcome, Phase, Rng, Shared};

/// The first wait after a failed poll, doubled up to [`MAX_BACKOFF`] (the
/// page's poll loop).
const BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A poll is held up to 25 s (the chat's `--poll-hold`); an answer later
/// than this is a failure.
const POLL_TIMEOUT: Duration = Duration::from_secs(35);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Member `i`, until the load finishes: its log.
pub fn member(shared: &Shared, i: usize) -> Log {
    let mut log = Log::new(shared, i, false);
    let mut rng = Rng::new(i);
    // The page's token: 8 to 64 of A-Z a-z 0-9 _ -.
    let client = format!("load{i:06}x{:012x}", (rng.unit() * 1e14) as u64);
    thread::scope(|scope| {
        let lines = thread::Builder::new()
            .name(format!("lines-{i}"))
            .stack_size(crate::STACK)
            .spawn_scoped(scope, || say_lines(shared, i, &client))
            .expect("a thread starts");
        poll_loop(shared, &mut log, &client);
        log.merge_sender(lines.join().expect("the sending thread does not panic"));
    });
    log
}

/// Polls with the member's cursor until the load finishes.
fn poll_loop(shared: &Shared, log: &mut Log, client: &str) {
    let mut http = Http::new(shared.addr);
    let mut backoff = BACKOFF;
    while !shared.finished.load(Ordering::Acquire) {
        let after = log.last.map_or_else(|| "0".to_owned(), |id| id.to_string());
        let path = format!(
            "/poll?room={}&name={}&client={client}&after={after}",
            shared.opts.room, log.name
        );
        let tried = shared.now();
        let failed = match http.request("GET", &path, b"", POLL_TIMEOUT) {
            Ok(answer) if answer.status == 200 => {
                log.connected(shared, tried);
                backoff = BACKOFF;
                match serde_json::from_slice(&answer.body) {
                    Ok(body) => take_answer(shared, log, &body),
                    Err(_) => log.fault(shared, "a poll's answer is not JSON".into()),
                }
                None
            }
            Ok(answer) => Some(Outcome::Status(answer.status)),
            Err(outcome) => Some(outcome),
        };
        match failed {
            Some(outcome) => {
                log.lost(shared, format!("poll {outcome}"));
                log.failed(shared, "poll", outcome);
                pause(shared, backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            // Fetched in batches: a busy room answers every poll at once.
            None => pause(shared, shared.opts.poll_gap),
        }
    }
}

/// A poll's answer: its messages, then its cursor.
fn take_answer(shared: &Shared, log: &mut Log, body: &Value) {
    if body["reset"] == true {
        log.fault(shared, format!("a poll answered with a reset: {body}"));
        log.last = None;
    }
    for msg in body["messages"].as_array().into_iter().flatten() {
        log.receive(shared, msg);
    }
    if let Some(latest) = body["latest"].as_str() {
        match latest.parse::<MessageId>() {
            Ok(latest) => log.cursor(shared, latest),
            Err(_) => log.fault(shared, format!("not an id: latest {latest}")),
        }
    }
}

/// Says the member's lines, and its `end`, with `POST /send`.
fn say_lines(shared: &Shared, i: usize, client: &str) -> Log {
    let mut log = Log::new(shared, i, false);
    let mut rng = Rng::new(i.wrapping_mul(7919));
    let mut http = Http::new(shared.addr);
    let path = format!(
        "/send?room={}&name={}&client={client}",
        shared.opts.room, log.name
    );
    // Lines start once every member is in, at a random point of the first
    // period.
    if !shared.wait_until(|| shared.phase() != Phase::Joining) {
        return log;
    }
    let every = shared.opts.every;
    let mut next = Instant::now() + every.mul_f64(rng.unit());
    let mut end_taken = false;
    while !shared.finished.load(Ordering::Acquire) {
        let now = Instant::now();
        if shared.phase() == Phase::Ending {
            // `end` until it is taken: each member's `end` counts once,
            // however often it is heard.
            if !end_taken {
                match http.request("POST", &path, b"end", SEND_TIMEOUT) {
                    Ok(answer) if answer.status == 204 => end_taken = true,
                    Ok(answer) => log.failed(shared, "send", Outcome::Status(answer.status)),
                    Err(outcome) => log.failed(shared, "send", outcome),
                }
            }
            pause(shared, Duration::from_millis(50));
            continue;
        }
        if now < next {
            pause(shared, (next - now).min(Duration::from_millis(50)));
            continue;
        }
        while next <= now {
            next += every;
        }
        let (seq, text) = log.next_line(shared);
        match http.request("POST", &path, text.as_bytes(), SEND_TIMEOUT) {
            Ok(answer) if answer.status == 204 => {
                log.said[seq] = true;
                log.ok += 1;
            }
            Ok(answer) => {
                log.unsent += 1;
                log.failed(shared, "send", Outcome::Status(answer.status));
            }
            Err(outcome) => {
                log.unsent += 1;
                log.failed(shared, "send", outcome);
            }
        }
    }
    log
}

/// An answer: its status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
    /// Whether the connection may carry the next request.
    keep_alive: bool,
}

/// An HTTP/1.1 client connection, kept alive across requests; opened again
/// after an answer with `Connection: close` or a failed request.
struct Http {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Http {
    fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            stream: None,
            buf: Vec::new(),
        }
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Answer, Outcome> {
        let answer = self.exchange(method, path, body, timeout);
        if !answer.as_ref().is_ok_and(|a| a.keep_alive) {
            self.stream = None;
        }
        answer
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Answer, Outcome> {
        let io = |e: std::io::Error| Outcome::of_io(&e);
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT).map_err(io)?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            unreachable!("connected just above");
        };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).map_err(io)?;

        self.buf.clear();
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            read_more(stream, &mut self.buf)?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Outcome::Other(format!("not an HTTP answer: {head:?}")))?;
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let mut keep_alive = head.starts_with("http/1.1") && header("connection") != Some("close");
        let body = if header("transfer-encoding") == Some("chunked") {
            read_chunked(stream, &mut self.buf, head_end)?
        } else if let Some(len) = header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| Outcome::Other(format!("bad content-length {len}")))?;
            while self.buf.len() < head_end + len {
                read_more(stream, &mut self.buf)?;
            }
            self.buf[head_end..head_end + len].to_vec()
        } else if status == 204 || status == 304 {
            Vec::new()
        } else {
            // No length: the body runs to the end of the connection.
            keep_alive = false;
            loop {
                match stream.read_to_end(&mut self.buf) {
                    Ok(_) => break self.buf[head_end..].to_vec(),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io(e)),
                }
            }
        };
        Ok(Answer {
            status,
            body,
            keep_alive,
        })
    }
}

/// Reads what comes; the end of the connection before an answer is whole
/// is a reset.
fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Outcome> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(Outcome::Reset),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Outcome::of_io(&e)),
        }
    }
}

/// A chunked body from `at` on (RFC 9112 §7.1), without trailers.
fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>, at: usize) -> Result<Vec<u8>, Outcome> {
    let mut body = Vec::new();
    let mut at = at;
    loop {
        let line_end = loop {
            if let Some(end) = find(&buf[at..], b"\r\n") {
                break at + end;
            }
            read_more(stream, buf)?;
        };
        let size = String::from_utf8_lossy(&buf[at..line_end]);
        let size = size.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| Outcome::Other(format!("bad chunk size {size:?}")))?;
        at = line_end + 2;
        while buf.len() < at + size + 2 {
            read_more(stream, buf)?;
        }
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
