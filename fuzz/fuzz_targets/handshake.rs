//! The upgrade parser fed in arbitrary chunks, as the server feeds it.
//!
//! The first byte sets the chunk size. Asserts: no panic; the verdict
//! reached chunk by chunk (telling `parse` how much it had already
//! scanned) equals the verdict on all the bytes at once, size refusals
//! included; a verdict's head ends with its blank line within the limit;
//! an error yields a well-formed response with its status and
//! `Connection: close`; an accepted upgrade is a GET over HTTP/1.1 whose
//! accept key matches its `Sec-WebSocket-Key`, and yields a well-formed
//! 101; a parsed request's client address ignores forwarding headers
//! unless the peer is a trusted proxy.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use wsloop::handshake::{
    accept_response, parse, AcceptKey, HandshakeLimits, Parsed, Request, Response,
};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let chunk = chunk as usize % 64 + 1;
    let limits = HandshakeLimits::default()
        .max_header_bytes(512)
        .max_headers(8);
    let mut buf = Vec::new();
    let mut verdict = Ok(Parsed::Partial);
    for piece in input.chunks(chunk) {
        // Bytes already searched for the blank line, without finding it.
        let scanned = buf.len();
        buf.extend_from_slice(piece);
        verdict = parse(&buf, scanned, &limits);
        if !matches!(verdict, Ok(Parsed::Partial)) {
            break;
        }
    }
    // Bytes after the head do not change the verdict, and the size limit
    // is the same whether the head came whole or in pieces.
    assert_eq!(
        verdict,
        parse(input, 0, &limits),
        "chunked and whole verdicts differ"
    );
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4);
    match verdict {
        Ok(Parsed::Partial) => {
            assert!(head_end.is_none(), "a complete head left unparsed");
            assert!(buf.len() <= limits.max_header_bytes);
        }
        Ok(Parsed::Upgrade(req, len)) => {
            check_client_addr(&req);
            assert_eq!(Some(len), head_end);
            assert!(len <= limits.max_header_bytes);
            assert!(req.is_upgrade());
            assert_eq!((req.method, req.version), ("GET", 1));
            assert!(req.headers().count() <= limits.max_headers);
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
            assert_eq!(Some(len), head_end);
            assert!(len <= limits.max_header_bytes);
            assert!(!req.is_upgrade() && req.accept_key().is_none());
            assert!(
                req.version == 0 || req.host().is_some(),
                "HTTP/1.1 needs Host"
            );
            assert!(req.headers().count() <= limits.max_headers);
        }
        Ok(other) => panic!("unexpected verdict {other:?}"),
        Err(err) => {
            let response = Response::for_error(&err);
            let res = String::from_utf8(response.to_bytes()).unwrap();
            assert!(res.starts_with(&format!("HTTP/1.1 {} ", err.status())));
            assert!(res.contains("\r\nConnection: close\r\n"));
            assert!(matches!(err.status(), 400 | 405 | 426 | 431));
            // Without the body: the same head, the same Content-Length.
            let head = String::from_utf8(response.encode(false)).unwrap();
            assert!(head.ends_with("\r\n\r\n"));
            assert_eq!(
                res.strip_suffix(std::str::from_utf8(&response.body).unwrap()),
                Some(head.as_str())
            );
        }
    }
});

/// Forwarding headers are believed from a trusted proxy only, and then
/// give the address of `X-Real-IP`, else the last of `X-Forwarded-For`.
fn check_client_addr(req: &Request<'_>) {
    let proxy = SocketAddr::from(([127, 0, 0, 1], 5000));
    assert_eq!(req.client_addr(proxy, &[]), proxy);
    let other: IpAddr = [10, 0, 0, 1].into();
    assert_eq!(req.client_addr(proxy, &[other]), proxy);
    let forwarded = req
        .header("x-real-ip")
        .or_else(|| req.header("x-forwarded-for")?.rsplit(',').next())
        .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
    let want = forwarded.map_or(proxy, |ip| SocketAddr::new(ip, proxy.port()));
    assert_eq!(req.client_addr(proxy, &[other, proxy.ip()]), want);
}
