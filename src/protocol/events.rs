//! Server-Sent Events, pure: how a message is written into a
//! `text/event-stream` response ([the WHATWG HTML standard, "Server-sent
//! events"][sse]).
//!
//! An event is a run of `field: value` lines ended by a blank line. A
//! reader (a browser's `EventSource`) joins its `data` lines with `\n`
//! into the event's data, remembers its `id` and sends it back in
//! `Last-Event-ID` when it reconnects, and ignores lines that start with
//! a colon, which makes those a heartbeat.
//!
//! [sse]: https://html.spec.whatwg.org/multipage/server-sent-events.html

use std::fmt::Display;

/// A comment and the blank line after it: the reader ignores it, and
/// proxies see the stream is alive.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// Appends one event: an `id` line if given, then `text` as `data` lines.
///
/// The stream's lines end at CR, LF or CR LF, so a text with line breaks
/// becomes one `data` line per line of it, and the reader gets it back
/// with every break as `\n`: an event stream cannot carry a CR. The id
/// must hold no line break (a [`MessageId`](crate::MessageId) never does).
pub fn encode_event(out: &mut Vec<u8>, id: Option<&dyn Display>, text: &str) {
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    let mut rest = text;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest.as_bytes()[..end]);
        out.push(b'\n');
        let Some(brk) = rest[end..].chars().next() else {
            break;
        };
        let skip = match rest[end..].starts_with("\r\n") {
            true => 2,
            false => brk.len_utf8(),
        };
        rest = &rest[end + skip..];
    }
    out.push(b'\n');
}

/// Appends the `retry` field: how long a reader waits before reconnecting
/// once the stream ends.
pub fn encode_retry(out: &mut Vec<u8>, millis: u64) {
    out.extend_from_slice(format!("retry: {millis}\n\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<&str>, text: &str) -> String {
        let mut out = Vec::new();
        encode_event(&mut out, id.as_ref().map(|id| id as &dyn Display), text);
        String::from_utf8(out).expect("text in, text out")
    }

    #[test]
    fn one_line_with_an_id() {
        assert_eq!(
            event(Some("5f3a-7"), r#"{"a":1}"#),
            "id: 5f3a-7\ndata: {\"a\":1}\n\n"
        );
    }

    #[test]
    fn every_kind_of_line_break_starts_a_data_line() {
        assert_eq!(
            event(None, "a\nb\r\nc\rd"),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        // A trailing break is an empty last line, which the reader keeps.
        assert_eq!(event(None, "a\n"), "data: a\ndata: \n\n");
        assert_eq!(event(None, ""), "data: \n\n");
    }

    #[test]
    fn a_line_that_looks_like_a_field_stays_data() {
        assert_eq!(
            event(None, "x\nid: 9\n: hi"),
            "data: x\ndata: id: 9\ndata: : hi\n\n"
        );
    }

    #[test]
    fn retry_is_its_own_block() {
        let mut out = Vec::new();
        encode_retry(&mut out, 1000);
        assert_eq!(out, b"retry: 1000\n\n");
    }
}
