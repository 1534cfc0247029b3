//! What the Redis tests share: a redis-server of their own, chat
//! processes started with `--redis`, and chat members over WebSocket.

#![allow(dead_code)]

// The core's test helpers: example start-up and waiting with a watchdog.
#[path = "../../../tests/util/mod.rs"]
pub mod util;

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use tungstenite::{Message, WebSocket};
pub use util::{wait_for, WATCHDOG};

/// A redis-server of the test's own, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Redis::start_on(port)
    }

    pub fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install Debian's redis-server (apt-get install redis-server)")
            });
        let redis = Redis { port, child };
        wait_for("redis-server to accept connections", || {
            redis.client().get_connection().is_ok()
        });
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// Subscribers to each channel, as Redis counts them (one per node).
    pub fn numsub(&self, channel: &str) -> i64 {
        let mut conn = self.client().get_connection().unwrap();
        let reply: Vec<redis::Value> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut conn)
            .unwrap();
        redis::from_redis_value_ref(&reply[1]).unwrap()
    }

    pub fn channels(&self) -> Vec<String> {
        let mut conn = self.client().get_connection().unwrap();
        let mut channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg("wsloop:*")
            .query(&mut conn)
            .unwrap();
        channels.sort();
        channels
    }

    pub fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One chat process with `--redis`.
pub struct Chat {
    pub child: util::Spawned,
    stdout: BufReader<ChildStdout>,
    pub addr: SocketAddr,
}

impl Chat {
    /// A chat whose rooms are numbered and kept in Redis.
    pub fn start(redis_url: &str) -> Chat {
        Chat::start_with(redis_url, &[])
    }

    /// A chat that delivers on its own node first (`--redis-local-first`).
    pub fn start_local_first(redis_url: &str) -> Chat {
        Chat::start_with(redis_url, &["--redis-local-first"])
    }

    pub fn start_with(redis_url: &str, extra: &[&str]) -> Chat {
        let mut args = vec!["--workers", "2", "--redis", redis_url];
        args.extend_from_slice(extra);
        let (child, stdout, addr) = util::spawn_example("chat", &args);
        Chat {
            child,
            stdout,
            addr,
        }
    }

    /// SIGKILL: the node dies without a word to anyone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// An HTTP request on a connection of its own; the status and body.
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use std::io::Write;
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }

    /// The status a WebSocket upgrade on `path` gets.
    pub fn upgrade_status(&self, path: &str) -> u16 {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        let url = format!("ws://{}{path}", self.addr);
        match tungstenite::client(url.as_str(), stream) {
            Ok((_, response)) => response.status().as_u16(),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                response.status().as_u16()
            }
            Err(e) => panic!("upgrade on {path}: {e}"),
        }
    }

    /// `GET /poll` for `name` in `room` after `after` (`0` joins): the
    /// status and the answer's JSON.
    pub fn poll(&self, room: &str, name: &str, after: &str) -> (u16, serde_json::Value) {
        let path = format!("/poll?room={room}&name={name}&client=client-{name}&after={after}");
        let (status, body) = self.http("GET", &path, "");
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// SIGTERM, a clean exit (no worker died), and the bridge's counters.
    pub fn stop(mut self) -> HashMap<String, u64> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "chat exited with {status}: {out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("chat: redis: "))
            .unwrap_or_else(|| panic!("no counters in {out}"));
        line.trim_start_matches("chat: redis: ")
            .split(", ")
            .map(|part| {
                let (n, name) = part.split_once(' ').unwrap();
                (name.to_string(), n.parse().unwrap())
            })
            .collect()
    }
}

/// The text of a chat line (`"kind":"say"`); `None` for anything else.
pub fn said(msg: Message) -> Option<String> {
    let Message::Text(text) = msg else {
        return None;
    };
    let value: serde_json::Value = serde_json::from_str(&text).expect("chat messages are JSON");
    (value["kind"] == "say").then(|| value["text"].as_str().expect("a text").to_owned())
}

/// A chat member.
pub struct Member {
    pub ws: WebSocket<TcpStream>,
}

impl Member {
    pub fn join(addr: SocketAddr, room: &str, name: &str) -> Member {
        Member::join_query(addr, &format!("room={room}&name={name}"))
    }

    /// Joins with a cursor: resumes after message `after`.
    pub fn resume(addr: SocketAddr, room: &str, name: &str, after: &str) -> Member {
        Member::join_query(addr, &format!("room={room}&name={name}&after={after}"))
    }

    fn join_query(addr: SocketAddr, query: &str) -> Member {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        let url = format!("ws://{addr}/ws?{query}");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("upgrade");
        Member { ws }
    }

    /// The next message of any kind, as JSON; `None` once the connection
    /// is closed.
    pub fn next(&mut self) -> Option<serde_json::Value> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("chat messages are JSON"))
                }
                Ok(Message::Close(_)) => {}
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed) => return None,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Reads until the server closes; the close code it sent.
    pub fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(e) => panic!("no close frame: {e}"),
            }
        }
    }

    /// Numbered messages (`id`) until a line `last` arrives, included;
    /// none of what comes may be a reset notice.
    pub fn numbered_until(&mut self, last: &str) -> Vec<(String, serde_json::Value)> {
        let mut got = Vec::new();
        loop {
            let msg = self.next().expect("the connection stays open");
            assert_ne!(msg["kind"], "reset", "no reset expected: {got:?}");
            let Some(id) = msg["id"].as_str() else {
                continue;
            };
            let done = msg["text"] == last;
            got.push((id.to_owned(), msg));
            if done {
                return got;
            }
        }
    }

    pub fn say(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    /// The next chat line, skipping join and leave notices.
    pub fn line(&mut self) -> String {
        loop {
            if let Some(line) = said(self.ws.read().expect("a line before the watchdog")) {
                return line;
            }
        }
    }

    /// The next chat line if one comes within `wait`.
    pub fn line_within(&mut self, wait: Duration) -> Option<String> {
        self.ws.get_ref().set_read_timeout(Some(wait)).unwrap();
        let line = loop {
            match self.ws.read() {
                Ok(msg) => {
                    if let Some(line) = said(msg) {
                        break Some(line);
                    }
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break None
                }
                Err(e) => panic!("read failed: {e}"),
            }
        };
        self.ws.get_ref().set_read_timeout(Some(WATCHDOG)).unwrap();
        line
    }

    /// Lines until `last` arrives, which is included.
    pub fn lines_until(&mut self, last: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let done = line == last;
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}
