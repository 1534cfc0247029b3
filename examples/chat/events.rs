//! The Server-Sent Events member: `GET /events` answers with a stream
//! that stays open, and every message of the room is written into it as
//! an event whose id is the message's id. A browser's `EventSource`
//! reconnects by itself when the stream ends, sending the last id it had
//! in `Last-Event-ID`, so a reconnect resumes exactly where the stream
//! ended. Lines are said with `POST /send`, as a poller says them.
//!
//! Once the stream has begun, the member is a WebSocket member in all
//! but the wire: `on_open` (`ws.rs`) sends it what it missed and who is
//! here, subscribes it and announces it, and `on_close` takes it out.

use std::net::SocketAddr;
use std::time::Duration;

use wsloop::{CloseCode, Conn, MessageId, Reply, Request, Response, Stream};

use crate::messages::After;
use crate::names::member_of;
use crate::{Chat, Member};

/// How long `EventSource` waits before it reconnects a stream that ended:
/// a restart or `--sse-lifetime` costs a member about this much.
const RETRY: Duration = Duration::from_secs(1);

/// The token of the timer that ends a stream at `--sse-lifetime`.
pub const LIFETIME: u64 = 1;

impl Chat {
    /// `GET /events`: the member the stream will be, or why not.
    pub fn events(&self, req: &Request<'_>, peer: SocketAddr) -> Reply<Member> {
        let (Some(member), Some(after)) = (member_of(req.path), cursor(req)) else {
            return Response::status(400).into();
        };
        // A stream only listens; anything sent on it afterwards, wsloop
        // answers by dropping the connection.
        if !req.body().is_empty() {
            return Response::status(400).into();
        }
        // As for an upgrade, the place is taken in on_open, which follows
        // at once on this worker.
        if let Err(refused) = self.presence().has_place(&member.room) {
            return refused.response(self.settings.silence).into();
        }
        println!("chat: {} streams {} from {peer}", member.name, member.room);
        let member = Member {
            after,
            stream: true,
            ..member
        };
        Reply::Stream(Stream::new(member).retry(RETRY))
    }

    /// A stream just began: at `--sse-lifetime`, it ends.
    pub fn time_stream(&self, conn: &mut Conn<'_, Member>) {
        if let Some(lifetime) = self.settings.sse_lifetime {
            conn.set_timer(lifetime, LIFETIME);
        }
    }

    /// The stream's time is up: it ends cleanly, and the reader comes back
    /// with its last id, here or on another node.
    pub fn end_stream(&self, conn: &mut Conn<'_, Member>) {
        conn.close(CloseCode::NORMAL, "stream lifetime");
    }
}

/// Where the stream starts: the `Last-Event-ID` that `EventSource` sends
/// when it reconnects, which is newer than the `after` in the URL it
/// reconnects to; else `after`. `Some(None)` starts from now, `None` is a
/// garbled cursor.
fn cursor(req: &Request<'_>) -> Option<Option<MessageId>> {
    match req.header("Last-Event-ID") {
        Some(id) => id.trim().parse().ok().map(Some),
        None => After::of(req).map(After::id),
    }
}
