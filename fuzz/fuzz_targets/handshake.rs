//! The request parser fed in arbitrary chunks, as the server feeds it.
//!
//! The first byte sets the chunk size. Asserts: no panic; the verdict
//! reached chunk by chunk (telling `parse` how much it had already
//! scanned, and once a body is awaited parsing again from the start when
//! enough bytes are in) equals the verdict on all the bytes at once, size
//! refusals and unfinished bodies included; a verdict's head ends where
//! httparse says it does, within the limit, and an unfinished one is
//! unfinished for httparse too; a plain request's body is exactly the
//! `Content-Length` bytes after the head, within the body limit, and an
//! unfinished one names that same length; `keep_alive` is HTTP/1.1
//! without a `close` token; an error yields a well-formed response with
//! its status and `Connection: close`, and the kept-alive encoding differs
//! only by that line; an accepted upgrade is a GET over HTTP/1.1 whose
//! accept key matches its `Sec-WebSocket-Key`, and yields a well-formed
//! 101; a parsed request's client address ignores forwarding headers
//! unless the peer is a trusted proxy.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use wsloop::handshake::{
    accept_response, parse, AcceptKey, HandshakeLimits, Parsed, Request, Response,
};

/// The body limit, small so that refusals and whole bodies both fit in
/// what the fuzzer writes.
const MAX_BODY_BYTES: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let chunk = chunk as usize % 64 + 1;
    let limits = HandshakeLimits::default()
        .max_header_bytes(512)
        .max_headers(8)
        .max_body_bytes(MAX_BODY_BYTES);
    let mut buf = Vec::new();
    // Set once a complete head asks for a body: the request's whole length.
    let mut need = None;
    // Once a verdict other than "more" is reached: the `scanned` it took.
    let mut reached = None;
    for piece in input.chunks(chunk) {
        // Bytes already searched for the blank line, without finding it.
        let scanned = match need {
            Some(total) if buf.len() + piece.len() < total => {
                buf.extend_from_slice(piece);
                // The server waits without parsing; any cut in the body
                // would give the same answer if it did.
                assert_eq!(
                    parse(&buf, 0, &limits),
                    Ok(Parsed::NeedBody { total }),
                    "a cut in the body changed the length"
                );
                continue;
            }
            // The head was found already: parse again from the start.
            Some(_) => 0,
            None => buf.len(),
        };
        buf.extend_from_slice(piece);
        match parse(&buf, scanned, &limits) {
            Ok(Parsed::Partial) => {}
            Ok(Parsed::NeedBody { total }) => {
                assert!(total > buf.len(), "waits for a body that is all in");
                assert!(need.replace(total).is_none(), "the body length changed");
            }
            _ => {
                reached = Some(scanned);
                break;
            }
        }
    }
    let verdict = match (reached, need) {
        (Some(scanned), _) => parse(&buf, scanned, &limits),
        (None, Some(total)) => Ok(Parsed::NeedBody { total }),
        (None, None) => Ok(Parsed::Partial),
    };
    // Bytes after the request do not change the verdict, and the size
    // limits are the same whether it came whole or in pieces.
    assert_eq!(
        verdict,
        parse(input, 0, &limits),
        "chunked and whole verdicts differ"
    );
    // Where httparse, which skips empty lines before the request line,
    // says the head ends: the head's length must agree with it.
    let head_end = httparse_head_len(&buf);
    match verdict {
        Ok(Parsed::Partial) => {
            assert!(head_end.is_none(), "a complete head left unparsed");
            assert!(buf.len() <= limits.max_header_bytes);
        }
        Ok(Parsed::NeedBody { total }) => {
            let head = head_end.expect("a body awaited before the head ended");
            assert!(head <= limits.max_header_bytes);
            assert!(head < total && total <= head + MAX_BODY_BYTES);
            assert!(input.len() < total);
            // The missing bytes, whatever they are, complete the request.
            let mut whole = input.to_vec();
            whole.resize(total, b'~');
            match parse(&whole, 0, &limits) {
                Ok(Parsed::Http(req, len)) => {
                    assert_eq!(len, total);
                    assert_eq!(req.body(), &whole[head..]);
                }
                other => panic!("the body came and the verdict is {other:?}"),
            }
        }
        Ok(Parsed::Upgrade(req, len)) => {
            check_client_addr(&req);
            assert_eq!(Some(len), head_end);
            assert!(len <= limits.max_header_bytes);
            assert!(req.is_upgrade());
            assert_eq!((req.method, req.version), ("GET", 1));
            assert!(req.headers().count() <= limits.max_headers);
            assert!(req.body().is_empty(), "an upgrade has no body");
            let key = req.accept_key().expect("an upgrade has a key");
            let sent = req
                .header("sec-websocket-key")
                .expect("an upgrade has a key");
            assert_eq!(key, AcceptKey::for_key(sent));
            assert_eq!(key.as_str().len(), 28);
            let res = String::from_utf8(accept_response(&key, None, None)).unwrap();
            assert!(res.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
            assert!(res.contains(&format!("\r\nSec-WebSocket-Accept: {}\r\n", key.as_str())));
            assert!(res.ends_with("\r\n\r\n"));
            if let Some(protocol) = req.protocols().next() {
                assert!(!protocol.is_empty() && !protocol.contains(','));
                let res = String::from_utf8(accept_response(&key, Some(protocol), None)).unwrap();
                assert!(res.contains(&format!("\r\nSec-WebSocket-Protocol: {protocol}\r\n")));
                assert!(res.ends_with("\r\n\r\n"));
            }
        }
        Ok(Parsed::Http(req, len)) => {
            check_client_addr(&req);
            let head = head_end.expect("a request without its blank line");
            assert!(head <= limits.max_header_bytes);
            assert!(!req.is_upgrade() && req.accept_key().is_none());
            // An Upgrade to anything but a WebSocket is ignored.
            assert!(req.header("sec-websocket-key").is_none());
            assert!(!req
                .headers()
                .any(|(n, v)| n.eq_ignore_ascii_case("upgrade")
                    && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("websocket"))));
            assert!(
                req.version == 0 || req.host().is_some(),
                "HTTP/1.1 needs Host"
            );
            assert!(req.headers().count() <= limits.max_headers);
            // The body: exactly Content-Length bytes, none without it.
            assert!(req.header("transfer-encoding").is_none());
            assert!(head <= len && len - head <= MAX_BODY_BYTES);
            assert_eq!(req.body(), &input[head..len]);
            match req.header("content-length") {
                Some(n) => assert_eq!(n.parse::<usize>(), Ok(len - head)),
                None => assert_eq!(len, head),
            }
            if len > head {
                assert_eq!(
                    parse(&input[..len - 1], 0, &limits),
                    Ok(Parsed::NeedBody { total: len })
                );
            }
            // RFC 9112 §9.3: HTTP/1.1 persists unless told to close.
            let close = req.headers().any(|(name, value)| {
                name.eq_ignore_ascii_case("connection")
                    && value
                        .split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("close"))
            });
            assert_eq!(req.keep_alive(), req.version == 1 && !close);
        }
        Ok(other) => panic!("unexpected verdict {other:?}"),
        Err(err) => {
            let response = Response::for_error(&err);
            let res = String::from_utf8(response.to_bytes()).unwrap();
            assert_eq!(res.as_bytes(), response.encode(true, false));
            assert!(res.starts_with(&format!("HTTP/1.1 {} ", err.status())));
            assert_eq!(res.matches("\r\nConnection: close\r\n").count(), 1);
            assert!(matches!(err.status(), 400 | 405 | 411 | 413 | 426 | 431));
            // Without the body: the same head, the same Content-Length.
            let head = String::from_utf8(response.encode(false, false)).unwrap();
            assert!(head.ends_with("\r\n\r\n"));
            assert_eq!(
                res.strip_suffix(std::str::from_utf8(&response.body).unwrap()),
                Some(head.as_str())
            );
            // Kept open: the same bytes but the Connection line.
            let open = String::from_utf8(response.encode(true, true)).unwrap();
            assert_eq!(open, res.replacen("Connection: close\r\n", "", 1));
        }
    }
});

/// The length of the head httparse reads from the front of `buf`, if
/// it is complete.
fn httparse_head_len(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    match httparse::Request::new(&mut headers).parse(buf) {
        Ok(httparse::Status::Complete(n)) => Some(n),
        _ => None,
    }
}

/// Forwarding headers are believed from a trusted proxy only, and then
/// give the address of the last entry of the last `X-Forwarded-For`, or
/// of `X-Real-IP` where that is configured.
fn check_client_addr(req: &Request<'_>) {
    let proxy = SocketAddr::from(([127, 0, 0, 1], 5000));
    let other: IpAddr = [10, 0, 0, 1].into();
    for real_ip in [false, true] {
        assert_eq!(req.client_addr(proxy, &[], real_ip), proxy);
        assert_eq!(req.client_addr(proxy, &[other], real_ip), proxy);
        let header = if real_ip {
            req.header("x-real-ip")
        } else {
            req.headers()
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
                .last()
                .and_then(|(_, v)| v.rsplit(',').next())
        };
        let forwarded = header.and_then(|ip| ip.trim().parse::<IpAddr>().ok());
        let want = forwarded.map_or(proxy, |ip| SocketAddr::new(ip, proxy.port()));
        assert_eq!(req.client_addr(proxy, &[other, proxy.ip()], real_ip), want);
    }
}
