//! How the workers share new connections: per-worker SO_REUSEPORT
//! listeners (the Linux default) and one shared listener (the default
//! elsewhere, forced here so that Linux tests it too).

mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use util::{start, wait_for, Client};
use wsloop::{Conn, Handler, ListenerMode, Message, Server};

#[cfg(target_os = "linux")]
#[test]
fn linux_defaults_to_a_listener_per_worker() {
    assert_eq!(wsloop::Config::default().listener, ListenerMode::PerWorker);
}

/// The kernel hashes each connection to one of the SO_REUSEPORT sockets:
/// with 200 connections over 4, a worker left with none is a broken spread
/// (the chance of it by luck is about 4 × (3/4)^200).
#[cfg(target_os = "linux")]
#[test]
fn per_worker_listeners_spread_connections_over_every_worker() {
    let config = util::config(4).listener(ListenerMode::PerWorker);
    let server = start(config, || util::Echo);
    let clients = open_and_echo(&server, 200);
    let per_worker = accepted_per_worker(&server);
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "a worker accepted nothing: {per_worker:?}"
    );
    assert_eq!(per_worker.iter().sum::<u64>(), 200);
    assert_eq!(server.counters().refused, 0);
    drop(clients);
    shut_down(server);
}

/// In shared mode whichever worker is free takes the next connection from
/// the one accept queue. A quick burst may all go to one worker, so the
/// first `WORKERS` connections each hold their worker in `on_open` until
/// all have opened: each must then have been accepted by a worker not yet
/// holding one, so every worker serves exactly one. After that, many more
/// connections are all served and none refused.
#[test]
fn a_shared_listener_feeds_every_worker_and_refuses_nothing() {
    const WORKERS: usize = 4;
    let opened = Arc::new(AtomicUsize::new(0));
    let all_open = Arc::new(Barrier::new(WORKERS));
    let config = util::config(WORKERS).listener(ListenerMode::Shared);
    let server = {
        let (opened, all_open) = (opened.clone(), all_open.clone());
        start(config, move || Holding {
            opened: opened.clone(),
            all_open: all_open.clone(),
            hold: WORKERS,
        })
    };
    let addr = server.local_addr();

    // One at a time: the next connects only once the last holds its worker.
    let mut held = Vec::new();
    for k in 1..=WORKERS {
        let mut client = Client::connect(addr);
        client.send_raw(util::upgrade_request("/").as_bytes());
        held.push(client);
        wait_for("the upgrade to reach on_open", || {
            opened.load(Ordering::SeqCst) == k
        });
    }
    assert_eq!(accepted_per_worker(&server), vec![1; WORKERS]);
    for client in &mut held {
        let head = client.read_head();
        assert!(head.starts_with("HTTP/1.1 101 "), "upgrade refused: {head}");
    }

    let more = open_and_echo(&server, 200);
    let counters = server.counters();
    assert_eq!(counters.accepted, (WORKERS + 200) as u64);
    assert_eq!(counters.upgraded, (WORKERS + 200) as u64);
    assert_eq!(counters.refused, 0);
    assert!(accepted_per_worker(&server).iter().all(|&n| n > 0));
    drop((held, more));
    shut_down(server);
}

/// Echoes; the first `hold` connections wait in `on_open` until that many
/// have opened, keeping their worker from accepting meanwhile.
struct Holding {
    opened: Arc<AtomicUsize>,
    all_open: Arc<Barrier>,
    hold: usize,
}

impl Handler for Holding {
    type Data = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {
        if self.opened.fetch_add(1, Ordering::SeqCst) < self.hold {
            self.all_open.wait();
        }
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        let _ = conn.send(msg);
    }
}

/// Opens `n` connections, all held open at once, and checks each echoes.
fn open_and_echo(server: &Server, n: usize) -> Vec<Client> {
    let mut clients: Vec<Client> = (0..n)
        .map(|_| Client::open(server.local_addr(), "/"))
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let text = format!("hello {i}");
        client.send_text(&text);
        assert_eq!(client.expect_frame().payload, text.as_bytes());
    }
    clients
}

fn accepted_per_worker(server: &Server) -> Vec<u64> {
    server
        .worker_counters()
        .iter()
        .map(|c| c.accepted)
        .collect()
}

/// Every worker stops cleanly, its clone of a shared listener included.
fn shut_down(server: Server) {
    server.shutdown_handle().shutdown();
    server.join().expect("every worker exits cleanly");
}
