//! An incremental UTF-8 validator that fails at the first invalid byte.
//!
//! A text message arrives in pieces: frames, and reads within a frame. The
//! validator keeps at most three bytes of an unfinished code point between
//! pieces, so an invalid sequence is caught in the piece where it appears,
//! not when the message ends (Autobahn 6.4.x). Validation of whole pieces is
//! left to `std::str::from_utf8`, which is vectorised.

use std::str;

/// The offset, counted from the first byte ever fed, of the sequence that
/// made the input invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error {
    /// Bytes before the invalid sequence; equal to `valid_up_to` of
    /// `std::str::from_utf8` on the whole input.
    pub valid_up_to: u64,
}

/// Validator state: the bytes of an unfinished code point and the count of
/// bytes fed so far.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    partial: [u8; 4],
    partial_len: u8,
    fed: u64,
}

impl Utf8Validator {
    /// A validator at the start of a text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next piece. An error means no continuation can make the
    /// text valid.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), Utf8Error> {
        let start = self.fed;
        self.fed += input.len() as u64;
        let mut at = start;
        if self.partial_len > 0 {
            let held = self.partial_len as u64;
            // Complete the held code point one byte at a time.
            while let Some((&byte, rest)) = input.split_first() {
                self.partial[self.partial_len as usize] = byte;
                self.partial_len += 1;
                input = rest;
                at += 1;
                match str::from_utf8(&self.partial[..self.partial_len as usize]) {
                    Ok(_) => {
                        self.partial_len = 0;
                        break;
                    }
                    Err(e) if e.error_len().is_some() => {
                        return Err(Utf8Error {
                            valid_up_to: start - held,
                        })
                    }
                    Err(_) => {}
                }
            }
            if self.partial_len > 0 {
                return Ok(());
            }
        }
        match str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) => {
                let valid = e.valid_up_to();
                if e.error_len().is_some() {
                    return Err(Utf8Error {
                        valid_up_to: at + valid as u64,
                    });
                }
                // An unfinished but so far valid code point ends the piece.
                let tail = &input[valid..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Whether no bytes of an unfinished code point are held.
    pub fn is_clean(&self) -> bool {
        self.partial_len == 0
    }

    /// Ends the text: an unfinished code point is an error. The validator
    /// is reset for the next text either way.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let held = self.partial_len as u64;
        let fed = self.fed;
        *self = Self::default();
        if held > 0 {
            return Err(Utf8Error {
                valid_up_to: fed - held,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(pieces: &[&[u8]]) -> Result<(), Utf8Error> {
        let mut v = Utf8Validator::new();
        for piece in pieces {
            v.feed(piece)?;
        }
        v.finish()
    }

    fn std_verdict(bytes: &[u8]) -> Result<(), Utf8Error> {
        str::from_utf8(bytes).map(|_| ()).map_err(|e| Utf8Error {
            valid_up_to: e.valid_up_to() as u64,
        })
    }

    #[test]
    fn agrees_with_std_at_every_split() {
        let samples: &[&[u8]] = &[
            "κόσμε".as_bytes(),
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
            b"\xf4\x90\x80\x80",
            b"\xf0\x9f\x98\x80\xf0\x9f",
            b"\xc0\xaf",
            b"abc\xff",
            b"\xe2\x82",
            b"",
        ];
        for bytes in samples {
            let want = std_verdict(bytes);
            assert_eq!(verdict(&[bytes]), want, "{bytes:x?}");
            for a in 0..=bytes.len() {
                for b in a..=bytes.len() {
                    let got = verdict(&[&bytes[..a], &bytes[a..b], &bytes[b..]]);
                    assert_eq!(got, want, "{bytes:x?} split {a} {b}");
                }
            }
        }
    }

    #[test]
    fn fails_at_the_first_invalid_byte_not_at_the_end() {
        let mut v = Utf8Validator::new();
        let lead = "κόσμε".len() as u64;
        v.feed("κόσμε".as_bytes()).unwrap();
        // 0xED 0xA0 starts a UTF-16 surrogate: invalid as soon as 0xA0 arrives.
        v.feed(&[0xce, 0xba, 0xed]).unwrap();
        assert_eq!(
            v.feed(&[0xa0]),
            Err(Utf8Error {
                valid_up_to: lead + 2
            })
        );
    }

    #[test]
    fn unfinished_code_point_fails_at_finish() {
        let mut v = Utf8Validator::new();
        v.feed(&[b'a', 0xe2, 0x82]).unwrap();
        assert!(!v.is_clean());
        assert_eq!(v.finish(), Err(Utf8Error { valid_up_to: 1 }));
        assert!(v.is_clean());
    }
}
