//! Held HTTP answers (long polls) over real sockets: released by a
//! message, by the deadline and by shutdown; limited per address; freed
//! when the client goes away.

mod util;

use std::net::SocketAddr;
use std::time::Duration;

use util::{start, wait_for, Client};
use wsloop::{
    Config, Conn, Handler, HistoryConfig, Hold, Message, Pending, Publisher, Reply, Request,
    Response, Server, Wake,
};

/// `GET /poll?after=ID` waits on topic "t" (`after=0`: no cursor) for the
/// hold its `hold` query gives in milliseconds, replacing the poll with the
/// same `key` query if it has one; `POST /pub` publishes the
/// body to "t". A wake answers with its reason and the messages.
struct Polls;

impl Handler for Polls {
    type Data = ();

    fn on_http(
        &mut self,
        req: &Request<'_>,
        _peer: SocketAddr,
        topics: &mut Publisher<'_>,
    ) -> Reply<()> {
        match req.path_only() {
            "/pub" => {
                let body = std::str::from_utf8(req.body()).unwrap_or("?");
                let _ = topics.publish("t", Message::Text(body));
                Response::status(204).into()
            }
            "/poll" => {
                let after = match req.query("after") {
                    Some("0") => None,
                    Some(id) => match id.parse() {
                        Ok(id) => Some(id),
                        Err(_) => return Response::status(400).into(),
                    },
                    None => return Response::status(400).into(),
                };
                let ms = req
                    .query("hold")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(60_000);
                Reply::Hold(Hold {
                    topic: "t".into(),
                    after,
                    timeout: Duration::from_millis(ms),
                    data: (),
                    key: req.query("key").map(Into::into),
                })
            }
            _ => Response::status(404).into(),
        }
    }

    fn on_wake(&mut self, _req: &mut Pending<'_, ()>, wake: Wake) -> Response {
        let mut body = format!("{:?} reset={}", wake.reason, wake.catchup.reset);
        if let Some(latest) = wake.catchup.latest {
            body += &format!(" latest={latest}");
        }
        for entry in &wake.catchup.entries {
            body += &format!(" [{}]", String::from_utf8_lossy(entry.message().as_bytes()));
        }
        Response::ok("text/plain", body)
    }

    fn on_message(&mut self, _conn: &mut Conn<'_>, _msg: Message<'_>) {}
}

fn server(config: Config) -> Server {
    start(config.history(Some(HistoryConfig::default())), || Polls)
}

/// A server whose topic "t" has one message, `first`, and the id of that
/// message: a cursor with nothing after it.
fn server_after(config: Config, first: &str) -> (Server, SocketAddr, String) {
    let server = server(config);
    let addr = server.local_addr();
    publish(addr, first);
    let cursor = latest(addr);
    (server, addr, cursor)
}

fn get(client: &mut Client, path: &str) {
    client.send_raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
}

fn answer(client: &mut Client) -> (String, String) {
    let (head, body) = client.read_response();
    (head, String::from_utf8(body).unwrap())
}

fn publish(addr: SocketAddr, text: &str) {
    let mut c = Client::connect(addr);
    c.send_raw(
        format!(
            "POST /pub HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )
        .as_bytes(),
    );
    assert!(c.read_response().0.starts_with("HTTP/1.1 204 "));
}

/// The latest id of topic "t", from a poll without a cursor.
fn latest(addr: SocketAddr) -> String {
    let mut c = Client::connect(addr);
    get(&mut c, "/poll?after=0");
    let (_, body) = answer(&mut c);
    assert!(body.starts_with("Ready "), "{body}");
    body.split(" latest=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn a_poll_is_replaced_at_once_by_a_newer_one_with_its_key() {
    let (server, addr, cursor) = server_after(util::config(2), "first");
    let mut old = Client::connect(addr);
    get(&mut old, &format!("/poll?after={cursor}&key=alice"));
    wait_for("the first poll to be held", || server.counters().held == 1);
    // Another key replaces nothing.
    let mut other = Client::connect(addr);
    get(&mut other, &format!("/poll?after={cursor}&key=bob"));
    wait_for("both polls to be held", || server.counters().held == 2);
    // The same key, on whichever worker this connection lands: the older
    // poll is answered now, long before its minute is up.
    let mut new = Client::connect(addr);
    get(&mut new, &format!("/poll?after={cursor}&key=alice"));
    let (head, body) = answer(&mut old);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(body.starts_with("Replaced "), "{body}");
    wait_for("the newer poll to be held", || server.counters().held == 2);
    // Both still held answer the next message.
    publish(addr, "second");
    for client in [&mut new, &mut other] {
        let (_, body) = answer(client);
        assert!(
            body.starts_with("Message ") && body.ends_with("-2 second]"),
            "{body}"
        );
    }
}

#[test]
fn a_held_poll_is_released_by_the_next_message_with_all_that_came() {
    let (server, addr, cursor) = server_after(util::config(2), "first");
    // A cursor with messages after it is answered at once.
    publish(addr, "second");
    let mut c = Client::connect(addr);
    get(&mut c, &format!("/poll?after={cursor}"));
    let (_, body) = answer(&mut c);
    assert!(body.starts_with("Ready reset=false"), "{body}");
    assert!(body.ends_with("-2 second]"), "{body}");

    // Nothing new: held (its hold is a minute, the watchdog 10 s), then
    // released by a message published on some worker.
    let cursor = latest(addr);
    get(&mut c, &format!("/poll?after={cursor}"));
    wait_for("the poll to be held", || server.counters().held == 1);
    publish(addr, "third");
    let (head, body) = answer(&mut c);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(body.starts_with("Message reset=false"), "{body}");
    assert!(body.ends_with("-3 third]"), "{body}");
    assert_eq!(server.counters().held, 0);
    // The same connection takes the next poll.
    get(&mut c, "/poll?after=00000000-1");
    let (_, body) = answer(&mut c);
    assert!(
        body.starts_with("Ready reset=true"),
        "another epoch: {body}"
    );
}

#[test]
fn a_held_poll_gets_its_deadline_answer() {
    let (_server, addr, cursor) = server_after(util::config(1), "only");
    let mut c = Client::connect(addr);
    get(&mut c, &format!("/poll?after={cursor}&hold=50"));
    let (_, body) = answer(&mut c);
    assert_eq!(body, format!("Deadline reset=false latest={cursor}"));
}

#[test]
fn held_polls_are_answered_on_shutdown() {
    let (server, addr, cursor) = server_after(util::config(2), "x");
    let mut polls: Vec<Client> = (0..4).map(|_| Client::connect(addr)).collect();
    for c in &mut polls {
        get(c, &format!("/poll?after={cursor}"));
    }
    wait_for("the polls to be held", || server.counters().held == 4);
    server.shutdown_handle().shutdown();
    for c in &mut polls {
        let (head, body) = answer(c);
        assert!(head.contains("Connection: close\r\n"), "{head}");
        assert!(body.starts_with("Shutdown "), "{body}");
        c.expect_eof();
    }
    // The server waits for each client's FIN after its own.
    drop(polls);
    let counters = server.join().unwrap();
    assert_eq!(counters.held, 0);
}

#[test]
fn held_polls_are_limited_per_address_and_freed_when_the_client_goes() {
    let (server, addr, cursor) = server_after(util::config(1).max_held_per_ip(2), "x");
    let poll = format!("/poll?after={cursor}");
    let mut a = Client::connect(addr);
    let mut b = Client::connect(addr);
    get(&mut a, &poll);
    get(&mut b, &poll);
    wait_for("two held polls", || server.counters().held == 2);
    let mut c = Client::connect(addr);
    get(&mut c, &poll);
    let (head, _) = answer(&mut c);
    assert!(head.starts_with("HTTP/1.1 429 "), "{head}");
    assert!(head.contains("Retry-After: 1\r\n"), "{head}");

    // A client that goes away frees its place.
    drop(a);
    wait_for("the abandoned poll to be freed", || {
        server.counters().held == 1
    });
    get(&mut c, &poll);
    wait_for("the new poll to be held", || server.counters().held == 2);
    // Sending while held is not allowed: the connection is dropped.
    b.send_raw(b"GET / HTTP/1.1\r\n");
    b.expect_eof();
    wait_for("the pipelining poll to be dropped", || {
        server.counters().held == 1
    });
    publish(addr, "y");
    let (_, body) = answer(&mut c);
    assert!(body.starts_with("Message "), "{body}");
}
