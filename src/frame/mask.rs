//! Masking and unmasking ([RFC 6455 §5.3]), in place, eight bytes at a time.
//!
//! The same XOR masks and unmasks. `offset` is how many payload bytes came
//! before `buf`, so a payload split across reads is unmasked piece by piece
//! with the key rotated to the right byte.
//!
//! [RFC 6455 §5.3]: https://www.rfc-editor.org/rfc/rfc6455#section-5.3

/// XORs `buf` with `key`, as if `buf` started `offset` bytes into the payload.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: u64) {
    let key = rotate(key, offset);
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // Both sides are eight bytes, so the conversion cannot fail.
        let bytes: &mut [u8; 8] = chunk.try_into().expect("chunk of 8");
        *bytes = (u64::from_ne_bytes(*bytes) ^ word).to_ne_bytes();
    }
    // The whole chunks covered a multiple of four bytes, so the key phase of
    // the remainder starts again at key[0].
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// The key as seen from `offset` bytes into the payload.
fn rotate(key: [u8; 4], offset: u64) -> [u8; 4] {
    let o = (offset & 3) as usize;
    [key[o], key[(o + 1) & 3], key[(o + 2) & 3], key[(o + 3) & 3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: u64) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[((offset + i as u64) & 3) as usize];
        }
    }

    #[test]
    fn matches_bytewise_for_every_length_and_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            for offset in 0..8u64 {
                let data: Vec<u8> = (0..len as u8).collect();
                let mut fast = data.clone();
                let mut slow = data.clone();
                apply_mask(&mut fast, key, offset);
                naive(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn split_unmask_equals_whole() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..=255).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        for cut in 0..data.len() {
            let mut split = data.clone();
            let (a, b) = split.split_at_mut(cut);
            apply_mask(a, key, 0);
            apply_mask(b, key, cut as u64);
            assert_eq!(split, whole, "cut at {cut}");
        }
    }

    #[test]
    fn the_largest_offset_rotates_like_its_low_two_bits() {
        // A frame's received count is the offset; only its phase matters.
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut at_max = *b"abcdefghijk";
        let mut at_three = at_max;
        apply_mask(&mut at_max, key, u64::MAX);
        naive(&mut at_three, key, 3);
        assert_eq!(at_max, at_three);
    }

    #[test]
    fn rfc_6455_masked_hello() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }
}
