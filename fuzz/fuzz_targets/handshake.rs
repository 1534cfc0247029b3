//! The upgrade parser fed in arbitrary chunks, as the server feeds it.
//!
//! The first byte sets the chunk size. Asserts: no panic; the verdict
//! reached chunk by chunk equals the verdict on all the bytes at once; an
//! error yields a well-formed response with its status and
//! `Connection: close`; an accepted upgrade yields a well-formed 101.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::handshake::{accept_response, head_complete, parse, HandshakeLimits, Parsed, Response};
use wsloop::HandshakeError;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let chunk = chunk as usize % 64 + 1;
    let limits = HandshakeLimits {
        max_header_bytes: 512,
        max_headers: 8,
    };
    let mut buf = Vec::new();
    let mut verdict = Ok(Parsed::Partial);
    for piece in input.chunks(chunk) {
        let from = buf.len();
        buf.extend_from_slice(piece);
        if !head_complete(&buf, from) && buf.len() <= limits.max_header_bytes {
            continue;
        }
        verdict = parse(&buf, &limits);
        if !matches!(verdict, Ok(Parsed::Partial)) {
            break;
        }
    }
    // Bytes after the head do not change the verdict, except that the
    // chunked reader may give up on size before the head ends.
    let early_size_refusal = matches!(verdict, Err(HandshakeError::HeadersTooLarge { .. }));
    if !matches!(verdict, Ok(Parsed::Partial)) && !early_size_refusal {
        assert_eq!(
            verdict,
            parse(input, &limits),
            "chunked and whole verdicts differ"
        );
    }
    match verdict {
        Ok(Parsed::Partial) => {
            assert!(buf.len() <= limits.max_header_bytes || head_complete(&buf, 0))
        }
        Ok(Parsed::Upgrade(req, len)) => {
            assert!(len <= buf.len());
            let key = req.key().expect("an upgrade has a key");
            let res = String::from_utf8(accept_response(key, None)).unwrap();
            assert!(res.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
            assert!(res.ends_with("\r\n\r\n"));
        }
        Ok(Parsed::Http(_, len)) => assert!(len <= buf.len()),
        Err(err) => {
            let res = String::from_utf8(Response::for_error(&err).to_bytes()).unwrap();
            assert!(res.starts_with(&format!("HTTP/1.1 {} ", err.status())));
            assert!(res.contains("\r\nConnection: close\r\n"));
            assert!(matches!(err.status(), 400 | 405 | 426 | 431));
        }
    }
});
