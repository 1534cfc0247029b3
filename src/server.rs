//! Starting the workers: their listening sockets (see [`ListenerMode`]),
//! one thread each, and a handle to stop them.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::broadcast::{Bridge, Broadcaster, Hub, Inbound, Remote, Topics};
use crate::config::{Config, ListenerMode};
use crate::handler::{Handler, Shared};
use crate::history::History;
use crate::stats::{Counters, Stats};
use crate::time::Time;
use crate::worker::{Worker, WAKER};

/// Stops a running server from any thread, at once or over a while.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    hub: Arc<Hub>,
}

impl ShutdownHandle {
    /// Begins a graceful shutdown: the workers stop accepting, answer held
    /// requests, send close 1001 to every connection, flush, wait for the
    /// replies up to [`Config::shutdown_timeout`], and exit. Calling it
    /// again, or during a [drain](ShutdownHandle::drain), closes what is
    /// left at once.
    pub fn shutdown(&self) {
        self.hub.drain_ms.store(0, Ordering::Release);
        self.hub.shutdown.store(true, Ordering::Release);
        self.hub.wake_all();
    }

    /// Begins a shutdown for a restart, spread over `window`: the workers
    /// close their listeners at once (on Linux, with
    /// `net.ipv4.tcp_migrate_req = 1`, connections still in their accept
    /// queues move to another process listening on the same port with
    /// SO_REUSEPORT), answer held requests with what they have, and end
    /// plain HTTP connections after their current answer. WebSockets go on
    /// as before until their turn: each worker closes its own evenly over
    /// the window, with 1012 (Service Restart), so that their clients do
    /// not all come back at the same moment. The server exits when its
    /// last connection is gone, or at the end of the window plus
    /// [`Config::shutdown_timeout`]. A zero window is
    /// [`ShutdownHandle::shutdown`].
    pub fn drain(&self, window: Duration) {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        if self.hub.shutdown.load(Ordering::Acquire) {
            return self.shutdown();
        }
        self.hub.drain_ms.store(ms, Ordering::Release);
        self.hub.shutdown.store(true, Ordering::Release);
        self.hub.wake_all();
    }

    /// Connections open now, on all workers: how far a drain has gone.
    pub fn open_connections(&self) -> u64 {
        self.hub.counters().open
    }

    /// Every worker's counters, summed, as [`Server::counters`]: a clone
    /// of this handle reads them after [`Server::join`] has taken the
    /// server.
    pub fn counters(&self) -> Counters {
        self.hub.counters()
    }
}

/// A running server: its workers, address and counters.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    threads: Vec<WorkerThread>,
    hub: Arc<Hub>,
    stats: Vec<Arc<Stats>>,
    /// Until [`Server::start`]: what starts the workers.
    paused: Option<Paused>,
}

/// A worker thread, and what it ends with.
type WorkerThread = JoinHandle<io::Result<()>>;

/// Workers bound and not started ([`Server::bind_paused`]).
struct Paused(Box<dyn FnOnce() -> io::Result<Vec<WorkerThread>> + Send>);

impl fmt::Debug for Paused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Paused")
    }
}

impl Server {
    /// Binds `addr` as [`Config::listener`] says and starts the workers. Each worker
    /// thread calls `factory` once to make its own handler. Bind to port 0
    /// and read [`Server::local_addr`] to get a free port. A config that
    /// fails [`Config::validate`] is an `InvalidInput` error naming the
    /// field.
    pub fn bind<A, H, F>(addr: A, config: Config, factory: F) -> io::Result<Server>
    where
        A: ToSocketAddrs,
        H: Handler + 'static,
        F: Fn() -> H + Send + Sync + 'static,
    {
        let mut server = Server::bind_paused(addr, config, factory)?;
        server.start()?;
        Ok(server)
    }

    /// Binds and listens as [`Server::bind`] does, but starts no worker
    /// until [`Server::start`]: connections wait in the kernel's accept
    /// queue meanwhile. For what must be in place before the first
    /// connection is served: a [`Bridge`] that numbers messages, whose
    /// topics must never be numbered here first, or a new process taking
    /// over a port (see [`ShutdownHandle::drain`]) whose state is not
    /// ready yet.
    pub fn bind_paused<A, H, F>(addr: A, config: Config, factory: F) -> io::Result<Server>
    where
        A: ToSocketAddrs,
        H: Handler + 'static,
        F: Fn() -> H + Send + Sync + 'static,
    {
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind"))?;
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let workers = config.worker_count();
        let config = Arc::new(config);
        let factory = Arc::new(factory);

        // Bind everything before starting a thread, so that errors come
        // back from here, and port 0 is resolved once for all workers.
        let stats: Vec<Arc<Stats>> = (0..workers).map(|_| Arc::default()).collect();
        let (local_addr, parts, hub) = bind_workers(addr, &config, &stats)?;
        let start_hub = hub.clone();
        let start_stats = stats.clone();
        let start = move || {
            let (hub, stats) = (start_hub, start_stats);
            let mut threads = Vec::with_capacity(workers);
            for (i, (poll, listener, receiver)) in parts.into_iter().enumerate() {
                let worker_stats = stats[i].clone();
                let shared = Shared {
                    worker: i,
                    config: config.clone(),
                    stats: worker_stats,
                    topics: Topics::default(),
                    published: Vec::new(),
                    held: HashMap::new(),
                    held_per_ip: HashMap::new(),
                    streams: HashMap::new(),
                    hub: hub.clone(),
                    now: Time::from_millis(0),
                    timers: HashMap::new(),
                };
                let factory = factory.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("wsloop-{i}"))
                    .spawn(move || {
                        Worker::new(poll, listener, factory(), shared, receiver).run()
                    })?;
                threads.push(thread);
            }
            Ok(threads)
        };
        Ok(Server {
            local_addr,
            threads: Vec::new(),
            hub,
            stats,
            paused: Some(Paused(Box::new(start))),
        })
    }

    /// Starts the workers of a server bound with [`Server::bind_paused`];
    /// does nothing once they run.
    pub fn start(&mut self) -> io::Result<()> {
        if let Some(Paused(start)) = self.paused.take() {
            self.threads = start()?;
        }
        Ok(())
    }

    /// The address the workers listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            hub: self.hub.clone(),
        }
    }

    /// A handle that publishes to topics from any thread.
    pub fn broadcaster(&self) -> Broadcaster {
        Broadcaster {
            hub: self.hub.clone(),
        }
    }

    /// Installs a [`Bridge`] that carries this server's topics to other
    /// processes. It is told at once of every topic that has subscribers
    /// already. Returns false, leaving the first in place, if a bridge was
    /// installed before.
    ///
    /// A bridge that [orders](Bridge::orders) messages needs a server that
    /// keeps history ([`Config::history`]): without it, it is refused.
    pub fn set_bridge(&self, bridge: Arc<dyn Bridge>) -> bool {
        self.hub.set_bridge(bridge)
    }

    /// Whether this server keeps topic history ([`Config::history`]).
    pub fn keeps_history(&self) -> bool {
        self.hub.history.is_some()
    }

    /// The counters of every worker, summed.
    pub fn counters(&self) -> Counters {
        self.hub.counters()
    }

    /// Each worker's counters.
    pub fn worker_counters(&self) -> Vec<Counters> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    /// Waits for every worker to finish, after a shutdown. Returns the
    /// first worker error, if any. A server bound paused is started first.
    pub fn join(mut self) -> io::Result<Counters> {
        self.start()?;
        let mut result = Ok(());
        for thread in self.threads.drain(..) {
            let outcome = thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("worker panicked")));
            if result.is_ok() {
                result = outcome;
            }
        }
        result.map(|()| self.counters())
    }
}

/// What one worker thread starts from.
type WorkerParts = (Poll, mio::net::TcpListener, mpsc::Receiver<Inbound>);

/// One listener, poll and inbox per worker, all on one address (so port 0
/// becomes one port), and the hub that reaches them.
fn bind_workers(
    addr: SocketAddr,
    config: &Config,
    stats: &[Arc<Stats>],
) -> io::Result<(SocketAddr, Vec<WorkerParts>, Arc<Hub>)> {
    let listeners = match config.listener {
        ListenerMode::PerWorker => per_worker_listeners(addr, stats.len())?,
        ListenerMode::Shared => shared_listener(addr, stats.len())?,
    };
    let local_addr = listeners[0].local_addr()?;
    let mut parts = Vec::with_capacity(stats.len());
    let mut remotes = Vec::with_capacity(stats.len());
    for (stats, listener) in stats.iter().zip(listeners) {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (inbox, receiver) = mpsc::channel();
        remotes.push(Remote {
            waker,
            inbox,
            pending: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            stats: stats.clone(),
            addresses: Mutex::default(),
        });
        parts.push((poll, mio::net::TcpListener::from_std(listener), receiver));
    }
    let hub = Arc::new(Hub {
        shutdown: AtomicBool::new(false),
        drain_ms: AtomicU64::new(0),
        remotes,
        history: config
            .history
            .map(|history| Mutex::new(History::new(history, epoch_seed()))),
        bridge: OnceLock::new(),
        ordered: OnceLock::new(),
        interest: RwLock::default(),
        max_inbox_bytes: config.max_inbox_bytes,
        held_keys: Mutex::default(),
        claims: AtomicU64::new(0),
    });
    Ok((local_addr, parts, hub))
}

/// Where this process's history epochs start: different from run to run,
/// so that a cursor from an earlier run is never mistaken for one of this
/// run's (the clock's nanoseconds and the process id, mixed).
fn epoch_seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed =
        (nanos ^ u64::from(std::process::id()).rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 32) as u32
}

/// `workers` SO_REUSEPORT listeners on one port, all on the address the
/// first one bound.
#[cfg(target_os = "linux")]
fn per_worker_listeners(
    addr: SocketAddr,
    workers: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let mut local_addr = addr;
    let mut listeners = Vec::with_capacity(workers);
    for _ in 0..workers {
        let socket = new_socket(local_addr)?;
        socket.set_reuse_port(true)?;
        let listener = listen(socket, local_addr)?;
        local_addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Refused: only Linux balances connections over SO_REUSEPORT sockets.
#[cfg(not(target_os = "linux"))]
fn per_worker_listeners(
    _addr: SocketAddr,
    _workers: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "ListenerMode::PerWorker needs Linux's SO_REUSEPORT; use ListenerMode::Shared",
    ))
}

/// One listener, and a clone of it for each worker after the first.
fn shared_listener(addr: SocketAddr, workers: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let listener = listen(new_socket(addr)?, addr)?;
    let mut listeners = Vec::with_capacity(workers);
    for _ in 1..workers {
        let clone = listener.try_clone()?;
        // Shared by dup(2) on Unix, but set it anyway: on Windows a
        // duplicated socket's mode is not documented to follow.
        clone.set_nonblocking(true)?;
        listeners.push(clone);
    }
    listeners.insert(0, listener);
    Ok(listeners)
}

/// A non-blocking TCP socket for `addr`; on Unix with SO_REUSEADDR, so a
/// restart can bind while the last run's connections are in TIME_WAIT.
/// (On Windows SO_REUSEADDR would let another process bind the port too;
/// std leaves it off there as well.)
fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Binds and listens.
fn listen(socket: Socket, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}
