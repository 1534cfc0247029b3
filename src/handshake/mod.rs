//! The HTTP/1.1 upgrade ([RFC 6455 §4.2]), pure: bytes in, a parsed request or
//! a typed error out, and response bytes to send.
//!
//! httparse does not resume, so the caller keeps the bytes of an unfinished
//! head and calls [`parse`] again as more arrive, saying how far it had
//! already looked for the blank line. The head is bounded by
//! [`HandshakeLimits`]. A [`Request`] borrows every string from those
//! bytes: no header is copied.
//!
//! [RFC 6455 §4.2]: https://www.rfc-editor.org/rfc/rfc6455#section-4.2

// One file per question a reader has. This one holds the request: its
// limits, the head scanned and parsed, and the §4.2.1 checks.
mod response; // what is sent back: the accept key, the 101, other answers

use std::net::{IpAddr, SocketAddr};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::error::HandshakeError;

pub use response::{accept_response, AcceptKey, Response};

/// Bounds on the request head, against slow or oversized clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeLimits {
    /// Most bytes in the request line and headers. Default 8 KiB, the
    /// common proxy default; above it the answer is 431.
    pub max_header_bytes: usize,
    /// Most header lines. Default 32, ample for browsers and proxies; above
    /// it the answer is 431.
    pub max_headers: usize,
    /// Most bytes in a plain request's body, which must come with
    /// `Content-Length`. Default 16 KiB, room for a form or a chat line;
    /// above it the answer is 413.
    pub max_body_bytes: usize,
    /// Most empty lines (CRLF) skipped before a request line. Default 8.
    /// [RFC 9112 §2.2] asks a server to skip at least one, which some
    /// clients send after a body; more is a client that sends nothing
    /// else, answered 400.
    ///
    /// [RFC 9112 §2.2]: https://www.rfc-editor.org/rfc/rfc9112#section-2.2
    pub max_empty_lines: usize,
}

setters! {
    HandshakeLimits {
        max_header_bytes: usize,
        max_headers: usize,
        max_body_bytes: usize,
        max_empty_lines: usize,
    }
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits {
            max_header_bytes: 8 * 1024,
            max_headers: 32,
            max_body_bytes: 16 * 1024,
            max_empty_lines: 8,
        }
    }
}

/// A parsed HTTP request head, borrowed from the bytes it was read from.
/// For an upgrade it has passed every [§4.2.1] check.
///
/// [§4.2.1]: https://www.rfc-editor.org/rfc/rfc6455#section-4.2.1
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method, such as `GET`.
    pub method: &'a str,
    /// The request target, such as `/chat?room=a`.
    pub path: &'a str,
    /// The minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    headers: Vec<(&'a str, &'a str)>,
    key: Option<&'a str>,
    body: &'a [u8],
    /// The permessage-deflate agreement the server's config makes of the
    /// offers, set before the application sees the request.
    #[cfg(feature = "deflate")]
    pub(crate) deflate: Option<crate::deflate::Agreement>,
}

impl<'a> Request<'a> {
    /// Every header in order, names as sent, values trimmed.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.headers.iter().copied()
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.all(name).next()
    }

    /// Every header with this name (case-insensitive), in order.
    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }

    /// The body of a plain request: the `Content-Length` bytes after the
    /// head, empty without that header.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Whether the connection stays open for another request after the
    /// answer: HTTP/1.1 without `Connection: close` ([RFC 9112 §9.3]).
    /// HTTP/1.0 connections close after one answer.
    ///
    /// [RFC 9112 §9.3]: https://www.rfc-editor.org/rfc/rfc9112#section-9.3
    pub fn keep_alive(&self) -> bool {
        self.version == 1 && !self.all("connection").any(|v| has_token(v, "close"))
    }

    /// The `Origin` header, which browsers send.
    pub fn origin(&self) -> Option<&'a str> {
        self.header("origin")
    }

    /// The `Host` header.
    pub fn host(&self) -> Option<&'a str> {
        self.header("host")
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &'a str {
        self.path.split('?').next().unwrap_or("")
    }

    /// The value of `name` in the query string, percent-decoded (`+` is a
    /// space, as forms send it). `None` if the name is absent, or if the
    /// value decodes to bytes that are not UTF-8 or has a `%` not
    /// followed by two hex digits. `?flag` with no `=` gives `Some("")`.
    pub fn query_decoded(&self, name: &str) -> Option<String> {
        percent_decode(self.query(name)?)
    }

    /// The value of `name` in the query string, undecoded
    /// ([`Request::query_decoded`] decodes). `?flag` with no `=` gives
    /// `Some("")`.
    pub fn query(&self, name: &str) -> Option<&'a str> {
        let (_, query) = self.path.split_once('?')?;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// Subprotocols the client offered in `Sec-WebSocket-Protocol`, in order.
    pub fn protocols(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.all("sec-websocket-protocol")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
    }

    /// The values of every `Sec-WebSocket-Extensions` header, in order.
    pub fn extensions(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.all("sec-websocket-extensions")
    }

    /// The permessage-deflate offers, each parsed or refused, in order.
    #[cfg(feature = "deflate")]
    pub fn deflate_offers(
        &self,
    ) -> impl Iterator<Item = Result<crate::deflate::Offer, crate::deflate::OfferError>> + '_ {
        crate::deflate::offers(self.extensions())
    }

    /// What the server answers the offers with if the upgrade is accepted:
    /// the first offer it can honour under [`Config::deflate`], or `None`
    /// (no offer, none acceptable, or deflate off).
    ///
    /// [`Config::deflate`]: crate::Config::deflate
    #[cfg(feature = "deflate")]
    pub fn deflate(&self) -> Option<&crate::deflate::Agreement> {
        self.deflate.as_ref()
    }

    /// Whether this is a WebSocket upgrade that passed every check.
    pub fn is_upgrade(&self) -> bool {
        self.key.is_some()
    }

    /// The client's address: the one a trusted proxy forwards, else the
    /// socket's `peer`. Headers from anyone not in `trusted` are ignored.
    ///
    /// The address is the last entry of `X-Forwarded-For`, the one the
    /// proxy itself appended: entries before it are the client's to
    /// choose. `X-Real-IP` is believed instead only when `real_ip` says
    /// so ([`Config::real_ip_header`](crate::Config::real_ip_header)): a
    /// proxy that only appends to `X-Forwarded-For` passes a client's own
    /// `X-Real-IP` through.
    pub fn client_addr(&self, peer: SocketAddr, trusted: &[IpAddr], real_ip: bool) -> SocketAddr {
        if !trusted.contains(&peer.ip()) {
            return peer;
        }
        let forwarded = if real_ip {
            self.header("x-real-ip")
        } else {
            // The proxy appends to the last line, or adds one.
            self.all("x-forwarded-for")
                .last()
                .and_then(|v| v.rsplit(',').next())
        };
        forwarded
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
            .map_or(peer, |ip| SocketAddr::new(ip, peer.port()))
    }

    /// `Sec-WebSocket-Accept` for this upgrade ([RFC 6455 §4.2.2]); `None`
    /// for a plain request.
    ///
    /// [RFC 6455 §4.2.2]: https://www.rfc-editor.org/rfc/rfc6455#section-4.2.2
    pub fn accept_key(&self) -> Option<AcceptKey> {
        self.key.map(AcceptKey::for_key)
    }
}

/// What a complete head turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Parsed<'a> {
    /// More bytes are needed.
    Partial,
    /// A valid WebSocket upgrade, and the length of its head in bytes.
    Upgrade(Request<'a>, usize),
    /// A request without `Upgrade`, for the handler to answer, and its
    /// length in bytes, head and body.
    Http(Request<'a>, usize),
    /// A plain request whose head is complete and valid but whose body is
    /// still arriving: call again once `total` bytes, head and body, are in.
    NeedBody {
        /// The request's whole length.
        total: usize,
    },
}

/// Where the request line starts: after the empty lines (CRLF) that may
/// come before it ([RFC 9112 §2.2]).
///
/// [RFC 9112 §2.2]: https://www.rfc-editor.org/rfc/rfc9112#section-2.2
pub(crate) fn request_start(buf: &[u8]) -> usize {
    buf.chunks_exact(2)
        .take_while(|pair| pair == b"\r\n")
        .count()
        * 2
}

/// Finds where a head ends: the CRLF CRLF after its request line, within
/// the first `limit` bytes (bytes past them are not looked at, so that a
/// head refused for its size is refused for that however it arrives).
/// `start` is [`request_start`]; bytes before `scanned` were searched
/// already.
/// Every CR and LF must be one half of a CRLF pair: a parser that takes a
/// bare LF as a line end and one that does not would disagree on where
/// the request ends, which is how requests are smuggled past a proxy
/// ([RFC 9112 §11.2]).
///
/// [RFC 9112 §11.2]: https://www.rfc-editor.org/rfc/rfc9112#section-11.2
fn head_end(
    buf: &[u8],
    start: usize,
    scanned: usize,
    limit: usize,
) -> Result<Option<usize>, HandshakeError> {
    // Back up over a line end that the last search saw only part of.
    let from = scanned.saturating_sub(3).max(start);
    for at in from..buf.len().min(limit) {
        match buf[at] {
            b'\n' if at == 0 || buf[at - 1] != b'\r' => return Err(HandshakeError::BareLineEnding),
            // The request line is not empty, so the blank line cannot
            // start before it.
            b'\n' if at >= start + 3 && &buf[at - 3..at] == b"\r\n\r" => return Ok(Some(at + 1)),
            b'\r' if buf.get(at + 1).is_some_and(|&b| b != b'\n') => {
                return Err(HandshakeError::BareLineEnding)
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Parses and validates a request head from the front of `buf`. `scanned`
/// says how many bytes were already seen without the head's end, so that
/// a head that arrives a byte at a time costs linear time, not quadratic.
pub fn parse<'a>(
    buf: &'a [u8],
    scanned: usize,
    limits: &HandshakeLimits,
) -> Result<Parsed<'a>, HandshakeError> {
    let start = request_start(buf);
    if start / 2 > limits.max_empty_lines {
        return Err(HandshakeError::TooManyEmptyLines {
            max: limits.max_empty_lines,
        });
    }
    let end = head_end(buf, start, scanned, limits.max_header_bytes)?;
    // The one check of the head's size, complete or not; empty lines
    // before it count.
    if end.unwrap_or(buf.len()) > limits.max_header_bytes {
        return Err(HandshakeError::HeadersTooLarge {
            max: limits.max_header_bytes,
        });
    }
    let Some(end) = end else {
        return Ok(Parsed::Partial);
    };
    let mut request = parse_head(&buf[..end], limits)?;
    // RFC 9110 §7.8: an upgrade to anything but a WebSocket is ignored,
    // and the request answered as it is. A WebSocket key with no
    // WebSocket upgrade is a broken upgrade, refused below.
    let websocket = request.all("upgrade").any(|v| has_token(v, "websocket"));
    if !websocket && request.header("sec-websocket-key").is_none() {
        // A plain request: HTTP/1.1 requires Host (RFC 9112 §3.2), 1.0 does not.
        if request.version == 1 && request.host().is_none() {
            return Err(HandshakeError::MissingHost);
        }
        let total = end + body_len(&request, limits)?;
        if buf.len() < total {
            return Ok(Parsed::NeedBody { total });
        }
        request.body = &buf[end..total];
        return Ok(Parsed::Http(request, total));
    }
    request.key = Some(check_upgrade(&request)?);
    Ok(Parsed::Upgrade(request, end))
}

/// The body's length from `Content-Length`, within the limit. A chunked
/// body is refused with 411 rather than decoded: every client that sends
/// a small body can send its length ([RFC 9112 §6.3] lets a server do so).
///
/// [RFC 9112 §6.3]: https://www.rfc-editor.org/rfc/rfc9112#section-6.3
fn body_len(request: &Request<'_>, limits: &HandshakeLimits) -> Result<usize, HandshakeError> {
    if request.all("transfer-encoding").next().is_some() {
        return Err(HandshakeError::LengthRequired);
    }
    let mut lengths = request.all("content-length");
    let Some(first) = lengths.next() else {
        return Ok(0);
    };
    // RFC 9112 §6.3: differing lengths, or one that is not a number, make
    // the message's end unknowable.
    let digits = !first.is_empty() && first.bytes().all(|b| b.is_ascii_digit());
    if lengths.any(|other| other != first) || !digits {
        return Err(HandshakeError::InvalidContentLength);
    }
    // Only digits, so a parse error is an overflow: too large either way.
    match first.parse::<usize>() {
        Ok(n) if n <= limits.max_body_bytes => Ok(n),
        _ => Err(HandshakeError::BodyTooLarge {
            max: limits.max_body_bytes,
        }),
    }
}

/// Runs httparse over a complete head and borrows its fields.
fn parse_head<'a>(head: &'a [u8], limits: &HandshakeLimits) -> Result<Request<'a>, HandshakeError> {
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
    match req.parse(head) {
        // The head's length is what httparse read, to the byte: a request
        // that ends where httparse and our search disagree is refused.
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::TooManyHeaders {
                max: limits.max_headers,
            })
        }
        // Partial cannot happen: the head ends with its blank line.
        Ok(_) | Err(_) => return Err(HandshakeError::Malformed),
    }
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| HandshakeError::Malformed)?;
        headers.push((h.name, value.trim()));
    }
    // httparse fills all three on Complete.
    Ok(Request {
        method: req.method.unwrap_or_default(),
        path: req.path.unwrap_or_default(),
        version: req.version.unwrap_or_default(),
        headers,
        key: None,
        body: &[],
        #[cfg(feature = "deflate")]
        deflate: None,
    })
}

/// The checks of [RFC 6455 §4.2.1]: a GET, HTTP/1.1 or higher, with these
/// headers. Returns the client's key.
///
/// [RFC 6455 §4.2.1]: https://www.rfc-editor.org/rfc/rfc6455#section-4.2.1
fn check_upgrade<'a>(request: &Request<'a>) -> Result<&'a str, HandshakeError> {
    if request.method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if request.version != 1 {
        return Err(HandshakeError::UnsupportedHttpVersion);
    }
    if request.host().is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !request.all("upgrade").any(|v| has_token(v, "websocket")) {
        return Err(HandshakeError::InvalidUpgrade);
    }
    if !request.all("connection").any(|v| has_token(v, "upgrade")) {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if request.header("sec-websocket-version") != Some("13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = request
        .header("sec-websocket-key")
        .ok_or(HandshakeError::InvalidKey)?;
    match STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(key),
        _ => Err(HandshakeError::InvalidKey),
    }
}

/// Whether a comma-separated header value holds `token`, ignoring ASCII case.
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Decodes `%XX` escapes and `+`; `None` for a bad escape or bytes that
/// are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = |b: Option<u8>| (b? as char).to_digit(16);
                let (hi, lo) = (hex(bytes.next())?, hex(bytes.next())?);
                (hi * 16 + lo) as u8
            }
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_decode_percent_escapes_and_plus() {
        let head =
            b"GET /x?name=J%C3%BCrgen+M&flag&bad=%4&odd=%ff&plain=a HTTP/1.1\r\nHost: a\r\n\r\n";
        let r = parse_head(head, &HandshakeLimits::default()).unwrap();
        assert_eq!(r.query_decoded("name").as_deref(), Some("Jürgen M"));
        assert_eq!(r.query_decoded("flag").as_deref(), Some(""));
        assert_eq!(r.query_decoded("plain").as_deref(), Some("a"));
        assert_eq!(r.query_decoded("bad"), None, "a cut escape");
        assert_eq!(r.query_decoded("odd"), None, "not UTF-8");
        assert_eq!(r.query_decoded("missing"), None);
    }

    use super::*;

    const GOOD: &[u8] = b"GET /chat?room=a HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn with(from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(GOOD.to_vec())
            .unwrap()
            .replace(from, to)
            .into_bytes()
    }

    #[test]
    fn parses_a_valid_upgrade_fed_one_byte_at_a_time() {
        let limits = HandshakeLimits::default();
        for end in 0..GOOD.len() {
            assert_eq!(
                parse(&GOOD[..end], 0, &limits),
                Ok(Parsed::Partial),
                "prefix {end}"
            );
        }
        let Ok(Parsed::Upgrade(req, n)) = parse(GOOD, 0, &limits) else {
            panic!("not an upgrade")
        };
        assert_eq!(n, GOOD.len());
        assert_eq!(req.path_only(), "/chat");
        assert_eq!(req.query("room"), Some("a"));
        assert_eq!(req.origin(), Some("http://example.com"));
        assert_eq!(req.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
        assert_eq!(
            req.accept_key().map(|k| k.as_str().to_owned()).as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }

    #[test]
    fn the_head_end_is_found_from_any_resume_point() {
        for cut in 0..GOOD.len() {
            assert_eq!(head_end(&GOOD[..cut], 0, 0, 8192), Ok(None));
        }
        for scanned in 0..GOOD.len() {
            assert_eq!(head_end(GOOD, 0, scanned, 8192), Ok(Some(GOOD.len())));
        }
    }

    /// Heads whose end two parsers could place differently. Each is
    /// refused at once, whole or fed a byte at a time, before anything
    /// after it is read as a request of its own.
    #[test]
    fn heads_with_bare_line_ends_are_refused_however_they_arrive() {
        let smuggle = b"POST /send?name=alice HTTP/1.1\r\nHost: x\r\nContent-Length: 5\n\n\
                        POST /send?name=mallory HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let cases: &[&[u8]] = &[
            smuggle,
            b"GET / HTTP/1.1\nHost: x\n\n",
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"GET / HTTP/1.1\rHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rb\r\nHost: x\r\n\r\n",
            b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\r\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\r\rGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ];
        let limits = HandshakeLimits::default();
        for case in cases {
            assert_eq!(
                parse(case, 0, &limits),
                Err(HandshakeError::BareLineEnding),
                "{:?}",
                String::from_utf8_lossy(case)
            );
            // Fed a byte at a time, it is refused no later than its first
            // bare line end plus one byte.
            let bad = case
                .iter()
                .enumerate()
                .position(|(i, &b)| {
                    (b == b'\n' && (i == 0 || case[i - 1] != b'\r'))
                        || (b == b'\r' && case.get(i + 1).is_some_and(|&n| n != b'\n'))
                })
                .expect("each case has one");
            let mut refused_at = None;
            for cut in 1..=case.len() {
                match parse(&case[..cut], cut - 1, &limits) {
                    Ok(Parsed::Partial) => {}
                    Err(HandshakeError::BareLineEnding) => {
                        refused_at = Some(cut);
                        break;
                    }
                    other => panic!("{:?}: {other:?}", String::from_utf8_lossy(case)),
                }
            }
            assert!(refused_at.is_some_and(|at| at <= bad + 2), "{refused_at:?}");
        }
        // Past the size limit nothing is looked at: too large, whole or cut.
        let small = HandshakeLimits::default().max_header_bytes(32);
        let long = b"GET / HTTP/1.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaa\nHost: x\r\n\r\n";
        for cut in 33..=long.len() {
            assert_eq!(
                parse(&long[..cut], 0, &small),
                Err(HandshakeError::HeadersTooLarge { max: 32 }),
                "{cut}"
            );
        }
        let ends = parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\nGET", 0, &limits);
        assert!(
            matches!(ends, Ok(Parsed::Http(_, 27))),
            "what follows a head is the next request's: {ends:?}"
        );
    }

    #[test]
    fn empty_lines_before_a_request_are_skipped_up_to_the_limit() {
        let limits = HandshakeLimits::default().max_empty_lines(4);
        // The fuzz finding: an unfinished HEAD after empty lines is waited
        // for, not refused.
        assert_eq!(
            parse(b"\r\n\r\n\r\n\r\nHEAD ", 0, &limits),
            Ok(Parsed::Partial)
        );
        let req = b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..req.len() {
            assert_eq!(parse(&req[..cut], 0, &limits), Ok(Parsed::Partial), "{cut}");
        }
        let Ok(Parsed::Http(got, len)) = parse(req, 0, &limits) else {
            panic!("not parsed");
        };
        assert_eq!((got.method, got.path, len), ("GET", "/", req.len()));
        assert_eq!(
            parse(&b"\r\n".repeat(5), 0, &limits),
            Err(HandshakeError::TooManyEmptyLines { max: 4 })
        );
        assert_eq!(request_start(b"\r\n\r\nHEAD"), 4);
        assert_eq!(request_start(b"\r\n\rHEAD"), 2);
    }

    #[test]
    fn only_a_websocket_upgrade_is_taken_as_one() {
        // RFC 9110 §7.8: a server may ignore an upgrade it does not offer.
        let h2c = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                    Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
        assert!(matches!(
            parse(h2c, 0, &Default::default()),
            Ok(Parsed::Http(ref r, _)) if !r.is_upgrade()
        ));
        // A WebSocket key with another Upgrade is a broken upgrade.
        assert_eq!(
            parse(
                &with("Upgrade: websocket", "Upgrade: h2c"),
                0,
                &Default::default()
            ),
            Err(HandshakeError::InvalidUpgrade)
        );
    }

    #[test]
    fn upgrade_tokens_are_case_insensitive_lists() {
        let req = with("Upgrade: websocket", "Upgrade: foo, WebSocket");
        assert!(matches!(
            parse(&req, 0, &Default::default()),
            Ok(Parsed::Upgrade(..))
        ));
        let req = with("keep-alive, Upgrade", "UPGRADE");
        assert!(matches!(
            parse(&req, 0, &Default::default()),
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
            let got = parse(&bytes, 0, &Default::default());
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
        let limits = HandshakeLimits::default()
            .max_header_bytes(64)
            .max_headers(8);
        let req = vec![b'a'; 65];
        assert_eq!(
            parse(&req, 0, &limits),
            Err(HandshakeError::HeadersTooLarge { max: 64 })
        );
    }

    #[test]
    fn plain_get_is_http() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let Ok(Parsed::Http(req, n)) = parse(req, 0, &Default::default()) else {
            panic!()
        };
        assert_eq!((req.method, req.path, req.version, n), ("GET", "/", 1, 27));
        // HTTP/1.0 needs no Host; 1.1 does.
        let Ok(Parsed::Http(req, _)) = parse(b"HEAD /x HTTP/1.0\r\n\r\n", 0, &Default::default())
        else {
            panic!()
        };
        assert_eq!((req.method, req.version), ("HEAD", 0));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n", 0, &Default::default()),
            Err(HandshakeError::MissingHost)
        );
    }

    #[test]
    fn a_body_is_read_by_its_content_length_whatever_the_cut() {
        let req = b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET";
        let head = req.len() - 8;
        let limits = HandshakeLimits::default();
        for cut in head..head + 5 {
            assert_eq!(
                parse(&req[..cut], 0, &limits),
                Ok(Parsed::NeedBody { total: head + 5 })
            );
        }
        let Ok(Parsed::Http(got, n)) = parse(req, 0, &limits) else {
            panic!()
        };
        // What follows the body is the next request's.
        assert_eq!((got.body(), n), (&b"hello"[..], head + 5));
        assert!(got.keep_alive());
    }

    #[test]
    fn bodies_that_cannot_be_read_are_refused_with_their_status() {
        use HandshakeError::*;
        let limits = HandshakeLimits::default().max_body_bytes(10);
        let post = |headers: &str| format!("POST / HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        let cases = [
            ("Content-Length: 11\r\n", BodyTooLarge { max: 10 }, 413),
            (
                "Content-Length: 99999999999999999999999\r\n",
                BodyTooLarge { max: 10 },
                413,
            ),
            ("Transfer-Encoding: chunked\r\n", LengthRequired, 411),
            ("Content-Length: -1\r\n", InvalidContentLength, 400),
            ("Content-Length: 1x\r\n", InvalidContentLength, 400),
            ("Content-Length:\r\n", InvalidContentLength, 400),
            (
                "Content-Length: 2\r\nContent-Length: 3\r\n",
                InvalidContentLength,
                400,
            ),
        ];
        for (headers, want, status) in cases {
            assert_eq!(
                parse(post(headers).as_bytes(), 0, &limits),
                Err(want.clone()),
                "{headers}"
            );
            assert_eq!(want.status(), status);
        }
        // The same length twice is one length.
        let twice = post("Content-Length: 2\r\nContent-Length: 2\r\n") + "ok";
        assert!(matches!(
            parse(twice.as_bytes(), 0, &limits),
            Ok(Parsed::Http(..))
        ));
    }

    #[test]
    fn keep_alive_is_http_1_1_without_connection_close() {
        let keeps = |head: &[u8]| match parse(head, 0, &Default::default()) {
            Ok(Parsed::Http(req, _)) => req.keep_alive(),
            other => panic!("{other:?}"),
        };
        assert!(keeps(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!keeps(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n"
        ));
        assert!(!keeps(b"GET / HTTP/1.0\r\n\r\n"));
        let open = String::from_utf8(Response::status(204).encode(true, true)).unwrap();
        assert_eq!(
            open,
            "HTTP/1.1 204 No Content\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_address_is_believed_from_trusted_proxies_only() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.9, 192.0.2.7\r\n\r\n";
        let Ok(Parsed::Http(req, _)) = parse(req, 0, &Default::default()) else {
            panic!()
        };
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let trusted = ["127.0.0.1".parse().unwrap()];
        assert_eq!(
            req.client_addr(proxy, &trusted, false),
            "192.0.2.7:5000".parse().unwrap()
        );
        assert_eq!(req.client_addr(proxy, &[], false), proxy);
        // With two header lines, the proxy's addition is on the last.
        let req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 192.0.2.8\r\n\r\n";
        let Ok(Parsed::Http(req, _)) = parse(req, 0, &Default::default()) else {
            panic!()
        };
        assert_eq!(
            req.client_addr(proxy, &trusted, false),
            "192.0.2.8:5000".parse().unwrap()
        );
        // A client's own X-Real-IP, passed through by a proxy that only
        // appends to X-Forwarded-For, is not believed unless configured.
        let req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 192.0.2.9\r\n\r\n";
        let Ok(Parsed::Http(req, _)) = parse(req, 0, &Default::default()) else {
            panic!()
        };
        assert_eq!(
            req.client_addr(proxy, &trusted, false),
            "192.0.2.9:5000".parse().unwrap()
        );
        assert_eq!(
            req.client_addr(proxy, &trusted, true),
            "6.6.6.6:5000".parse().unwrap()
        );
    }
}
