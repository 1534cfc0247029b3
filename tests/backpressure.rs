//! A peer that stops reading: the write cap and its policy.

mod util;

use std::sync::{Arc, Mutex};

use util::{start, Client};
use wsloop::frame::OpCode;
use wsloop::{Backpressure, Config, Conn, Handler, Message, SendStatus};

const CHUNK: usize = 64 * 1024;
const CAP: usize = 256 * 1024;

/// On "flood", sends 64 KiB messages until one is not accepted, and records
/// the statuses; says "drained" when the queue empties.
struct Flooder(Arc<Mutex<Vec<SendStatus>>>);

impl Handler for Flooder {
    type Data = ();

    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        match msg {
            Message::Text("flood") => {
                let mut log = self.0.lock().unwrap();
                loop {
                    let status = conn.send_binary(&[0xAB; CHUNK]);
                    log.push(status);
                    assert!(conn.buffered_amount() <= CAP + CHUNK);
                    if status != SendStatus::Queued {
                        break;
                    }
                }
            }
            other => {
                assert_eq!(conn.send(other), SendStatus::Queued);
            }
        }
    }

    fn on_drain(&mut self, conn: &mut Conn<'_>) {
        assert_eq!(conn.send_text("drained"), SendStatus::Queued);
    }
}

fn config(policy: Backpressure) -> Config {
    Config::default()
        .workers(1)
        .max_write_buffer(CAP)
        .backpressure(policy)
}

/// Reads frames until one that is not binary, counting binary bytes on the way.
fn read_until_text(client: &mut Client) -> (usize, util::Frame) {
    let mut binary = 0;
    loop {
        let frame = client.expect_frame();
        match frame.opcode {
            OpCode::Binary => binary += frame.payload.len(),
            _ => {
                return (binary, frame);
            }
        }
    }
}

/// Starts a Flooder under `policy`, asks it to flood, and reads nothing
/// until a send was refused. Returns the server, the client, and the
/// statuses of every send.
fn flood_until_refused(policy: Backpressure) -> (wsloop::Server, Client, Vec<SendStatus>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let shared = log.clone();
    let server = start(config(policy), move || Flooder(shared.clone()));
    let mut client = Client::open(server.local_addr(), "/");
    client.send_text("flood");
    util::wait_for("a refused send", || {
        log.lock().unwrap().last() == Some(&SendStatus::Dropped)
    });
    let statuses = log.lock().unwrap().clone();
    (server, client, statuses)
}

#[test]
fn close_policy_closes_with_1008_at_the_cap() {
    let (server, mut client, statuses) = flood_until_refused(Backpressure::Close);
    assert!(statuses.contains(&SendStatus::Queued));
    let (bytes, last) = read_until_text(&mut client);
    let sent = statuses
        .iter()
        .filter(|s| **s != SendStatus::Dropped)
        .count();
    assert_eq!(bytes, sent * CHUNK, "every accepted message arrives whole");
    assert_eq!(last.close_code(), Some(1008));
    assert_eq!(server.counters().dropped, 1);
}

#[test]
fn drop_policy_keeps_the_connection_and_reports_drain() {
    let (server, mut client, statuses) = flood_until_refused(Backpressure::Drop);
    // Now read: the queue drains, the handler hears of it, and the
    // connection still echoes.
    let (bytes, frame) = read_until_text(&mut client);
    let sent = statuses
        .iter()
        .filter(|s| **s != SendStatus::Dropped)
        .count();
    assert_eq!(bytes, sent * CHUNK);
    assert_eq!(frame.payload, b"drained");
    client.send_text("still here");
    assert_eq!(client.expect_frame().payload, b"still here");
    assert_eq!(server.counters().dropped, 1);
}

/// Resident set size of this process, from /proc.
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn server_memory_stays_bounded_while_a_writer_floods_and_never_reads() {
    let server = start(config(Backpressure::Drop), || util::Echo);
    let mut client = Client::open(server.local_addr(), "/");
    client.stream.set_nonblocking(true).unwrap();
    let mut frame = Vec::new();
    wsloop::protocol::encode_frame(
        &mut frame,
        true,
        OpCode::Binary,
        Some([1, 2, 3, 4]),
        &[0; CHUNK],
    );
    let before = rss_bytes();
    // 256 MiB of echo requests, written as fast as the server takes them;
    // the echoes are never read.
    let total = 4096 * frame.len();
    let mut written = 0usize;
    let mut stalls = 0;
    while written < total && stalls < 2000 {
        let at = written % frame.len();
        match std::io::Write::write(&mut client.stream, &frame[at..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                stalls += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => panic!("{e}"),
        }
    }
    let sent = written / frame.len();
    let growth = rss_bytes().saturating_sub(before);
    eprintln!("sent {sent} frames of {CHUNK} bytes; RSS grew by {growth} bytes");
    assert!(growth < 16 << 20, "RSS grew by {growth} bytes");
    assert!(server.counters().dropped > 0);
}
