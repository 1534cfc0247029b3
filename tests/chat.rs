//! The chat example's rules, over raw sockets against the built example:
//! paths, Origin, room and name checks, the messages it relays, history
//! and resume, long polling beside WebSockets in one room, the bounds
//! on what a stranger can make it hold or send, and who is here as each
//! member is told it, against the joins and leaves that follow.

mod util;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::thread;

use serde_json::Value;
use util::{spawn_example, upgrade_request, Client};
use wsloop::frame::OpCode;
use wsloop::protocol::encode_frame;

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
    request_with(client, method, path, "", body)
}

/// [`request`] with `headers` (each line ending in CRLF) added.
fn request_with(
    client: &mut Client,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (String, Vec<u8>) {
    client.send_raw(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    client.read_response()
}

/// The status line of an answer's head.
fn status_of(head: &str) -> &str {
    head.lines().next().unwrap()
}

/// A long-polling chat client: one connection for polls, one for sends.
struct Poller {
    polls: Client,
    sends: Client,
    /// Room, name and the client token, as the page sends them.
    query: String,
    cursor: String,
}

impl Poller {
    /// Joins with `after=0`: the answer is at once, with the latest id.
    /// Its client token is made from its name.
    fn join(addr: SocketAddr, room: &str, name: &str) -> (Poller, Value) {
        Poller::join_as(addr, room, name, &format!("client-{name}"))
    }

    /// [`Poller::join`] with a client token of its own.
    fn join_as(addr: SocketAddr, room: &str, name: &str, client: &str) -> (Poller, Value) {
        let mut poller = Poller {
            polls: Client::connect(addr),
            sends: Client::connect(addr),
            query: format!("room={room}&name={name}&client={client}"),
            cursor: "0".into(),
        };
        let joined = poller.poll();
        (poller, joined)
    }

    /// The path of a poll after the cursor.
    fn poll_path(&self) -> String {
        format!("/poll?{}&after={}", self.query, self.cursor)
    }

    /// One poll: held until the room has something after the cursor.
    fn poll(&mut self) -> Value {
        let path = self.poll_path();
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
        "/poll?room=p&name=pat&client=client-pat",
        "/poll?room=p&name=pat&client=client-pat&after=",
        "/poll?room=p&name=pat&client=client-pat&after=garbled",
        "/poll?room=p&name=pat&client=client-pat&after=0000000g-1",
        "/poll?room=p&client=client-pat&after=0",
    ] {
        assert_eq!(
            status(&mut c, "GET", path, ""),
            "HTTP/1.1 400 Bad Request",
            "{path}"
        );
    }
    assert_eq!(
        status(
            &mut c,
            "POST",
            "/send?room=p&name=pat&client=client-pat",
            ""
        ),
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(
        status(
            &mut c,
            "POST",
            "/send?room=p&name=pat&client=client-pat",
            " \n"
        ),
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(
        status(&mut c, "POST", "/poll?room=p&name=pat&after=0", ""),
        "HTTP/1.1 405 Method Not Allowed"
    );
    // The client token: 8 to 64 of A-Z a-z 0-9 _ -, and required.
    let long_token = "t".repeat(65);
    for token in [
        "",
        "&client=",
        "&client=short",
        "&client=bad!token",
        "&client=%41bcdefgh",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("&client={long_token}")])
    {
        let poll = format!("/poll?room=p&name=pat&after=0{token}");
        assert_eq!(
            status(&mut c, "GET", &poll, ""),
            "HTTP/1.1 400 Bad Request",
            "{poll}"
        );
        let send = format!("/send?room=p&name=pat{token}");
        assert_eq!(
            status(&mut c, "POST", &send, "hi"),
            "HTTP/1.1 400 Bad Request",
            "{send}"
        );
    }
    for token in ["Az09_-Az", &"t".repeat(64)] {
        let send = format!("/send?room=p&name=pat&client={token}");
        assert_eq!(
            status(&mut c, "POST", &send, "hi"),
            "HTTP/1.1 204 No Content",
            "{send}"
        );
    }
    // Refusals of the body close the connection.
    let long = "x".repeat(2001);
    let mut c = Client::connect(addr);
    assert_eq!(
        status(
            &mut c,
            "POST",
            "/send?room=p&name=pat&client=client-pat",
            &long
        ),
        "HTTP/1.1 413 Content Too Large"
    );
    c.expect_eof();
    let mut c = Client::connect(addr);
    c.send_raw(b"POST /send?room=p&name=pat&client=client-pat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n");
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

#[test]
fn sends_and_polls_from_a_foreign_origin_are_refused_as_upgrades_are() {
    let (_child, _stdout, addr) = spawn_example("chat", &["--workers", "2"]);
    let mut wes = Client::open(addr, "/ws?room=o&name=wes");
    read_room(&mut wes, 1);
    let send = "/send?room=o&name=eve&client=client-eve";
    let poll = "/poll?room=o&name=eve&client=client-eve&after=0";
    let mut c = Client::connect(addr);
    // A page of another site, and one without an origin of its own
    // (a sandboxed frame): a browser sends these without asking first.
    for origin in ["http://evil.example", "https://x.evil.example", "null"] {
        let header = format!("Origin: {origin}\r\n");
        let (head, _) = request_with(&mut c, "POST", send, &header, "from elsewhere");
        assert_eq!(status_of(&head), "HTTP/1.1 403 Forbidden", "{origin}");
        let (head, _) = request_with(&mut c, "GET", poll, &header, "");
        assert_eq!(status_of(&head), "HTTP/1.1 403 Forbidden", "{origin}");
    }
    // The page's own origin (Host is "x"), and no Origin at all (curl, a
    // script), as for upgrades.
    let (head, _) = request_with(&mut c, "POST", send, "Origin: http://x\r\n", "from home");
    assert_eq!(status_of(&head), "HTTP/1.1 204 No Content");
    let (head, _) = request_with(&mut c, "GET", poll, "Origin: http://x\r\n", "");
    assert_eq!(status_of(&head), "HTTP/1.1 200 OK");
    let (head, _) = request(&mut c, "POST", send, "from curl");
    assert_eq!(status_of(&head), "HTTP/1.1 204 No Content");
    // The refused requests said nothing and joined no one.
    assert_eq!(next_text(&mut wes, "join"), "* eve joined");
    assert_eq!(next_text(&mut wes, "say"), "eve: from home");
    assert_eq!(next_text(&mut wes, "say"), "eve: from curl");
}

#[test]
fn a_poll_is_replaced_only_by_a_poll_with_the_same_client_token() {
    let (_child, _stdout, addr) = spawn_example("chat", &["--workers", "2", "--poll-hold", "3"]);
    let (mut pat, _) = Poller::join(addr, "k", "pat");
    let held = thread::spawn(move || {
        let answer = pat.poll();
        (pat, answer)
    });
    // Someone else behind the same address polls with pat's room and name
    // but a token of its own: a second pat, announced, which takes
    // nothing from the first.
    let (_mallory, joined) = Poller::join_as(addr, "k", "pat", "mallorys-token");
    assert_eq!(
        joined["here"],
        serde_json::json!(["pat", "pat"]),
        "{joined}"
    );
    let (mut pat, answer) = held.join().unwrap();
    let messages = answer["messages"].as_array().unwrap();
    assert!(
        messages.iter().any(|m| m["text"] == "* pat joined"),
        "pat's poll got the second pat's join: {answer}"
    );

    // A poll with pat's own token does replace pat's earlier poll: of two
    // at once, whichever came first is answered 409.
    let path = pat.poll_path();
    let mut other = Client::connect(addr);
    other.send_raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    pat.polls
        .send_raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let mut statuses = [
        status_of(&pat.polls.read_response().0).to_owned(),
        status_of(&other.read_response().0).to_owned(),
    ];
    statuses.sort();
    assert_eq!(statuses, ["HTTP/1.1 200 OK", "HTTP/1.1 409 Conflict"]);
}

#[test]
fn a_replaced_poll_is_answered_409_at_once_not_at_its_next_wake() {
    // Polls are held for a minute, past the watchdog: only the replacement
    // can answer the older one in time.
    let (_child, _stdout, addr) = spawn_example("chat", &["--workers", "2", "--poll-hold", "60"]);
    let (mut bob, _) = Poller::join(addr, "r", "bob");
    let (pat, _) = Poller::join(addr, "r", "pat");
    let path = pat.poll_path();
    // Two polls of pat's at once, on two connections and maybe two
    // workers: whichever the chat took first is replaced by the other.
    let (tx, rx) = std::sync::mpsc::channel();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let mut c = Client::connect(addr);
            c.send_raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            let tx = tx.clone();
            thread::spawn(move || {
                let (head, body) = c.read_response();
                tx.send(status_of(&head).to_owned()).unwrap();
                String::from_utf8(body).unwrap()
            })
        })
        .collect();
    // The first answer comes with nothing said in the room: the 409.
    let first = rx
        .recv_timeout(util::WATCHDOG)
        .expect("the replaced poll was answered");
    assert_eq!(first, "HTTP/1.1 409 Conflict");
    // The newer one is still held, and the next line answers it.
    bob.say("hello");
    assert_eq!(rx.recv().unwrap(), "HTTP/1.1 200 OK");
    let bodies: Vec<String> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(
        bodies.iter().any(|b| b.contains("bob: hello")),
        "{bodies:?}"
    );
}

#[test]
fn presence_is_bounded_per_address_per_room_and_overall() {
    let args = [
        "--workers",
        "2",
        "--trusted-proxy",
        "127.0.0.1",
        "--max-names-per-address",
        "4",
        "--max-room-members",
        "6",
        "--max-members",
        "8",
    ];
    let (_child, _stdout, addr) = spawn_example("chat", &args);
    let mut wes = Client::open(addr, "/ws?room=b&name=wes");
    read_room(&mut wes, 1);
    let mut c = Client::connect(addr);
    // Says "hi" in `room` as `name` from `from`, as a proxy forwards it;
    // the answer's head.
    let mut say = |from: &str, room: &str, name: &str| {
        let path = format!("/send?room={room}&name={name}&client=client-{name}");
        let from = format!("X-Forwarded-For: {from}\r\n");
        request_with(&mut c, "POST", &path, &from, "hi").0
    };
    let refused = |head: &str, why: &str| {
        assert_eq!(status_of(head), "HTTP/1.1 429 Too Many Requests", "{why}");
        // The default poll hold and grace: when a silent poller's place frees.
        assert!(head.contains("Retry-After: 35\r\n"), "{head}");
    };

    // Four names from one address fit; a fifth is refused, posting or polling.
    for name in ["n0", "n1", "n2", "n3"] {
        assert_eq!(
            status_of(&say("10.0.0.1", "b", name)),
            "HTTP/1.1 204 No Content"
        );
    }
    refused(&say("10.0.0.1", "b", "n4"), "a fifth name from one address");
    let mut p = Client::connect(addr);
    let poll = "/poll?room=b&name=n5&client=client-n5&after=0";
    let (head, _) = request_with(&mut p, "GET", poll, "X-Forwarded-For: 10.0.0.1\r\n", "");
    refused(&head, "a fifth name polling");

    // Wes and five pollers fill the room, for pollers and sockets alike.
    assert_eq!(
        status_of(&say("10.0.0.2", "b", "m0")),
        "HTTP/1.1 204 No Content"
    );
    refused(&say("10.0.0.2", "b", "m1"), "a seventh member");
    let mut late = Client::connect(addr);
    late.send_raw(upgrade_request("/ws?room=b&name=late").as_bytes());
    refused(&late.read_head(), "a socket into a full room");

    // Another room takes the chat to its eight members, and no further.
    assert_eq!(
        status_of(&say("10.0.0.3", "c", "r0")),
        "HTTP/1.1 204 No Content"
    );
    assert_eq!(
        status_of(&say("10.0.0.3", "c", "r1")),
        "HTTP/1.1 204 No Content"
    );
    refused(&say("10.0.0.3", "c", "r2"), "a ninth member");

    // Who is here stays within the room's bound.
    let poll = "/poll?room=b&name=n0&client=client-n0&after=0";
    let (head, body) = request_with(&mut p, "GET", poll, "X-Forwarded-For: 10.0.0.1\r\n", "");
    assert_eq!(status_of(&head), "HTTP/1.1 200 OK");
    let joined: Value = serde_json::from_slice(&body).unwrap();
    let mut here: Vec<String> = serde_json::from_value(joined["here"].clone()).unwrap();
    here.sort();
    assert_eq!(here, ["m0", "n0", "n1", "n2", "n3", "wes"]);
    // And those refused said nothing: wes heard the five that fit, each
    // joining and saying hi, then its own last line.
    wes.send_text("end");
    let mut heard = Vec::new();
    loop {
        let msg = next(&mut wes);
        if msg["text"] == "wes: end" {
            break;
        }
        heard.push(msg["text"].as_str().unwrap().to_owned());
    }
    let mut want = Vec::new();
    for name in ["n0", "n1", "n2", "n3", "m0"] {
        want.push(format!("* {name} joined"));
        want.push(format!("{name}: hi"));
    }
    assert_eq!(heard, want);
}

#[test]
fn names_are_trimmed_and_lose_format_characters() {
    let (_child, _stdout, addr) = spawn_example("chat", &["--workers", "2"]);
    // Nothing visible: zero-width space, right-to-left override, a space,
    // soft hyphen and spaces, byte order mark, a tag character.
    for name in [
        "%E2%80%8B",
        "%E2%80%AE",
        "+",
        "%20%E2%80%8B%C2%AD%20",
        "%EF%BB%BF",
        "%F3%A0%80%A1",
    ] {
        let upgrade = upgrade_request(&format!("/ws?room=n&name={name}"));
        assert!(
            refused_with(addr, &upgrade).starts_with("HTTP/1.1 400 "),
            "{name}"
        );
        let mut c = Client::connect(addr);
        let query = format!("room=n&name={name}&client=client-xyz");
        let (head, _) = request(&mut c, "GET", &format!("/poll?{query}&after=0"), "");
        assert_eq!(status_of(&head), "HTTP/1.1 400 Bad Request", "{name}");
        let (head, _) = request(&mut c, "POST", &format!("/send?{query}"), "hi");
        assert_eq!(status_of(&head), "HTTP/1.1 400 Bad Request", "{name}");
    }
    // Format characters inside a name are dropped (a bidi override must
    // not reorder the page's text after it), and white space around it.
    let mut alice = Client::open(addr, "/ws?room=n&name=+al%E2%80%AEice%E2%80%8B+");
    assert_eq!(next(&mut alice)["names"], serde_json::json!([]));
    let joined = next(&mut alice);
    assert_eq!(
        (&joined["name"], &joined["text"]),
        (&"alice".into(), &"* alice joined".into())
    );
    let (mut bob, answer) = Poller::join_as(addr, "n", "%E2%80%8Fbob%E2%80%8E%20", "client-bob");
    assert_eq!(
        answer["here"],
        serde_json::json!(["alice", "bob"]),
        "{answer}"
    );
    assert_eq!(next_text(&mut alice, "join"), "* bob joined");
    bob.say("hi");
    let said = next(&mut alice);
    assert_eq!(
        (&said["name"], &said["text"]),
        (&"bob".into(), &"bob: hi".into())
    );
    // Letters, and white space between them, are kept as they are.
    let mut carol = Client::open(addr, "/ws?room=n&name=car%C3%B6l+d");
    read_room(&mut carol, 1);
    assert_eq!(next_text(&mut alice, "join"), "* caröl d joined");
}

#[test]
fn a_get_with_an_h2c_upgrade_gets_the_page() {
    let (_child, _stdout, addr) = spawn_example("chat", &["--workers", "1"]);
    // What `curl --http2` sends over plain HTTP: an upgrade the server
    // may ignore (RFC 9110 §7.8), answering in HTTP/1.1.
    let mut c = Client::connect(addr);
    c.send_raw(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    );
    let (head, body) = c.read_response();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(String::from_utf8(body).unwrap().contains("id=\"log\""));
}

#[test]
fn a_flooding_client_is_stopped_on_either_transport() {
    let (_child, _stdout, addr) = spawn_example("chat", &["--workers", "2"]);
    // A WebSocket that writes lines back to back: 20 a second and 200 at
    // once are let through, then it is closed with 1008.
    let mut ws = Client::open(addr, "/ws?room=f&name=flood");
    let mut writer = ws.stream.try_clone().unwrap();
    let flood = thread::spawn(move || {
        let mut frames = Vec::new();
        for i in 0..10_000 {
            let line = format!("line {i}");
            encode_frame(
                &mut frames,
                true,
                OpCode::Text,
                Some([1, 2, 3, 4]),
                line.as_bytes(),
            );
        }
        // The server discards what comes after its close.
        let _ = writer.write_all(&frames);
    });
    let mut relayed = 0;
    let code = loop {
        let frame = ws.expect_frame();
        match frame.opcode {
            OpCode::Close => break frame.close_code(),
            OpCode::Text if frame.payload.starts_with(b"{\"id\"") => relayed += 1,
            _ => {}
        }
    };
    assert_eq!(code, Some(1008), "after {relayed} lines");
    assert!(relayed < 1_000, "{relayed} lines relayed before the close");
    flood.join().unwrap();

    // A poller that posts back to back gets 429 past the same rate.
    let (mut pat, _) = Poller::join(addr, "f", "pat");
    let path = format!("/send?{}", pat.query);
    let mut accepted = 0;
    let head = loop {
        let (head, _) = request(&mut pat.sends, "POST", &path, "again");
        if !head.starts_with("HTTP/1.1 204 ") {
            break head;
        }
        accepted += 1;
        assert!(accepted < 1_000, "1,000 lines without a refusal");
    };
    assert_eq!(status_of(&head), "HTTP/1.1 429 Too Many Requests");
    assert!(head.contains("Retry-After: 1\r\n"), "{head}");
}

/// Who is here as a member's page counts it: the here-list it was given,
/// then each join and leave after it, in order. Every name in the test
/// is used once, so a count of two is a name counted twice, and a leave
/// of a name that is not here is a join that was missed.
struct HereView {
    member: String,
    counts: HashMap<String, usize>,
}

impl HereView {
    fn new(member: &str, here: &Value) -> HereView {
        let mut view = HereView {
            member: member.to_owned(),
            counts: HashMap::new(),
        };
        for name in here.as_array().expect("a list of names") {
            view.add(name.as_str().unwrap(), "in the here-list");
        }
        view
    }

    fn add(&mut self, name: &str, how: &str) {
        let count = self.counts.entry(name.to_owned()).or_default();
        *count += 1;
        assert_eq!(*count, 1, "{}: {name} counted twice, {how}", self.member);
    }

    /// Counts a room message: joins and leaves change who is here.
    fn apply(&mut self, msg: &Value) {
        let name = msg["name"].as_str().unwrap_or_default();
        match msg["kind"].as_str() {
            Some("join") => self.add(name, &format!("then joined: {msg}")),
            Some("leave") => {
                let was = self.counts.remove(name);
                assert_eq!(was, Some(1), "{}: {name} left unseen: {msg}", self.member);
            }
            _ => {}
        }
    }

    fn names(&self) -> BTreeSet<String> {
        self.counts.keys().cloned().collect()
    }
}

/// Whether `msg` is the line that ends the race test.
fn is_all_in(msg: &Value) -> bool {
    msg["kind"] == "say" && msg["text"] == "watcher: all in"
}

#[test]
fn a_here_list_and_the_joins_and_leaves_after_it_agree() {
    // Threads opening sockets that stay, threads opening and closing
    // sockets, and pollers joining, all at once on two workers. Each
    // newcomer's here-list is read while others join and leave; any of
    // them counted both in the list and by an event after it, or in
    // neither, shows in a member's view.
    const OPENERS: usize = 8;
    const EACH: usize = 40;
    const CHURNERS: usize = 4;
    const CHURN: usize = 80;
    const POLLERS: usize = 6;
    // Room for every event, so that no poller falls behind the ring.
    let args = ["--workers", "2", "--history", "2000"];
    let (_child, stdout, addr) = spawn_example("chat", &args);
    // The chat prints a line per upgrade: read them, so that its stdout
    // never fills.
    thread::spawn(move || {
        let mut stdout = stdout;
        std::io::copy(&mut stdout, &mut std::io::sink())
    });
    // The watcher, here before all of them, hears every join and leave.
    let mut watcher = Client::open(addr, "/ws?room=race&name=watcher");
    let here = next(&mut watcher);
    assert_eq!(here, serde_json::json!({"kind": "here", "names": []}));
    let mut view = HereView::new("watcher", &here["names"]);

    let start = Arc::new(Barrier::new(OPENERS + CHURNERS + POLLERS));
    let openers: Vec<_> = (0..OPENERS)
        .map(|t| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let mut members = Vec::new();
                for i in 0..EACH {
                    let name = format!("s{t}-{i}");
                    let mut ws = Client::open(addr, &format!("/ws?room=race&name={name}"));
                    // What comes before the here-list is what the list
                    // already counts.
                    let here = loop {
                        let msg = next(&mut ws);
                        if msg["kind"] == "here" {
                            break msg;
                        }
                    };
                    let view = HereView::new(&name, &here["names"]);
                    members.push((ws, view));
                }
                members
                    .into_iter()
                    .map(|(mut ws, mut view)| {
                        loop {
                            let msg = next(&mut ws);
                            if is_all_in(&msg) {
                                break;
                            }
                            view.apply(&msg);
                        }
                        view
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let churners: Vec<_> = (0..CHURNERS)
        .map(|t| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                for i in 0..CHURN {
                    drop(Client::open(addr, &format!("/ws?room=race&name=c{t}-{i}")));
                }
            })
        })
        .collect();
    let pollers: Vec<_> = (0..POLLERS)
        .map(|i| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let name = format!("p{i}");
                // As the page does: the answer's messages, then who is
                // here after them.
                let (mut poller, joined) = Poller::join(addr, "race", &name);
                let mut view = HereView::new(&name, &joined["here"]);
                'polls: loop {
                    let answer = poller.poll();
                    assert_eq!(answer["reset"], false, "{answer}");
                    for msg in answer["messages"].as_array().unwrap() {
                        if is_all_in(msg) {
                            break 'polls;
                        }
                        view.apply(msg);
                    }
                }
                view
            })
        })
        .collect();

    // Once the watcher has heard them all (and its own join), its line
    // marks the end of the stream for everyone.
    let (mut joins, mut leaves) = (0, 0);
    while joins < 1 + OPENERS * EACH + CHURNERS * CHURN + POLLERS || leaves < CHURNERS * CHURN {
        let msg = next(&mut watcher);
        joins += usize::from(msg["kind"] == "join");
        leaves += usize::from(msg["kind"] == "leave");
        view.apply(&msg);
    }
    watcher.send_text("all in");
    for churner in churners {
        churner.join().unwrap();
    }
    let mut views = vec![view];
    for opener in openers {
        views.extend(opener.join().unwrap());
    }
    for poller in pollers {
        views.push(poller.join().unwrap());
    }

    let mut members: BTreeSet<String> = (0..OPENERS)
        .flat_map(|t| (0..EACH).map(move |i| format!("s{t}-{i}")))
        .collect();
    members.extend((0..POLLERS).map(|i| format!("p{i}")));
    members.insert("watcher".into());
    for view in &views {
        assert_eq!(view.names(), members, "{}'s view at the end", view.member);
    }
}
