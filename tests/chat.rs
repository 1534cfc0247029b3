//! The chat example's rules, over raw sockets against the built example:
//! paths, Origin, room and name checks, and the messages it relays.

mod util;

use util::{spawn_example, upgrade_request, Client};

fn refused_with(addr: std::net::SocketAddr, request: &str) -> String {
    let mut client = Client::connect(addr);
    client.send_raw(request.as_bytes());
    client.read_response().0
}

#[test]
fn chat_enforces_paths_origin_and_names_and_relays_messages() {
    let (mut child, _stdout, addr) = spawn_example("chat", &["--workers", "2"]);
    let ws = |path: &str| upgrade_request(path);
    let with_origin = |path: &str, origin: &str| {
        ws(path).replace("\r\n\r\n", &format!("\r\nOrigin: {origin}\r\n\r\n"))
    };

    let (head, body) = {
        let mut c = Client::connect(addr);
        c.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        c.read_response()
    };
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let page = body;
    assert!(String::from_utf8(page.clone())
        .unwrap()
        .contains("id=\"log\""));
    // As clients send it: HTTP/1.0 (nginx's default upstream version), HEAD,
    // and a method the page does not take.
    let mut c = Client::connect(addr);
    c.send_raw(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_response().1, page, "HTTP/1.0 gets the page");
    let mut c = Client::connect(addr);
    c.send_raw(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = c.read_head();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.contains(&format!("Content-Length: {}\r\n", page.len())));
    assert!(c.read_to_eof().is_empty(), "HEAD has no body");
    let (head, _) = {
        let mut c = Client::connect(addr);
        c.send_raw(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        c.read_response()
    };
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    assert!(head.contains("Allow: GET, HEAD\r\n"), "{head}");
    assert!(
        refused_with(addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 404 ")
    );
    assert!(refused_with(addr, &ws("/other?room=a&name=b")).starts_with("HTTP/1.1 404 "));
    assert!(refused_with(addr, &ws("/ws?room=a")).starts_with("HTTP/1.1 400 "));
    let long = format!("/ws?room=a&name={}", "n".repeat(25));
    assert!(refused_with(addr, &ws(&long)).starts_with("HTTP/1.1 400 "));
    let foreign = with_origin("/ws?room=a&name=b", "http://evil.example");
    assert!(refused_with(addr, &foreign).starts_with("HTTP/1.1 403 "));

    // Same origin as Host ("localhost" in upgrade_request): accepted.
    let mut alice = Client::connect(addr);
    alice.send_raw(with_origin("/ws?room=r%201&name=al%C3%AFce", "http://localhost").as_bytes());
    assert!(alice.read_head().starts_with("HTTP/1.1 101 "));
    assert_eq!(alice.expect_frame().payload, "* alïce joined".as_bytes());
    let mut bob = Client::open(addr, "/ws?room=r+1&name=bob");
    assert_eq!(alice.expect_frame().payload, b"* bob joined");
    assert_eq!(bob.expect_frame().payload, b"* bob joined");
    let mut other = Client::open(addr, "/ws?room=elsewhere&name=eve");
    assert_eq!(other.expect_frame().payload, b"* eve joined");

    bob.send_text("<b>hi</b>");
    assert_eq!(alice.expect_frame().payload, b"bob: <b>hi</b>");
    assert_eq!(bob.expect_frame().payload, b"bob: <b>hi</b>");
    // Over the 2,000-byte line limit: 1009.
    bob.send_text(&"x".repeat(2001));
    assert_eq!(bob.expect_close(), Some(1009));
    bob.send_close(1009, "");
    bob.expect_eof();
    drop(bob);
    assert_eq!(alice.expect_frame().payload, b"* bob left");

    // eve's room heard none of it: her next frame is her own message.
    other.send_text("alone");
    assert_eq!(other.expect_frame().payload, b"eve: alone");

    child.kill().unwrap();
    child.wait().unwrap();
}
