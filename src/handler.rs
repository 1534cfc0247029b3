//! The application's side: the [`Handler`] trait and the [`Conn`] handle it
//! is given to answer on.

use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

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
    /// connection.
    fn on_close(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        let _ = (id, code, reason);
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

/// A handle on one open connection, lent to the handler for one callback.
#[derive(Debug)]
pub struct Conn<'a> {
    pub(crate) id: ConnId,
    pub(crate) info: &'a ConnInfo,
    pub(crate) stream: &'a TcpStream,
    pub(crate) out: &'a mut Outbox,
    pub(crate) config: &'a Config,
    pub(crate) stats: &'a Stats,
    pub(crate) flags: &'a mut Flags,
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
        self.out.pending().len()
    }

    /// Whether a close frame has been sent.
    pub fn is_closing(&self) -> bool {
        self.out.close_sent()
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

    /// Writes a frame straight to the socket when nothing is queued ahead
    /// of it, and queues whatever the socket does not take.
    fn send_frame(&mut self, opcode: OpCode, payload: &[u8]) -> SendStatus {
        if self.out.close_sent() || self.flags.broken {
            return SendStatus::Closed;
        }
        // The cap bounds what is queued ahead of a message, so one message
        // larger than the cap can still go out on an idle connection.
        let queued = self.out.pending().len();
        if queued > 0 && queued + payload.len() > self.config.max_write_buffer {
            self.flags.drain_wanted = true;
            self.stats.dropped();
            if self.config.backpressure == Backpressure::Close {
                self.out
                    .close(CloseCode::POLICY_VIOLATION, "write buffer full");
            }
            return SendStatus::Dropped;
        }
        let (head, n) = match self.out.header(opcode, payload.len()) {
            Ok(header) => header,
            Err(_) => return SendStatus::Closed,
        };
        if !opcode.is_control() {
            self.stats.message_out(payload.len());
        }
        if !self.out.is_empty() {
            self.out.push_raw(&head[..n]);
            self.out.push_raw(payload);
            self.flags.drain_wanted = true;
            return SendStatus::Queued;
        }
        let written = write_all_or_some(self.stream, &head[..n], payload);
        match written {
            Ok(w) if w == n + payload.len() => SendStatus::Sent,
            Ok(w) => {
                if w < n {
                    self.out.push_raw(&head[w..n]);
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
