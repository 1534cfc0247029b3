//! The WebSocket member: its upgrade (who and where it is, a place in the
//! room), its open (what it missed, who is here, its join), its lines, and
//! its leave.

use std::net::SocketAddr;

use serde_json::json;
use wsloop::history::Catchup;
use wsloop::{CloseCode, Conn, Message, PublishStatus, Request, Response, Upgrade};

use crate::messages::{event, say, After};
use crate::names::member_of;
use crate::{Chat, Member};

impl Chat {
    /// `GET /ws` with an upgrade: the member it will be, or why not.
    pub fn accept_socket(&self, req: &Request<'_>, peer: SocketAddr) -> Upgrade<Member> {
        if req.path_only() != "/ws" {
            return Upgrade::reject(Response::status(404));
        }
        if self.settings.refuse_upgrades || self.foreign(req) {
            return Upgrade::reject(Response::status(403));
        }
        let (Some(member), Some(after)) = (member_of(req.path), After::of(req)) else {
            return Upgrade::reject(Response::status(400));
        };
        // The member takes its place in on_open, which follows at once on
        // this worker: the bounds can be passed by one member per other
        // worker at most.
        let place = self.presence().has_place(&member.room);
        if let Err(refused) = place {
            return Upgrade::reject(refused.response(self.settings.silence));
        }
        println!("chat: {} joined {} from {peer}", member.name, member.room);
        Upgrade::accept(Member {
            after: after.id(),
            ..member
        })
    }

    /// The member is in: it gets what it missed, who is here, then every
    /// message from then on, and the room hears it join. The same for a
    /// WebSocket and an event stream (`events.rs`).
    pub fn open_socket(&self, conn: &mut Conn<'_, Member>) {
        let via = via(conn);
        let Member {
            room, name, after, ..
        } = conn.data();
        let (room, name, after) = (room.clone(), name.clone(), *after);
        // One step under the presence lock (see `presence`): the place in
        // the room's stream and who is here at that place, then this
        // member's place with its join. What it missed is sent within the
        // step too, as it must go before what `subscribe_after` sends.
        let mut presence = self.presence();
        // Resume: what the client missed, then everything new, each once.
        // With the history in Redis and not on this node yet, the catch-up
        // comes later (on_history) and `latest` is the client's cursor.
        let catchup = conn.history(&room, after);
        catch_up(conn, &catchup);
        conn.subscribe_after(&room, catchup.latest);
        let here = presence.names(&room);
        presence.socket_joined(&room, &name);
        let _ = conn.publish(&room, event("join", &name, via).as_text());
        drop(presence);
        if conn.data().stream {
            self.time_stream(conn);
        }
        // Still ahead of the join and of everything after the
        // subscription: wsloop delivers those once this callback returns.
        send_json(conn, &json!({ "kind": "here", "names": here }));
    }

    /// A line from the member, said to the room.
    pub fn relay_line(&self, conn: &mut Conn<'_, Member>, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            return conn.close(CloseCode::UNSUPPORTED_DATA, "text only");
        };
        // As POST /send does, a blank line says nothing.
        if text.trim().is_empty() {
            return;
        }
        let Member { room, name, .. } = conn.data();
        let (room, said) = (room.clone(), say(name, text.trim_end()));
        // The room is too far behind to take it: say so, rather than
        // leave a line unsaid that its sender saw go.
        if conn.publish(&room, said.as_text()) == PublishStatus::Refused {
            conn.close(CloseCode::TRY_AGAIN_LATER, "server busy");
        }
    }

    /// The member is gone: it leaves the room and the room hears it, in
    /// one step (see `presence`).
    pub fn close_socket(&self, conn: &mut Conn<'_, Member>) {
        let via = via(conn);
        let Member { room, name, .. } = conn.data();
        let (room, name) = (room.clone(), name.clone());
        let mut presence = self.presence();
        presence.socket_left(&room, &name);
        let _ = conn.publish(&room, event("leave", &name, via).as_text());
    }
}

/// How the member listens, as joins and leaves tell the room. Asked of
/// the data, which outlives the stream, for `on_close`.
fn via(conn: &Conn<'_, Member>) -> &'static str {
    match conn.data().stream {
        true => "sse",
        false => "ws",
    }
}

/// Tells a member what it missed: a reset notice if its cursor could not
/// be continued, then the messages.
pub fn catch_up(conn: &mut Conn<'_, Member>, catchup: &Catchup) {
    if catchup.reset {
        let latest = catchup.latest.map(|id| id.to_string());
        send_json(conn, &json!({ "kind": "reset", "latest": latest }));
    }
    for entry in &catchup.entries {
        let _ = conn.send_entry(entry);
    }
}

fn send_json(conn: &mut Conn<'_, Member>, value: &serde_json::Value) {
    let _ = conn.send_text(&value.to_string());
}
