//! Server settings. Every limit on what a peer can make the server hold is
//! here, with its default and the reason for it.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::ConfigError;
use crate::handshake::HandshakeLimits;
use crate::history::HistoryConfig;
use crate::protocol::Limits;
use crate::time::MAX_TIMEOUT;

/// The longest [`RateLimit::burst`].
const MAX_BURST: Duration = Duration::from_secs(3_600);

/// How the workers listen: each on its own socket, or all on one.
///
/// The default is the platform's, chosen here and nowhere else:
/// [`PerWorker`](ListenerMode::PerWorker) on Linux, whose SO_REUSEPORT
/// spreads new connections over the sockets bound to a port, and
/// [`Shared`](ListenerMode::Shared) everywhere else. macOS and the BSDs
/// accept SO_REUSEPORT but hand each connection to one socket (the last
/// bound), so one worker would serve them all; Windows has no
/// SO_REUSEPORT.
///
/// Shared is set on Linux to test that path, or where one listening
/// socket is wanted for its own sake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenerMode {
    /// One SO_REUSEPORT socket per worker on the same port, and the kernel
    /// picks the socket (by a hash of the connection's addresses) for each
    /// new connection. Linux only: elsewhere [`Server::bind`](crate::Server::bind) refuses it
    /// with `Unsupported`.
    PerWorker,
    /// One listening socket; each worker registers its own clone
    /// (`try_clone`) with its own `Poll` and accepts until `WouldBlock`.
    /// The kernel's accept queue is the balancer: whichever worker is
    /// awake takes the next connection, so a busy worker takes fewer.
    /// This is chosen over one acceptor thread that hands sockets to the
    /// workers through their inboxes, which would add a hop (a queue and
    /// a wake) to every connection and a thread that can fall behind. Its
    /// cost is a thundering herd: a new connection may wake every idle
    /// worker, and all but one find the queue empty, so it is bounded by
    /// the worker count.
    Shared,
}

impl Default for ListenerMode {
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            ListenerMode::PerWorker
        } else {
            ListenerMode::Shared
        }
    }
}

/// What to do when a send would take a connection's output over
/// [`Config::max_write_buffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backpressure {
    /// Close the connection with 1008: the peer reads too slowly to keep up.
    Close,
    /// Drop the message, count it, and keep the connection.
    Drop,
}

/// What one WebSocket connection may send, as two token buckets that
/// refill at a steady rate and hold `burst` worth of it: one counts
/// messages (data messages, pings and pongs, each once), one counts bytes
/// read. A peer over either is closed with 1008. Check it against what
/// the application's own clients send at their busiest.
///
/// ```
/// use std::time::Duration;
/// // 20 messages and 64 KiB a second, with 5 s of either at once.
/// let rate = wsloop::RateLimit::new(20, 64 * 1024, Duration::from_secs(5));
/// let config = wsloop::Config::default().rate_limit(Some(rate));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Messages a second, sustained. At least 1.
    pub messages_per_sec: u32,
    /// Bytes a second, sustained, frame headers included. At least 1.
    pub bytes_per_sec: u32,
    /// How much a peer that has been quiet may send at once, as time at
    /// the two rates: `burst` seconds' worth of messages and of bytes.
    /// Above zero and at most one hour.
    pub burst: Duration,
}

impl RateLimit {
    /// A limit of `messages_per_sec` and `bytes_per_sec`, either of which
    /// may be reached `burst` ahead.
    pub fn new(messages_per_sec: u32, bytes_per_sec: u32, burst: Duration) -> Self {
        RateLimit {
            messages_per_sec,
            bytes_per_sec,
            burst,
        }
    }
}

/// Server configuration. `Config::default()` is meant to be safe to deploy.
/// Change it with the setters, which share the fields' names:
///
/// ```
/// use std::time::Duration;
/// let config = wsloop::Config::default()
///     .workers(2)
///     .idle_timeout(Some(Duration::from_secs(300)));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Worker threads, each with its own event loop and listener. Default 0:
    /// one per core, from `std::thread::available_parallelism`.
    pub workers: usize,
    /// Whether each worker listens on its own SO_REUSEPORT socket or all
    /// share one. Default: the platform's, [`ListenerMode::PerWorker`] on
    /// Linux and [`ListenerMode::Shared`] elsewhere (why is on
    /// [`ListenerMode`]). `PerWorker` outside Linux fails at bind.
    pub listener: ListenerMode,
    /// Frame, message and fragment limits.
    pub limits: Limits,
    /// Request head limits for the upgrade.
    pub handshake_limits: HandshakeLimits,
    /// Most connections one worker holds, handshakes included. Default
    /// 16,384. Above it a new connection is closed at once after accept.
    pub max_connections: usize,
    /// Most output bytes queued per connection before a send is refused.
    /// Default 1 MiB. A send onto a non-empty queue that would pass the cap
    /// gets [`Config::backpressure`]; a peer that stops reading costs at
    /// most the cap plus one message.
    pub max_write_buffer: usize,
    /// The policy at the write buffer cap. Default [`Backpressure::Close`].
    pub backpressure: Backpressure,
    /// Time allowed from accept to a complete upgrade request. Default 10 s:
    /// a slowloris client is closed after it.
    pub handshake_timeout: Duration,
    /// Send a ping after this long without input. Default 20 s, under
    /// nginx's 60 s `proxy_read_timeout`. `None` turns keepalive off.
    pub ping_interval: Option<Duration>,
    /// Time a peer has to answer a keepalive ping. Default 20 s. After it the
    /// TCP connection is dropped and the handler sees 1006.
    pub pong_timeout: Duration,
    /// Close with 1001 after this long without a data message from the
    /// peer. Default `None`: off.
    pub idle_timeout: Option<Duration>,
    /// Time the peer has to answer our close frame before the TCP
    /// connection is dropped. Default 5 s.
    pub close_timeout: Duration,
    /// On shutdown, time to wait for close replies before exiting. Default 5 s.
    pub shutdown_timeout: Duration,
    /// Size of each worker's read buffer, shared by all its connections.
    /// Default 64 KiB. At least 1.
    pub read_buffer_size: usize,
    /// Most bytes one connection reads in one turn. Default 64 KiB, one
    /// read buffer. A connection that still has input then waits behind
    /// the other ready connections, the inbox and due timers, and is
    /// served again after them: a peer that keeps its socket full cannot
    /// hold the worker, and its output is flushed between turns, so one
    /// that floods without reading reaches `max_write_buffer`.
    pub read_budget: usize,
    /// Most bytes of published messages queued for one worker and not yet
    /// delivered by it. Default 16 MiB. A worker that falls behind its
    /// publishers (one handler that blocks, or a flood of publishes from
    /// elsewhere) holds at most this much, and one message more per
    /// publisher that finds room at the same moment (without history the
    /// check and the queueing are not one step); past it a publish to a
    /// topic it has subscribers to is refused for everyone
    /// ([`PublishStatus::Refused`](crate::PublishStatus::Refused)), so
    /// that no subscriber sees a gap.
    pub max_inbox_bytes: usize,
    /// What one WebSocket connection may send: messages and bytes per
    /// second with a burst ([`RateLimit`]). Default `None`: no limit past
    /// the sizes in `limits`. Past it the connection is closed with 1008.
    pub rate_limit: Option<RateLimit>,
    /// Peers whose `X-Forwarded-For` header is believed for the client
    /// address: its last entry, which the proxy appended. Default empty:
    /// the socket address is used.
    pub trusted_proxies: Vec<IpAddr>,
    /// Believe `X-Real-IP` from trusted proxies instead of
    /// `X-Forwarded-For`. Default false. Set it only when every trusted
    /// proxy sets `X-Real-IP` itself: one that does not passes the
    /// client's own header through, and the client picks its address.
    pub real_ip_header: bool,
    /// Topic history: numbered messages kept per topic, for resuming and
    /// long polls. Default `None`: messages are not numbered, and topics
    /// keep nothing.
    pub history: Option<HistoryConfig>,
    /// Most held requests ([`Reply::Hold`](crate::Reply::Hold)) and event
    /// streams ([`Reply::Stream`](crate::Reply::Stream)) together that one
    /// client address may have open on one worker. Default 64: a household
    /// or an office behind one address, with a tab or two each. A request
    /// that would wait or stream past it gets 429 at once.
    pub max_held_per_ip: usize,
    /// An event stream ([`Reply::Stream`](crate::Reply::Stream)) with
    /// nothing written for this long gets a comment line, which readers
    /// ignore, so that proxies on the way do not time it out. Default 15 s,
    /// well under nginx's 60 s `proxy_read_timeout`. `None`: no heartbeat.
    pub stream_heartbeat: Option<Duration>,
    /// permessage-deflate (RFC 7692), with the `deflate` feature. Default
    /// `None`: offers are declined and every frame goes plain. `Some`
    /// takes offers up as the [`DeflateConfig`](crate::deflate::DeflateConfig) says.
    #[cfg(feature = "deflate")]
    pub deflate: Option<crate::deflate::DeflateConfig>,
    /// TLS, with the `tls` feature: every connection on the port is
    /// `https://` or `wss://`. Default `None`: plain TCP. Made by
    /// [`TlsConfig::from_pem_files`](crate::tls::TlsConfig::from_pem_files).
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 0,
            listener: ListenerMode::default(),
            limits: Limits::default(),
            handshake_limits: HandshakeLimits::default(),
            max_connections: 16_384,
            max_write_buffer: 1 << 20,
            backpressure: Backpressure::Close,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(20)),
            pong_timeout: Duration::from_secs(20),
            idle_timeout: None,
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            read_buffer_size: 64 * 1024,
            read_budget: 64 * 1024,
            max_inbox_bytes: 16 << 20,
            rate_limit: None,
            trusted_proxies: Vec::new(),
            real_ip_header: false,
            history: None,
            max_held_per_ip: 64,
            stream_heartbeat: Some(Duration::from_secs(15)),
            #[cfg(feature = "deflate")]
            deflate: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

setters! {
    Config {
        workers: usize,
        listener: ListenerMode,
        limits: Limits,
        handshake_limits: HandshakeLimits,
        max_connections: usize,
        max_write_buffer: usize,
        backpressure: Backpressure,
        handshake_timeout: Duration,
        ping_interval: Option<Duration>,
        pong_timeout: Duration,
        idle_timeout: Option<Duration>,
        close_timeout: Duration,
        shutdown_timeout: Duration,
        read_buffer_size: usize,
        read_budget: usize,
        max_inbox_bytes: usize,
        rate_limit: Option<RateLimit>,
        trusted_proxies: Vec<IpAddr>,
        real_ip_header: bool,
        history: Option<HistoryConfig>,
        max_held_per_ip: usize,
        stream_heartbeat: Option<Duration>,
    }
}

#[cfg(feature = "deflate")]
impl Config {
    /// Sets [`Config::deflate`].
    pub fn deflate(mut self, value: Option<crate::deflate::DeflateConfig>) -> Self {
        self.deflate = value;
        self
    }
}

#[cfg(feature = "tls")]
impl Config {
    /// Sets [`Config::tls`].
    pub fn tls(mut self, value: Option<crate::tls::TlsConfig>) -> Self {
        self.tls = value;
        self
    }
}

impl Config {
    /// Checks that every setting can work: sizes and counts of at least 1,
    /// and timeouts above zero and within what connection timestamps count
    /// (about 24 days). [`Server::bind`](crate::Server::bind) calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let counts = [
            ("max_connections", self.max_connections),
            ("max_write_buffer", self.max_write_buffer),
            ("read_buffer_size", self.read_buffer_size),
            ("read_budget", self.read_budget),
            ("max_inbox_bytes", self.max_inbox_bytes),
            (
                "rate_limit.messages_per_sec",
                self.rate_limit.map_or(1, |r| r.messages_per_sec as usize),
            ),
            (
                "rate_limit.bytes_per_sec",
                self.rate_limit.map_or(1, |r| r.bytes_per_sec as usize),
            ),
            ("limits.max_frame_size", self.limits.max_frame_size),
            ("limits.max_message_size", self.limits.max_message_size),
            ("limits.max_fragments", self.limits.max_fragments),
            (
                "handshake_limits.max_header_bytes",
                self.handshake_limits.max_header_bytes,
            ),
            (
                "handshake_limits.max_headers",
                self.handshake_limits.max_headers,
            ),
            ("max_held_per_ip", self.max_held_per_ip),
            ("history.depth", self.history.map_or(1, |h| h.depth)),
            (
                "history.max_topic_bytes",
                self.history.map_or(1, |h| h.max_topic_bytes),
            ),
            (
                "history.max_topics",
                self.history.map_or(1, |h| h.max_topics),
            ),
        ];
        if let Some(&(field, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(ConfigError::Zero { field });
        }
        // Fragments are counted in 32 bits.
        if self.limits.max_fragments > u32::MAX as usize {
            return Err(ConfigError::TooLarge {
                field: "limits.max_fragments",
                max: u32::MAX as u64,
            });
        }
        #[cfg(feature = "deflate")]
        if let Some((field, min, max)) = self.deflate.and_then(|d| d.invalid()) {
            return Err(ConfigError::OutOfRange { field, min, max });
        }
        let durations = [
            ("handshake_timeout", Some(self.handshake_timeout)),
            ("ping_interval", self.ping_interval),
            ("pong_timeout", Some(self.pong_timeout)),
            ("idle_timeout", self.idle_timeout),
            ("close_timeout", Some(self.close_timeout)),
            ("shutdown_timeout", Some(self.shutdown_timeout)),
            ("rate_limit.burst", self.rate_limit.map(|r| r.burst)),
            ("stream_heartbeat", self.stream_heartbeat),
        ];
        for (field, value) in durations {
            match value {
                Some(d) if d.is_zero() => return Err(ConfigError::ZeroDuration { field }),
                Some(d) if d > MAX_TIMEOUT => {
                    return Err(ConfigError::DurationTooLong {
                        field,
                        max_secs: MAX_TIMEOUT.as_secs(),
                    })
                }
                _ => {}
            }
        }
        // Rate debts are counted in 32-bit microseconds.
        if self.rate_limit.is_some_and(|r| r.burst > MAX_BURST) {
            return Err(ConfigError::DurationTooLong {
                field: "rate_limit.burst",
                max_secs: MAX_BURST.as_secs(),
            });
        }
        Ok(())
    }

    /// The worker count with 0 resolved to the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_field_at_fault() {
        assert_eq!(Config::default().validate(), Ok(()));
        let zero = Config::default().read_buffer_size(0);
        assert_eq!(
            zero.validate(),
            Err(ConfigError::Zero {
                field: "read_buffer_size"
            })
        );
        let limits = Config::default().limits(Limits::default().max_fragments(0));
        assert_eq!(
            limits.validate().unwrap_err().to_string(),
            "config: limits.max_fragments must be at least 1"
        );
        let ping = Config::default().ping_interval(Some(Duration::ZERO));
        assert_eq!(
            ping.validate(),
            Err(ConfigError::ZeroDuration {
                field: "ping_interval"
            })
        );
        let long = Config::default().idle_timeout(Some(Duration::from_secs(30 * 86_400)));
        assert!(matches!(
            long.validate(),
            Err(ConfigError::DurationTooLong {
                field: "idle_timeout",
                ..
            })
        ));
    }
}
