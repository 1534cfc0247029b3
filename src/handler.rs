//! The application's side: the [`Handler`] trait, and the [`Conn`] handle
//! each callback gets to answer on.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::broadcast::{Hub, Publish, Topics};
use crate::config::Config;
use crate::error::{CloseCode, PingTooLong};
use crate::handshake::{Request, Response};
use crate::protocol::Message;
use crate::session::{Answer, SendStatus, Session, Time};
use crate::stats::Stats;

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

/// Identifies a connection within its worker while it is open. Ids are
/// reused after [`Handler::on_close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

/// Application callbacks. Each worker thread builds its own handler with the
/// factory given to [`Server::bind`](crate::Server::bind), so a handler
/// needs no locks and need not be `Send`.
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

    /// Answers a plain HTTP request (no `Upgrade` header), HTTP/1.0 or 1.1.
    /// The answer to `HEAD` is sent without its body. By default 426,
    /// telling the client this is a WebSocket endpoint.
    fn on_http(&mut self, req: &Request<'_>, peer: SocketAddr) -> Response {
        let _ = (req, peer);
        Response::status(426)
            .with_header("Upgrade", "websocket")
            .with_header("Sec-WebSocket-Version", "13")
    }

    /// A connection completed its upgrade.
    fn on_open(&mut self, conn: &mut Conn<'_, Self::Data>) {
        let _ = conn;
    }

    /// A whole message arrived. It may borrow the worker's read buffer:
    /// copy what must outlive the call.
    fn on_message(&mut self, conn: &mut Conn<'_, Self::Data>, msg: Message<'_>);

    /// Output the socket could not take at once, or a send that was
    /// [`SendStatus::Dropped`], is behind us: the queue is empty.
    fn on_drain(&mut self, conn: &mut Conn<'_, Self::Data>) {
        let _ = conn;
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
    pub hub: Arc<Hub>,
    pub now: Time,
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

    /// Whether a close frame has been sent or the connection has ended.
    pub fn is_closing(&self) -> bool {
        !self.session.is_open()
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

    /// Sends a ping; its payload may be at most 125 bytes (RFC 6455 §5.5).
    pub fn ping(&mut self, payload: &[u8]) -> Result<SendStatus, PingTooLong> {
        self.session.ping(payload)
    }

    /// Starts the close handshake. The reason is cut to 123 bytes, and
    /// [`Handler::on_close`] reports it as cut.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.session.close(self.shared.now, code, reason);
    }

    /// Subscribes this connection to a topic; false if it already was.
    /// Subscriptions end with the connection.
    pub fn subscribe(&mut self, topic: &str) -> bool {
        let added = self.shared.topics.subscribe(self.id.0, topic);
        if added && self.shared.topics.subscribers(topic).len() == 1 {
            self.shared.hub.worker_interest(topic, true);
        }
        added
    }

    /// Unsubscribes from a topic; false if it was not subscribed.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        let removed = self.shared.topics.unsubscribe(self.id.0, topic);
        if removed && self.shared.topics.subscribers(topic).is_empty() {
            self.shared.hub.worker_interest(topic, false);
        }
        removed
    }

    /// Sends `msg` to every subscriber of `topic` on every worker, this
    /// connection included if it is subscribed, and to the bridge, if any.
    /// The frame is encoded once. Delivery on this worker happens when the
    /// callback returns.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) {
        let publish = Publish::new(topic, msg);
        self.shared.hub.send(&publish, Some(self.shared.worker));
        self.shared.published.push(publish);
        self.shared.hub.bridge_published(topic, msg);
    }
}
