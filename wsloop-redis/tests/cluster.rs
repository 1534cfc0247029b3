//! Two chat processes sharing a real Redis (Debian's redis-server, started
//! by the test on a free port with no persistence; the test fails if it is
//! missing). The chat example must be built first: `cargo build --example
//! chat` (scripts/redis-test.sh and .ci/run do it).

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_for, Chat, Member, Redis, WATCHDOG};
/// With history in Redis (the chat's default with `--redis`), every
/// member on both nodes sees the room in one order.
#[test]
fn rooms_span_two_servers_exactly_once_in_one_order() {
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
    let mut orders = Vec::new();
    for handle in threads {
        let (_member, got) = handle.join().unwrap();
        orders.push(got.clone());
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
    // One order: the same sequence of lines for every member, whichever
    // node it is on and whichever node each speaker is on.
    for (i, order) in orders.iter().enumerate() {
        assert!(order == &orders[0], "member {i} saw another order");
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

/// Local-first delivery goes on on each node while Redis is away.
#[test]
fn local_first_a_redis_restart_loses_only_what_was_said_while_it_was_away() {
    let redis = Redis::start();
    let (a, b) = (
        Chat::start_local_first(&redis.url()),
        Chat::start_local_first(&redis.url()),
    );
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
fn local_first_malformed_messages_from_redis_are_counted_and_dropped() {
    let redis = Redis::start();
    let a = Chat::start_local_first(&redis.url());
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
    // The chat's /metrics carries the bridge's counters while it runs,
    // after its own; "received" is counted once the line is handed over.
    let sample = |body: &str, name: &str| -> Option<u64> {
        let line = body.lines().find(|l| l.starts_with(&format!("{name} ")))?;
        line.rsplit(' ').next()?.parse().ok()
    };
    let mut body = String::new();
    wait_for("the received line in /metrics", || {
        let (status, text) = a.http("GET", "/metrics", "");
        assert_eq!(status, 200, "{text}");
        body = text;
        sample(&body, "wsloop_redis_received_total") == Some(1)
    });
    assert_eq!(
        sample(&body, "wsloop_redis_malformed_total"),
        Some(4),
        "{body}"
    );
    assert!(
        body.contains("# TYPE wsloop_redis_gaps_total counter\n"),
        "{body}"
    );
    let (Some(core), Some(bridge)) = (body.find("wsloop_"), body.find("wsloop_redis_")) else {
        panic!("{body}");
    };
    assert!(core < bridge, "the server's counters first: {body}");
    drop(member);
    let counters = a.stop();
    assert_eq!(counters["malformed"], 4, "{counters:?}");
    assert_eq!(counters["received"], 1, "{counters:?}");
}
