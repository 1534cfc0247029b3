//! Two chat processes sharing a real Redis (Debian's redis-server, started
//! by the test on a free port with no persistence; the test fails if it is
//! missing). The chat example must be built first: `cargo build --example
//! chat` (scripts/redis-test.sh and .ci/run do it).

// The core's test helpers: example start-up and waiting with a watchdog.
#[path = "../../tests/util/mod.rs"]
mod util;

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};
use util::{wait_for, WATCHDOG};

/// A redis-server of the test's own, killed on drop.
struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Redis::start_on(port)
    }

    fn start_on(port: u16) -> Redis {
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

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// Subscribers to each channel, as Redis counts them (one per node).
    fn numsub(&self, channel: &str) -> i64 {
        let mut conn = self.client().get_connection().unwrap();
        let reply: Vec<redis::Value> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut conn)
            .unwrap();
        redis::from_redis_value_ref(&reply[1]).unwrap()
    }

    fn channels(&self) -> Vec<String> {
        let mut conn = self.client().get_connection().unwrap();
        let mut channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg("wsloop:*")
            .query(&mut conn)
            .unwrap();
        channels.sort();
        channels
    }

    fn kill(mut self) -> u16 {
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
struct Chat {
    child: util::Spawned,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl Chat {
    fn start(redis_url: &str) -> Chat {
        let (child, stdout, addr) =
            util::spawn_example("chat", &["--workers", "2", "--redis", redis_url]);
        Chat {
            child,
            stdout,
            addr,
        }
    }

    /// SIGTERM, a clean exit (no worker died), and the bridge's counters.
    fn stop(mut self) -> HashMap<String, u64> {
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
fn said(msg: Message) -> Option<String> {
    let Message::Text(text) = msg else {
        return None;
    };
    let value: serde_json::Value = serde_json::from_str(&text).expect("chat messages are JSON");
    (value["kind"] == "say").then(|| value["text"].as_str().expect("a text").to_owned())
}

/// A chat member.
struct Member {
    ws: WebSocket<TcpStream>,
}

impl Member {
    fn join(addr: SocketAddr, room: &str, name: &str) -> Member {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        let url = format!("ws://{addr}/ws?room={room}&name={name}");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("upgrade");
        Member { ws }
    }

    fn say(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    /// The next chat line, skipping join and leave notices.
    fn line(&mut self) -> String {
        loop {
            if let Some(line) = said(self.ws.read().expect("a line before the watchdog")) {
                return line;
            }
        }
    }

    /// The next chat line if one comes within `wait`.
    fn line_within(&mut self, wait: Duration) -> Option<String> {
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
    fn lines_until(&mut self, last: &str) -> Vec<String> {
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

#[test]
fn rooms_span_two_servers_exactly_once_in_order() {
    let redis = Redis::start();
    let (a, b) = (Chat::start(&redis.url()), Chat::start(&redis.url()));
    let mut lobby: Vec<(usize, Member)> = Vec::new();
    let mut kitchen: Vec<Member> = Vec::new();
    for i in 0..50 {
        for (node, chat) in [(0, &a), (1, &b)] {
            lobby.push((
                node,
                Member::join(chat.addr, "lobby", &format!("n{node}m{i}")),
            ));
            if i < 5 {
                kitchen.push(Member::join(chat.addr, "kitchen", &format!("k{node}m{i}")));
            }
        }
    }
    wait_for("both nodes to subscribe", || {
        redis.numsub("wsloop:lobby") == 2 && redis.numsub("wsloop:kitchen") == 2
    });
    // Ten publishers, five on each node (n0m0..n0m4, n1m0..n1m4), 20
    // lines each, written together.
    const LINES: usize = 20;
    for round in 0..LINES {
        for (_, member) in lobby.iter_mut().take(10) {
            member.say(&format!("{round}"));
        }
    }
    kitchen[0].say("only the kitchen");
    // Each publisher sees its own last line come back, so all its lines
    // are published. Then a sentinel from each node follows every line of
    // that node, everywhere.
    let mut seen: Vec<Vec<String>> = (0..lobby.len()).map(|_| Vec::new()).collect();
    for (i, (_, member)) in lobby.iter_mut().enumerate().take(10) {
        let own = format!("n{}m{}: {}", i % 2, i / 2, LINES - 1);
        seen[i] = member.lines_until(&own);
        assert!(seen[i].last().unwrap() == &own);
    }
    lobby[10].1.say("sentinel"); // n0m5
    lobby[11].1.say("sentinel"); // n1m5
    let mut threads = Vec::new();
    for ((_, mut member), seen) in lobby.drain(..).zip(seen) {
        threads.push(thread::spawn(move || {
            let mut got = seen;
            let mut sentinels = 0;
            while sentinels < 2 {
                let line = member.line();
                if line.ends_with(": sentinel") {
                    sentinels += 1;
                } else {
                    got.push(line);
                }
            }
            (member, got)
        }));
    }
    for handle in threads {
        let (_member, got) = handle.join().unwrap();
        let mut by_publisher: HashMap<String, Vec<usize>> = HashMap::new();
        for line in &got {
            let (name, n) = line.split_once(": ").unwrap();
            assert!(name.starts_with('n'), "a line from another room: {line}");
            by_publisher
                .entry(name.to_string())
                .or_default()
                .push(n.parse().unwrap());
        }
        assert_eq!(by_publisher.len(), 10, "{got:?}");
        for (name, seq) in by_publisher {
            assert_eq!(seq, (0..LINES).collect::<Vec<_>>(), "lines of {name}");
        }
    }
    for member in &mut kitchen {
        assert_eq!(member.line(), "k0m0: only the kitchen");
    }
    drop(kitchen);
    let (ca, cb) = (a.stop(), b.stop());
    // Each node received the other's lines (and sentinel, joins, leaves).
    assert!(ca["received"] >= (LINES * 5 + 1) as u64, "{ca:?}");
    assert!(cb["received"] >= (LINES * 5 + 1) as u64, "{cb:?}");
    assert_eq!((ca["dropped"], cb["dropped"]), (0, 0));
}

#[test]
fn a_redis_restart_loses_only_what_was_said_while_it_was_away() {
    let redis = Redis::start();
    let (a, b) = (Chat::start(&redis.url()), Chat::start(&redis.url()));
    let (mut a1, mut a2) = (
        Member::join(a.addr, "lobby", "a1"),
        Member::join(a.addr, "lobby", "a2"),
    );
    let mut b1 = Member::join(b.addr, "lobby", "b1");
    wait_for("both nodes to subscribe", || {
        redis.numsub("wsloop:lobby") == 2
    });
    a1.say("before");
    assert_eq!(b1.line(), "a1: before");
    assert_eq!(a2.line(), "a1: before");

    let port = redis.kill();
    // Local delivery goes on without Redis, on both servers.
    for i in 0..5 {
        a1.say(&format!("while away {i}"));
        assert_eq!(a2.line(), format!("a1: while away {i}"));
    }
    b1.say("alone on b");
    assert_eq!(b1.line(), "b1: alone on b");

    let _redis = Redis::start_on(port);
    // Cross-node lines flow again once a has reconnected its publisher and
    // b its subscription: probe until b hears one.
    let start = Instant::now();
    let mut heard = Vec::new();
    for n in 0.. {
        assert!(
            start.elapsed() < WATCHDOG,
            "no cross-node line after the restart"
        );
        a1.say(&format!("probe {n}"));
        assert_eq!(a2.line(), format!("a1: probe {n}"));
        if let Some(line) = b1.line_within(Duration::from_millis(100)) {
            heard.push(line);
            break;
        }
    }
    println!("cross-node lines again after {:?}", start.elapsed());
    a1.say("after");
    assert_eq!(a2.line(), "a1: after");
    // b1 hears nothing said while Redis was away: only probes, then "after".
    heard.extend(b1.lines_until("a1: after"));
    assert!(
        heard
            .iter()
            .all(|l| l.starts_with("a1: probe ") || l == "a1: after"),
        "{heard:?}"
    );
    drop((a1, a2, b1));
    let (ca, cb) = (a.stop(), b.stop());
    assert!(
        ca["dropped"] >= 5,
        "the lines said while Redis was away: {ca:?}"
    );
    assert!(
        ca["reconnects"] >= 1 && cb["reconnects"] >= 1,
        "{ca:?} {cb:?}"
    );
}

#[test]
fn a_node_subscribes_to_a_room_only_while_someone_there_is_in_it() {
    let redis = Redis::start();
    let (a, b) = (Chat::start(&redis.url()), Chat::start(&redis.url()));
    assert_eq!(redis.channels(), [] as [&str; 0]);
    let solo = Member::join(a.addr, "solo", "s");
    wait_for("a to subscribe", || redis.channels() == ["wsloop:solo"]);
    assert_eq!(redis.numsub("wsloop:solo"), 1);
    let mut others: Vec<Member> = (0..4)
        .map(|i| Member::join(b.addr, "solo", &format!("o{i}")))
        .collect();
    let duo = Member::join(b.addr, "duo", "d");
    wait_for("b to subscribe", || redis.numsub("wsloop:solo") == 2);
    wait_for("duo to appear", || {
        redis.channels() == ["wsloop:duo", "wsloop:solo"]
    });
    // The last member on a node leaving unsubscribes that node only.
    drop(solo);
    wait_for("a to unsubscribe", || redis.numsub("wsloop:solo") == 1);
    others.truncate(1);
    assert_eq!(redis.numsub("wsloop:solo"), 1, "b still has a member");
    drop(others);
    drop(duo);
    wait_for("b to unsubscribe", || redis.channels().is_empty());
    a.stop();
    b.stop();
}

#[test]
fn malformed_messages_from_redis_are_counted_and_dropped() {
    let redis = Redis::start();
    let a = Chat::start(&redis.url());
    let mut member = Member::join(a.addr, "lobby", "m");
    wait_for("a to subscribe", || redis.numsub("wsloop:lobby") == 1);
    let mut conn = redis.client().get_connection().unwrap();
    let other_node = 7u64.to_be_bytes();
    let bad: [Vec<u8>; 4] = [
        b"short".to_vec(),                             // no node id and kind
        [&other_node[..], &[9], b"kind 9"].concat(),   // an unknown kind
        [&other_node[..], &[1], b"\xff\xfe"].concat(), // text that is not UTF-8
        Vec::new(),
    ];
    for payload in &bad {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("wsloop:lobby")
            .arg(payload)
            .query(&mut conn)
            .unwrap();
    }
    // A well-formed one from another node still arrives, after them: a
    // chat message, which the receiving chat numbers in its own history.
    let line = br#"{"kind":"say","name":"x","text":"x: from elsewhere"}"#;
    let good = [&other_node[..], &[1], &line[..]].concat();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("wsloop:lobby")
        .arg(good)
        .query(&mut conn)
        .unwrap();
    assert_eq!(member.line(), "x: from elsewhere");
    drop(member);
    let counters = a.stop();
    assert_eq!(counters["malformed"], 4, "{counters:?}");
    assert_eq!(counters["received"], 1, "{counters:?}");
}
