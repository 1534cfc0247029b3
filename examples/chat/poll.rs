//! Long polling, for clients whose WebSocket cannot open: `POST /send`
//! says a line, `GET /poll` asks for what came after a cursor, and a poll
//! with nothing to answer yet is held until the room's next message.

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::json;
use wsloop::history::Catchup;
use wsloop::{Hold, Pending, PublishStatus, Publisher, Reply, Request, Response, Wake, WakeReason};

use crate::messages::{event, say, After};
use crate::names::{client_of, member_of};
use crate::presence::Poller;
use crate::{Chat, Member};

impl Member {
    /// The poller this member is when it polls, or streams events, from
    /// `peer` with `client`.
    pub fn poller(&self, peer: SocketAddr, client: &str) -> Poller {
        Poller {
            addr: peer.ip(),
            client: client.into(),
            name: self.name.as_str().into(),
        }
    }
}

impl Chat {
    /// `POST /send`: the body is the line.
    pub fn send(
        &self,
        req: &Request<'_>,
        peer: SocketAddr,
        topics: &mut Publisher<'_>,
    ) -> Response {
        let (Some(member), Some(client)) = (member_of(req.path), client_of(req)) else {
            return Response::status(400);
        };
        let line = match std::str::from_utf8(req.body()) {
            Ok(line) if !line.trim().is_empty() => line.trim_end(),
            _ => return Response::status(400),
        };
        let who = member.poller(peer, client);
        let rate = self.settings.rate.as_ref();
        // A poller not here yet joins with its line: it takes its place
        // and its join is published in one step (see `presence`).
        let heard = {
            let mut presence = self.presence();
            let heard = presence.line(&member.room, &who, Instant::now(), rate);
            if heard == Ok(true) {
                let _ = topics.publish(&member.room, event("join", &member.name, "poll").as_text());
            }
            heard
        };
        if let Err(refused) = heard {
            return refused.response(self.settings.silence);
        }
        let said = say(&member.name, line);
        if topics.publish(&member.room, said.as_text()) == PublishStatus::Refused {
            return Response::status(503).with_header("Retry-After", "1");
        }
        Response::status(204).with_header("Cache-Control", "no-store")
    }

    /// `GET /poll`. A poll that joins (`after=0`), or whose cursor is too
    /// old to continue, is answered at once, with who is here; any other
    /// is held until the room has something after its cursor.
    pub fn poll(
        &self,
        req: &Request<'_>,
        peer: SocketAddr,
        topics: &mut Publisher<'_>,
    ) -> Reply<Member> {
        let (Some(member), Some(client), Some(after)) =
            (member_of(req.path), client_of(req), After::of(req))
        else {
            return Response::status(400).into();
        };
        let cursor = match after {
            After::Absent => return Response::status(400).into(),
            After::Now => None,
            After::Id(id) => Some(id),
        };
        let who = member.poller(peer, client);
        // One step under the presence lock (see `presence`): the poller's
        // place with its join, and an answer that says who is here with
        // the messages up to there.
        let mut presence = self.presence();
        // A joining poller's cursor, read before its join is published.
        let before = match cursor {
            None => topics.history(&member.room, None).latest,
            Some(_) => None,
        };
        let (number, new) = match presence.poll(&member.room, &who, Instant::now()) {
            Ok(polled) => polled,
            Err(refused) => return refused.response(self.settings.silence).into(),
        };
        if new {
            let _ = topics.publish(&member.room, event("join", &member.name, "poll").as_text());
        }
        let catchup = match cursor {
            Some(id) => topics.history(&member.room, Some(id)),
            // A new poller hears its own join, as a WebSocket member does;
            // one that joins again is told the latest id only.
            None if new => topics.history(&member.room, before),
            None => topics.history(&member.room, None),
        };
        // With the history in Redis and not on this node yet, every poll
        // waits for it (wsloop wakes it once it is here).
        if !catchup.pending && (cursor.is_none() || catchup.reset) {
            let here = presence.names(&member.room);
            drop(presence);
            return json_response(200, &answer(&catchup, Some(here))).into();
        }
        drop(presence);
        // A newer poll from the same client (address, room, name, token)
        // replaces this one at once, on whichever worker it waits.
        let key = format!("{}|{}|{}|{}", who.addr, member.room, who.name, who.client);
        Reply::Hold(Hold {
            topic: member.room.clone(),
            after: cursor,
            timeout: self.settings.poll_hold,
            key: Some(key),
            data: Member {
                poll: Some((who, number)),
                ..member
            },
        })
    }

    /// The answer to a held poll, when wsloop wakes it: what came after
    /// its cursor.
    pub fn answer_held(&self, req: &mut Pending<'_, Member>, wake: Wake) -> Response {
        let Member { room, poll, .. } = req.data();
        let Some((who, number)) = poll else {
            return Response::status(500);
        };
        let latest = self
            .presence()
            .answering(room, who, *number, Instant::now());
        // A newer poll from the same client replaced this one: it gets the
        // messages, this one nothing. wsloop says so at once
        // (`WakeReason::Replaced`); the number catches a replacement that
        // came while this one was being woken for another reason.
        if wake.reason == WakeReason::Replaced || !latest {
            return json_response(409, &json!({ "replaced": true }));
        }
        // The cursor fell out of the ring while the poll waited. wsloop
        // read these messages before this callback, outside the presence
        // lock, so who is here cannot go with them: the client starts
        // over, with no cursor, and its next poll (`after=0`) is answered
        // with who is here.
        if wake.catchup.reset {
            let start_over = json!({ "latest": null, "reset": true, "messages": [] });
            return json_response(200, &start_over);
        }
        json_response(200, &answer(&wake.catchup, None))
    }
}

/// A poll's answer: the messages after its cursor, the latest id, and who
/// is here at that id if the poll is told.
fn answer(catchup: &Catchup, here: Option<Vec<String>>) -> serde_json::Value {
    let messages: Vec<serde_json::Value> = catchup
        .entries
        .iter()
        .filter_map(|e| serde_json::from_slice(e.message().as_bytes()).ok())
        .collect();
    let mut body = json!({
        "latest": catchup.latest.map(|id| id.to_string()),
        "reset": catchup.reset,
        "messages": messages,
    });
    if let Some(here) = here {
        body["here"] = json!(here);
    }
    body
}

fn json_response(status: u16, value: &serde_json::Value) -> Response {
    let mut response = Response::ok("application/json", value.to_string())
        .with_header("Cache-Control", "no-store");
    response.status = status;
    response
}
