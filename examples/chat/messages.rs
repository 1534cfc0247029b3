//! What the chat publishes, and how its messages are numbered: the JSON
//! a room hears, the history envelope that writes each message's id into
//! it, and the `after=` cursor a client sends that id back in.

use serde_json::json;
use wsloop::{Message, MessageId, Request};

/// A JSON text ready to publish.
pub struct Json(String);

impl Json {
    pub fn as_text(&self) -> Message<'_> {
        Message::Text(&self.0)
    }
}

/// A chat line, as published: `{"kind":"say","name":..,"text":"name: line"}`.
pub fn say(name: &str, line: &str) -> Json {
    let text = format!("{name}: {line}");
    Json(json!({ "kind": "say", "name": name, "text": text }).to_string())
}

/// A join or leave notice, with how the member listens. Published only
/// under the presence lock, with the change it announces (see
/// [`presence`](crate::presence)).
pub fn event(kind: &str, name: &str, via: &str) -> Json {
    let verb = if kind == "join" { "joined" } else { "left" };
    let text = format!("* {name} {verb}");
    Json(json!({ "kind": kind, "name": name, "via": via, "text": text }).to_string())
}

/// The history envelope: the message's JSON object with its id first.
/// Every chat message is a JSON object, so it starts with `{`. wsloop
/// calls it under its history lock, so it takes no lock of its own.
pub fn envelope(id: MessageId, msg: Message<'_>, out: &mut Vec<u8>) {
    let rest = msg.as_bytes().strip_prefix(b"{").unwrap_or(b"}");
    out.extend_from_slice(format!("{{\"id\":\"{id}\"").as_bytes());
    if rest != b"}" {
        out.push(b',');
    }
    out.extend_from_slice(rest);
}

/// What a request's `after=` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// No `after`.
    Absent,
    /// `after=0`: the client has no message yet and starts from now.
    Now,
    /// The last message the client has.
    Id(MessageId),
}

impl After {
    /// `after` from the query; `None` when it is garbled.
    pub fn of(req: &Request<'_>) -> Option<After> {
        match req.query("after") {
            None => Some(After::Absent),
            Some("0") => Some(After::Now),
            Some(id) => id.parse().ok().map(After::Id),
        }
    }

    pub fn id(self) -> Option<MessageId> {
        match self {
            After::Id(id) => Some(id),
            After::Absent | After::Now => None,
        }
    }
}
