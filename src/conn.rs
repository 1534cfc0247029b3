//! One connection: its socket, its phase, and the protocol state that turns
//! the bytes it reads into handler calls.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;

use crate::config::Config;
use crate::error::CloseCode;
use crate::frame::Role;
use crate::handler::{admit, Conn, ConnId, ConnInfo, Env, Flags, Handler, SendStatus, Upgrade};
use crate::handshake::{self, Parsed, Request, Response};
use crate::protocol::{Event, Outbox, Session};
use crate::stats::Stats;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading the upgrade request.
    Handshake,
    /// Writing an HTTP response, then shutting down our side and waiting
    /// for the peer's FIN (at most the handshake timeout).
    Http,
    /// Upgraded; messages flow.
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// The close handshake is over or the connection failed: flush, shut
    /// down our side, and wait for the peer's FIN.
    Done,
}

/// A socket and everything the worker keeps for it.
#[derive(Debug)]
pub(crate) struct Connection {
    pub stream: TcpStream,
    pub phase: Phase,
    /// The upgrade request so far; empty once it is parsed.
    pub head: Vec<u8>,
    pub session: Session,
    pub out: Outbox,
    /// Set at the upgrade.
    pub info: Option<Box<ConnInfo>>,
    /// The code and reason to report in `on_close`.
    pub close: Option<(CloseCode, Box<str>)>,
    /// Start of the current phase, for the handshake and close timeouts.
    pub since: Instant,
    pub last_rx: Instant,
    pub last_msg: Instant,
    pub ping_sent: Option<Instant>,
    /// The timer tick armed last; other ticks that fire are stale.
    pub timer_tick: Option<u64>,
    /// The `deadline_basis` the armed deadline was computed from.
    pub timer_basis: (Phase, bool),
    /// WRITABLE is registered.
    pub writable: bool,
    /// Broken socket, and whether the handler waits for `on_drain`.
    pub flags: Flags,
    /// The peer's FIN was read.
    pub eof: bool,
    /// Broadcast frames were queued and await the end of the batch.
    pub dirty: bool,
    /// Our side was shut down.
    pub write_shut: bool,
}

impl Connection {
    pub fn new(stream: TcpStream, config: &Config, now: Instant) -> Self {
        Connection {
            stream,
            phase: Phase::Handshake,
            head: Vec::new(),
            session: Session::new(Role::Server, config.limits),
            out: Outbox::new(),
            info: None,
            close: None,
            since: now,
            last_rx: now,
            last_msg: now,
            ping_sent: None,
            timer_tick: None,
            timer_basis: (Phase::Handshake, false),
            writable: false,
            flags: Flags::default(),
            eof: false,
            dirty: false,
            write_shut: false,
        }
    }

    /// Feeds bytes just read to the phase's parser.
    pub fn ingest<H: Handler>(&mut self, cx: &mut Context<'_, H>, buf: &mut [u8]) {
        match self.phase {
            Phase::Handshake => self.ingest_head(cx, buf),
            Phase::Http => {}
            Phase::Open | Phase::Closing | Phase::Done => self.ingest_frames(cx, buf),
        }
    }

    fn ingest_head<H: Handler>(&mut self, cx: &mut Context<'_, H>, buf: &[u8]) {
        let from = self.head.len();
        self.head.extend_from_slice(buf);
        let limits = &cx.env.config.handshake_limits;
        if !handshake::head_complete(&self.head, from) && self.head.len() <= limits.max_header_bytes
        {
            return;
        }
        let head = std::mem::take(&mut self.head);
        match handshake::parse(&head, limits) {
            Ok(Parsed::Partial) => self.head = head,
            Ok(Parsed::Upgrade(req, len)) => {
                let peer = client_addr(&req, self.socket_peer(), &cx.env.config.trusted_proxies);
                match cx.handler.on_upgrade(&req, peer) {
                    Upgrade::Accept { protocol } => {
                        let key = req.key().unwrap_or_default();
                        self.out
                            .push_raw(&handshake::accept_response(key, protocol.as_deref()));
                        self.info = Some(Box::new(ConnInfo {
                            peer,
                            path: req.path,
                            protocol,
                        }));
                        self.phase = Phase::Open;
                        self.last_msg = cx.now;
                        cx.env.stats.upgraded();
                        self.with_conn(cx, |handler, conn| handler.on_open(conn));
                        self.after_callback(cx.now);
                        // Frames sent right behind the request.
                        let mut rest = head[len..].to_vec();
                        if !rest.is_empty() {
                            self.ingest_frames(cx, &mut rest);
                        }
                    }
                    Upgrade::Reject(res) => self.respond(&res),
                }
            }
            Ok(Parsed::Http(req, _)) => {
                let peer = client_addr(&req, self.socket_peer(), &cx.env.config.trusted_proxies);
                let res = cx.handler.on_http(&req, peer);
                self.respond(&res);
            }
            Err(err) => {
                cx.env.stats.handshake_failed(&err);
                self.respond(&Response::for_error(&err));
            }
        }
    }

    /// The socket's peer, asked of the kernel once per handshake rather
    /// than kept in every connection.
    fn socket_peer(&self) -> SocketAddr {
        self.stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    fn respond(&mut self, res: &Response) {
        self.out.push_raw(&res.to_bytes());
        self.phase = Phase::Http;
    }

    fn ingest_frames<H: Handler>(&mut self, cx: &mut Context<'_, H>, buf: &mut [u8]) {
        let mut pos = 0;
        while pos < buf.len() && !self.flags.broken {
            let Connection {
                session,
                out,
                stream,
                info,
                flags,
                ..
            } = self;
            match session.read(&mut buf[pos..], out) {
                Ok(step) => {
                    let consumed = step.consumed;
                    match step.event {
                        // Messages after our close frame are discarded (§5.5.1).
                        Some(Event::Message(msg))
                            if self.phase == Phase::Open && !out.close_sent() =>
                        {
                            cx.env.stats.message_in();
                            self.last_msg = cx.now;
                            let mut conn = Conn {
                                id: cx.id,
                                info: info.as_deref().expect("open connections have info"),
                                stream,
                                out,
                                flags,
                                env: cx.env.reborrow(),
                            };
                            cx.handler.on_message(&mut conn, msg);
                        }
                        Some(Event::Message(_)) => {}
                        Some(Event::Pong(_)) => self.ping_sent = None,
                        Some(Event::Ping(_)) => {}
                        Some(Event::Close { code, reason }) => {
                            if self.close.is_none() {
                                self.close = Some((code, reason.into()));
                            }
                            self.enter(Phase::Done, cx.now);
                        }
                        None => {}
                    }
                    pos += consumed;
                    self.after_callback(cx.now);
                }
                Err(err) => {
                    let code = err.close_code();
                    let reason = err.to_string();
                    out.close(code, &reason);
                    if self.close.is_none() {
                        self.close = Some((code, reason.into()));
                    }
                    self.enter(Phase::Done, cx.now);
                    break;
                }
            }
        }
    }

    /// Queues a frame built once for many connections (a broadcast), by
    /// reference, under the same rules as any other send. The worker writes
    /// it with the rest of the batch.
    pub fn send_shared(&mut self, frame: &Arc<[u8]>, config: &Config, stats: &Stats) -> SendStatus {
        if let Some(refused) = admit(&mut self.out, &mut self.flags, config, stats, frame.len()) {
            return refused;
        }
        if self.out.push_shared(frame.clone()).is_err() {
            return SendStatus::Closed;
        }
        stats.message_out(frame.len());
        SendStatus::Queued
    }

    /// Notices a close the handler started.
    pub fn after_callback(&mut self, now: Instant) {
        if self.phase == Phase::Open {
            if let Some(code) = self.out.close_code() {
                self.close = Some((code, "".into()));
                self.enter(Phase::Closing, now);
            }
        }
    }

    pub fn enter(&mut self, phase: Phase, now: Instant) {
        if self.phase != phase {
            self.phase = phase;
            self.since = now;
        }
    }

    /// Lends the handler a `Conn` for this connection.
    pub fn with_conn<H: Handler>(
        &mut self,
        cx: &mut Context<'_, H>,
        f: impl FnOnce(&mut H, &mut Conn<'_>),
    ) {
        let Some(info) = self.info.as_deref() else {
            return;
        };
        let mut conn = Conn {
            id: cx.id,
            info,
            stream: &self.stream,
            out: &mut self.out,
            flags: &mut self.flags,
            env: cx.env.reborrow(),
        };
        f(cx.handler, &mut conn);
    }

    /// What decides which rule `deadline` applies: the phase, and in the
    /// open phase whether a ping awaits its pong. While the basis stays the
    /// same the deadline only moves later, as activity pushes it out.
    pub fn deadline_basis(&self) -> (Phase, bool) {
        (self.phase, self.ping_sent.is_some())
    }

    /// When this connection next needs the timer.
    pub fn deadline(&self, config: &Config) -> Option<Instant> {
        match self.phase {
            Phase::Handshake | Phase::Http => Some(self.since + config.handshake_timeout),
            Phase::Closing | Phase::Done => Some(self.since + config.close_timeout),
            Phase::Open => {
                let keepalive = match self.ping_sent {
                    Some(sent) => Some(sent + config.pong_timeout),
                    None => config.ping_interval.map(|every| self.last_rx + every),
                };
                let idle = config.idle_timeout.map(|idle| self.last_msg + idle);
                match (keepalive, idle) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }
}

/// What a connection needs from its worker while it handles input.
pub(crate) struct Context<'a, H> {
    pub id: ConnId,
    pub handler: &'a mut H,
    pub env: Env<'a>,
    pub now: Instant,
}

/// The client address: the forwarded one when the socket peer is a trusted
/// proxy and says so, else the socket peer.
pub(crate) fn client_addr(req: &Request, peer: SocketAddr, trusted: &[IpAddr]) -> SocketAddr {
    if !trusted.contains(&peer.ip()) {
        return peer;
    }
    let forwarded = req
        .header("x-real-ip")
        .or_else(|| {
            req.header("x-forwarded-for")
                .and_then(|v| v.rsplit(',').next())
        })
        .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
    forwarded.map_or(peer, |ip| SocketAddr::new(ip, peer.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_state_stays_small() {
        let size = std::mem::size_of::<Connection>();
        eprintln!("size_of::<Connection>() = {size}");
        // docs/ARCHITECTURE.md lists what these bytes hold.
        assert!(size <= 384, "Connection grew to {size} bytes");
    }
}
