//! The upgrade over real sockets: every refusal gets its status and
//! `Connection: close`, then the socket closes. Plain requests go to the
//! handler, on a connection kept for the next one.

mod util;

use util::{start, upgrade_request, Client, Echo, KEY};
use wsloop::{Conn, Handler, Message, Reply, Request, Response, Upgrade};

#[test]
fn handshake_fed_one_byte_at_a_time() {
    let server = start(util::config(1), || Echo);
    let mut client = util::Client::connect(server.local_addr());
    for byte in upgrade_request("/").bytes() {
        client.send_raw(&[byte]);
    }
    let head = client.read_head();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    client.send_text("after");
    assert_eq!(client.expect_frame().payload, b"after");
}

#[test]
fn frames_sent_with_the_request_are_not_lost() {
    let server = start(util::config(1), || Echo);
    let mut client = Client::connect(server.local_addr());
    let mut bytes = upgrade_request("/").into_bytes();
    let mut frame = Vec::new();
    wsloop::protocol::encode_frame(
        &mut frame,
        true,
        wsloop::frame::OpCode::Text,
        Some([1, 2, 3, 4]),
        b"early",
    );
    bytes.extend_from_slice(&frame);
    client.send_raw(&bytes);
    assert!(client.read_head().starts_with("HTTP/1.1 101"));
    assert_eq!(client.expect_frame().payload, b"early");
}

fn refused(request: &str) -> (String, Vec<u8>) {
    let server = start(util::config(1), || Echo);
    let mut client = Client::connect(server.local_addr());
    client.send_raw(request.as_bytes());
    let (head, body) = client.read_response();
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    client.expect_eof();
    let counters = server.counters();
    assert_eq!(counters.upgraded, 0);
    (head, body)
}

#[test]
fn each_bad_request_gets_its_status_and_the_socket_closes() {
    let good = upgrade_request("/");
    let cases = [
        ("GARBAGE / \r\n\r\n".to_owned(), "400"),
        (good.replace("GET /", "POST /"), "405"),
        (good.replace("HTTP/1.1", "HTTP/1.0"), "400"),
        (good.replace("Host: localhost\r\n", ""), "400"),
        (good.replace("Upgrade: websocket", "Upgrade: h2c"), "400"),
        (
            good.replace("Connection: Upgrade", "Connection: keep-alive"),
            "400",
        ),
        (good.replace(KEY, "dG9vIHNob3J0"), "400"),
        (good.replace("Version: 13", "Version: 12"), "426"),
        (
            good.replace("Host:", &format!("X-Big: {}\r\nHost:", "x".repeat(9000))),
            "431",
        ),
    ];
    for (request, status) in cases {
        let (head, _) = refused(&request);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:?} got {head}"
        );
        if status == "426" {
            assert!(head.contains("Sec-WebSocket-Version: 13\r\n"));
        }
    }
}

#[test]
fn oversized_head_is_refused_without_waiting_for_its_end() {
    let server = start(util::config(1), || Echo);
    let mut client = Client::connect(server.local_addr());
    // No blank line ever comes; the server must not buffer without bound.
    client.send_raw(format!("GET / HTTP/1.1\r\nX: {}", "y".repeat(20_000)).as_bytes());
    let (head, _) = client.read_response();
    assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
}

/// Accepts `/chat` with the `chat` subprotocol, serves a page on plain GET,
/// and refuses everything else with 404.
struct Picky;

impl Handler for Picky {
    /// The path and the chosen subprotocol, kept from the upgrade.
    type Data = String;

    fn on_upgrade(&mut self, req: &Request<'_>, _peer: std::net::SocketAddr) -> Upgrade<String> {
        if req.path_only() != "/chat" {
            return Upgrade::reject(Response::status(404));
        }
        let protocol = req.protocols().find(|p| *p == "chat");
        let data = format!("{} {protocol:?}", req.path);
        match protocol {
            Some(p) => Upgrade::accept_with_protocol(p, data),
            None => Upgrade::accept(data),
        }
    }

    fn on_http(
        &mut self,
        req: &Request<'_>,
        _peer: std::net::SocketAddr,
        _topics: &mut wsloop::Publisher<'_>,
    ) -> Reply<String> {
        match req.path_only() {
            "/" => Response::ok("text/html", "<p>hi</p>").into(),
            _ => Response::status(404).into(),
        }
    }

    fn on_message(&mut self, conn: &mut Conn<'_, String>, _msg: Message<'_>) {
        let reply = conn.data().clone();
        assert_eq!(conn.send_text(&reply), wsloop::SendStatus::Queued);
    }
}

#[test]
fn hook_chooses_the_subprotocol_and_rejects_paths() {
    let server = start(util::config(1), || Picky);
    let addr = server.local_addr();

    let mut client = Client::connect(addr);
    let request = upgrade_request("/chat?x=1").replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Protocol: superchat, chat\r\n\r\n",
    );
    client.send_raw(request.as_bytes());
    let head = client.read_head();
    assert!(head.contains("Sec-WebSocket-Protocol: chat\r\n"), "{head}");
    client.send_text("?");
    assert_eq!(client.expect_frame().payload, b"/chat?x=1 Some(\"chat\")");

    let mut client = Client::connect(addr);
    client.send_raw(upgrade_request("/other").as_bytes());
    let (head, _) = client.read_response();
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
    assert!(head.contains("Connection: close"));
    client.expect_eof();
}

#[test]
fn plain_get_goes_to_the_handler() {
    let server = start(util::config(1), || Picky);
    let mut client = Client::connect(server.local_addr());
    client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = client.read_response();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/html\r\n"));
    assert_eq!(body, b"<p>hi</p>");
    // HTTP/1.1 keeps the connection for the next request, until one asks
    // to close.
    assert!(!head.contains("Connection:"), "{head}");
    client.send_raw(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (head, _) = client.read_response();
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
    client.expect_eof();
}

#[test]
fn default_plain_get_answer_is_426() {
    let server = start(util::config(1), || Echo);
    let mut client = Client::connect(server.local_addr());
    client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, _) = client.read_response();
    assert!(head.starts_with("HTTP/1.1 426 "), "{head}");
}

/// Refuses every upgrade with the status its path names (`/403`).
struct Refuser;

impl wsloop::Handler for Refuser {
    type Data = ();

    fn on_upgrade(
        &mut self,
        req: &wsloop::Request<'_>,
        _: std::net::SocketAddr,
    ) -> wsloop::Upgrade<()> {
        let status = req.path_only()[1..].parse().unwrap_or(400);
        wsloop::Upgrade::reject(wsloop::Response::status(status))
    }

    fn on_message(&mut self, _: &mut wsloop::Conn<'_>, _: wsloop::Message<'_>) {}
}

#[test]
fn upgrades_the_handler_refuses_are_counted_by_status_and_printed_only_then() {
    let server = util::start(util::config(1), || Refuser);
    let quiet = server.counters().to_string();
    assert!(
        !quiet.contains("refused by status") && !quiet.contains("failed"),
        "{quiet}"
    );
    for path in ["/403", "/403", "/404", "/418"] {
        let mut client = util::Client::connect(server.local_addr());
        client.send_raw(util::upgrade_request(path).as_bytes());
        let status = client.read_head();
        assert!(
            status.starts_with(&format!("HTTP/1.1 {}", &path[1..])),
            "{status}"
        );
    }
    util::wait_for("four refusals counted", || {
        server.counters().upgrades_refused.iter().sum::<u64>() == 4
    });
    let counters = server.counters();
    let by = |status| {
        let at = wsloop::REFUSED_STATUSES.iter().position(|&s| s == status);
        counters.upgrades_refused[at.unwrap_or(wsloop::REFUSED_STATUSES.len())]
    };
    assert_eq!((by(403), by(404), by(418)), (2, 1, 1));
    assert_eq!(counters.upgraded, 0);
    let printed = counters.to_string();
    assert!(
        printed.contains("upgrades refused by status:  403 2  404 1  other 1"),
        "{printed}"
    );
    assert!(!printed.contains("handshakes failed"), "{printed}");
}
