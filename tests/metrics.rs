//! The chat's `GET /metrics` over raw sockets against the built example:
//! who may read it, through a trusted proxy too, and the open-connections
//! gauge while WebSockets come and go.

mod util;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Instant;

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
