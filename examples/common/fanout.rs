//! Clients for the fan-out benchmarks: blocking upgrades, and one mio
//! poll that reads many subscribers at once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use wsloop::frame::{FrameHeader, OpCode, Role};

/// Opens a WebSocket on `path` with a blocking std socket, offering
/// permessage-deflate if `offer`.
pub fn open(addr: SocketAddr, path: &str, offer: bool) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let extensions = if offer {
        "Sec-WebSocket-Extensions: permessage-deflate\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("upgrade response");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "upgrade refused");
    let agreed = String::from_utf8_lossy(&head).contains("permessage-deflate");
    assert_eq!(agreed, offer, "permessage-deflate negotiated: {agreed}");
    stream
}

/// Reads every subscriber until each has `expect` data frames.
pub fn collect(subs: Vec<TcpStream>, expect: usize) {
    let mut poll = Poll::new().unwrap();
    let mut socks: Vec<(MioStream, Vec<u8>, usize)> = subs
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            s.set_nonblocking(true).unwrap();
            let mut m = MioStream::from_std(s);
            poll.registry()
                .register(&mut m, Token(i), Interest::READABLE)
                .unwrap();
            (m, Vec::new(), 0)
        })
        .collect();
    let mut done = 0;
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 64 * 1024];
    while done < socks.len() {
        poll.poll(&mut events, Some(Duration::from_secs(30)))
            .unwrap();
        assert!(!events.is_empty(), "no progress for 30 s");
        for event in events.iter() {
            let (sock, buf, got) = &mut socks[event.token().0];
            loop {
                match sock.read(&mut chunk) {
                    Ok(0) => panic!("subscriber closed early"),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            let before = *got;
            let mut at = 0;
            while let Some((h, n)) = FrameHeader::parse(&buf[at..], Role::Client).unwrap() {
                let end = at + n + h.payload_len as usize;
                if end > buf.len() {
                    break;
                }
                assert!(matches!(h.opcode, OpCode::Binary | OpCode::Text));
                *got += 1;
                at = end;
            }
            buf.drain(..at);
            if before < expect && *got >= expect {
                done += 1;
            }
        }
    }
}

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
