//! The HTTP/1.1 upgrade (RFC 6455 §4.2), pure: bytes in, a parsed request or
//! a typed error out, and response bytes to send.
//!
//! httparse does not resume, so the caller keeps the bytes of an unfinished
//! head and calls [`parse`] again as more arrive; [`head_complete`] tells
//! cheaply when that is worth doing. The head is bounded by
//! [`HandshakeLimits`], so the re-parse is too.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::error::HandshakeError;

/// RFC 6455 §1.3: the GUID appended to the client's key.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Bounds on the request head, against slow or oversized clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Most bytes in the request line and headers. Default 8 KiB, the
    /// common proxy default; above it the answer is 431.
    pub max_header_bytes: usize,
    /// Most header lines. Default 32, ample for browsers and proxies; above
    /// it the answer is 431.
    pub max_headers: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits {
            max_header_bytes: 8 * 1024,
            max_headers: 32,
        }
    }
}

/// A parsed HTTP request head. For an upgrade it has passed every §4.2.1 check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, such as `GET`.
    pub method: String,
    /// The request target, such as `/chat?room=a`.
    pub path: String,
    /// Every header in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Subprotocols the client offered in `Sec-WebSocket-Protocol`, in order.
    pub protocols: Vec<String>,
    key: Option<String>,
}

impl Request {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Origin` header, which browsers send.
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }

    /// The `Host` header.
    pub fn host(&self) -> Option<&str> {
        self.header("host")
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    /// The value of `name` in the query string, undecoded.
    pub fn query(&self, name: &str) -> Option<&str> {
        let (_, query) = self.path.split_once('?')?;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The `Sec-WebSocket-Key`, set for a valid upgrade.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

/// What a complete head turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A valid WebSocket upgrade, and the length of its head in bytes.
    Upgrade(Request, usize),
    /// A request without `Upgrade`, for the handler to answer.
    Http(Request, usize),
}

/// Whether `buf` holds the blank line that ends a head. `from` is a hint:
/// bytes before it were checked already.
pub fn head_complete(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    buf.get(start..)
        .is_some_and(|tail| tail.windows(4).any(|w| w == b"\r\n\r\n"))
}

/// Parses and validates a request head from the front of `buf`.
pub fn parse(buf: &[u8], limits: &HandshakeLimits) -> Result<Parsed, HandshakeError> {
    // The usual limit fits on the stack; a larger one costs an allocation.
    let mut stack = [httparse::EMPTY_HEADER; 64];
    let mut heap = Vec::new();
    let slots = if limits.max_headers <= stack.len() {
        &mut stack[..limits.max_headers]
    } else {
        heap.resize(limits.max_headers, httparse::EMPTY_HEADER);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(slots);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_header_bytes {
                return Err(HandshakeError::HeadersTooLarge {
                    max: limits.max_header_bytes,
                });
            }
            return Ok(Parsed::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::TooManyHeaders {
                max: limits.max_headers,
            })
        }
        Err(_) => return Err(HandshakeError::Malformed),
    };
    if head_len > limits.max_header_bytes {
        return Err(HandshakeError::HeadersTooLarge {
            max: limits.max_header_bytes,
        });
    }
    // httparse fills all three on Complete.
    let method = req.method.unwrap_or_default().to_owned();
    let path = req.path.unwrap_or_default().to_owned();
    if req.version != Some(1) {
        return Err(HandshakeError::UnsupportedHttpVersion);
    }
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| HandshakeError::Malformed)?;
        headers.push((h.name.to_owned(), value.trim().to_owned()));
    }
    let mut request = Request {
        method,
        path,
        headers,
        protocols: Vec::new(),
        key: None,
    };
    if request.host().is_none() {
        return Err(HandshakeError::MissingHost);
    }
    let all = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if all("upgrade").next().is_none() {
        return Ok(Parsed::Http(request, head_len));
    }
    // RFC 6455 §4.2.1: a GET, HTTP/1.1 or higher, with these headers.
    if request.method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if !all("upgrade").any(|v| has_token(v, "websocket")) {
        return Err(HandshakeError::InvalidUpgrade);
    }
    if !all("connection").any(|v| has_token(v, "upgrade")) {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if request.header("sec-websocket-version") != Some("13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = request
        .header("sec-websocket-key")
        .ok_or(HandshakeError::InvalidKey)?;
    match STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::InvalidKey),
    }
    let key = key.to_owned();
    let protocols: Vec<String> = all("sec-websocket-protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    request.key = Some(key);
    request.protocols = protocols;
    Ok(Parsed::Upgrade(request, head_len))
}

/// Whether a comma-separated header value holds `token`, ignoring ASCII case.
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID);
    STANDARD.encode(sha.finalize())
}

/// The 101 response that completes an upgrade.
pub fn accept_response(key: &str, protocol: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept_key(key).as_bytes());
    if let Some(p) = protocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// A small HTTP response: an answer to a plain request or a refusal.
/// It always carries `Connection: close`; the socket closes after it.
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
    /// A response with a status and a plain-text body naming it.
    pub fn status(status: u16) -> Self {
        let mut body = reason(status).as_bytes().to_vec();
        body.push(b'\n');
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

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
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

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                self.body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&self.body);
        out
    }
}

/// The reason phrase for the statuses wsloop sends.
fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[u8] = b"GET /chat?room=a HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn with(from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(GOOD.to_vec())
            .unwrap()
            .replace(from, to)
            .into_bytes()
    }

    #[test]
    fn rfc_6455_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parses_a_valid_upgrade_fed_one_byte_at_a_time() {
        let limits = HandshakeLimits::default();
        for end in 0..GOOD.len() {
            assert_eq!(
                parse(&GOOD[..end], &limits),
                Ok(Parsed::Partial),
                "prefix {end}"
            );
        }
        let Ok(Parsed::Upgrade(req, n)) = parse(GOOD, &limits) else {
            panic!("not an upgrade")
        };
        assert_eq!(n, GOOD.len());
        assert_eq!(req.path_only(), "/chat");
        assert_eq!(req.query("room"), Some("a"));
        assert_eq!(req.origin(), Some("http://example.com"));
        assert_eq!(req.protocols, ["chat", "superchat"]);
        assert_eq!(req.key(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
    }

    #[test]
    fn head_complete_finds_the_blank_line_across_calls() {
        for cut in 0..GOOD.len() {
            assert!(!head_complete(&GOOD[..cut], 0));
        }
        for from in 0..GOOD.len() {
            assert!(head_complete(GOOD, from));
        }
    }

    #[test]
    fn upgrade_tokens_are_case_insensitive_lists() {
        let req = with("Upgrade: websocket", "Upgrade: foo, WebSocket");
        assert!(matches!(
            parse(&req, &Default::default()),
            Ok(Parsed::Upgrade(..))
        ));
        let req = with("keep-alive, Upgrade", "UPGRADE");
        assert!(matches!(
            parse(&req, &Default::default()),
            Ok(Parsed::Upgrade(..))
        ));
    }

    #[test]
    fn each_violation_gets_its_status() {
        use HandshakeError::*;
        let long = format!("X-Pad: {}\r\nHost", "a".repeat(9000));
        let many: String = (0..40).map(|i| format!("X-{i}: 1\r\n")).collect::<String>() + "Host";
        let cases: Vec<(Vec<u8>, HandshakeError, u16)> = vec![
            (b"GARBAGE\r\n\r\n".to_vec(), Malformed, 400),
            (with("GET /chat", "POST /chat"), MethodNotAllowed, 405),
            (with("HTTP/1.1", "HTTP/1.0"), UnsupportedHttpVersion, 400),
            (with("Host: server.example.com\r\n", ""), MissingHost, 400),
            (
                with("Upgrade: websocket", "Upgrade: h2c"),
                InvalidUpgrade,
                400,
            ),
            (
                with("keep-alive, Upgrade", "keep-alive"),
                MissingConnectionUpgrade,
                400,
            ),
            (
                with("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
                InvalidKey,
                400,
            ),
            (
                with("dGhlIHNhbXBsZSBub25jZQ==", "!!!notbase64!!!"),
                InvalidKey,
                400,
            ),
            (
                with("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                InvalidKey,
                400,
            ),
            (with("Version: 13", "Version: 8"), UnsupportedVersion, 426),
            (with("Host", &long), HeadersTooLarge { max: 8192 }, 431),
            (with("Host", &many), TooManyHeaders { max: 32 }, 431),
        ];
        for (bytes, want, status) in cases {
            let got = parse(&bytes, &Default::default());
            assert_eq!(
                got,
                Err(want.clone()),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(want.status(), status);
            let text = String::from_utf8(Response::for_error(&want).to_bytes()).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            assert!(text.contains("Connection: close\r\n"));
            if status == 426 {
                assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
            }
        }
    }

    #[test]
    fn oversized_partial_head_is_refused_before_it_completes() {
        let limits = HandshakeLimits {
            max_header_bytes: 64,
            max_headers: 8,
        };
        let req = vec![b'a'; 65];
        assert_eq!(
            parse(&req, &limits),
            Err(HandshakeError::HeadersTooLarge { max: 64 })
        );
    }

    #[test]
    fn plain_get_is_http() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let Ok(Parsed::Http(req, n)) = parse(req, &Default::default()) else {
            panic!()
        };
        assert_eq!(
            (req.method.as_str(), req.path.as_str(), n),
            ("GET", "/", 27)
        );
    }

    #[test]
    fn accept_response_echoes_protocol() {
        let text =
            String::from_utf8(accept_response("dGhlIHNhbXBsZSBub25jZQ==", Some("chat"))).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.ends_with("Sec-WebSocket-Protocol: chat\r\n\r\n"));
    }
}
