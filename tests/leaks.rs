//! Thousands of connections dropped mid-frame leave nothing behind.

mod util;

use util::{start, Client};
use wsloop::frame::OpCode;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn ten_thousand_abrupt_drops_leak_no_entries_or_descriptors() {
    let server = start(util::config(2), || util::Echo);
    let addr = server.local_addr();
    let baseline = open_fds();
    let mut partial = Vec::new();
    wsloop::protocol::encode_frame(
        &mut partial,
        true,
        OpCode::Binary,
        Some([1, 2, 3, 4]),
        &[9; 300],
    );
    partial.truncate(100); // header and part of the payload
                           // Batches keep the client and server ends under the file limit.
    for _ in 0..10 {
        let clients: Vec<Client> = (0..1000)
            .map(|_| {
                let mut c = Client::open(addr, "/");
                c.send_raw(&partial);
                c
            })
            .collect();
        drop(clients);
    }
    util::wait_until_closed(&server);
    let counters = server.counters();
    assert_eq!(counters.accepted, 10_000);
    assert_eq!(counters.upgraded, 10_000);
    assert_eq!(counters.open, 0);
    assert_eq!(counters.closes_by_code(1006), 10_000);
    assert_eq!(open_fds(), baseline, "file descriptors leaked");
}
