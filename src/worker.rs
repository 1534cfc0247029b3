//! One event loop per core: a `Poll`, a listener on the shared port (its
//! own or a clone of one, see [`ListenerMode`](crate::ListenerMode)), a
//! slab of connections, a timer wheel and a read buffer that every
//! connection shares. The loop moves bytes, readiness and time; what they
//! mean is each connection's [`Session`](crate::session::Session).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::broadcast::{Inbound, Publish, Sub};
use crate::conn::{interrupted, suppress_sigpipe, would_block, Connection};
use crate::error::CloseCode;
use crate::handler::{Handler, Shared, WakeReason};
use crate::history::MessageId;
use crate::protocol::SharedFrame;
use crate::session::SendStatus;
use crate::time::Time;
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
pub(crate) struct Worker<H: Handler> {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Connection<H::Data>>,
    handler: H,
    shared: Shared,
    inbox: mpsc::Receiver<Inbound>,
    rbuf: Vec<u8>,
    timers: TimerWheel,
    /// Where this worker's [`Time`] counts from.
    origin: Instant,
    /// Connections with broadcast frames queued in this batch.
    delivered: Vec<usize>,
    /// Connections whose read budget ran out with input left, in the order
    /// they get their next turn.
    ready: Vec<usize>,
    /// Set once shutdown has begun: when to give up on close replies.
    shutdown_deadline: Option<Time>,
    /// During a drain, the WebSockets still to close and when.
    drain: Option<Drain>,
}

/// A drain in progress: this worker's WebSockets, closed one by one at
/// even steps over the window, so that their clients reconnect spread
/// out rather than all at once.
#[derive(Debug)]
struct Drain {
    start: Time,
    window: Duration,
    /// The connections, in the order they are closed.
    order: Vec<usize>,
    /// How many of them have been closed.
    done: usize,
}

impl Drain {
    /// When the next connection is due to close, if one is left: the
    /// k-th of n at k/n of the window, the last at its end.
    fn next_due(&self) -> Option<Time> {
        let n = self.order.len() as u128;
        let k = self.done as u128 + 1;
        (self.done < self.order.len()).then(|| {
            let at = self.window.as_millis() * k / n;
            self.start + Duration::from_millis(u64::try_from(at).unwrap_or(u64::MAX))
        })
    }
}

impl<H: Handler> Worker<H> {
    pub fn new(
        poll: Poll,
        listener: TcpListener,
        handler: H,
        shared: Shared,
        inbox: mpsc::Receiver<Inbound>,
    ) -> Self {
        Worker {
            poll,
            listener: Some(listener),
            conns: Slab::new(),
            handler,
            rbuf: vec![0; shared.config.read_buffer_size],
            shared,
            inbox,
            timers: TimerWheel::new(TICK),
            origin: Instant::now(),
            delivered: Vec::new(),
            ready: Vec::new(),
            shutdown_deadline: None,
            drain: None,
        }
    }

    /// Runs until shutdown completes. Returns only on a poll failure or
    /// after shutdown.
    ///
    /// Each turn of the loop is one `poll` and what follows from it:
    ///
    /// 1. **poll**: sleep until a socket is ready, another thread wakes us,
    ///    or the next timer is due; then read the clock once.
    /// 2. **events**: for each ready token, accept, drain the inbox (the
    ///    waker's token), or read a connection and write its replies.
    /// 3. **due timers**: hand each expired deadline to its session.
    /// 4. **this worker's publishes**: deliver what handlers published
    ///    during steps 2 and 3, one send per subscriber for the batch.
    /// 5. **the ready list**: give connections whose read budget ran out
    ///    their next turn.
    ///
    /// Every step that touches a connection ends in [`Worker::drive`]:
    /// write what the session queued, keep the interest and the timer in
    /// step with it, and remove the connection if it has ended.
    pub fn run(mut self) -> io::Result<()> {
        // The listener is registered for READABLE only: for a listening
        // socket that means "connections wait in the accept queue". Its
        // token is fixed (LISTENER), as the waker's is (WAKER); every
        // connection's token is its slab key plus CONN_BASE, so an event
        // leads back to its connection with one subtraction.
        if let Some(listener) = self.listener.as_mut() {
            self.poll
                .registry()
                .register(listener, LISTENER, Interest::READABLE)?;
        }
        // One poll returns at most this many events. Sockets still ready
        // beyond it stay in the kernel's ready list for the next poll.
        let mut events = Events::with_capacity(1024);
        let mut fired = Vec::new();
        loop {
            // A ShutdownHandle on another thread sets the flag, then wakes
            // every worker; the wake-up only brings us back here to see it.
            if self.shared.hub.shutdown.load(Ordering::Acquire) && self.shutdown_deadline.is_none()
            {
                self.begin_shutdown();
            }
            if self.drain.is_some() {
                self.close_drained();
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || self.shared.now >= deadline {
                    break;
                }
            }
            // 1. Sleep in epoll_wait (kqueue, IOCP elsewhere) until there is
            // something to do; the timeout is the next timer, or zero when
            // work is left over from the last turn. A signal that interrupts
            // the wait is not an error: go round again.
            match self.poll.poll(&mut events, self.poll_timeout()) {
                Ok(()) => {}
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(e),
            }
            // The clock is read once per turn, here, and passed to every
            // session as an argument: nothing below reads it again.
            self.shared.now = Time::from_millis(self.origin.elapsed().as_millis() as u64);
            // 2. Readiness, not data: an event says a socket changed state.
            // Registration is edge-triggered, so the kernel reports a change
            // once and says nothing more until new bytes arrive after the
            // socket was emptied. Whoever handles an event therefore reads
            // (or accepts) until the socket is empty or the read budget is
            // spent; the ready list remembers the second case. The peer's
            // FIN and a reset arrive as events too (`is_read_closed`,
            // `is_error`), and the read then returns 0 or the error. A
            // connection's event ends in `drive`, which writes everything its
            // handler sent during the event with one send: the writes are
            // corked until then.
            for event in events.iter() {
                self.handle_event(event);
            }
            // 3. Deadlines. The wheel holds one entry per connection at the
            // tick it armed last; an entry for any other tick is stale and
            // `on_timer` skips it, so a deadline moved earlier costs no
            // search for the old entry.
            self.timers.expire(self.shared.now, &mut fired);
            for (key, tick) in fired.drain(..) {
                self.on_timer(key, tick);
            }
            // 4. Handlers on this worker published during this turn: those
            // messages wait until now so that each subscriber gets the whole
            // batch in one send. Messages from other threads came through
            // the inbox in step 2.
            self.deliver_published();
            // 5. Last, the connections that still had input when their
            // budget ran out. No new edge will come for bytes already in
            // their sockets, so without this list they would never be read.
            self.serve_ready();
        }
        // Shutdown's deadline passed with connections left: drop them. Each
        // gets `on_close`, with 1006 or the close record it has already.
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.conns[key].session_mut().handle_io_error();
            self.remove(key);
        }
        Ok(())
    }

    /// How long `poll` may sleep: until the next timer or the shutdown
    /// deadline.
    fn poll_timeout(&self) -> Option<Duration> {
        // Messages published in the last round's callbacks go out now, and
        // connections with input left get their turn after this look.
        if !self.shared.published.is_empty() || !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let wake_at = self
            .timers
            .next_due()
            .into_iter()
            .chain(self.shutdown_deadline)
            .chain(self.drain.as_ref().and_then(Drain::next_due))
            .min();
        wake_at.map(|at| {
            Duration::from_millis(at.as_millis().saturating_sub(self.shared.now.as_millis()))
        })
    }

    fn handle_event(&mut self, event: &mio::event::Event) {
        match event.token() {
            LISTENER => self.accept(),
            // The shutdown flag is checked at the top of the loop.
            WAKER => self.drain_inbox(),
            Token(token) => {
                // The slot may be empty, or hold a newer connection that took
                // the key in this same batch: the event is then spurious,
                // which mio allows anyway, and costs one read that returns
                // WouldBlock.
                let key = token - CONN_BASE;
                // The peer's FIN (read side closed) or a reset (an error):
                // read to the end, where `read` returns 0 or the error, since
                // no further edge will announce them.
                let closing = event.is_read_closed() || event.is_error();
                if event.is_readable() || closing {
                    self.read_ready(key, closing);
                }
                // A WRITABLE event (room in the socket's send buffer again)
                // needs no branch of its own: `drive` writes whatever is
                // queued, whichever kind of event brought us here.
                self.drive(key);
            }
        }
    }

    /// Accepts until the queue is empty.
    fn accept(&mut self) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.conns.len() >= self.shared.config.max_connections {
                        self.shared.stats.refused();
                        continue; // dropping the stream closes it
                    }
                    if suppress_sigpipe(&stream).is_err() {
                        continue; // a write could kill the process: close it
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
                    #[allow(unused_mut)]
                    let mut conn = Connection::new(stream, peer, self.shared.now);
                    #[cfg(feature = "tls")]
                    if let Some(tls) = &self.shared.config.tls {
                        match tls.accept() {
                            Ok(session) => conn.start_tls(session),
                            Err(_) => {
                                self.shared.stats.tls_failed();
                                let _ = self.poll.registry().deregister(conn.stream_mut());
                                continue;
                            }
                        }
                    }
                    let conn = entry.insert(conn);
                    arm(&mut self.timers, conn, key, &self.shared);
                    self.shared.stats.accepted();
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => continue,
                // Out of descriptors or a connection reset while queued:
                // keep the worker alive and try again on the next event.
                Err(_) => return,
            }
        }
    }

    /// Reads what the connection's budget allows; one with input left
    /// joins the back of the ready list, once.
    fn read_ready(&mut self, key: usize, to_the_end: bool) {
        let Worker {
            conns,
            handler,
            shared,
            rbuf,
            ready,
            ..
        } = self;
        if let Some(conn) = conns.get_mut(key) {
            if conn.read_ready(key, handler, shared, rbuf, to_the_end)
                && !conn.set_read_pending(true)
            {
                ready.push(key);
            }
        }
    }

    /// Gives each connection in the ready list its next turn, in order,
    /// after this round's events, timers and deliveries. One that still has
    /// input left goes to the back, for the next round. A key whose
    /// connection has gone, or been replaced, is skipped.
    fn serve_ready(&mut self) {
        let mut turn = std::mem::take(&mut self.ready);
        for &key in &turn {
            let pending = self
                .conns
                .get_mut(key)
                .is_some_and(|conn| conn.set_read_pending(false));
            if pending {
                // No edge will come for what is already in the socket.
                self.read_ready(key, true);
                self.drive(key);
            }
        }
        turn.clear();
        // Keep the allocation when nothing was added meanwhile.
        if self.ready.is_empty() {
            self.ready = turn;
        }
    }

    /// Carries out what the connection's session asks for after any event:
    /// write its output (one send for all that was queued), tell the
    /// handler of a drain, drop it if it has ended, and keep interest and
    /// timer in step.
    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.flush();
        if conn.session_mut().poll_drain() {
            conn.callback(key, &mut self.handler, &mut self.shared, |h, c| {
                h.on_drain(c)
            });
            conn.flush();
        }
        if conn.session().is_ended() {
            return self.remove(key);
        }
        // WRITABLE is asked for only while the socket refused some output.
        // A socket is writable nearly all the time, and with the interest
        // held the kernel would report it again each time acknowledgements
        // free room in its send buffer, waking the loop for nothing. Asking
        // only when a write fell short, and dropping the interest once the
        // queue is empty, costs one epoll_ctl each way, and none at all for
        // the usual connection, whose replies fit.
        let wanted = conn.wants_write();
        if conn.set_write_interest(wanted) {
            let interest = if wanted {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(key + CONN_BASE);
            if self
                .poll
                .registry()
                .reregister(conn.stream_mut(), token, interest)
                .is_err()
            {
                conn.session_mut().handle_io_error();
                return self.remove(key);
            }
        }
        self.arm(key);
    }

    fn arm(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            arm(&mut self.timers, conn, key, &self.shared);
        }
    }

    fn on_timer(&mut self, key: usize, tick: u64) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.armed() != Some(tick) {
            return; // stale: an earlier tick was armed since
        }
        conn.set_armed(None);
        let now = self.shared.now;
        // The handler's timer, if it is due: the session's deadlines are
        // looked at too, as they may have come due in the same tick.
        if let Some(&(at, token)) = self.shared.timers.get(&key) {
            if now >= at {
                self.shared.timers.remove(&key);
                conn.callback(key, &mut self.handler, &mut self.shared, |h, conn| {
                    h.on_timer(conn, token)
                });
            }
        }
        if conn
            .session()
            .held_deadline(now)
            .is_some_and(|at| now >= at)
        {
            conn.wake(
                key,
                &mut self.handler,
                &mut self.shared,
                WakeReason::Deadline,
            );
        } else {
            conn.session_mut().handle_timeout(now, &self.shared.config);
        }
        self.drive(key);
    }

    /// Stops accepting and starts the close handshake on every connection,
    /// or, for a drain, answers what is plain HTTP now and schedules the
    /// WebSockets' closes over the window.
    fn begin_shutdown(&mut self) {
        let now = self.shared.now;
        let config = &self.shared.config;
        let window = Duration::from_millis(self.shared.hub.drain_ms.load(Ordering::Acquire));
        self.shutdown_deadline = Some(now + window + config.shutdown_timeout);
        // Dropping the listener closes it: with SO_REUSEPORT and Linux's
        // tcp_migrate_req, what waits in its accept queue moves to another
        // listener on the port instead of being reset.
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        let mut sockets = Vec::new();
        for key in keys {
            let conn = &mut self.conns[key];
            // Held requests get their answers, with Connection: close.
            conn.wake(
                key,
                &mut self.handler,
                &mut self.shared,
                WakeReason::Shutdown,
            );
            let session = conn.session_mut();
            if !session.is_upgraded() && window.is_zero() {
                session.stop_http();
            } else if !session.is_upgraded() {
                session.finish_http();
            } else if window.is_zero() {
                session.close(now, CloseCode::GOING_AWAY, "server shutting down");
            } else {
                sockets.push(key);
            }
            self.drive(key);
        }
        if !window.is_zero() {
            self.drain = Some(Drain {
                start: now,
                window,
                order: sockets,
                done: 0,
            });
        }
    }

    /// Closes the drain's WebSockets whose time has come, with 1012; all
    /// that are left if a shutdown came on top of the drain.
    fn close_drained(&mut self) {
        let Some(drain) = self.drain.as_mut() else {
            return;
        };
        let now = self.shared.now;
        let hurry = self.shared.hub.drain_ms.load(Ordering::Acquire) == 0;
        let mut due = Vec::new();
        while let Some(at) = drain.next_due() {
            if !hurry && at > now {
                break;
            }
            due.push(drain.order[drain.done]);
            drain.done += 1;
        }
        if drain.done == drain.order.len() {
            self.drain = None;
        }
        if hurry {
            self.shutdown_deadline = Some(now + self.shared.config.shutdown_timeout);
        }
        // No new connection is accepted during a drain, so a key still
        // names the connection it named when the drain began (or none).
        for key in due {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let (code, reason) = match hurry {
                true => (CloseCode::GOING_AWAY, "server shutting down"),
                false => (CloseCode::SERVICE_RESTART, "server restarting"),
            };
            conn.session_mut().close(now, code, reason);
            self.drive(key);
        }
    }

    /// Drops the connection, closing its socket, and tells the handler
    /// once, with the code and reason its session recorded.
    fn remove(&mut self, key: usize) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        // A held request whose client went away.
        self.shared.forget_held(key);
        self.shared.forget_stream(key);
        self.shared.timers.remove(&key);
        self.shared.hub.forget_address(self.shared.worker, key);
        // No deregister: closing the socket, which dropping `conn` does,
        // takes it out of epoll, and the syscall would be one more per
        // connection.
        if let Some((code, reason)) = conn.session().close_record() {
            let reason: Box<str> = reason.into();
            self.shared.stats.closed(code);
            conn.callback(key, &mut self.handler, &mut self.shared, |h, c| {
                h.on_close(c, code, &reason)
            });
            // After the callback, so that a subscription made in it cannot
            // pass to the next connection that gets this key.
            for topic in self.shared.topics.remove_conn(key) {
                self.shared
                    .hub
                    .worker_interest(self.shared.worker, &topic, false);
            }
        }
        self.shared.stats.removed();
    }

    /// Takes what other threads published for this worker.
    fn drain_inbox(&mut self) {
        // Clear the flag first: a publish racing with the drain wakes us again.
        self.shared.hub.remotes[self.shared.worker]
            .pending
            .store(false, Ordering::Release);
        while let Ok(inbound) = self.inbox.try_recv() {
            self.shared.hub.remotes[self.shared.worker].took(&inbound);
            match inbound {
                Inbound::Publish(publish) => self.deliver(&publish),
                Inbound::Replaced { conn, seq } => self.replaced(conn, seq),
                Inbound::Loaded { topic, start } => self.loaded(&topic, start),
                Inbound::Direct {
                    conn,
                    serial,
                    frame,
                } => self.direct(conn, serial, frame),
            }
        }
        self.flush_delivered();
    }

    /// Answers a held request that a newer one with its key replaced, if
    /// the connection still holds that very request: its claim number
    /// tells it from a later request on the same connection, or on a new
    /// connection that took its slab key.
    fn replaced(&mut self, conn: usize, claim: u64) {
        if self.shared.held.get(&conn).is_none_or(|h| h.claim != claim) {
            return;
        }
        if let Some(c) = self.conns.get_mut(conn) {
            c.wake(
                conn,
                &mut self.handler,
                &mut self.shared,
                WakeReason::Replaced,
            );
            self.delivered.push(conn);
        }
    }

    /// Sends a message addressed to one connection here, if the address
    /// still names it.
    fn direct(&mut self, key: usize, serial: u64, frame: Arc<[u8]>) {
        let to = self
            .shared
            .hub
            .is_current_here(self.shared.worker, key, serial);
        let Some(conn) = self.conns.get_mut(key).filter(|_| to) else {
            return;
        };
        let session = conn.session_mut();
        let first = !session.wants_write();
        let len = frame.len();
        let status = session.send_shared(
            self.shared.now,
            &self.shared.config,
            &mut SharedFrame::from_frame(frame),
        );
        self.shared.stats.sent(status, len);
        if first && status == SendStatus::Queued {
            self.delivered.push(key);
        }
    }

    /// `topic`'s history was loaded from an ordering bridge: each
    /// subscription here learns what followed its place. One that waited
    /// for the load with no cursor starts where this load ended, `start`,
    /// and hears what followed it: the bridge makes a new topic's first
    /// load before it numbers what this server publishes next, so such a
    /// subscriber gets its own messages (a chat member's join), even when
    /// a later load is in the history by the time this notice is read. A
    /// held request is answered if there is something to answer with.
    fn loaded(&mut self, topic: &str, start: MessageId) {
        let places: Vec<Sub> = self.shared.topics.subscribers(topic).to_vec();
        for Sub {
            key,
            after,
            waiting,
        } in places
        {
            let from = match (after, waiting) {
                (None, true) => Some(start),
                _ => after,
            };
            let catchup = self.shared.hub.since(topic, from);
            if catchup.pending {
                // Forgotten again since: a later load comes.
                return;
            }
            self.shared.topics.set_waiting(key, topic, false);
            let Some(held) = self.conns.get(key).map(|c| c.session().is_held()) else {
                continue;
            };
            if held {
                if after.is_none() || catchup.reset || !catchup.entries.is_empty() {
                    self.wake_held(key);
                }
                continue;
            }
            let conn = &mut self.conns[key];
            let latest = catchup.latest;
            if from.is_some() && (catchup.reset || !catchup.entries.is_empty()) {
                conn.callback(key, &mut self.handler, &mut self.shared, |h, conn| {
                    h.on_history(conn, topic, catchup)
                });
                self.delivered.push(key);
            }
            if let Some(latest) = latest {
                self.shared.topics.advance(key, topic, latest);
            }
        }
    }

    /// Delivers what handlers on this worker published during the last
    /// round of events.
    fn deliver_published(&mut self) {
        // Flushing can call on_drain, which may publish again; those wait
        // for the next round, which keeps this loop finite.
        let mut batch = std::mem::take(&mut self.shared.published);
        for publish in &batch {
            self.deliver(publish);
        }
        self.flush_delivered();
        batch.clear();
        batch.append(&mut self.shared.published);
        self.shared.published = batch;
    }

    /// Queues one published frame, by reference, on every subscriber here.
    /// The writes happen in [`Worker::flush_delivered`], one send per
    /// connection for the whole batch.
    fn deliver(&mut self, publish: &Publish) {
        let Shared {
            topics,
            config,
            stats,
            now,
            ..
        } = &mut self.shared;
        // Compressed forms, if any subscriber wants one, are made once
        // here for all of this worker's subscribers.
        let mut frame = SharedFrame::from_frame(publish.frame.clone()).with_id(publish.id);
        let mut woken = Vec::new();
        for sub in topics.subscribers_mut(&publish.topic) {
            let key = sub.key;
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            // One waiting for the history is told by the load, and what
            // comes before it belongs to an older copy.
            if sub.waiting || !sub.wants(publish.id) {
                continue;
            }
            // Its place in the topic, should the history be loaded again.
            if publish.id.is_some() {
                sub.after = publish.id;
            }
            let session = conn.session_mut();
            if session.is_held() {
                woken.push(key);
                continue;
            }
            // A queue that was empty is not in the batch yet; one that was
            // not is in it already, or waits for the socket to be writable.
            let first = !session.wants_write();
            let status = session.send_shared(*now, config, &mut frame);
            stats.sent(status, publish.frame.len());
            if first && status == SendStatus::Queued {
                self.delivered.push(key);
            }
        }
        // Held requests are answered now, from the topic's history.
        for key in woken {
            self.wake_held(key);
        }
    }

    /// Answers the request held on `key`: its topic has something for it.
    fn wake_held(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.wake(
                key,
                &mut self.handler,
                &mut self.shared,
                WakeReason::Message,
            );
            self.delivered.push(key);
        }
    }

    /// Writes what [`Worker::deliver`] queued.
    fn flush_delivered(&mut self) {
        let mut keys = std::mem::take(&mut self.delivered);
        for &key in &keys {
            self.drive(key);
        }
        keys.clear();
        self.delivered = keys;
    }
}

/// Arms the wheel at the session's next deadline when that is earlier than
/// the tick armed. A later deadline needs nothing: the armed entry fires
/// first, and `on_timer` arms again from what the session says then.
fn arm<D>(timers: &mut TimerWheel, conn: &mut Connection<D>, key: usize, shared: &Shared) {
    let session = conn.session().poll_timeout(shared.now, &shared.config);
    let handler = shared.timers.get(&key).map(|&(at, _)| at);
    let Some(deadline) = session.into_iter().chain(handler).min() else {
        return;
    };
    let tick = timers.tick_of(deadline);
    if conn.armed().is_none_or(|armed| tick < armed) {
        conn.set_armed(Some(timers.arm(key, tick)));
    }
}
