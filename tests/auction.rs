//! The auction example, with 1, 2 and 4 workers: bids from many
//! connections at once are accepted in one order and only above the top,
//! refusals go to their bidder alone, and a watcher resumes exactly.

mod util;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;
use tungstenite::{Message, WebSocket};
use util::{spawn_example, WATCHDOG};

const BIDDERS: u64 = 6;
const BIDS: u64 = 20;

fn watch(addr: SocketAddr, query: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    let url = format!("ws://{addr}/ws?{query}");
    tungstenite::client(url.as_str(), stream)
        .expect("upgrade")
        .0
}

fn next(ws: &mut WebSocket<TcpStream>) -> Value {
    loop {
        if let Message::Text(text) = ws.read().expect("a message before the watchdog") {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

fn get_items(addr: SocketAddr) -> Value {
    use std::io::Write;
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    stream
        .write_all(b"GET /items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap()
}

fn run(workers: &str) {
    let (_child, _stdout, addr) = spawn_example("auction", &["--workers", workers]);
    let mut watcher = watch(addr, "item=lamp&name=watcher");
    let mut bidders: Vec<_> = (0..BIDDERS)
        .map(|i| watch(addr, &format!("item=lamp&name=b{i}")))
        .collect();
    // Bidder i bids i+1, i+1+6, ...: every bidder races every other.
    for round in 0..BIDS {
        for (i, ws) in bidders.iter_mut().enumerate() {
            let amount = round * BIDDERS + i as u64 + 1;
            ws.send(Message::text(amount.to_string())).unwrap();
        }
    }
    let (mut streams, mut accepted_by) = (Vec::new(), Vec::new());
    for (i, ws) in bidders.iter_mut().enumerate() {
        let name = format!("b{i}");
        // Every bid of its own comes back: accepted in the stream, or
        // refused to it alone.
        let (mut resolved, mut accepted, mut stream) = (0, Vec::new(), Vec::new());
        while resolved < BIDS {
            let msg = next(ws);
            match msg["kind"].as_str().unwrap() {
                "refused" => {
                    let amount = msg["amount"].as_u64().unwrap();
                    assert_eq!(
                        (amount - 1) % BIDDERS,
                        i as u64,
                        "someone else's refusal: {msg}"
                    );
                    assert!(amount <= msg["top"].as_u64().unwrap(), "{msg}");
                    resolved += 1;
                }
                "bid" => {
                    if msg["name"] == name.as_str() {
                        accepted.push(msg["amount"].as_u64().unwrap());
                        resolved += 1;
                    }
                    stream.push((
                        msg["id"].as_str().unwrap().to_owned(),
                        msg["amount"].as_u64().unwrap(),
                    ));
                }
                other => panic!("{other}: {msg}"),
            }
        }
        streams.push(stream);
        accepted_by.push(accepted);
    }
    // The last bid, 120, beats everything: every stream ends with it.
    let top = BIDS * BIDDERS;
    for (stream, ws) in streams.iter_mut().zip(&mut bidders) {
        while stream.last().map(|s| s.1) != Some(top) {
            let msg = next(ws);
            stream.push((
                msg["id"].as_str().unwrap().to_owned(),
                msg["amount"].as_u64().unwrap(),
            ));
        }
    }
    let mut seen = Vec::new();
    while seen.last().map(|s: &(String, u64)| s.1) != Some(top) {
        let msg = next(&mut watcher);
        assert_eq!(msg["kind"], "bid", "the watcher gets no refusals: {msg}");
        seen.push((
            msg["id"].as_str().unwrap().to_owned(),
            msg["amount"].as_u64().unwrap(),
        ));
    }
    // One order, the same for everyone, and always rising; each
    // bidder's accepted bids are in it.
    for (stream, accepted) in streams.iter().zip(&accepted_by) {
        assert_eq!(stream, &seen);
        assert!(accepted.iter().all(|a| seen.iter().any(|s| s.1 == *a)));
    }
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "{seen:?}");
    // A new watcher starts with the top bid; one that resumes after the
    // third accepted bid gets exactly the rest.
    let mut fresh = watch(addr, "item=lamp&name=late");
    assert_eq!(next(&mut fresh)["amount"], top);
    let after = &seen[2].0;
    let mut resumed = watch(addr, &format!("item=lamp&name=back&after={after}"));
    let rest: Vec<(String, u64)> = (3..seen.len())
        .map(|_| {
            let msg = next(&mut resumed);
            (
                msg["id"].as_str().unwrap().to_owned(),
                msg["amount"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rest, seen[3..]);
    let items = get_items(addr);
    assert_eq!(items["lamp"]["amount"], top);
}

#[test]
fn bids_are_one_order_above_the_top_with_one_worker() {
    run("1");
}

#[test]
fn bids_are_one_order_above_the_top_with_two_workers() {
    run("2");
}

#[test]
fn bids_are_one_order_above_the_top_with_four_workers() {
    run("4");
}

#[test]
fn bidding_closes_on_a_timer_after_the_first_bid() {
    let (_child, _stdout, addr) = spawn_example("auction", &["--close-after", "0.2"]);
    let mut bidder = watch(addr, "item=vase&name=ann");
    bidder.send(Message::text("5")).unwrap();
    assert_eq!(next(&mut bidder)["amount"], 5);
    let closed = next(&mut bidder);
    assert_eq!(
        (&closed["kind"], &closed["amount"]),
        (&"closed".into(), &5.into()),
        "{closed}"
    );
    bidder.send(Message::text("10")).unwrap();
    assert_eq!(next(&mut bidder)["kind"], "refused");
}
