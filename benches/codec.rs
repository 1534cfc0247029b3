//! Micro-benchmarks of the hot paths, in bytes per second where that makes
//! sense: header parse, unmasking (beside a memcpy of the same size, the
//! ceiling), UTF-8 validation, and handshake parse plus accept key.
//!
//! ```text
//! cargo bench --bench codec
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsloop::frame::{apply_mask, FrameHeader, Role};
use wsloop::handshake::{parse, HandshakeLimits, Parsed};
use wsloop::utf8::Utf8Validator;

fn header_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("header_parse");
    let cases: [(&str, &[u8]); 3] = [
        ("7-bit", &[0x81, 0x85, 1, 2, 3, 4]),
        ("16-bit", &[0x82, 0xFE, 0x40, 0x00, 1, 2, 3, 4]),
        ("64-bit", &[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4]),
    ];
    for (name, bytes) in cases {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| FrameHeader::parse(black_box(bytes), Role::Server))
        });
    }
    group.finish();
}

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in [20usize, 1024, 16 * 1024, 1 << 20] {
        let mut buf = vec![0xA5u8; size];
        let src = vec![0x5Au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("apply_mask", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4], 1))
        });
        group.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| black_box(&mut buf).copy_from_slice(black_box(&src)))
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    let ascii = "websocket ".repeat(1640).into_bytes();
    let mixed = "κόσμε wsloop ✓ ".repeat(800).into_bytes();
    for (name, text) in [("ascii-16k", &ascii), ("mixed-16k", &mixed)] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(BenchmarkId::new("whole", name), |b| {
            b.iter(|| std::str::from_utf8(black_box(text)).is_ok())
        });
        group.bench_function(BenchmarkId::new("in-1k-pieces", name), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                for piece in black_box(text).chunks(1000) {
                    v.feed(piece).unwrap();
                }
                v.finish().is_ok()
            })
        });
    }
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let request = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Version: 13\r\nUser-Agent: bench\r\n\r\n";
    let limits = HandshakeLimits::default();
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse+accept_key", |b| {
        b.iter(|| match parse(black_box(request), 0, &limits) {
            Ok(Parsed::Upgrade(req, _)) => req.accept_key().unwrap(),
            _ => unreachable!(),
        })
    });
    group.finish();
}

criterion_group!(benches, header_parse, unmask, utf8, handshake);
criterion_main!(benches);
