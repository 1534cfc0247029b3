//! One event loop per core: a `Poll`, a listener on the shared port, a
//! slab of connections, a timer wheel and a read buffer that every
//! connection shares. Nothing here is shared with other workers but the
//! counters and the shutdown flag.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::broadcast::{Hub, Publish, Topics};
use crate::config::Config;
use crate::conn::{Connection, Context, Phase};
use crate::error::CloseCode;
use crate::handler::{ConnId, Env, Handler, SendStatus};
use crate::stats::Stats;
use crate::timer::TimerWheel;

/// The listener's token.
pub(crate) const LISTENER: Token = Token(0);
/// The waker's token.
pub(crate) const WAKER: Token = Token(1);
/// Connection tokens are slab keys plus this.
const CONN_BASE: usize = 2;

/// Timer resolution.
const TICK: Duration = Duration::from_millis(10);

/// One worker's event loop and everything it owns.
pub(crate) struct Worker<H> {
    index: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Connection>,
    handler: H,
    config: Arc<Config>,
    stats: Arc<Stats>,
    rbuf: Vec<u8>,
    timers: TimerWheel,
    hub: Arc<Hub>,
    inbox: mpsc::Receiver<Publish>,
    topics: Topics,
    /// Messages published by handlers on this worker, not yet delivered here.
    published: Vec<Publish>,
    /// Connections with broadcast frames queued in this batch.
    dirty: Vec<usize>,
    /// Set once shutdown has begun: when to give up on close replies.
    shutdown_deadline: Option<Instant>,
    now: Instant,
}

impl<H: Handler> Worker<H> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        poll: Poll,
        listener: TcpListener,
        handler: H,
        config: Arc<Config>,
        stats: Arc<Stats>,
        hub: Arc<Hub>,
        inbox: mpsc::Receiver<Publish>,
    ) -> Self {
        let now = Instant::now();
        Worker {
            index,
            poll,
            listener: Some(listener),
            conns: Slab::new(),
            handler,
            rbuf: vec![0; config.read_buffer_size.max(1)],
            config,
            stats,
            timers: TimerWheel::new(TICK, now),
            hub,
            inbox,
            topics: Topics::default(),
            published: Vec::new(),
            dirty: Vec::new(),
            shutdown_deadline: None,
            now,
        }
    }

    /// Runs until shutdown completes. Returns only on a poll failure or
    /// after shutdown.
    pub fn run(mut self) -> io::Result<()> {
        if let Some(listener) = self.listener.as_mut() {
            self.poll
                .registry()
                .register(listener, LISTENER, Interest::READABLE)?;
        }
        let mut events = Events::with_capacity(1024);
        let mut fired = Vec::new();
        loop {
            if self.hub.shutdown.load(Ordering::Acquire) && self.shutdown_deadline.is_none() {
                self.begin_shutdown();
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || self.now >= deadline {
                    break;
                }
            }
            let mut timeout = self.timers.timeout(self.now);
            if let Some(deadline) = self.shutdown_deadline {
                let left = deadline.saturating_duration_since(self.now);
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    // The shutdown flag is checked at the top of the loop.
                    WAKER => self.drain_inbox(),
                    Token(token) => {
                        let key = token - CONN_BASE;
                        let closing = event.is_read_closed() || event.is_error();
                        if event.is_readable() || closing {
                            self.read_ready(key, closing);
                        }
                        self.settle(key);
                    }
                }
            }
            self.timers.expire(self.now, &mut fired);
            for (key, tick) in fired.drain(..) {
                self.on_timer(key, tick);
            }
            self.deliver_published();
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.remove(key);
        }
        Ok(())
    }

    /// A connection, the context its callbacks need, and the read buffer,
    /// borrowed apart from each other.
    fn parts(&mut self, key: usize) -> (Option<&mut Connection>, Context<'_, H>, &mut [u8]) {
        let Worker {
            index,
            conns,
            handler,
            config,
            stats,
            rbuf,
            now,
            topics,
            published,
            hub,
            ..
        } = self;
        let cx = Context {
            id: ConnId(key),
            handler,
            env: Env {
                worker: *index,
                config,
                stats,
                topics,
                published,
                hub,
            },
            now: *now,
        };
        (conns.get_mut(key), cx, rbuf)
    }

    /// Accepts until the queue is empty.
    fn accept(&mut self) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= self.config.max_connections {
                        self.stats.refused();
                        continue; // dropping the stream closes it
                    }
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    let token = Token(key + CONN_BASE);
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    let conn = entry.insert(Connection::new(stream, &self.config, self.now));
                    let deadline = self.now + self.config.handshake_timeout;
                    conn.timer_tick = Some(self.timers.arm(key, deadline));
                    conn.timer_basis = conn.deadline_basis();
                    self.stats.accepted();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors or a connection reset while queued:
                // keep the worker alive and try again on the next event.
                Err(_) => return,
            }
        }
    }

    /// Reads until the socket is empty, handing each read to the
    /// connection's parser. Readiness is edge-triggered: stopping while
    /// bytes remain would lose the wakeup.
    ///
    /// A read that did not fill the buffer emptied the socket, and bytes
    /// that arrive after it raise a new edge, so reading stops there rather
    /// than spending a syscall on `WouldBlock`. Not when the event already
    /// reported the peer's FIN or an error: those raise no new edge.
    fn read_ready(&mut self, key: usize, to_the_end: bool) {
        let (Some(conn), mut cx, rbuf) = self.parts(key) else {
            return;
        };
        while !conn.flags.broken && !conn.eof {
            match (&conn.stream).read(rbuf) {
                Ok(0) => conn.eof = true,
                Ok(n) => {
                    cx.env.stats.bytes_in(n);
                    conn.last_rx = cx.now;
                    conn.ingest(&mut cx, &mut rbuf[..n]);
                    if n < rbuf.len() && !to_the_end {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => conn.flags.broken = true,
            }
        }
    }

    /// After any event: write what is queued, move the phase on, remove the
    /// connection if it is finished, and keep interest and timer in step.
    fn settle(&mut self, key: usize) {
        let now = self.now;
        let (Some(conn), mut cx, _) = self.parts(key) else {
            return;
        };
        flush(conn);
        if conn.flags.drain_wanted && conn.out.is_empty() && conn.phase == Phase::Open {
            conn.flags.drain_wanted = false;
            conn.with_conn(&mut cx, |handler, conn| handler.on_drain(conn));
            conn.after_callback(now);
            flush(conn);
        }
        let conn = &mut self.conns[key];
        if conn.flags.broken || conn.eof {
            self.remove(key);
            return;
        }
        let last_words = matches!(conn.phase, Phase::Done | Phase::Http);
        if last_words && conn.out.is_empty() && !conn.write_shut {
            // Our close frame or HTTP response is out: send FIN and wait for
            // the peer's (input is discarded meanwhile), so that unread input
            // never turns our last bytes into a reset.
            conn.write_shut = true;
            let _ = conn.stream.shutdown(Shutdown::Write);
        }
        let want_write = !conn.out.is_empty();
        if want_write != conn.writable {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(key + CONN_BASE);
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, token, interest)
                .is_err()
            {
                self.remove(key);
                return;
            }
            conn.writable = want_write;
        }
        self.arm(key);
    }

    /// Arms the timer if the connection's next deadline is earlier than the
    /// one armed.
    fn arm(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // While the basis is unchanged the deadline only moves later, and
        // the armed entry catches up with it when it fires, so the common
        // case costs nothing here. A new basis (a phase change, a ping sent
        // or answered) can move it earlier, so it is computed again.
        let basis = conn.deadline_basis();
        if conn.timer_tick.is_some() && conn.timer_basis == basis {
            return;
        }
        let Some(deadline) = conn.deadline(&self.config) else {
            return;
        };
        let tick = self.timers.tick_of(deadline);
        if conn.timer_tick.is_none_or(|armed| tick < armed) {
            conn.timer_tick = Some(self.timers.arm(key, deadline));
        }
        // An earlier entry still armed fires first and re-arms for this one.
        conn.timer_basis = basis;
    }

    fn on_timer(&mut self, key: usize, tick: u64) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.timer_tick != Some(tick) {
            return; // stale: the deadline moved
        }
        conn.timer_tick = None;
        let now = self.now;
        let config = &self.config;
        match conn.phase {
            Phase::Handshake | Phase::Http => {
                if now >= conn.since + config.handshake_timeout {
                    return self.remove(key);
                }
            }
            Phase::Closing | Phase::Done => {
                if now >= conn.since + config.close_timeout {
                    return self.remove(key);
                }
            }
            Phase::Open => {
                if let Some(sent) = conn.ping_sent {
                    if now >= sent + config.pong_timeout {
                        conn.close = Some((CloseCode::ABNORMAL, "no pong".into()));
                        return self.remove(key);
                    }
                } else if let Some(every) = config.ping_interval {
                    if now >= conn.last_rx + every {
                        let _ = conn.out.push(crate::frame::OpCode::Ping, b"");
                        conn.ping_sent = Some(now);
                    }
                }
                if let Some(idle) = config.idle_timeout {
                    if now >= conn.last_msg + idle {
                        conn.out.close(CloseCode::GOING_AWAY, "idle timeout");
                        conn.after_callback(now);
                    }
                }
            }
        }
        self.settle(key);
    }

    /// Stops accepting and starts the close handshake on every connection.
    fn begin_shutdown(&mut self) {
        self.shutdown_deadline = Some(self.now + self.config.shutdown_timeout);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            match conn.phase {
                Phase::Handshake | Phase::Http => {
                    self.remove(key);
                    continue;
                }
                Phase::Open => {
                    conn.out
                        .close(CloseCode::GOING_AWAY, "server shutting down");
                    conn.after_callback(self.now);
                }
                Phase::Closing | Phase::Done => {}
            }
            self.settle(key);
        }
    }

    /// Closes the socket and tells the handler, once.
    fn remove(&mut self, key: usize) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        // No deregister: closing the socket, which dropping `conn` does,
        // takes it out of epoll, and the syscall would be one more per
        // connection.
        if conn.info.is_some() {
            let (code, reason) = conn
                .close
                .take()
                .unwrap_or((CloseCode::ABNORMAL, "".into()));
            self.stats.closed(code);
            self.topics.remove_conn(key);
            // Nothing more may be sent on it, whatever its phase.
            conn.flags.broken = true;
            let (_, mut cx, _) = self.parts(key);
            conn.with_conn(&mut cx, |handler, conn| {
                handler.on_close(conn, code, &reason)
            });
        }
        self.stats.removed();
    }

    /// Takes what other threads published for this worker.
    fn drain_inbox(&mut self) {
        // Clear the flag first: a publish racing with the drain wakes us again.
        self.hub.remotes[self.index]
            .pending
            .store(false, Ordering::Release);
        while let Ok(publish) = self.inbox.try_recv() {
            self.deliver(&publish);
        }
        self.flush_delivered();
    }

    /// Delivers what handlers on this worker published during the last
    /// round of events.
    fn deliver_published(&mut self) {
        // Flushing can call on_drain, which may publish again; those wait
        // for the next round, which keeps this loop finite.
        let mut batch = std::mem::take(&mut self.published);
        for publish in &batch {
            self.deliver(publish);
        }
        self.flush_delivered();
        batch.clear();
        batch.append(&mut self.published);
        self.published = batch;
    }

    /// Queues one published frame, by reference, on every subscriber here.
    /// The writes happen in [`Worker::flush_delivered`], one `writev` per
    /// connection for the whole batch.
    fn deliver(&mut self, publish: &Publish) {
        for &key in self.topics.subscribers(&publish.topic) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.phase != Phase::Open {
                continue;
            }
            let status = conn.send_shared(&publish.frame, &self.config, &self.stats);
            if status != SendStatus::Closed && !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
            conn.after_callback(self.now);
        }
    }

    /// Writes what [`Worker::deliver`] queued.
    fn flush_delivered(&mut self) {
        let mut keys = std::mem::take(&mut self.dirty);
        for &key in &keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.dirty = false;
                self.settle(key);
            }
        }
        keys.clear();
        self.dirty = keys;
    }
}

/// Writes queued output until done or the socket would block, up to 64
/// pieces per `writev`.
fn flush(conn: &mut Connection) {
    while !conn.out.is_empty() && !conn.flags.broken {
        let mut slices = [IoSlice::new(&[]); 64];
        let mut count = 0;
        for (slot, piece) in slices.iter_mut().zip(conn.out.pieces()) {
            *slot = IoSlice::new(piece);
            count += 1;
        }
        match (&conn.stream).write_vectored(&slices[..count]) {
            Ok(0) => conn.flags.broken = true,
            Ok(n) => conn.out.consume(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => conn.flags.broken = true,
        }
    }
}
