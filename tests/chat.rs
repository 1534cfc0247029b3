//! The chat example's rules, over raw sockets against the built example:
//! paths, Origin, room and name checks, the messages it relays, history
//! and resume, and long polling beside WebSockets in one room.

mod util;

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::thread;

use serde_json::Value;
use util::{spawn_example, upgrade_request, Client};

fn refused_with(addr: SocketAddr, request: &str) -> String {
    let mut client = Client::connect(addr);
    client.send_raw(request.as_bytes());
    client.read_response().0
}

/// The next message on a chat WebSocket, as JSON.
fn next(client: &mut Client) -> Value {
    serde_json::from_slice(&client.expect_frame().payload).expect("chat messages are JSON")
}

/// The `text` of the next message, checking its kind.
fn next_text(client: &mut Client, kind: &str) -> String {
    let msg = next(client);
    assert_eq!(msg["kind"], kind, "{msg}");
    msg["text"].as_str().unwrap().to_owned()
}

/// A message id's sequence number and epoch.
fn seq(id: &Value) -> (String, u64) {
    let (epoch, seq) = id.as_str().unwrap().split_once('-').unwrap();
    (epoch.to_owned(), seq.parse().unwrap())
}

/// Asserts that room messages are numbered one after another.
fn assert_consecutive(messages: &[Value]) {
    for pair in messages.windows(2) {
        let ((e1, s1), (e2, s2)) = (seq(&pair[0]["id"]), seq(&pair[1]["id"]));
        assert_eq!(
            (e1, s1 + 1),
            (e2, s2),
            "a gap or a repeat: {} then {}",
            pair[0],
            pair[1]
        );
    }
}

/// An HTTP request with a body on a kept-alive connection; the answer's
/// head and body.
fn request(client: &mut Client, method: &str, path: &str, body: &str) -> (String, Vec<u8>) {
    client.send_raw(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    client.read_response()
}

/// A long-polling chat client: one connection for polls, one for sends.
struct Poller {
    polls: Client,
    sends: Client,
    query: String,
    cursor: String,
}

impl Poller {
    /// Joins with `after=0`: the answer is at once, with the latest id.
    fn join(addr: SocketAddr, room: &str, name: &str) -> (Poller, Value) {
        let mut poller = Poller {
            polls: Client::connect(addr),
            sends: Client::connect(addr),
            query: format!("room={room}&name={name}"),
            cursor: "0".into(),
        };
        let joined = poller.poll();
        (poller, joined)
    }

    /// One poll: held until the room has something after the cursor.
    fn poll(&mut self) -> Value {
        let path = format!("/poll?{}&after={}", self.query, self.cursor);
        let (head, body) = request(&mut self.polls, "GET", &path, "");
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(head.contains("Cache-Control: no-store\r\n"), "{head}");
        assert!(!head.contains("Connection: close"), "kept alive: {head}");
        let answer: Value = serde_json::from_slice(&body).unwrap();
        if let Some(latest) = answer["latest"].as_str() {
            self.cursor = latest.to_owned();
        }
        answer
    }

    fn say(&mut self, line: &str) {
        let (head, _) = request(
            &mut self.sends,
            "POST",
            &format!("/send?{}", self.query),
            line,
        );
        assert!(head.starts_with("HTTP/1.1 204 "), "{head}");
    }
}

#[test]
fn chat_enforces_paths_origin_and_names_and_relays_messages() {
    let (_child, _stdout, addr) = spawn_example("chat", &["--workers", "2"]);
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
    c.send_raw(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
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

    // Same origin as Host ("localhost" in upgrade_request): accepted. Each
    // member first hears who was here, then its own join.
    let mut alice = Client::connect(addr);
    alice.send_raw(with_origin("/ws?room=r%201&name=al%C3%AFce", "http://localhost").as_bytes());
    assert!(alice.read_head().starts_with("HTTP/1.1 101 "));
    assert_eq!(
        next(&mut alice),
        serde_json::json!({"kind": "here", "names": []})
    );
    let joined = next(&mut alice);
    assert_eq!(joined["text"], "* alïce joined");
    assert_eq!(
        (&joined["kind"], &joined["via"]),
        (&"join".into(), &"ws".into())
    );
    let mut bob = Client::open(addr, "/ws?room=r+1&name=bob");
    assert_eq!(next(&mut bob)["names"], serde_json::json!(["alïce"]));
    let bob_joined = next(&mut bob);
    assert_eq!(bob_joined["text"], "* bob joined");
    assert_eq!(
        next(&mut alice),
        bob_joined,
        "the same message, id included"
    );
    let mut other = Client::open(addr, "/ws?room=elsewhere&name=eve");
    assert_eq!(next(&mut other)["kind"], "here");
    assert_eq!(next_text(&mut other, "join"), "* eve joined");

    bob.send_text("<b>hi</b>");
    let hi = next(&mut alice);
    assert_eq!(
        (&hi["kind"], &hi["text"]),
        (&"say".into(), &"bob: <b>hi</b>".into())
    );
    assert_eq!(next(&mut bob), hi);
    assert_consecutive(&[joined, bob_joined, hi]);
    // Over the 2,000-byte line limit: 1009.
    bob.send_text(&"x".repeat(2001));
    assert_eq!(bob.expect_close(), Some(1009));
    bob.send_close(1009, "");
    bob.expect_eof();
    drop(bob);
    assert_eq!(next_text(&mut alice, "leave"), "* bob left");

    // eve's room heard none of it: her next frame is her own message.
    other.send_text("alone");
    assert_eq!(next_text(&mut other, "say"), "eve: alone");
}

#[test]
fn a_mixed_room_of_sockets_and_pollers_gets_every_message_once_in_order() {
    const EACH: usize = 50;
    // Room for all 200 lines and the joins: a poller that fell behind the
    // ring would get a reset, which is tested on its own below.
    let (_child, _stdout, addr) = spawn_example("chat", &["--workers", "2", "--history", "500"]);
    let names = ["ws1", "ws2", "poll1", "poll2"];
    let ready = Arc::new(Barrier::new(names.len()));
    let members: Vec<_> = names
        .iter()
        .map(|&name| {
            let ready = ready.clone();
            thread::spawn(move || {
                let lines: Vec<String> = (0..EACH).map(|i| format!("{name} line {i}")).collect();
                let mut got = Vec::new();
                let said = |got: &Vec<Value>| got.iter().filter(|m| m["kind"] == "say").count();
                if name.starts_with("ws") {
                    let mut ws = Client::open(addr, &format!("/ws?room=mix&name={name}"));
                    assert_eq!(next(&mut ws)["kind"], "here");
                    ready.wait();
                    for line in &lines {
                        ws.send_text(line);
                    }
                    while said(&got) < EACH * names.len() {
                        got.push(next(&mut ws));
                    }
                } else {
                    let (mut poller, joined) = Poller::join(addr, "mix", name);
                    assert!(joined["here"].is_array(), "{joined}");
                    ready.wait();
                    for line in &lines {
                        poller.say(line);
                    }
                    while said(&got) < EACH * names.len() {
                        let answer = poller.poll();
                        assert_eq!(answer["reset"], false, "{answer}");
                        got.extend(answer["messages"].as_array().unwrap().iter().cloned());
                    }
                }
                (name, got)
            })
        })
        .collect();
    let results: Vec<(&str, Vec<Value>)> = members.into_iter().map(|m| m.join().unwrap()).collect();
    let said = |got: &[Value]| -> Vec<Value> {
        got.iter().filter(|m| m["kind"] == "say").cloned().collect()
    };
    let reference = said(&results[0].1);
    assert_eq!(reference.len(), EACH * names.len());
    for (name, got) in &results {
        // No gap and no repeat in what each member received, whatever else
        // (joins) came with it, and the same lines with the same ids.
        assert_consecutive(got);
        assert_eq!(said(got), reference, "{name} saw another order");
    }
    // Each sender's lines in the order it said them.
    for name in names {
        let mine: Vec<String> = reference
            .iter()
            .filter(|m| m["name"] == name)
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect();
        let want: Vec<String> = (0..EACH)
            .map(|i| format!("{name}: {name} line {i}"))
            .collect();
        assert_eq!(mine, want);
    }
}

/// Reads a WebSocket's messages until `count` room messages (with an id)
/// have come, returning everything read.
fn read_room(client: &mut Client, count: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got
        .iter()
        .filter(|m: &&Value| m.get("id").is_some())
        .count()
        < count
    {
        got.push(next(client));
    }
    got
}

#[test]
fn a_reconnecting_socket_gets_exactly_what_it_missed_or_a_reset() {
    let (_child, _stdout, addr) = spawn_example("chat", &["--workers", "2", "--history", "30"]);
    let mut alice = Client::open(addr, "/ws?room=r&name=alice");
    read_room(&mut alice, 1);
    let mut bob = Client::open(addr, "/ws?room=r&name=bob");
    let last = read_room(&mut bob, 1).pop().unwrap();
    assert_eq!(last["text"], "* bob joined");
    assert_eq!(next_text(&mut alice, "join"), "* bob joined");
    drop(bob);
    assert_eq!(next_text(&mut alice, "leave"), "* bob left");
    for i in 0..20 {
        alice.send_text(&format!("missed {i}"));
    }
    let seen = read_room(&mut alice, 20);

    // Back with the last id he had: his leave and the 20 lines, nothing
    // more, nothing twice, then who is here and his join.
    let cursor = last["id"].as_str().unwrap();
    let mut bob = Client::open(addr, &format!("/ws?room=r&name=bob&after={cursor}"));
    let replay = read_room(&mut bob, 21);
    assert_eq!(replay[0]["text"], "* bob left");
    assert_eq!(&replay[1..], &seen[..]);
    let mut all = vec![last.clone()];
    all.extend(replay);
    assert_consecutive(&all);
    assert_eq!(next(&mut bob)["kind"], "here");
    assert_eq!(next_text(&mut bob, "join"), "* bob joined");

    // Older than the 30 kept: a reset notice, then the ring.
    for i in 0..10 {
        alice.send_text(&format!("more {i}"));
    }
    read_room(&mut alice, 11);
    let mut carol = Client::open(addr, &format!("/ws?room=r&name=carol&after={cursor}"));
    let reset = next(&mut carol);
    assert_eq!(reset["kind"], "reset", "{reset}");
    let ring = read_room(&mut carol, 30);
    assert_consecutive(&ring);
    assert_eq!(ring.last().unwrap()["text"], "alice: more 9");
    assert_eq!(reset["latest"], ring.last().unwrap()["id"]);
    // A cursor from another epoch (another run) resets too.
    let stranger = Client::open(addr, "/ws?room=r&name=dan&after=00000000-5");
    let mut stranger = stranger;
    assert_eq!(next(&mut stranger)["kind"], "reset");
}

#[test]
fn polls_are_held_until_a_message_and_bad_input_gets_4xx() {
    let (_child, _stdout, addr) = spawn_example("chat", &["--workers", "2", "--poll-hold", "0.3"]);
    let (mut pat, joined) = Poller::join(addr, "p", "pat");
    assert_eq!(joined["messages"], serde_json::json!([]));
    assert_eq!(joined["here"], serde_json::json!(["pat"]), "{joined}");

    // Nothing new: the poll is held to its deadline and answered empty.
    let empty = pat.poll();
    assert_eq!(empty["messages"], serde_json::json!([]));
    assert!(empty.get("here").is_none(), "{empty}");

    // A line from a WebSocket member releases a held poll.
    let mut wes = Client::open(addr, "/ws?room=p&name=wes");
    read_room(&mut wes, 1);
    let held = thread::spawn(move || {
        let mut got = Vec::new();
        while got.is_empty() {
            let answer = pat.poll();
            got.extend(
                answer["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| m["kind"] == "say")
                    .cloned(),
            );
        }
        got
    });
    wes.send_text("wake up");
    let got = held.join().unwrap();
    assert_eq!(got[0]["text"], "wes: wake up");

    let mut c = Client::connect(addr);
    let status = |c: &mut Client, method: &str, path: &str, body: &str| {
        let (head, _) = request(c, method, path, body);
        head.lines().next().unwrap().to_owned()
    };
    for path in [
        "/poll?room=p&name=pat",
        "/poll?room=p&name=pat&after=",
        "/poll?room=p&name=pat&after=garbled",
        "/poll?room=p&name=pat&after=0000000g-1",
        "/poll?room=p&after=0",
    ] {
        assert_eq!(
            status(&mut c, "GET", path, ""),
            "HTTP/1.1 400 Bad Request",
            "{path}"
        );
    }
    assert_eq!(
        status(&mut c, "POST", "/send?room=p&name=pat", ""),
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(
        status(&mut c, "POST", "/send?room=p&name=pat", " \n"),
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(
        status(&mut c, "POST", "/poll?room=p&name=pat&after=0", ""),
        "HTTP/1.1 405 Method Not Allowed"
    );
    // Refusals of the body close the connection.
    let long = "x".repeat(2001);
    let mut c = Client::connect(addr);
    assert_eq!(
        status(&mut c, "POST", "/send?room=p&name=pat", &long),
        "HTTP/1.1 413 Content Too Large"
    );
    c.expect_eof();
    let mut c = Client::connect(addr);
    c.send_raw(b"POST /send?room=p&name=pat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n");
    assert!(c.read_response().0.starts_with("HTTP/1.1 411 "));
    c.expect_eof();
    assert!(
        refused_with(addr, &upgrade_request("/ws?room=p&name=x&after=nope"))
            .starts_with("HTTP/1.1 400 ")
    );
}

#[test]
fn a_silent_poller_is_announced_as_gone() {
    let args = [
        "--workers",
        "2",
        "--poll-hold",
        "0.2",
        "--poll-grace",
        "0.3",
    ];
    let (mut child, _stdout, addr) = spawn_example("chat", &args);
    let mut wes = Client::open(addr, "/ws?room=g&name=wes");
    read_room(&mut wes, 1);
    let (pat, _) = Poller::join(addr, "g", "pat");
    let joined = next(&mut wes);
    assert_eq!(
        (&joined["text"], &joined["via"]),
        (&"* pat joined".into(), &"poll".into())
    );
    // pat stops polling: after the hold and the grace, pat is gone.
    drop(pat);
    let left = next(&mut wes);
    assert_eq!(
        (&left["text"], &left["via"]),
        (&"* pat left".into(), &"poll".into())
    );

    // (A held poll answered on shutdown is tests/poll.rs's, where the
    // test can see that the poll is held before it shuts the server down.)
    drop(wes);
    let _ = &mut child;
}
