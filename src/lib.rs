//! wsloop is an RFC 6455 WebSocket server on a hand-written mio reactor.
//!
//! # The thread model
//! One worker thread per core. Each has its own `mio::Poll`, its own
//! listener on the shared port (on Linux an SO_REUSEPORT socket each, so
//! the kernel spreads new connections; elsewhere a clone of one socket, see
//! [`ListenerMode`]), its own slab of connections, and its own [`Handler`].
//! Workers share nothing on the hot path. A connection costs about 100
//! bytes while idle, not a thread and its stack: that is why an event loop
//! holds tens of thousands of long-lived connections where a thread per
//! connection cannot.
//!
//! # One message's path
//! The worker reads a socket into its one read buffer and hands the bytes
//! to the connection's [`Session::handle_read`](sansio::session::Session::handle_read).
//! Its [`MessageReader`](sansio::protocol::MessageReader) parses frames in that
//! buffer, unmasks them in place and checks UTF-8. A message that arrived
//! whole reaches [`Handler::on_message`] as a slice of the read buffer; one
//! that came in pieces, in the buffer it was gathered in. [`Conn::send`]
//! writes nothing: it queues the frame in the session. When the readiness
//! event is handled, the worker writes everything queued for the connection
//! with one `sendmsg`, and asks for WRITABLE only if the socket refused some.
//!
//! The pure core ([`sansio`]: `frame`, `utf8`, `handshake`, `protocol`,
//! `session`) does no I/O and reads no clock: it takes bytes and the time
//! and returns bytes, events and deadlines, so it can be fuzzed and tested
//! on its own. [`sansio::session`] holds a connection's whole life, from the request
//! head to the close record that [`Handler::on_close`] reports. Its module
//! docs give the order of calls that drives it, and draw its states: all it
//! takes to run a connection without wsloop's reactor, as
//! `examples/thread_per_connection.rs` does over blocking sockets.
//!
//! # Compression
//! With the cargo feature `deflate`, `Config::deflate` takes up
//! permessage-deflate (RFC 7692) offers; see the `deflate` module. By
//! default each message is compressed on its own in both directions, so
//! one compressor and one inflater per worker serve all its connections.
//!
//! # Example
//! An echo server:
//! ```no_run
//! use wsloop::{Config, Conn, Handler, Message, Server};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     type Data = (); // what each connection carries: nothing here
//!
//!     fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
//!         let _ = conn.send(msg); // queued, written when this event is handled
//!     }
//! }
//!
//! let server = Server::bind("127.0.0.1:9001", Config::default(), || Echo)?;
//! println!("listening on {}", server.local_addr());
//! server.join()?;
//! # Ok::<(), std::io::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

/// A chainable setter for each listed field of a settings struct, named
/// as the field, for the structs that are `#[non_exhaustive]`.
macro_rules! setters {
    ($ty:ident { $($field:ident: $fty:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets [`", stringify!($ty), "::", stringify!($field), "`].")]
                pub fn $field(mut self, value: $fty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

mod broadcast;
mod config;
mod conn;
#[cfg(feature = "deflate")]
pub mod deflate;
pub mod error;
#[doc(hidden)]
pub mod frame;
mod handler;
#[doc(hidden)]
pub mod handshake;
pub mod history;
pub mod metrics;
#[doc(hidden)]
pub mod protocol;
mod rate;
pub mod sansio;
mod server;
#[doc(hidden)]
pub mod session;
#[cfg(feature = "signals")]
pub mod signals;
mod stats;
mod time;
mod timer;
#[cfg(feature = "tls")]
pub mod tls;
#[doc(hidden)]
pub mod utf8;
mod worker;

pub use broadcast::{Address, Bridge, Broadcaster, DirectStatus, PublishStatus};
pub use config::{Backpressure, Config, ListenerMode, RateLimit};
pub use error::{CloseCode, ConfigError, HandshakeError, PingTooLong, ProtocolError};
pub use handler::{
    Conn, ConnId, Handler, Hold, Pending, Publisher, Reply, Stream, Upgrade, Wake, WakeReason,
};
pub use handshake::{HandshakeLimits, Request, Response};
pub use history::{Catchup, Entry, HistoryConfig, MessageId};
pub use protocol::{Limits, Message};
pub use server::{Server, ShutdownHandle};
pub use session::SendStatus;
pub use stats::{Counters, HANDSHAKE_REASONS, REFUSED_STATUSES};
