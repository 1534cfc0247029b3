//! The application's side: the [`Handler`] trait, and the [`Conn`] handle
//! each callback gets to answer on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::broadcast::{Address, DirectStatus, Hub, Publish, PublishStatus, Topics};
use crate::config::Config;
use crate::error::{CloseCode, PingTooLong};
use crate::handshake::{Request, Response};
use crate::history::{Catchup, Entry, MessageId};
use crate::protocol::{Message, SharedFrame};
use crate::session::{Answer, SendStatus, Session};
use crate::stats::{Counters, Stats};
use crate::time::Time;

/// The handler's answer to an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upgrade<D> {
    /// Accept, optionally with one of the offered subprotocols, which is
    /// echoed in `Sec-WebSocket-Protocol`.
    Accept {
        /// The chosen subprotocol.
        protocol: Option<String>,
        /// The connection's data, handed back in every callback through
        /// [`Conn::data`].
        data: D,
    },
    /// Refuse with this response; the socket is closed after it.
    Reject(Response),
}

impl<D> Upgrade<D> {
    /// Accepts with no subprotocol.
    pub fn accept(data: D) -> Self {
        Upgrade::Accept {
            protocol: None,
            data,
        }
    }

    /// Accepts and echoes `protocol`, which should be one the client offered.
    pub fn accept_with_protocol(protocol: &str, data: D) -> Self {
        Upgrade::Accept {
            protocol: Some(protocol.to_owned()),
            data,
        }
    }

    /// Refuses with `response`.
    pub fn reject(response: Response) -> Self {
        Upgrade::Reject(response)
    }
}

impl<D> From<Upgrade<D>> for Answer<D> {
    fn from(upgrade: Upgrade<D>) -> Self {
        match upgrade {
            Upgrade::Accept { protocol, data } => Answer::Accept { protocol, data },
            Upgrade::Reject(response) => Answer::Respond(response),
        }
    }
}

/// The handler's answer to a plain HTTP request: now, or later.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply<D> {
    /// Answer now.
    Respond(Response),
    /// Hold the answer until `topic` has a message after a cursor, or a
    /// deadline passes: a long poll. [`Handler::on_wake`] then writes it.
    Hold(Hold<D>),
    /// Answer with an event stream (Server-Sent Events) that stays open:
    /// [`Handler::on_open`] follows, and what is sent on the connection
    /// from then on is written into the answer as events.
    Stream(Stream<D>),
}

impl<D> From<Response> for Reply<D> {
    fn from(response: Response) -> Self {
        Reply::Respond(response)
    }
}

/// A long poll: what a held request waits for.
///
/// It is answered at once, through [`Handler::on_wake`] with
/// [`WakeReason::Ready`], when `after` is `None`, when the topic's history
/// has messages after it, or when the cursor cannot be continued (a
/// [reset](Catchup::reset)). Otherwise it waits for the topic's next
/// message ([`WakeReason::Message`]), at most `timeout`
/// ([`WakeReason::Deadline`]), or until shutdown
/// ([`WakeReason::Shutdown`]). History comes from
/// [`Config::history`](crate::Config::history); without it a wake carries
/// no messages and any cursor is a reset.
///
/// A held request counts against [`Config::max_connections`] as any
/// connection does, and against [`Config::max_held_per_ip`]: a request
/// that would wait past it is answered 429 at once (one answered at once
/// does not count). It ends, freeing everything, when the client
/// goes away, and a client that sends anything while it waits is
/// disconnected.
///
/// [`Config::max_connections`]: crate::Config::max_connections
/// [`Config::max_held_per_ip`]: crate::Config::max_held_per_ip
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold<D> {
    /// The topic whose messages answer the request.
    pub topic: String,
    /// The last message the client has; `None` asks for the latest id only.
    pub after: Option<MessageId>,
    /// Longest wait. Keep it under the read timeouts of proxies between
    /// the server and its clients (nginx's `proxy_read_timeout` is 60 s).
    pub timeout: Duration,
    /// What the application keeps for the request, handed to
    /// [`Handler::on_wake`].
    pub data: D,
    /// Whose request this is, in the application's terms (a client's
    /// token, say). A newer held request with the same key, on any
    /// worker, replaces this one: it is woken at once with
    /// [`WakeReason::Replaced`]. `None`: never replaced.
    pub key: Option<String>,
}

/// An event stream: the answer to a plain request that stays open, in the
/// Server-Sent Events format that a browser's `EventSource` reads.
///
/// The answer is `200` with `Content-Type: text/event-stream`,
/// `Cache-Control: no-store` and `X-Accel-Buffering: no` (nginx then
/// passes each event on at once), and ends when the connection does.
/// [`Handler::on_open`] is called next, with a [`Conn`] whose
/// [`Conn::is_stream`] is true; it subscribes the stream to topics and
/// sends what it should start with, as for a WebSocket. From then on:
///
/// - a topic's message, or [`Conn::send_entry`], is an event with the
///   message's id in its `id` line, which `EventSource` sends back in
///   `Last-Event-ID` when it reconnects; [`Conn::send_text`] is an event
///   with no id; a binary message is not sent
///   ([`SendStatus::NotText`]);
/// - after [`Config::stream_heartbeat`] with nothing written, a comment
///   line keeps proxies from timing the stream out;
/// - sends are capped by [`Config::max_write_buffer`] under the
///   [`Config::backpressure`] policy, as a WebSocket's are: a reader that
///   stops reading is closed, never buffered for without bound;
/// - [`Conn::close`], a shutdown and a drain end the stream after what
///   is queued; the client going away, or sending anything at all (a
///   body, a pipelined request), ends it too. [`Handler::on_close`]
///   follows, with the code given to `close`, 1001 or 1012 for a
///   shutdown or a drain, 1008 for input or a full write buffer, and
///   1006 when the client went away.
///
/// A stream counts against [`Config::max_connections`], and with held
/// requests against [`Config::max_held_per_ip`]: past it the request gets
/// 429 at once. A `HEAD` request gets the head alone.
///
/// [`Config::stream_heartbeat`]: crate::Config::stream_heartbeat
/// [`Config::max_write_buffer`]: crate::Config::max_write_buffer
/// [`Config::backpressure`]: crate::Config::backpressure
/// [`Config::max_connections`]: crate::Config::max_connections
/// [`Config::max_held_per_ip`]: crate::Config::max_held_per_ip
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stream<D> {
    /// The stream's data, handed back in every callback through
    /// [`Conn::data`], as an upgraded connection's.
    pub data: D,
    /// How long a reader waits before it reconnects once the stream ends,
    /// sent first as the `retry` field. `None`: the reader's own default
    /// (3 s in browsers).
    pub retry: Option<Duration>,
}

impl<D> Stream<D> {
    /// A stream carrying `data`, with the reader's own reconnect delay.
    pub fn new(data: D) -> Self {
        Stream { data, retry: None }
    }

    /// Tells the reader to wait `delay` before it reconnects.
    pub fn retry(self, delay: Duration) -> Self {
        Stream {
            retry: Some(delay),
            ..self
        }
    }
}

/// Why a held request is being answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WakeReason {
    /// At once: the history had an answer when the request came.
    Ready,
    /// A message arrived on the topic.
    Message,
    /// The wait reached its timeout.
    Deadline,
    /// The server is shutting down; the answer closes the connection.
    Shutdown,
    /// A newer request with the same [`Hold::key`] came, here or on
    /// another worker: this one's client has moved on (409, say).
    Replaced,
}

/// What [`Handler::on_wake`] answers with.
#[derive(Debug, Clone)]
pub struct Wake {
    /// Why now.
    pub reason: WakeReason,
    /// What the topic's history holds after the request's cursor (empty at
    /// a deadline or shutdown with nothing new).
    pub catchup: Catchup,
}

/// Identifies a connection within its worker while it is open. Ids are
/// reused after [`Handler::on_close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

/// Application callbacks. Each worker thread builds its own handler with the
/// factory given to [`Server::bind`](crate::Server::bind), so a handler
/// needs no locks for its own fields and need not be `Send`. Those fields
/// are per worker, though: state every worker must agree on (a top bid,
/// who is here) goes behind a lock the factory clones into each handler,
/// as the `auction` and `chat` examples do.
pub trait Handler {
    /// What each upgraded connection carries for the application: who it
    /// is, which room it is in. Decided in [`Handler::on_upgrade`] and
    /// handed back in every callback through [`Conn::data`]. Use `()` for
    /// none; it costs nothing. `Default` is what the default `on_upgrade`
    /// gives every connection; wrap data that has none in an `Option`.
    type Data: Default;

    /// Decides whether to accept an upgrade, from its path, Origin and
    /// offered subprotocols, and what data the connection carries. `peer`
    /// is the client address (see [`Config::trusted_proxies`]). By default
    /// every upgrade is accepted with `Data::default()`.
    fn on_upgrade(&mut self, req: &Request<'_>, peer: SocketAddr) -> Upgrade<Self::Data> {
        let _ = (req, peer);
        Upgrade::accept(Self::Data::default())
    }

    /// Answers a plain HTTP request (no `Upgrade` header), HTTP/1.0 or 1.1,
    /// now or later ([`Reply::Hold`]). Its body, if any, is
    /// [`Request::body`]. The answer to `HEAD` is sent without its body.
    /// HTTP/1.1 connections stay open for the next request unless the
    /// client asked to close. By default 426, telling the client this is a
    /// WebSocket endpoint.
    /// `topics` publishes and reads history, as a POST that sends a
    /// message needs.
    fn on_http(
        &mut self,
        req: &Request<'_>,
        peer: SocketAddr,
        topics: &mut Publisher<'_>,
    ) -> Reply<Self::Data> {
        let _ = (req, peer, topics);
        Response::status(426)
            .with_header("Upgrade", "websocket")
            .with_header("Sec-WebSocket-Version", "13")
            .into()
    }

    /// Writes the answer to a request held by [`Reply::Hold`], once, when
    /// `wake` says it is time. By default 204 No Content.
    fn on_wake(&mut self, req: &mut Pending<'_, Self::Data>, wake: Wake) -> Response {
        let _ = (req, wake);
        Response::status(204)
    }

    /// A connection completed its upgrade, or an event stream began
    /// ([`Reply::Stream`], [`Conn::is_stream`]).
    fn on_open(&mut self, conn: &mut Conn<'_, Self::Data>) {
        let _ = conn;
    }

    /// A whole message arrived. It may borrow the worker's read buffer:
    /// copy what must outlive the call. Once this side has started the
    /// close ([`Conn::close`], a drain), a message the peer sent before it
    /// saw the close frame still arrives here, so that it is not lost;
    /// sends on the connection then return [`SendStatus::Closed`].
    fn on_message(&mut self, conn: &mut Conn<'_, Self::Data>, msg: Message<'_>);

    /// Output the socket could not take at once, or a send that was
    /// [`SendStatus::Dropped`], is behind us: the queue is empty.
    fn on_drain(&mut self, conn: &mut Conn<'_, Self::Data>) {
        let _ = conn;
    }

    /// A topic's history, kept by a bridge that numbers messages (see
    /// [`Bridge::orders`](crate::Bridge::orders)), reached this server
    /// after this connection subscribed to the topic, or was loaded again
    /// after this server missed some of its messages. `catchup` is what
    /// followed the connection's place in the topic: its cursor if it
    /// subscribed with one while the history was
    /// [pending](Catchup::pending), else the last message it got. Called
    /// only when there is something to tell: entries, or a
    /// [reset](Catchup::reset). Everything the topic delivers after this
    /// call follows `catchup`'s entries. By default the entries are sent
    /// as they are, and a reset is not told.
    fn on_history(&mut self, conn: &mut Conn<'_, Self::Data>, topic: &str, catchup: Catchup) {
        let _ = topic;
        for entry in &catchup.entries {
            let _ = conn.send_entry(entry);
        }
    }

    /// The timer this connection set with [`Conn::set_timer`] is due;
    /// `token` is the one it was set with. Called only while the
    /// connection is open. By default nothing happens.
    fn on_timer(&mut self, conn: &mut Conn<'_, Self::Data>, token: u64) {
        let _ = (conn, token);
    }

    /// The connection ended. `code` and `reason` are the peer's for a
    /// clean close it started, ours as sent if we closed first or failed
    /// the connection, and 1006 when TCP ended without a close frame.
    /// Called once per opened connection. Sends on `conn` return
    /// [`SendStatus::Closed`] and nothing more is delivered to it (its
    /// subscriptions end when the callback returns), but its data is still
    /// there and it can still publish.
    fn on_close(&mut self, conn: &mut Conn<'_, Self::Data>, code: CloseCode, reason: &str) {
        let _ = (conn, code, reason);
    }
}

/// The part of a worker that callbacks may touch: its settings, counters,
/// topics, the messages published during this round, and the time now.
#[derive(Debug)]
pub(crate) struct Shared {
    pub worker: usize,
    pub config: Arc<Config>,
    pub stats: Arc<Stats>,
    pub topics: Topics,
    /// Messages published by handlers on this worker, delivered here once
    /// the current round of events is done.
    pub published: Vec<Publish>,
    /// Held requests on this worker, by connection key.
    pub held: HashMap<usize, HeldRequest>,
    /// Held requests and event streams on this worker by client address,
    /// for the limit.
    pub held_per_ip: HashMap<IpAddr, usize>,
    /// Event streams on this worker, by connection key: whose they are.
    pub streams: HashMap<usize, IpAddr>,
    pub hub: Arc<Hub>,
    pub now: Time,
    /// The handler's timers ([`Conn::set_timer`]), by connection key:
    /// when each is due and its token. Kept here rather than in the
    /// connection, so that connections without one pay nothing.
    pub timers: HashMap<usize, (Time, u64)>,
}

/// Whether another event stream or held request from `ip` would pass
/// [`Config::max_held_per_ip`], given the count per address: for callers
/// that hold other parts of [`Shared`] borrowed.
pub(crate) fn held_full(held_per_ip: &HashMap<IpAddr, usize>, config: &Config, ip: IpAddr) -> bool {
    held_per_ip.get(&ip).copied().unwrap_or(0) >= config.max_held_per_ip
}

/// What a worker keeps of a held request besides its session: what it
/// waits for, and whose it is.
#[derive(Debug)]
pub(crate) struct HeldRequest {
    pub topic: Box<str>,
    pub after: Option<MessageId>,
    pub ip: IpAddr,
    /// Its [`Hold::key`], claimed in the hub while it waits.
    pub key: Option<Arc<str>>,
    /// The number of its claim on the key, once it waits.
    pub claim: u64,
}

/// Publishes and reads topic history from [`Handler::on_http`], where no
/// connection is open.
#[derive(Debug)]
pub struct Publisher<'a> {
    pub(crate) worker: usize,
    pub(crate) hub: &'a Hub,
    pub(crate) published: &'a mut Vec<Publish>,
}

impl Publisher<'_> {
    /// Publishes to a topic, as [`Conn::publish`] does.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) -> PublishStatus {
        let (status, local) = self.hub.publish(topic, msg, Some(self.worker));
        if status == PublishStatus::Queued {
            self.published.extend(local);
            self.hub.bridge_published(topic, msg);
        }
        status
    }

    /// What a topic's history holds after `after`, as [`Conn::history`].
    pub fn history(&self, topic: &str, after: Option<MessageId>) -> Catchup {
        self.hub.since(topic, after)
    }

    /// The last `n` messages of a topic's history, as [`Conn::last`].
    pub fn last(&self, topic: &str, n: usize) -> Vec<Entry> {
        self.hub.last(topic, n)
    }

    /// Sends `msg` to one connection anywhere in the server, as
    /// [`Conn::send_to`].
    pub fn send_to(&self, to: &Address, msg: Message<'_>) -> DirectStatus {
        self.hub.send_to(to, msg)
    }

    /// The counters of every worker, summed, as
    /// [`Server::counters`](crate::Server::counters): what a `/metrics`
    /// route answers with ([`Counters::write_prometheus`]). Each worker's
    /// values are read at a slightly different moment, as their own
    /// threads go on.
    pub fn counters(&self) -> Counters {
        self.hub.counters()
    }
}

/// A held request, lent to [`Handler::on_wake`].
#[derive(Debug)]
pub struct Pending<'a, D> {
    pub(crate) id: ConnId,
    pub(crate) data: &'a mut D,
    pub(crate) shared: &'a mut Shared,
}

impl<D> Pending<'_, D> {
    /// The connection's id within its worker.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The data [`Reply::Hold`] gave the request.
    pub fn data(&self) -> &D {
        self.data
    }

    /// The data, mutable.
    pub fn data_mut(&mut self) -> &mut D {
        self.data
    }

    /// Publishes to a topic, as [`Conn::publish`] does.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) -> PublishStatus {
        self.shared.publish(topic, msg)
    }
}

/// A handle on one connection, lent to the handler for one callback.
#[derive(Debug)]
pub struct Conn<'a, D = ()> {
    pub(crate) id: ConnId,
    pub(crate) session: &'a mut Session<D>,
    pub(crate) shared: &'a mut Shared,
}

impl<D> Conn<'_, D> {
    /// This connection's id within its worker.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The data [`Handler::on_upgrade`] gave this connection.
    pub fn data(&self) -> &D {
        // A Conn is made only for an upgraded session, which keeps its data
        // until it is dropped.
        self.session
            .data()
            .expect("a Conn is lent for upgraded connections only")
    }

    /// The data, mutable.
    pub fn data_mut(&mut self) -> &mut D {
        self.session
            .data_mut()
            .expect("a Conn is lent for upgraded connections only")
    }

    /// Output bytes queued and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.session.buffered_amount()
    }

    /// Whether a close frame has been sent or the connection has ended;
    /// for an event stream, whether it is ending.
    pub fn is_closing(&self) -> bool {
        !self.session.is_open()
    }

    /// Whether this is an event stream ([`Reply::Stream`]) rather than a
    /// WebSocket: what is sent goes out as Server-Sent Events, and
    /// nothing comes in.
    pub fn is_stream(&self) -> bool {
        self.session.is_stream()
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> SendStatus {
        self.send(Message::Text(text))
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, bytes: &[u8]) -> SendStatus {
        self.send(Message::Binary(bytes))
    }

    /// Sends a message of either kind. It is queued and written when the
    /// callback's event is done, together with everything else sent in it.
    pub fn send(&mut self, msg: Message<'_>) -> SendStatus {
        self.queue(msg, true)
    }

    /// Publishes to the topic named by this connection's data, without
    /// cloning it first: `conn.publish_data(|d| &d.room, msg)` where
    /// `conn.publish(&conn.data().room, msg)` would not compile (the
    /// topic would borrow `conn` while `publish` needs it mutably).
    pub fn publish_data(
        &mut self,
        topic: impl FnOnce(&D) -> &str,
        msg: Message<'_>,
    ) -> PublishStatus {
        let data = self
            .session
            .data()
            .expect("a Conn is lent for upgraded connections only");
        self.shared.publish(topic(data), msg)
    }

    /// Sends a history entry as the topic's subscribers got it, its frame
    /// shared rather than encoded again.
    pub fn send_entry(&mut self, entry: &Entry) -> SendStatus {
        let (now, config) = (self.shared.now, &self.shared.config);
        let mut frame = SharedFrame::from_frame(entry.frame().clone()).with_id(Some(entry.id()));
        let status = self.session.send_shared(now, config, &mut frame);
        self.shared.stats.sent(status, entry.frame().len());
        status
    }

    /// Sends a message never compressed, even with permessage-deflate in
    /// force: for data compressed already, or secrets sent next to text an
    /// attacker chooses (the CRIME and BREACH attacks).
    pub fn send_uncompressed(&mut self, msg: Message<'_>) -> SendStatus {
        self.queue(msg, false)
    }

    /// Queues a message, compressed where deflate allows and `compress`
    /// asks, and counts it.
    fn queue(&mut self, msg: Message<'_>, compress: bool) -> SendStatus {
        let (now, config) = (self.shared.now, &self.shared.config);
        let status = self.session.send_message(now, config, msg, compress);
        self.shared.stats.sent(status, msg.as_bytes().len());
        status
    }

    /// The permessage-deflate parameters in force on this connection, or
    /// `None` when it sends and receives plain frames.
    #[cfg(feature = "deflate")]
    pub fn deflate(&self) -> Option<&crate::deflate::Agreement> {
        self.session.deflate()
    }

    /// Sends a ping; its payload may be at most 125 bytes ([RFC 6455 §5.5]).
    ///
    /// [RFC 6455 §5.5]: https://www.rfc-editor.org/rfc/rfc6455#section-5.5
    pub fn ping(&mut self, payload: &[u8]) -> Result<SendStatus, PingTooLong> {
        self.session.ping(payload)
    }

    /// Starts the close handshake. The reason is cut to 123 bytes, and
    /// [`Handler::on_close`] reports it as cut.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.session.close(self.shared.now, code, reason);
    }

    /// Every worker's counters, summed, as [`Publisher::counters`].
    pub fn counters(&self) -> Counters {
        self.shared.hub.counters()
    }

    /// This connection's [`Address`]: how any worker, or any thread with a
    /// [`Broadcaster`](crate::Broadcaster), sends to it alone. Keep it in
    /// state shared by the workers (a map from user name to address, say).
    /// The same address comes back every time; it stops naming anything
    /// when the connection closes.
    pub fn address(&mut self) -> Address {
        self.shared.hub.address(self.shared.worker, self.id.0)
    }

    /// Sends `msg` to the one connection at `to`, on whatever worker it
    /// is: through that worker's inbox, so it goes out on that worker's
    /// next turn, after what that connection was sent before. `Gone` if
    /// the connection has closed; one that closes while the message waits
    /// does not get it.
    pub fn send_to(&mut self, to: &Address, msg: Message<'_>) -> DirectStatus {
        self.shared.hub.send_to(to, msg)
    }

    /// Sets this connection's timer: [`Handler::on_timer`] is called with
    /// `token` once `after` has passed (to within the worker's 10 ms
    /// tick), on this connection's worker. A connection has one timer:
    /// setting it again replaces it. It ends with the connection.
    pub fn set_timer(&mut self, after: Duration, token: u64) {
        let at = self.shared.now + after;
        self.shared.timers.insert(self.id.0, (at, token));
    }

    /// Cancels this connection's timer; false if none was set.
    pub fn cancel_timer(&mut self) -> bool {
        self.shared.timers.remove(&self.id.0).is_some()
    }

    /// Subscribes this connection to a topic; false if it already was.
    /// Subscriptions end with the connection.
    pub fn subscribe(&mut self, topic: &str) -> bool {
        self.shared.subscribe(self.id.0, topic, None)
    }

    /// Subscribes to a topic's messages after `after` only: with a cursor
    /// from [`Conn::history`], after sending what it returned, a client
    /// that reconnects gets every message once, with none missing. False
    /// if it was subscribed already. One case is not covered: if the
    /// topic's ring loses `after` between the two calls (more than its
    /// depth published in that instant, or the topic evicted), what fell
    /// out is not sent, and the ids of what follows show the gap.
    ///
    /// When the history is [pending](Catchup::pending) (kept by a bridge
    /// that numbers messages, and not on this server yet), subscribe with
    /// the client's own cursor: [`Handler::on_history`] tells what
    /// followed it once the history is here.
    pub fn subscribe_after(&mut self, topic: &str, after: Option<MessageId>) -> bool {
        let key = self.id.0;
        if !self.shared.subscribe(key, topic, after) {
            return false;
        }
        // Messages are queued only for workers with subscribers, and this
        // one may have had none when the history was read. It has now, so
        // whatever was recorded since `after` and not yet queued here is in
        // the history: send it, and skip it when it comes from the inbox.
        let Some(after) = after else {
            return true;
        };
        let missed = self.shared.hub.since(topic, Some(after));
        if missed.reset || missed.pending {
            return true;
        }
        for entry in &missed.entries {
            let _ = self.send_entry(entry);
        }
        if let Some(last) = missed.entries.last() {
            self.shared.topics.advance(key, topic, last.id());
        }
        true
    }

    /// What `topic`'s history holds after the cursor `after` (see
    /// [`Config::history`](crate::Config::history)):
    /// - `Some(id)`: the messages after `id`, oldest first; or, if the
    ///   history cannot continue from `id` (another epoch, older than the
    ///   ring, from the future), a [reset](Catchup::reset) with every
    ///   message the ring holds.
    /// - `None`: no messages, only the topic's [latest](Catchup::latest)
    ///   id: a new reader starts from now. For the recent past, use
    ///   [`Conn::last`].
    ///
    /// To resume a client: tell it of a reset if there is one, send the
    /// entries, then [`Conn::subscribe_after`] the latest. Messages
    /// published meanwhile are not lost: they reach this worker after the
    /// call and carry higher ids.
    pub fn history(&self, topic: &str, after: Option<MessageId>) -> Catchup {
        self.shared.hub.since(topic, after)
    }

    /// The last `n` messages of `topic`'s history, oldest first (fewer if
    /// it holds fewer): what a newcomer is shown of the recent past.
    /// Follow with [`Conn::subscribe_after`] the last one's id.
    pub fn last(&self, topic: &str, n: usize) -> Vec<Entry> {
        self.shared.hub.last(topic, n)
    }

    /// Unsubscribes from a topic; false if it was not subscribed.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        self.shared.unsubscribe(self.id.0, topic)
    }

    /// Sends `msg` to every subscriber of `topic` on every worker, this
    /// connection included if it is subscribed, and to the bridge, if any.
    /// The frame is encoded once. Delivery on this worker happens when the
    /// callback returns. With [`Config::history`](crate::Config::history)
    /// it is numbered and kept first, and every subscriber gets the
    /// topic's messages in the same order.
    ///
    /// It is refused, for everyone, when a worker that would deliver it is
    /// overloaded ([`PublishStatus::Refused`]).
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) -> PublishStatus {
        self.shared.publish(topic, msg)
    }
}

impl Shared {
    /// Books a held request that is to wait: its count against its
    /// address, and its subscription to the topic after its cursor. Gives
    /// it back, booking nothing, when its address has `max_held_per_ip`
    /// waiting.
    pub(crate) fn book_held(&mut self, key: usize, held: HeldRequest) -> Result<(), HeldRequest> {
        if self.held_full(held.ip) {
            return Err(held);
        }
        *self.held_per_ip.entry(held.ip).or_default() += 1;
        self.stats.hold();
        self.subscribe(key, &held.topic, held.after);
        self.held.insert(key, held);
        Ok(())
    }

    /// Whether another event stream or held request from `ip` would pass
    /// [`Config::max_held_per_ip`].
    pub(crate) fn held_full(&self, ip: IpAddr) -> bool {
        held_full(&self.held_per_ip, &self.config, ip)
    }

    /// Books an event stream that began on connection `key`.
    pub(crate) fn book_stream(&mut self, key: usize, ip: IpAddr) {
        *self.held_per_ip.entry(ip).or_default() += 1;
        self.streams.insert(key, ip);
        self.stats.stream_opened();
    }

    /// Undoes [`Shared::book_stream`] when the connection goes, if it was
    /// a stream.
    pub(crate) fn forget_stream(&mut self, key: usize) {
        let Some(ip) = self.streams.remove(&key) else {
            return;
        };
        self.stats.stream_ended();
        self.release_ip(ip);
    }

    /// One held request or stream from `ip` fewer.
    fn release_ip(&mut self, ip: IpAddr) {
        if let Some(count) = self.held_per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.held_per_ip.remove(&ip);
            }
        }
    }

    /// Takes a held request out of the worker's books, undoing
    /// [`Shared::book_held`].
    pub(crate) fn forget_held(&mut self, key: usize) -> Option<HeldRequest> {
        let held = self.held.remove(&key)?;
        self.stats.unhold();
        self.release_ip(held.ip);
        self.unsubscribe(key, &held.topic);
        if let Some(hold_key) = &held.key {
            self.hub.release_hold(hold_key, held.claim);
        }
        Some(held)
    }

    /// Unsubscribes connection `key`; false if it was not subscribed.
    pub(crate) fn unsubscribe(&mut self, key: usize, topic: &str) -> bool {
        let removed = self.topics.unsubscribe(key, topic);
        if removed && self.topics.subscribers(topic).is_empty() {
            self.hub.worker_interest(self.worker, topic, false);
        }
        removed
    }

    /// Subscribes connection `key`, to messages after `after` only if given.
    pub(crate) fn subscribe(&mut self, key: usize, topic: &str, after: Option<MessageId>) -> bool {
        let added = self.topics.subscribe(key, topic, after);
        if added && self.topics.subscribers(topic).len() == 1 {
            self.hub.worker_interest(self.worker, topic, true);
        }
        // Read once subscribed: a history loaded after this queues its
        // notice behind the subscription. With no cursor, a subscription
        // starts from the copy's place now, not from wherever the next
        // load's notice finds it: that load may already hold what this
        // connection is about to publish (a chat member's join).
        let place = if added {
            self.hub.ordered_place(topic)
        } else {
            None
        };
        match place {
            Some(now) if now.pending => self.topics.set_waiting(key, topic, true),
            Some(Catchup {
                latest: Some(latest),
                ..
            }) if after.is_none() => self.topics.advance(key, topic, latest),
            _ => {}
        }
        added
    }

    /// Publishes from a handler on this worker; see [`Conn::publish`].
    pub(crate) fn publish(&mut self, topic: &str, msg: Message<'_>) -> PublishStatus {
        self.publisher().publish(topic, msg)
    }

    /// A [`Publisher`] for this worker.
    pub(crate) fn publisher(&mut self) -> Publisher<'_> {
        Publisher {
            worker: self.worker,
            hub: &self.hub,
            published: &mut self.published,
        }
    }
}
