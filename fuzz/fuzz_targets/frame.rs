//! Frame header parse and encode, both roles, and unmasking.
//!
//! Asserts: no panic; a parsed header consumed at most the input and at
//! most 14 bytes; re-encoding it gives back exactly the bytes consumed
//! (parse accepts only minimal encodings); every shorter prefix is
//! "incomplete"; unmasking split at any offset equals unmasking whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::frame::{apply_mask, FrameHeader, Role, MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let role = if selector & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let Ok(Some((header, n))) = FrameHeader::parse(data, role) else {
        return;
    };
    assert!(n <= data.len() && n <= MAX_HEADER_LEN);
    let mut encoded = [0u8; MAX_HEADER_LEN];
    let len = header.encode(&mut encoded);
    assert_eq!(&encoded[..len], &data[..n], "re-encoding differs");
    for cut in 0..n {
        assert_eq!(
            FrameHeader::parse(&data[..cut], role),
            Ok(None),
            "prefix {cut}"
        );
    }
    if let Some(key) = header.mask {
        let payload = &data[n..];
        let mut whole = payload.to_vec();
        apply_mask(&mut whole, key, 0);
        let cut = (selector as usize >> 1).min(payload.len());
        let mut split = payload.to_vec();
        let (a, b) = split.split_at_mut(cut);
        apply_mask(a, key, 0);
        apply_mask(b, key, cut as u64);
        assert_eq!(whole, split);
        for (i, (&m, &p)) in whole.iter().zip(payload).enumerate() {
            assert_eq!(m, p ^ key[i % 4]);
        }
    }
});
