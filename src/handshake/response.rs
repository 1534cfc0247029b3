//! What is sent back: the `Sec-WebSocket-Accept` key, the 101 that
//! completes an upgrade, and the small HTTP responses to everything else.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::error::HandshakeError;

/// The GUID appended to the client's key ([RFC 6455 §1.3]).
///
/// [RFC 6455 §1.3]: https://www.rfc-editor.org/rfc/rfc6455#section-1.3
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A `Sec-WebSocket-Accept` value: base64 of a SHA-1, always 28 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AcceptKey([u8; 28]);

impl AcceptKey {
    /// The accept value for a client's `Sec-WebSocket-Key` ([RFC 6455 §4.2.2]).
    ///
    /// [RFC 6455 §4.2.2]: https://www.rfc-editor.org/rfc/rfc6455#section-4.2.2
    pub fn for_key(key: &str) -> AcceptKey {
        let mut sha = Sha1::new();
        sha.update(key.as_bytes());
        sha.update(WS_GUID);
        let mut out = [0; 28];
        // 20 bytes of digest are 28 of base64, so the buffer always fits.
        let n = STANDARD
            .encode_slice(sha.finalize(), &mut out)
            .unwrap_or_default();
        debug_assert_eq!(n, 28);
        AcceptKey(out)
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        // Base64 output is ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for AcceptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AcceptKey({})", self.as_str())
    }
}

/// The 101 response that completes an upgrade.
/// `extensions` is the `Sec-WebSocket-Extensions` value agreed, if any.
pub fn accept_response(
    key: &AcceptKey,
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(key.as_str().as_bytes());
    if let Some(p) = protocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
    }
    if let Some(e) = extensions {
        out.extend_from_slice(b"\r\nSec-WebSocket-Extensions: ");
        out.extend_from_slice(e.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// A small HTTP response: an answer to a plain request or a refusal.
/// After a refusal, or when the request asked for it, it carries
/// `Connection: close` and the socket closes after it; otherwise the
/// connection waits for the client's next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Extra headers; Content-Length and Connection are added.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a status and a plain-text body naming it; none for
    /// 204 No Content.
    pub fn status(status: u16) -> Self {
        let mut body = Vec::new();
        if status != 204 {
            body.extend_from_slice(reason(status).as_bytes());
            body.push(b'\n');
        }
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body,
        }
    }

    /// A 200 response with a body and its content type.
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// A 200 response carrying JSON the caller wrote:
    /// `Response::json(value.to_string())` with serde_json, or any
    /// text. wsloop does not check that it is JSON.
    pub fn json(body: impl Into<Vec<u8>>) -> Self {
        Response::ok("application/json", body)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the status, keeping headers and body:
    /// `Response::json(text).with_status(400)`.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Sets the body, keeping status and headers.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The response a handshake error calls for.
    pub fn for_error(err: &HandshakeError) -> Self {
        let res = Response::status(err.status());
        match err {
            HandshakeError::UnsupportedVersion => res
                .with_header("Sec-WebSocket-Version", "13")
                .with_header("Upgrade", "websocket"),
            HandshakeError::MethodNotAllowed => res.with_header("Allow", "GET"),
            _ => res,
        }
    }

    /// The bytes on the wire, closing the connection.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode(true, false)
    }

    /// The bytes on the wire, with the body or without it (the answer to
    /// a `HEAD` request keeps `Content-Length` and drops the body), and
    /// with `Connection: close` unless the connection is kept open.
    pub fn encode(&self, with_body: bool, keep_alive: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        // RFC 9110 §8.6: a 204 carries neither a length nor a body.
        if self.status != 204 {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if with_body && self.status != 204 {
            out.extend_from_slice(&self.body);
        }
        out
    }

    /// Encodes the head of an answer whose body is written as it comes, and
    /// ends when the server closes the connection: no length and
    /// `Connection: close` ([RFC 9112 §6.3]). The body given here is the
    /// body's first bytes.
    ///
    /// [RFC 9112 §6.3]: https://www.rfc-editor.org/rfc/rfc9112#section-6.3
    pub fn encode_streamed(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// The reason phrase for the statuses wsloop sends.
fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_with_status_and_with_body_build_on_each_other() {
        let r = Response::json(r#"{"error":"too low"}"#).with_status(409);
        assert_eq!(r.status, 409);
        assert_eq!(
            r.headers,
            [("Content-Type".into(), "application/json".into())]
        );
        assert_eq!(r.body, br#"{"error":"too low"}"#);
        let r = Response::status(404).with_body("no such item\n");
        assert_eq!((r.status, &r.body[..]), (404, &b"no such item\n"[..]));
        assert!(r.to_bytes().starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    }

    #[test]
    fn rfc_6455_accept_key() {
        assert_eq!(
            AcceptKey::for_key("dGhlIHNhbXBsZSBub25jZQ==").as_str(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accept_response_echoes_protocol_and_extensions() {
        let text = String::from_utf8(accept_response(
            &AcceptKey::for_key("dGhlIHNhbXBsZSBub25jZQ=="),
            Some("chat"),
            Some("permessage-deflate; server_no_context_takeover"),
        ))
        .unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(text.ends_with(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n"
        ));
    }
}
