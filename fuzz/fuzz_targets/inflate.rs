//! permessage-deflate's inflate path, on whatever a peer can send.
//!
//! The first byte chooses the size cap and the inflater's window; the rest
//! is a compressed message as it would arrive (tail removed). Inflating
//! must never panic nor pass the cap, must agree with zlib's own reading
//! of the whole stream, and must refuse nothing that reading accepts. The same bytes, taken as a
//! message and compressed by wsloop, must inflate back to themselves.
#![no_main]

use flate2::{Compress, Compression, Decompress, FlushDecompress, Status};
use libfuzzer_sys::fuzz_target;
use wsloop::deflate::{compress, inflate};
use wsloop::ProtocolError;

/// zlib on the whole message at once, with room for `max` + 1 bytes: the
/// reference reading. After a final block only the empty block's first
/// byte may follow (RFC 7692 §7.2.3.4); an empty payload is an empty
/// message.
fn reference(payload: &[u8], bits: u8, max: usize) -> Option<Vec<u8>> {
    if payload.is_empty() {
        return Some(Vec::new());
    }
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut d = Decompress::new_with_window_bits(false, bits);
    let mut out = Vec::with_capacity(max + 1);
    let status = d.decompress_vec(&input, &mut out, FlushDecompress::Sync).ok()?;
    if status == Status::StreamEnd {
        let rest = payload.get(d.total_in() as usize..).unwrap_or_default();
        if rest.len() > 1 || rest.first().is_some_and(|&b| b != 0) {
            return None;
        }
    }
    // Stopped early with input left and room left: zlib would want more.
    let stuck = status != Status::StreamEnd
        && (d.total_in() as usize) < input.len()
        && out.len() <= max;
    (!stuck).then_some(out)
}

fuzz_target!(|data: &[u8]| {
    let [params, payload @ ..] = data else { return };
    let max = [0, 1, 100, 4096, 1 << 16][usize::from(params & 7) % 5];
    let bits = 9 + (params >> 3) % 7;

    let mut inflater = Decompress::new_with_window_bits(false, bits);
    let mut out = Vec::new();
    match inflate(&mut inflater, payload, max, &mut out) {
        Ok(()) => {
            assert!(out.len() <= max, "{} bytes past the cap {max}", out.len());
            if let Some(want) = reference(payload, bits, max) {
                if want.len() <= max {
                    assert_eq!(out, want, "differs from zlib's reading");
                }
            }
        }
        Err(ProtocolError::InflatedTooLarge { .. }) => {
            assert!(out.capacity() <= 2 * max + 4096, "held {} for cap {max}", out.capacity());
        }
        Err(ProtocolError::InvalidCompressedData) => {
            let want = reference(payload, bits, max);
            assert!(
                want.as_ref().is_none_or(|w| w.len() > max),
                "refused what zlib reads: {want:?}"
            );
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }

    // The input as a message: compress, then inflate back.
    let level = u32::from(params >> 6) * 3;
    let mut deflater = Compress::new_with_window_bits(Compression::new(level), false, bits);
    let mut compressed = Vec::new();
    compress(&mut deflater, payload, &mut compressed);
    let mut back = Vec::new();
    let mut inflater = Decompress::new_with_window_bits(false, bits);
    inflate(&mut inflater, &compressed, payload.len(), &mut back).expect("our own output inflates");
    assert_eq!(back, payload);
});
