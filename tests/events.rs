//! Event streams (`Reply::Stream`, Server-Sent Events) over real sockets:
//! a stream's catch-up and live messages with their ids, from every
//! worker; heartbeats; the per-address limit; the write cap on a reader
//! that stops reading; input on a stream; and the end of a stream on a
//! drain and on shutdown.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use util::{start, wait_for, WATCHDOG};
use wsloop::{
    CloseCode, Config, Conn, Handler, HistoryConfig, Message, MessageId, Publisher, Reply, Request,
    Response, Server, Stream,
};

/// What `on_close` reported, stream by stream.
type Closes = Arc<Mutex<Vec<(u16, String)>>>;

/// `GET /events?after=ID` streams topic "t" from the cursor (`after=0`:
/// from now): its catch-up, then `ready`, then every message. `POST /pub`
/// publishes the body as text, `POST /bin` as binary, and
/// `POST /flood?n=N` publishes N messages of 16 KiB.
struct Streams {
    closes: Closes,
}

impl Handler for Streams {
    type Data = Option<MessageId>;

    fn on_http(
        &mut self,
        req: &Request<'_>,
        _peer: SocketAddr,
        topics: &mut Publisher<'_>,
    ) -> Reply<Self::Data> {
        let body = std::str::from_utf8(req.body()).unwrap_or("?");
        match req.path_only() {
            "/events" => match req.query("after") {
                Some("0") => Reply::Stream(Stream::new(None)),
                Some(id) => match id.parse() {
                    Ok(id) => Reply::Stream(Stream::new(Some(id)).retry(Duration::from_secs(2))),
                    Err(_) => Response::status(400).into(),
                },
                None => Response::status(400).into(),
            },
            "/pub" => {
                let _ = topics.publish("t", Message::Text(body));
                Response::status(204).into()
            }
            "/bin" => {
                let _ = topics.publish("t", Message::Binary(body.as_bytes()));
                Response::status(204).into()
            }
            "/flood" => {
                let n: usize = req.query("n").and_then(|n| n.parse().ok()).unwrap_or(1);
                let big = "x".repeat(16 * 1024);
                for _ in 0..n {
                    let _ = topics.publish("t", Message::Text(&big));
                }
                Response::status(204).into()
            }
            _ => Response::status(404).into(),
        }
    }

    fn on_open(&mut self, conn: &mut Conn<'_, Self::Data>) {
        assert!(conn.is_stream(), "only streams here");
        let after = *conn.data();
        let catchup = conn.history("t", after);
        for entry in &catchup.entries {
            let _ = conn.send_entry(entry);
        }
        conn.subscribe_after("t", catchup.latest);
        let _ = conn.send_text("ready");
    }

    fn on_message(&mut self, _conn: &mut Conn<'_, Self::Data>, _msg: Message<'_>) {
        unreachable!("a stream delivers no messages");
    }

    fn on_close(&mut self, _conn: &mut Conn<'_, Self::Data>, code: CloseCode, reason: &str) {
        let mut closes = self.closes.lock().unwrap();
        closes.push((code.0, reason.to_owned()));
    }
}

fn server(config: Config) -> (Server, SocketAddr, Closes) {
    let closes = Closes::default();
    let theirs = closes.clone();
    let config = config.history(Some(HistoryConfig::default()));
    let server = start(config, move || Streams {
        closes: theirs.clone(),
    });
    let addr = server.local_addr();
    (server, addr, closes)
}

/// One event as a reader puts it together: its id and its data lines
/// joined with `\n`; a comment block is `(None, ":")`.
type Event = (Option<String>, String);

/// A stream's reading end.
struct Reader {
    lines: BufReader<TcpStream>,
    head: String,
}

impl Reader {
    fn open(addr: SocketAddr, path: &str) -> Reader {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut lines = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            lines.read_line(&mut line).unwrap();
            head += &line;
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        Reader { lines, head }
    }

    /// The next block, or `None` at the end of the stream.
    fn next(&mut self) -> Option<Event> {
        let (mut id, mut data, mut comment) = (None, Vec::new(), false);
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).unwrap() == 0 {
                return None;
            }
            let line = line.strip_suffix('\n').expect("lines end in LF");
            match line.split_once(": ") {
                _ if line.is_empty() && comment => return Some((None, ":".into())),
                _ if line.is_empty() => return Some((id, data.join("\n"))),
                _ if line.starts_with(':') => comment = true,
                Some(("id", value)) => id = Some(value.to_owned()),
                Some(("data", value)) => data.push(value.to_owned()),
                Some(("retry", _)) => comment = true,
                _ => panic!("not an event stream line: {line:?}"),
            }
        }
    }

    /// The next event that is not a heartbeat.
    fn event(&mut self) -> Event {
        loop {
            match self.next().expect("the stream ended") {
                (None, c) if c == ":" => continue,
                event => return event,
            }
        }
    }

    fn expect_end(&mut self) {
        while let Some(event) = self.next() {
            assert_eq!(event, (None, ":".into()), "an event after the end");
        }
    }
}

fn post(addr: SocketAddr, path: &str, body: &str) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(WATCHDOG)).unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    c.write_all(request.as_bytes()).unwrap();
    let mut head = String::new();
    BufReader::new(c).read_line(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 204 "), "{head}");
}

#[test]
fn a_stream_gets_its_catch_up_then_every_message_with_its_id() {
    let (_server, addr, _) = server(util::config(2));
    post(addr, "/pub", "first");
    let mut from_now = Reader::open(addr, "/events?after=0");
    assert!(
        from_now.head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        from_now.head
    );
    for header in [
        "Content-Type: text/event-stream\r\n",
        "Cache-Control: no-store\r\n",
        "X-Accel-Buffering: no\r\n",
        "Connection: close\r\n",
    ] {
        assert!(from_now.head.contains(header), "{}", from_now.head);
    }
    assert!(!from_now.head.contains("Content-Length"));
    assert_eq!(from_now.event(), (None, "ready".into()));
    // Published over connections that land on either worker.
    post(addr, "/pub", "second\nline");
    post(addr, "/bin", "not text");
    post(addr, "/pub", "third");
    // The history's default envelope writes the id before the text.
    let (id2, data) = from_now.event();
    let id2: MessageId = id2.expect("a message has an id").parse().unwrap();
    assert_eq!(data, format!("{id2} second\nline"));
    let (id3, data) = from_now.event();
    let id3: MessageId = id3.expect("a message has an id").parse().unwrap();
    assert_eq!(
        data,
        format!("{id3} third"),
        "the binary message is not sent"
    );
    assert_eq!((id2.seq, id3.seq), (2, 4));

    // A reader that comes back with the last id it had gets the rest.
    let mut resumed = Reader::open(addr, &format!("/events?after={id2}"));
    let third = (Some(id3.to_string()), format!("{id3} third"));
    assert_eq!(resumed.event(), third);
    assert_eq!(resumed.event(), (None, "ready".into()));
}

#[test]
fn a_silent_stream_gets_heartbeats() {
    let config = util::config(1).stream_heartbeat(Some(Duration::from_millis(50)));
    let (_server, addr, _) = server(config);
    let mut reader = Reader::open(addr, "/events?after=0");
    assert_eq!(reader.event(), (None, "ready".into()));
    for _ in 0..3 {
        assert_eq!(reader.next(), Some((None, ":".into())));
    }
}

#[test]
fn streams_and_holds_share_the_per_address_limit() {
    let (server, addr, _) = server(util::config(1).max_held_per_ip(2));
    let mut first = Reader::open(addr, "/events?after=0");
    let mut second = Reader::open(addr, "/events?after=0");
    let refused = Reader::open(addr, "/events?after=0");
    assert!(
        refused.head.starts_with("HTTP/1.1 429 "),
        "{}",
        refused.head
    );
    assert_eq!(server.counters().streams, 2);
    assert_eq!(first.event(), (None, "ready".into()));
    assert_eq!(second.event(), (None, "ready".into()));
    drop(first);
    // The server learns the reader left when it next writes to it, or
    // at once from the FIN.
    wait_for("the first stream to end", || server.counters().streams == 1);
    let mut third = Reader::open(addr, "/events?after=0");
    assert_eq!(third.event(), (None, "ready".into()));
}

#[test]
fn a_reader_that_stops_reading_is_ended_at_the_write_cap() {
    let config = util::config(1).max_write_buffer(256 * 1024);
    let (server, addr, closes) = server(config);
    let stalled = Reader::open(addr, "/events?after=0");
    wait_for("the stream", || server.counters().streams == 1);
    // 16 KiB a message, until the socket's buffers and the cap are full.
    for _ in 0..200 {
        post(addr, "/flood?n=64", "");
        if server.counters().streams == 0 {
            break;
        }
    }
    wait_for("the stalled stream to be ended", || {
        server.counters().streams == 0
    });
    let closes = closes.lock().unwrap().clone();
    assert_eq!(closes, [(1008, "write buffer full".to_owned())]);
    drop(stalled);
}

#[test]
fn input_on_a_stream_ends_it() {
    let (server, addr, closes) = server(util::config(1));
    let mut reader = Reader::open(addr, "/events?after=0");
    assert_eq!(reader.event(), (None, "ready".into()));
    let stream = reader.lines.get_mut();
    stream
        .write_all(b"GET /events?after=0 HTTP/1.1\r\n\r\n")
        .unwrap();
    reader.expect_end();
    wait_for("the stream's end", || server.counters().streams == 0);
    let closes = closes.lock().unwrap().clone();
    assert_eq!(closes, [(1008, "input on an event stream".to_owned())]);
}

#[test]
fn a_drain_ends_streams_after_their_last_events_and_shutdown_ends_the_rest() {
    let (server, addr, closes) = server(util::config(2));
    let mut readers: Vec<Reader> = (0..4)
        .map(|_| Reader::open(addr, "/events?after=0"))
        .collect();
    for reader in &mut readers {
        assert_eq!(reader.event(), (None, "ready".into()));
    }
    post(addr, "/pub", "before the drain");
    server.shutdown_handle().drain(Duration::from_millis(200));
    for reader in &mut readers {
        assert!(reader.event().1.ends_with(" before the drain"));
        reader.expect_end();
    }
    server.join().unwrap();
    let closes = closes.lock().unwrap().clone();
    assert_eq!(closes.len(), 4);
    for (code, reason) in closes {
        assert_eq!((code, reason.as_str()), (1012, "server restarting"));
    }
}
