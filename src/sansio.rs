//! The protocol core, sans I/O: what wsloop's reactor drives, for those
//! who study it, test it, or drive it themselves.
//!
//! Nothing here touches a socket or reads a clock: each part takes bytes
//! and the time and returns bytes, events and deadlines. [`frame`] parses
//! and encodes frame headers, [`utf8`] checks text as it arrives,
//! [`handshake`] parses the HTTP upgrade and writes the answer,
//! [`protocol`] reads and writes messages, and [`session`] holds one
//! connection's whole life. An application built on [`Server`](crate::Server)
//! and [`Handler`](crate::Handler) needs none of it; a fuzz target, a
//! benchmark of the codec, or a server on another event loop does
//! (`examples/thread_per_connection.rs` drives a [`session::Session`]
//! over blocking sockets).

#[doc(inline)]
pub use crate::{frame, handshake, protocol, session, utf8};
