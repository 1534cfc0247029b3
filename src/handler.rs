//! The application's side: the [`Handler`] trait and the [`Conn`] handle it
//! is given to answer on.

use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::broadcast::{Hub, Publish, Topics};
use crate::config::{Backpressure, Config};
use crate::error::CloseCode;
use crate::frame::OpCode;
use crate::handshake::{Request, Response};
use crate::protocol::{Message, Outbox};
use crate::stats::Stats;

/// The handler's answer to an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// Accept, optionally with one of the offered subprotocols, which is
    /// echoed in `Sec-WebSocket-Protocol`.
    Accept {
        /// The chosen subprotocol.
        protocol: Option<String>,
    },
    /// Refuse with this response; the socket is closed after it.
    Reject(Response),
}

/// Identifies a connection within its worker while it is open. Ids are
/// reused after [`Handler::on_close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

/// Application callbacks. Each worker thread builds its own handler with the
/// factory given to [`Server::bind`](crate::Server::bind), so a handler
/// needs no locks and need not be `Send`.
pub trait Handler {
    /// Decides whether to accept an upgrade, from its path, Origin and
    /// offered subprotocols. `peer` is the client address (see
    /// [`Config::trusted_proxies`]). By default every upgrade is accepted.
    fn on_upgrade(&mut self, req: &Request, peer: SocketAddr) -> Upgrade {
        let _ = (req, peer);
        Upgrade::Accept { protocol: None }
    }

    /// Answers a plain HTTP request (no `Upgrade` header). By default 426,
    /// telling the client this is a WebSocket endpoint.
    fn on_http(&mut self, req: &Request, peer: SocketAddr) -> Response {
        let _ = (req, peer);
        Response::status(426)
            .with_header("Upgrade", "websocket")
            .with_header("Sec-WebSocket-Version", "13")
    }

    /// A connection completed its upgrade.
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        let _ = conn;
    }

    /// A whole message arrived. It borrows the worker's read buffer: copy
    /// what must outlive the call.
    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>);

    /// Output that had to be queued (a send returned
    /// [`SendStatus::Queued`] or [`SendStatus::Dropped`]) has all been
    /// written.
    fn on_drain(&mut self, conn: &mut Conn<'_>) {
        let _ = conn;
    }

    /// The connection ended. `code` is the peer's close code for a clean
    /// close, ours if we closed first or failed the connection, and 1006
    /// when TCP ended without a close frame. Called once per opened
    /// connection. Sends on `conn` return [`SendStatus::Closed`], and its
    /// subscriptions are gone, but it can still publish.
    fn on_close(&mut self, conn: &mut Conn<'_>, code: CloseCode, reason: &str) {
        let _ = (conn, code, reason);
    }
}

/// What became of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Written to the socket in full.
    Sent,
    /// Queued, in whole or in part, behind earlier output.
    Queued,
    /// Not sent: output is queued and this message would take it over
    /// [`Config::max_write_buffer`]. Under [`Backpressure::Close`] the
    /// connection is now closing with 1008.
    Dropped,
    /// Not sent: the connection is closing.
    Closed,
}

/// Per-connection facts fixed at the upgrade.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub path: String,
    pub protocol: Option<String>,
}

/// What a [`Conn`] reaches beyond its own connection: the worker's
/// settings, counters and topics.
#[derive(Debug)]
pub(crate) struct Env<'a> {
    pub worker: usize,
    pub config: &'a Config,
    pub stats: &'a Stats,
    pub topics: &'a mut Topics,
    /// Messages published during this callback, delivered on this worker
    /// once it returns.
    pub published: &'a mut Vec<Publish>,
    pub hub: &'a Hub,
}

impl Env<'_> {
    /// A shorter-lived copy, to lend to one `Conn`.
    pub fn reborrow(&mut self) -> Env<'_> {
        Env {
            worker: self.worker,
            config: self.config,
            stats: self.stats,
            topics: self.topics,
            published: self.published,
            hub: self.hub,
        }
    }
}

/// A handle on one connection, lent to the handler for one callback.
#[derive(Debug)]
pub struct Conn<'a> {
    pub(crate) id: ConnId,
    pub(crate) info: &'a ConnInfo,
    pub(crate) stream: &'a TcpStream,
    pub(crate) out: &'a mut Outbox,
    pub(crate) flags: &'a mut Flags,
    pub(crate) env: Env<'a>,
}

/// Connection state a handler's sends can change.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    /// A write failed; the connection is to be removed.
    pub broken: bool,
    /// A send was queued or refused: call `on_drain` once output empties.
    pub drain_wanted: bool,
}

impl Conn<'_> {
    /// This connection's id within its worker.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The client address: the socket peer, or the forwarded address when
    /// the peer is a trusted proxy.
    pub fn peer_addr(&self) -> SocketAddr {
        self.info.peer
    }

    /// The request target of the upgrade, query included.
    pub fn path(&self) -> &str {
        &self.info.path
    }

    /// The subprotocol agreed at the upgrade.
    pub fn protocol(&self) -> Option<&str> {
        self.info.protocol.as_deref()
    }

    /// Output bytes queued and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.out.len()
    }

    /// Whether a close frame has been sent or the connection has ended.
    pub fn is_closing(&self) -> bool {
        self.out.close_sent() || self.flags.broken
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> SendStatus {
        self.send_frame(OpCode::Text, text.as_bytes())
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, bytes: &[u8]) -> SendStatus {
        self.send_frame(OpCode::Binary, bytes)
    }

    /// Sends a message of either kind.
    pub fn send(&mut self, msg: Message<'_>) -> SendStatus {
        match msg {
            Message::Text(text) => self.send_text(text),
            Message::Binary(bytes) => self.send_binary(bytes),
        }
    }

    /// Sends a ping; at most 125 bytes of payload are allowed.
    pub fn ping(&mut self, payload: &[u8]) -> SendStatus {
        self.send_frame(OpCode::Ping, payload)
    }

    /// Starts the close handshake. The reason is cut to 123 bytes.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.out.close(code, reason);
    }

    /// Subscribes this connection to a topic; false if it already was.
    /// Subscriptions end with the connection.
    pub fn subscribe(&mut self, topic: &str) -> bool {
        self.env.topics.subscribe(self.id.0, topic)
    }

    /// Unsubscribes from a topic; false if it was not subscribed.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        self.env.topics.unsubscribe(self.id.0, topic)
    }

    /// Sends `msg` to every subscriber of `topic` on every worker, this
    /// connection included if it is subscribed. The frame is encoded once.
    /// Delivery on this worker happens when the callback returns.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) {
        let publish = Publish::new(topic, msg);
        self.env.hub.send(&publish, Some(self.env.worker));
        self.env.published.push(publish);
    }

    fn send_frame(&mut self, opcode: OpCode, payload: &[u8]) -> SendStatus {
        if let Some(refused) = self.admit(payload.len()) {
            return refused;
        }
        let Ok((head, n)) = self.out.header(opcode, payload.len()) else {
            return SendStatus::Closed;
        };
        if !opcode.is_control() {
            self.env.stats.message_out(payload.len());
        }
        self.transmit(&head[..n], payload)
    }

    fn admit(&mut self, len: usize) -> Option<SendStatus> {
        admit(self.out, self.flags, self.env.config, self.env.stats, len)
    }

    /// Writes `head` and `payload` straight to the socket when nothing is
    /// queued ahead of them, and queues whatever the socket does not take.
    fn transmit(&mut self, head: &[u8], payload: &[u8]) -> SendStatus {
        if !self.out.is_empty() {
            self.out.push_raw(head);
            self.out.push_raw(payload);
            self.flags.drain_wanted = true;
            return SendStatus::Queued;
        }
        let n = head.len();
        match write_all_or_some(self.stream, head, payload) {
            Ok(w) if w == n + payload.len() => SendStatus::Sent,
            Ok(w) => {
                if w < n {
                    self.out.push_raw(&head[w..]);
                    self.out.push_raw(payload);
                } else {
                    self.out.push_raw(&payload[w - n..]);
                }
                self.flags.drain_wanted = true;
                SendStatus::Queued
            }
            Err(_) => {
                self.flags.broken = true;
                SendStatus::Closed
            }
        }
    }
}

/// Refuses a send on a closing connection, or one over the write cap,
/// where the backpressure policy applies. `None` means go ahead.
pub(crate) fn admit(
    out: &mut Outbox,
    flags: &mut Flags,
    config: &Config,
    stats: &Stats,
    len: usize,
) -> Option<SendStatus> {
    if out.close_sent() || flags.broken {
        return Some(SendStatus::Closed);
    }
    // The cap bounds what is queued ahead of a message, so one message
    // larger than the cap can still go out on an idle connection.
    let queued = out.len();
    if queued > 0 && queued + len > config.max_write_buffer {
        flags.drain_wanted = true;
        stats.dropped();
        if config.backpressure == Backpressure::Close {
            out.close(CloseCode::POLICY_VIOLATION, "write buffer full");
        }
        return Some(SendStatus::Dropped);
    }
    None
}

/// One `writev` of header and payload, retried on EINTR. Would-block counts
/// as zero bytes written.
fn write_all_or_some(mut stream: &TcpStream, head: &[u8], payload: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write_vectored(&[IoSlice::new(head), IoSlice::new(payload)]) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
