//! One hostile client on a worker it shares with others: a peer that keeps
//! its socket full must not stall the worker, and one that sends faster
//! than the configured rate is closed.

mod util;

use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use util::{start, wait_for, Client, Echo, WATCHDOG};
use wsloop::frame::OpCode;
use wsloop::protocol::encode_frame;
use wsloop::{Config, RateLimit};

/// A client that writes empty pings as fast as the socket takes them and
/// never reads, until told to stop.
struct Flood {
    stop: Arc<AtomicBool>,
    client: Client,
    writer: thread::JoinHandle<()>,
}

impl Flood {
    fn start(client: Client) -> Flood {
        let mut pings = Vec::new();
        for _ in 0..100_000 {
            encode_frame(&mut pings, true, OpCode::Ping, Some([1, 2, 3, 4]), b"");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut stream = client.stream.try_clone().unwrap();
        stream.set_write_timeout(Some(WATCHDOG)).unwrap();
        let flag = stop.clone();
        let writer = thread::spawn(move || {
            while !flag.load(Ordering::Acquire) && stream.write_all(&pings).is_ok() {}
        });
        Flood {
            stop,
            client,
            writer,
        }
    }

    /// Whether it is still writing.
    fn is_going(&self) -> bool {
        !self.writer.is_finished()
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.client.stream.shutdown(Shutdown::Both);
        self.writer.join().unwrap();
    }
}

#[test]
fn a_client_that_keeps_its_socket_full_does_not_stall_the_worker() {
    // One worker: the flood and everyone else share its loop. A small read
    // buffer makes reading slower than the flood's writing, so its socket
    // stays full.
    let config = Config::default().workers(1).read_buffer_size(1024);
    let server = start(config, || Echo);
    let addr = server.local_addr();
    let flood = Flood::start(Client::open(addr, "/"));
    wait_for("the flood to be read", || {
        server.counters().bytes_in > 8 << 20
    });
    // Others connect, upgrade and get their echoes while it goes on. Before
    // read budgets, the worker read the flood until it stopped, and these
    // waited for the watchdog.
    for i in 0..20 {
        let mut other = Client::open(addr, "/");
        other.send_text(&format!("hello {i}"));
        assert_eq!(
            other.expect_frame().payload,
            format!("hello {i}").as_bytes()
        );
    }
    assert!(
        flood.is_going(),
        "the flood stopped before the others were served"
    );
    flood.stop();
}

#[test]
fn a_client_over_the_rate_limit_is_closed_with_1008() {
    // Ten messages a second, a second's worth at once.
    let rate = RateLimit::new(10, 1 << 20, Duration::from_secs(1));
    let server = start(Config::default().workers(1).rate_limit(Some(rate)), || Echo);
    let mut client = Client::open(server.local_addr(), "/");
    let mut burst = Vec::new();
    for i in 0..50 {
        encode_frame(
            &mut burst,
            true,
            OpCode::Text,
            Some([9, 8, 7, 6]),
            i.to_string().as_bytes(),
        );
    }
    client.send_raw(&burst);
    let mut echoed = 0;
    let code = loop {
        let frame = client.expect_frame();
        if frame.opcode == OpCode::Close {
            break frame.close_code();
        }
        assert_eq!(frame.payload, echoed.to_string().as_bytes(), "in order");
        echoed += 1;
    };
    assert_eq!(code, Some(1008));
    // The burst went through; the rest, sent at once, did not.
    assert!((10..50).contains(&echoed), "{echoed} echoed");
    // A client within the rate is not disturbed.
    let mut calm = Client::open(server.local_addr(), "/");
    for i in 0..10 {
        calm.send_text(&i.to_string());
        assert_eq!(calm.expect_frame().payload, i.to_string().as_bytes());
    }
}
