//! The chat's `GET /metrics` over raw sockets against the built example:
//! who may read it, through a trusted proxy too, and the open-connections
//! gauge while WebSockets come and go. Then a real Prometheus (Debian's
//! `prometheus` package) scrapes it: `bash scripts/prometheus-test.sh`
//! installs it and runs that test, which `cargo test` leaves out.

mod util;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{spawn_example, Client, WATCHDOG};
use wsloop::frame::OpCode;

/// A request on a kept-alive connection; the answer's head and body (none
/// for HEAD, whose Content-Length is the GET's).
fn request(client: &mut Client, method: &str, path: &str, headers: &str) -> (String, String) {
    client.send_raw(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes());
    if method == "HEAD" {
        return (client.read_head(), String::new());
    }
    let (head, body) = client.read_response();
    (head, String::from_utf8(body).expect("a text body"))
}

fn status(head: &str) -> &str {
    head.lines().next().unwrap()
}

/// The value of an unlabelled sample, from the text format.
fn sample(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `GET /metrics` on `client`'s connection, which must be allowed.
fn metrics(client: &mut Client) -> String {
    let (head, body) = request(client, "GET", "/metrics", "");
    assert_eq!(status(&head), "HTTP/1.1 200 OK", "{head}");
    body
}

/// `n` chat members over WebSocket in one room.
fn members(addr: SocketAddr, n: usize) -> Vec<Client> {
    (0..n)
        .map(|i| Client::open(addr, &format!("/ws?room=metrics&name=member{i}")))
        .collect()
}

/// Closes a member cleanly, reading past what the room sent it, and
/// waits for the server's side of it.
fn leave(mut member: Client) {
    member.send_close(1000, "");
    loop {
        let frame = member.expect_frame();
        if frame.opcode == OpCode::Close {
            assert_eq!(frame.close_code(), Some(1000));
            break;
        }
    }
    member.expect_eof();
}

#[test]
fn metrics_count_open_connections_for_loopback_and_are_404_to_others() {
    let allowed = "198.51.100.9";
    let args = [
        "--workers",
        "2",
        "--trusted-proxy",
        "127.0.0.1",
        "--metrics-allow",
        allowed,
    ];
    let (_child, _stdout, addr) = spawn_example("chat", &args);
    const N: u64 = 5;
    let mut sockets = members(addr, N as usize);
    // One connection for every request here, so that the gauge counts
    // the N members and this one, as at any scrape: the scraper's own
    // connection is open while it is answered.
    let mut scraper = Client::connect(addr);
    let (head, body) = request(&mut scraper, "GET", "/metrics", "");
    assert_eq!(status(&head), "HTTP/1.1 200 OK", "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
        "{head}"
    );
    assert_eq!(
        sample(&body, "wsloop_connections_open"),
        Some(N + 1),
        "{body}"
    );
    assert_eq!(sample(&body, "wsloop_upgrades_total"), Some(N), "{body}");
    assert!(
        body.contains("# TYPE wsloop_connections_open gauge\n"),
        "{body}"
    );
    assert!(
        body.contains("wsloop_closes_total{code=\"1000\"} 0\n"),
        "{body}"
    );
    assert!(
        !body.contains("wsloop_redis_"),
        "no bridge, no bridge counters"
    );

    // The gauge follows members as they leave; their closes are counted.
    leave(sockets.pop().unwrap());
    leave(sockets.pop().unwrap());
    let mut body = metrics(&mut scraper);
    let start = Instant::now();
    while sample(&body, "wsloop_connections_open") != Some(N - 2 + 1) {
        assert!(start.elapsed() < WATCHDOG, "the gauge stayed at {body}");
        body = metrics(&mut scraper);
    }
    assert!(
        body.contains("wsloop_closes_total{code=\"1000\"} 2\n"),
        "{body}"
    );

    // Through the trusted proxy, the client it names is the one checked:
    // a stranger gets 404 whatever the method, an allowed address or the
    // proxy's own loopback client gets the counters.
    let stranger = "X-Forwarded-For: 203.0.113.7\r\n";
    for method in ["GET", "HEAD", "POST"] {
        let (head, body) = request(&mut scraper, method, "/metrics", stranger);
        assert_eq!(status(&head), "HTTP/1.1 404 Not Found", "{method}: {head}");
        assert!(!body.contains("wsloop_"), "{body}");
    }
    let chain = "X-Forwarded-For: 127.0.0.1, 203.0.113.7\r\n";
    let (head, _) = request(&mut scraper, "GET", "/metrics", chain);
    assert_eq!(
        status(&head),
        "HTTP/1.1 404 Not Found",
        "only the address the proxy appended counts: {head}"
    );
    for client in [allowed, "127.0.0.1", "::ffff:198.51.100.9"] {
        let forwarded = format!("X-Forwarded-For: {client}\r\n");
        let (head, body) = request(&mut scraper, "GET", "/metrics", &forwarded);
        assert_eq!(status(&head), "HTTP/1.1 200 OK", "{client}: {head}");
        assert_eq!(sample(&body, "wsloop_connections_open"), Some(N - 2 + 1));
    }
    let (head, _) = request(&mut scraper, "POST", "/metrics", "");
    assert_eq!(status(&head), "HTTP/1.1 405 Method Not Allowed", "{head}");
    drop(sockets);
}

#[test]
fn a_bad_metrics_allow_address_stops_the_chat() {
    let exe = util::example_path("chat");
    let out = Command::new(exe)
        .args(["--addr", "127.0.0.1:0", "--metrics-allow", "localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--metrics-allow needs an IP address"),
        "{stderr}"
    );
}

/// How long Prometheus may take to start, scrape and answer: it scrapes
/// every second, but a loaded machine starts it slowly.
const PROMETHEUS_WATCHDOG: Duration = Duration::from_secs(60);

/// A Prometheus of the test's own, scraping one target every second,
/// with its data in a directory of its own. Killed, and its directory
/// removed, on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("prometheus-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data")).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: chat\n    static_configs:\n      - targets: ['{target}']\n"
        );
        fs::write(dir.join("prometheus.yml"), config).unwrap();
        // A free port: bind port 0 and read it back. Another process
        // could take it before Prometheus does; then Prometheus exits, and
        // `wait_ready` says so with its log.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run prometheus ({e}): install Debian's prometheus \
                     (bash scripts/prometheus-test.sh does)"
                )
            });
        let mut prometheus = Prometheus { child, addr, dir };
        prometheus.wait_ready();
        prometheus
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Waits for `/-/ready` to answer 200.
    fn wait_ready(&mut self) {
        let start = Instant::now();
        while self.get("/-/ready").is_none_or(|(code, _)| code != 200) {
            if let Some(exit) = self.child.try_wait().unwrap() {
                panic!("prometheus exited ({exit}):\n{}", self.log());
            }
            assert!(
                start.elapsed() < PROMETHEUS_WATCHDOG,
                "prometheus not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An HTTP/1.0 GET (no chunked answer, the connection closes after
    /// it); `None` if nothing listens yet.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(self.addr).ok()?;
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).as_bytes())
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        let code = head.split(' ').nth(1)?.parse().ok()?;
        Some((code, body.to_owned()))
    }

    /// `query`'s value now, through the HTTP API, if it has one sample.
    fn query(&self, query: &str) -> Option<f64> {
        let (code, body) = self.get(&format!("/api/v1/query?query={}", url_encoded(query)))?;
        assert_eq!(code, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).expect("the API answers JSON");
        assert_eq!(answer["status"], "success", "{answer}");
        let result = answer["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Queries until `query` is `want`, and fails the test, with what
    /// Prometheus says of its target, after the watchdog.
    fn wait_for(&self, query: &str, want: f64) {
        let start = Instant::now();
        let mut last = None;
        while last != Some(want) {
            assert!(
                start.elapsed() < PROMETHEUS_WATCHDOG,
                "{query} is {last:?}, not {want}; targets: {:?}\n{}",
                self.get("/api/v1/targets"),
                self.log()
            );
            // Between queries, not instead of one: a scrape lands every second.
            std::thread::sleep(Duration::from_millis(50));
            last = self.query(query);
        }
    }
}

/// `text` as a URL's query value: everything but letters, digits and `_`
/// percent-encoded.
fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[ignore = "needs Debian's prometheus: bash scripts/prometheus-test.sh installs it and runs this"]
fn a_real_prometheus_scrapes_the_open_connections_gauge() {
    let (_chat, _stdout, addr) = spawn_example("chat", &["--workers", "2"]);
    // What the chat writes passes Prometheus' own linter.
    let body = metrics(&mut Client::connect(addr));
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool comes with Debian's prometheus");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let prometheus = Prometheus::start(addr);
    // Scraped with nobody connected: the scrape's own connection alone.
    prometheus.wait_for("wsloop_connections_open", 1.0);
    const N: usize = 6;
    let mut sockets = members(addr, N);
    // N members and the scraper's own connection.
    prometheus.wait_for("wsloop_connections_open", (N + 1) as f64);
    prometheus.wait_for("wsloop_upgrades_total", N as f64);
    // A gauge: it goes down too.
    for member in sockets.drain(..N / 2) {
        leave(member);
    }
    prometheus.wait_for("wsloop_connections_open", (N - N / 2 + 1) as f64);
    prometheus.wait_for("wsloop_closes_total{code=\"1000\"}", (N / 2) as f64);
}
