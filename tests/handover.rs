//! A restart with no refused connection: a new server listens on the same
//! port (SO_REUSEPORT, the Linux default), the old one drains
//! (`ShutdownHandle::drain`). Closing a listener throws away what waits in
//! its accept queue unless Linux's `net.ipv4.tcp_migrate_req` is on, so
//! the test sets that sysctl both ways (it needs root, as CI has; it fails
//! loudly without) and shows each case.
#![cfg(target_os = "linux")]

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use util::{upgrade_request, Client, WATCHDOG};
use wsloop::{Config, Conn, Handler, ListenerMode, Message, Request, Server, Upgrade};

const MIGRATE: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Sets `net.ipv4.tcp_migrate_req`, and puts it back on drop.
struct Migrate(String);

impl Migrate {
    fn set(on: bool) -> Migrate {
        let before = std::fs::read_to_string(MIGRATE).expect("Linux 5.14 or later has {MIGRATE}");
        std::fs::write(MIGRATE, if on { "1" } else { "0" }).unwrap_or_else(|e| {
            panic!("cannot write {MIGRATE} ({e}): this test needs root, as CI has")
        });
        Migrate(before)
    }
}

impl Drop for Migrate {
    fn drop(&mut self) {
        let _ = std::fs::write(MIGRATE, self.0.trim());
    }
}

/// A gate the first upgrade to `/hold` waits at, holding its worker, so
/// that new connections pile up in that worker's accept queue.
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }

    fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.changed.notify_all();
    }

    fn wait(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.changed.wait(closed).unwrap();
        }
    }
}

struct Held {
    gate: Arc<Gate>,
    entered: Arc<(Mutex<bool>, Condvar)>,
}

impl Handler for Held {
    type Data = ();

    fn on_upgrade(&mut self, req: &Request<'_>, _: SocketAddr) -> Upgrade<()> {
        if req.path == "/hold" {
            let (entered, cv) = &*self.entered;
            *entered.lock().unwrap() = true;
            cv.notify_all();
            self.gate.wait();
        }
        Upgrade::accept(())
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        let _ = conn.send(msg);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One worker with its own SO_REUSEPORT listener on `port`.
fn server_on(port: u16, gate: Arc<Gate>, entered: Arc<(Mutex<bool>, Condvar)>) -> Server {
    let config = Config::default()
        .workers(1)
        .listener(ListenerMode::PerWorker);
    Server::bind(("127.0.0.1", port), config, move || Held {
        gate: gate.clone(),
        entered: entered.clone(),
    })
    .expect("a second server binds the same port")
}

/// Whether an upgrade sent on `stream` is answered with 101; false for a
/// connection reset or closed before any answer.
fn upgraded(mut stream: TcpStream) -> bool {
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    let mut head = [0u8; 12];
    match stream.read_exact(&mut head) {
        Ok(()) => &head == b"HTTP/1.1 101",
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
            ) =>
        {
            false
        }
        Err(e) => panic!("no answer and no reset: {e}"),
    }
}

/// The old server's worker is held, so the connections the kernel hashes
/// to it wait in its accept queue; then it drains while a new server
/// listens on the same port. Returns how many of `n` upgrades succeeded.
fn restart_with_queued_connections(n: usize) -> usize {
    let port = free_port();
    let (old_gate, entered) = (Arc::new(Gate::default()), Arc::default());
    let old = server_on(port, old_gate.clone(), Arc::clone(&entered));
    let new = server_on(port, Arc::default(), Arc::default());
    // Hold the old server's worker in on_upgrade. Which listener takes a
    // connection is the kernel's hash: try until the old one has one.
    old_gate.close();
    let held = loop {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(upgrade_request("/hold").as_bytes())
            .unwrap();
        let (flag, cv) = &*entered;
        let started = Instant::now();
        let mut entered = flag.lock().unwrap();
        while !*entered && started.elapsed() < Duration::from_millis(200) {
            entered = cv
                .wait_timeout(entered, Duration::from_millis(20))
                .unwrap()
                .0;
        }
        if *entered {
            break stream;
        }
        // The new server took it (and answered): try again.
    };
    // Each connection completes the TCP handshake in the kernel; about
    // half wait in the old server's queue, which nobody accepts from.
    let streams: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(upgrade_request("/").as_bytes()).unwrap();
            s
        })
        .collect();
    // The drain closes the old listener as soon as the worker is free.
    old.shutdown_handle().drain(Duration::from_millis(100));
    old_gate.open();
    let ok = streams.into_iter().map(upgraded).filter(|&u| u).count();
    drop(held);
    old.join().expect("the old server exits cleanly");
    new.shutdown_handle().shutdown();
    new.join().unwrap();
    ok
}

#[test]
fn a_drained_listener_hands_its_queue_over_only_with_tcp_migrate_req() {
    const N: usize = 40;
    // Without the sysctl, what waited in the old queue is reset: some of
    // the 40 (each has about even odds of being hashed there) fail.
    let off = {
        let _migrate = Migrate::set(false);
        restart_with_queued_connections(N)
    };
    assert!(off < N, "all {N} upgraded: nothing waited in the old queue");
    // With it, the kernel moves them to the new server's listener.
    let on = {
        let _migrate = Migrate::set(true);
        restart_with_queued_connections(N)
    };
    assert_eq!(
        on, N,
        "with tcp_migrate_req every queued connection is served"
    );
    println!("upgrades served across the handover: {off}/{N} without, {on}/{N} with");
}

#[test]
fn a_drain_closes_websockets_spread_over_its_window_with_1012() {
    const N: usize = 20;
    let window = Duration::from_millis(1_000);
    let server = util::start(util::config(2), || util::Echo);
    let addr = server.local_addr();
    let clients: Vec<Client> = (0..N).map(|_| Client::open(addr, "/")).collect();
    util::wait_for("every client to be open", || {
        server.counters().open == N as u64
    });
    let started = Instant::now();
    server.shutdown_handle().drain(window);
    // Each client keeps talking until its turn, and notes when it came.
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            std::thread::spawn(move || loop {
                client.send_text("still here");
                let frame = client.expect_frame();
                if let Some(code) = frame.close_code() {
                    let at = started.elapsed();
                    client.send_close(code, "");
                    return (code, at);
                }
                assert_eq!(frame.payload, b"still here");
            })
        })
        .collect();
    // No new connection is taken once the drain has begun.
    util::wait_for("the listener to close", || {
        TcpStream::connect(addr).is_err()
    });
    let closes: Vec<(u16, Duration)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(closes.iter().all(|&(code, _)| code == 1012), "{closes:?}");
    // Each worker closes its k-th of n at k/n of the window, so no close
    // comes before a twentieth of it, and half or more come after its
    // middle. (A client hears its close at or after that time, so these
    // bounds hold however slow the machine is.)
    let after = |t: Duration| closes.iter().filter(|&&(_, at)| at >= t).count();
    assert_eq!(after(window / 20), N, "{closes:?}");
    assert!(after(window / 2) >= N / 2, "{closes:?}");
    let counters = server.join().unwrap();
    assert_eq!(counters.closes_by_code(1012), N as u64);
}

/// A connection the server accepted just before the drain, whose request
/// had not arrived yet, still gets its answer (a proxy would otherwise log
/// an upstream that closed without one); a WebSocket upgrade gets 503
/// with `Retry-After`, as the server takes no new members.
#[test]
fn a_drain_answers_requests_it_had_accepted_and_sends_upgrades_elsewhere() {
    let server = util::start(util::config(1), || util::Echo);
    let addr = server.local_addr();
    let mut plain = Client::connect(addr);
    let mut upgrade = Client::connect(addr);
    util::wait_for("both connections to be accepted", || {
        server.counters().accepted == 2
    });
    server.shutdown_handle().drain(Duration::from_secs(5));
    util::wait_for("the listener to close", || {
        TcpStream::connect(addr).is_err()
    });
    plain.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = plain.read_head();
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    upgrade.send_raw(upgrade_request("/").as_bytes());
    let head = upgrade.read_head();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("Retry-After: 1"), "{head}");
    // Both answers close their connections; the server exits once the
    // clients have closed their ends too.
    let (_, _) = (plain.read_to_eof(), upgrade.read_to_eof());
    drop((plain, upgrade));
    server.join().expect("the drained server exits");
}

/// A server bound paused builds no handler and answers nothing until it
/// is started; what connected meanwhile waited in the kernel's queue and
/// is served then.
#[test]
fn a_paused_server_serves_nothing_until_started_and_then_what_waited() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let built = Arc::new(AtomicUsize::new(0));
    let mut server = {
        let built = built.clone();
        Server::bind_paused("127.0.0.1:0", util::config(2), move || {
            built.fetch_add(1, Ordering::SeqCst);
            util::Echo
        })
        .unwrap()
    };
    let mut early = Client::connect(server.local_addr());
    early.send_raw(upgrade_request("/").as_bytes());
    assert_eq!(built.load(Ordering::SeqCst), 0, "no worker before start");
    server.start().unwrap();
    server.start().unwrap(); // a second start does nothing
    let head = early.read_head();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    util::wait_for("both handlers built", || built.load(Ordering::SeqCst) == 2);
    drop(early);
    server.shutdown_handle().shutdown();
    server.join().unwrap();
}
