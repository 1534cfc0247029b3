//! Frame header parse and encode ([RFC 6455 §5.2]).
//!
//! [RFC 6455 §5.2]: https://www.rfc-editor.org/rfc/rfc6455#section-5.2

use super::OpCode;
use crate::error::ProtocolError;

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const RSV23: u8 = 0x30;
const OPCODE: u8 = 0x0F;
const MASKED: u8 = 0x80;
const LEN7: u8 = 0x7F;
const LEN16: u8 = 126;
const LEN64: u8 = 127;

/// The longest header: 2 bytes, an 8-byte length and a 4-byte mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// Which end of the connection this codec speaks for. A server reads masked
/// frames and writes unmasked ones; a client does the reverse ([§5.1]).
///
/// [§5.1]: https://www.rfc-editor.org/rfc/rfc6455#section-5.1
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads client frames, which must be masked.
    Server,
    /// Reads server frames, which must not be masked.
    Client,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The final fragment of a message.
    pub fin: bool,
    /// RSV1: with permessage-deflate, set on the first frame of a
    /// compressed message ([RFC 7692 §6]). An error unless negotiated.
    ///
    /// [RFC 7692 §6]: https://www.rfc-editor.org/rfc/rfc7692#section-6
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes: below 2^63 once parsed, but checked
    /// against no limit, so not known to fit a `usize` (32 bits on some
    /// targets) until a reader has compared it with one.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parses a header from the front of `buf` as read by `role`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a header; nothing is
    /// consumed then. On success returns the header and its length in bytes.
    pub fn parse(buf: &[u8], role: Role) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        // RFC 6455 §5.2: RSV bits MUST be 0 unless an extension defines
        // them. RSV1 is left to the reader, which knows whether
        // permessage-deflate (RFC 7692) gave it a meaning; no extension
        // here defines RSV2 or RSV3.
        if b0 & RSV23 != 0 {
            return Err(ProtocolError::ReservedBitsSet);
        }
        let rsv1 = b0 & RSV1 != 0;
        let fin = b0 & FIN != 0;
        let opcode = OpCode::from_u8(b0 & OPCODE)?;
        let masked = b1 & MASKED != 0;
        let len7 = b1 & LEN7;
        if opcode.is_control() {
            // §5.5: control frames MUST NOT be fragmented and carry at most 125 bytes.
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if len7 > 125 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        }
        match (role, masked) {
            // §5.1: a server MUST close on an unmasked client frame, and a
            // client on a masked server frame.
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
            _ => {}
        }
        let len_bytes = match len7 {
            LEN16 => 2,
            LEN64 => 8,
            _ => 0,
        };
        let header_len = 2 + len_bytes + if masked { 4 } else { 0 };
        if buf.len() < header_len {
            return Ok(None);
        }
        let payload_len = match len7 {
            LEN16 => {
                let len = u16::from_be_bytes([buf[2], buf[3]]) as u64;
                // §5.2: the minimal number of bytes MUST be used.
                if len < 126 {
                    return Err(ProtocolError::InvalidLength);
                }
                len
            }
            LEN64 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(be);
                // §5.2: the most significant bit MUST be 0.
                if len >> 63 != 0 || len <= u16::MAX as u64 {
                    return Err(ProtocolError::InvalidLength);
                }
                len
            }
            short => short as u64,
        };
        let mask = masked.then(|| {
            let at = 2 + len_bytes;
            [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]
        });
        Ok(Some((
            FrameHeader {
                fin,
                rsv1,
                opcode,
                mask,
                payload_len,
            },
            header_len,
        )))
    }

    /// Writes the header into `out` and returns how many bytes it took.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] =
            if self.fin { FIN } else { 0 } | if self.rsv1 { RSV1 } else { 0 } | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { MASKED } else { 0 };
        let mut at = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xFFFF => {
                out[1] = mask_bit | LEN16;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | LEN64;
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all_splits(
        bytes: &[u8],
        role: Role,
    ) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let whole = FrameHeader::parse(bytes, role);
        if let Ok(Some((_, n))) = whole {
            for cut in 0..n {
                assert_eq!(
                    FrameHeader::parse(&bytes[..cut], role),
                    Ok(None),
                    "prefix {cut}"
                );
            }
        }
        whole
    }

    #[test]
    fn rfc_6455_examples() {
        // §5.7: unmasked "Hello", as a client reads it.
        let (h, n) = parse_all_splits(&[0x81, 0x05, b'H', b'e', b'l', b'l', b'o'], Role::Client)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.payload_len, h.mask, n),
            (true, OpCode::Text, 5, None, 2)
        );
        // §5.7: masked "Hello", as a server reads it.
        let (h, n) = parse_all_splits(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f], Role::Server)
            .unwrap()
            .unwrap();
        assert_eq!((h.mask, n), (Some([0x37, 0xfa, 0x21, 0x3d]), 6));
        // §5.7: first fragment of an unmasked text message.
        let (h, _) = parse_all_splits(&[0x01, 0x03], Role::Client)
            .unwrap()
            .unwrap();
        assert!(!h.fin);
        // §5.7: 256 bytes binary in a 16-bit length, and 64 KiB in a 64-bit one.
        let (h, n) = parse_all_splits(&[0x82, 0x7E, 0x01, 0x00], Role::Client)
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (256, 4));
        let bytes = [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0];
        let (h, n) = parse_all_splits(&bytes, Role::Client).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn encode_then_parse_round_trips() {
        for len in [0u64, 1, 125, 126, 127, 0xFFFF, 0x10000, 1 << 40] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let header = FrameHeader {
                    fin: len % 2 == 0,
                    rsv1: len % 3 == 0,
                    opcode: OpCode::Binary,
                    mask,
                    payload_len: len,
                };
                let mut out = [0u8; MAX_HEADER_LEN];
                let n = header.encode(&mut out);
                let role = if mask.is_some() {
                    Role::Server
                } else {
                    Role::Client
                };
                assert_eq!(parse_all_splits(&out[..n], role), Ok(Some((header, n))));
            }
        }
    }

    #[test]
    fn rejects_protocol_violations() {
        use ProtocolError::*;
        let cases: &[(&[u8], Role, ProtocolError)] = &[
            (&[0xA1, 0x80], Role::Server, ReservedBitsSet),
            (&[0x91, 0x80], Role::Server, ReservedBitsSet),
            (&[0x83, 0x80], Role::Server, InvalidOpCode(3)),
            (&[0x8B, 0x80], Role::Server, InvalidOpCode(0xB)),
            (&[0x09, 0x80], Role::Server, FragmentedControlFrame),
            (&[0x89, 0xFE], Role::Server, ControlFrameTooLong),
            (&[0x81, 0x05], Role::Server, UnmaskedClientFrame),
            (&[0x81, 0x85], Role::Client, MaskedServerFrame),
            (&[0x82, 0x7E, 0x00, 0x7D], Role::Client, InvalidLength),
            (
                &[0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF],
                Role::Client,
                InvalidLength,
            ),
            (
                &[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0],
                Role::Client,
                InvalidLength,
            ),
        ];
        for (bytes, role, want) in cases {
            assert_eq!(
                FrameHeader::parse(bytes, *role),
                Err(want.clone()),
                "{bytes:x?}"
            );
        }
    }

    #[test]
    fn extreme_64_bit_lengths() {
        // §5.2: the top bit MUST be 0, so u64::MAX and 2^63 are refused,
        // and 2^63 - 1 is the largest length a peer can declare.
        for top in [u64::MAX, 1 << 63] {
            let mut bytes = vec![0x82, 0x7F];
            bytes.extend(top.to_be_bytes());
            assert_eq!(
                parse_all_splits(&bytes, Role::Client),
                Err(ProtocolError::InvalidLength)
            );
        }
        let mut bytes = vec![0x82, 0xFF];
        bytes.extend((i64::MAX as u64).to_be_bytes());
        bytes.extend([1, 2, 3, 4]);
        let (h, n) = parse_all_splits(&bytes, Role::Server).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (i64::MAX as u64, MAX_HEADER_LEN));
    }
}
