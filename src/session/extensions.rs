//! Extensions ([RFC 6455 §9]) as the session uses them: permessage-deflate
//! (RFC 7692), agreed at the upgrade; messages inflated on the way in and
//! compressed on the way out. Without the `deflate` feature nothing is
//! agreed, and RSV1 stays a protocol error. The codec is `crate::deflate`.
//!
//! [RFC 6455 §9]: https://www.rfc-editor.org/rfc/rfc6455#section-9

use super::Session;
#[cfg(feature = "deflate")]
use super::{open::Open, State};
use crate::config::Config;
use crate::error::ProtocolError;
use crate::frame::OpCode;
use crate::handshake::Request;
use crate::protocol::Event;
#[cfg(feature = "deflate")]
use crate::protocol::{Incoming, Outbox};

/// The extensions an accepted upgrade takes up: permessage-deflate, with
/// the feature, or none.
#[derive(Debug, Clone, Copy)]
pub(super) struct Agreed {
    #[cfg(feature = "deflate")]
    pub(super) deflate: Option<crate::deflate::Agreement>,
}

impl Agreed {
    pub(super) fn from_request(_req: &Request<'_>) -> Self {
        Agreed {
            #[cfg(feature = "deflate")]
            deflate: _req.deflate,
        }
    }

    /// The response's `Sec-WebSocket-Extensions` value, if any.
    pub(super) fn response(&self) -> Option<String> {
        #[cfg(feature = "deflate")]
        return self.deflate.map(|a| a.response());
        #[cfg(not(feature = "deflate"))]
        None
    }
}

/// The connection's deflate state and settings when a message of `len`
/// bytes is to be compressed: deflate is in force and the message is at
/// least `min_size` long.
#[cfg(feature = "deflate")]
pub(super) fn compressor<'a, D>(
    state: &'a mut State<D>,
    config: &'a Config,
    len: usize,
) -> Option<(
    &'a mut crate::deflate::Context,
    &'a crate::deflate::DeflateConfig,
)> {
    match (state, &config.deflate) {
        (
            State::Open(Open {
                deflate: Some(deflate),
                ..
            }),
            Some(settings),
        ) if len >= settings.min_size => Some((deflate, settings)),
        _ => None,
    }
}

/// Compresses a message with the connection's context and queues the
/// frame; `false`, with nothing queued, if it is to go plain.
#[cfg(feature = "deflate")]
pub(super) fn push_deflated(
    out: &mut Outbox,
    deflate: &mut crate::deflate::Context,
    settings: &crate::deflate::DeflateConfig,
    opcode: OpCode,
    payload: &[u8],
) -> bool {
    crate::deflate::with_scratch(|compressed| {
        if !deflate.compress(settings, payload, compressed) {
            return false;
        }
        out.push_frame(true, opcode, compressed);
        true
    })
}

/// Settles permessage-deflate before the application sees the request.
#[cfg(feature = "deflate")]
pub(super) fn negotiate_deflate<'a>(mut req: Request<'a>, config: &Config) -> Request<'a> {
    if let Some(deflate) = &config.deflate {
        req.deflate = crate::deflate::negotiate(req.deflate_offers(), deflate);
    }
    req
}

impl<D> Session<D> {
    /// Inflates a compressed message ([RFC 7692 §7.2.2]) into a gathered
    /// one, its size capped and its text checked. After our close frame
    /// it is discarded unread, as any message is.
    ///
    /// [RFC 7692 §7.2.2]: https://www.rfc-editor.org/rfc/rfc7692#section-7.2.2
    #[cfg(feature = "deflate")]
    pub(super) fn inflate(
        &mut self,
        config: &Config,
        text: bool,
        payload: &[u8],
    ) -> Result<Option<Event<'static>>, ProtocolError> {
        let State::Open(Open {
            deflate: Some(deflate),
            ..
        }) = &mut self.state
        else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        deflate.inflate(payload, config.limits.max_message_size, &mut bytes)?;
        let incoming = if text {
            Incoming::GatheredText(
                String::from_utf8(bytes).map_err(|_| ProtocolError::InvalidUtf8)?,
            )
        } else {
            Incoming::GatheredBinary(bytes)
        };
        Ok(Some(Event::Message(incoming)))
    }

    /// Without the feature the reader never lets RSV1 through.
    #[cfg(not(feature = "deflate"))]
    pub(super) fn inflate(
        &mut self,
        _config: &Config,
        _text: bool,
        _payload: &[u8],
    ) -> Result<Option<Event<'static>>, ProtocolError> {
        Err(ProtocolError::ReservedBitsSet)
    }

    /// Queues `msg` compressed if deflate is in force and it is worth it;
    /// `false` if it must go plain.
    #[cfg(feature = "deflate")]
    pub(super) fn push_compressed(
        &mut self,
        config: &Config,
        opcode: OpCode,
        payload: &[u8],
    ) -> bool {
        compressor(&mut self.state, config, payload.len()).is_some_and(|(deflate, settings)| {
            push_deflated(&mut self.out, deflate, settings, opcode, payload)
        })
    }

    #[cfg(not(feature = "deflate"))]
    pub(super) fn push_compressed(
        &mut self,
        _config: &Config,
        _opcode: OpCode,
        _payload: &[u8],
    ) -> bool {
        false
    }
}

#[cfg(all(test, feature = "deflate"))]
mod tests {
    use flate2::{Compress, Compression, Decompress};

    use super::*;
    use crate::deflate::{self, DeflateConfig};
    use crate::protocol::{encode_frame, Message, SharedFrame};
    use crate::session::test_util::{
        close_frame, feed, frames, masked, ms, peer, written, UPGRADE,
    };
    use crate::session::SendStatus;

    const OFFER: &str =
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

    fn upgrade_with(extensions: &str) -> Vec<u8> {
        let head = std::str::from_utf8(UPGRADE).unwrap();
        head.replace("\r\n\r\n", &format!("\r\n{extensions}"))
            .into_bytes()
    }

    fn lean() -> Config {
        Config::default().deflate(Some(DeflateConfig::default().min_size(64)))
    }

    /// A masked client frame with RSV1, holding `text` compressed.
    fn compressed_frame(text: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        deflate::compress(
            &mut Compress::new(Compression::new(6), false),
            text,
            &mut payload,
        );
        let mut frame = masked(OpCode::Text, &payload);
        frame[0] |= 0x40;
        frame
    }

    fn open_with(config: &Config, extensions: &str) -> (Session<u32>, String) {
        let mut s = Session::new(ms(0), peer());
        assert_eq!(
            feed(&mut s, ms(0), config, &upgrade_with(extensions)),
            ["open"]
        );
        let response = String::from_utf8(written(&mut s)).unwrap();
        (s, response)
    }

    #[test]
    fn the_agreement_is_answered_and_messages_flow_both_ways() {
        let config = lean();
        let (mut s, response) = open_with(&config, OFFER);
        assert!(response.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        ));
        let text = "hello hello hello hello hello hello hello hello hello hello hello".repeat(3);
        // In: two compressed messages, each a stream of its own, then a plain one.
        let mut input = compressed_frame(text.as_bytes());
        input.extend(compressed_frame(b"short"));
        input.extend(masked(OpCode::Text, b"plain"));
        assert_eq!(
            feed(&mut s, ms(1), &config, &input),
            [
                format!("Text({text:?})"),
                "Text(\"short\")".into(),
                "Text(\"plain\")".into()
            ]
        );
        // Out: long messages compressed (RSV1), short ones plain.
        assert_eq!(
            s.send(ms(1), &config, Message::Text(&text)),
            SendStatus::Queued
        );
        assert_eq!(
            s.send(ms(1), &config, Message::Text("hi")),
            SendStatus::Queued
        );
        assert_eq!(
            s.send_uncompressed(ms(1), &config, Message::Text(&text)),
            SendStatus::Queued
        );
        let out = written(&mut s);
        assert_eq!(out[0], 0xC1, "FIN, RSV1, text");
        let n = 2 + usize::from(out[1] & 0x7f);
        assert!(n - 2 < text.len() / 4, "compressed to {}", n - 2);
        let mut back = Vec::new();
        let mut inflater = Decompress::new(false);
        deflate::inflate(&mut inflater, &out[2..n], 1 << 20, &mut back).unwrap();
        assert_eq!(back, text.as_bytes());
        let rest = frames(&out[n..]);
        assert_eq!(
            rest,
            [
                (OpCode::Text, b"hi".to_vec()),
                (OpCode::Text, text.clone().into_bytes())
            ]
        );
        assert_eq!(out[n] & 0x40, 0, "plain frames have no RSV1");
    }

    #[test]
    fn a_compressed_message_in_fragments_is_read_across_every_split() {
        let config = lean();
        let text = "fragments of one compressed message, split anywhere at all; ".repeat(6);
        let mut compressed = Vec::new();
        deflate::compress(
            &mut Compress::new(Compression::new(6), false),
            text.as_bytes(),
            &mut compressed,
        );
        // Three frames: RSV1 on the first only.
        let thirds = [&compressed[..10], &compressed[10..30], &compressed[30..]];
        let mut input = Vec::new();
        for (i, part) in thirds.iter().enumerate() {
            let op = if i == 0 {
                OpCode::Text
            } else {
                OpCode::Continuation
            };
            let mut frame = Vec::new();
            encode_frame(&mut frame, i == 2, op, Some([9, 8, 7, 6]), part);
            if i == 0 {
                frame[0] |= 0x40;
            }
            input.extend(frame);
        }
        let want = [format!("Text({text:?})")];
        for cut in 0..=input.len() {
            let (mut s, _) = open_with(&config, OFFER);
            let mut got = feed(&mut s, ms(1), &config, &input[..cut]);
            got.extend(feed(&mut s, ms(1), &config, &input[cut..]));
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    #[test]
    fn without_an_agreement_rsv1_is_a_protocol_error() {
        // Deflate on, but the client offered nothing.
        let (mut s, response) = open_with(&lean(), "\r\n");
        assert!(!response.contains("Sec-WebSocket-Extensions"));
        let got = feed(&mut s, ms(1), &lean(), &compressed_frame(b"hi"));
        assert_eq!(
            got,
            ["error: protocol error: reserved bits set with no extension negotiated"]
        );
        assert_eq!(
            frames(&written(&mut s)),
            [close_frame(
                1002,
                "reserved bits set with no extension negotiated"
            )]
        );
        // Deflate off: the offer is declined.
        let (_, response) = open_with(&Config::default(), OFFER);
        assert!(!response.contains("Sec-WebSocket-Extensions"));
    }

    #[test]
    fn bombs_close_with_1009_and_garbage_with_1007() {
        let config = lean().limits(crate::Limits::default().max_message_size(4096));
        let (mut s, _) = open_with(&config, OFFER);
        let mut bomb = Vec::new();
        deflate::compress(
            &mut Compress::new(Compression::best(), false),
            &[b'a'; 100_000],
            &mut bomb,
        );
        let mut frame = masked(OpCode::Binary, &bomb);
        frame[0] |= 0x40;
        assert!(frame.len() < 4096);
        let got = feed(&mut s, ms(1), &config, &frame);
        assert_eq!(
            got,
            ["error: protocol error: compressed message inflates to over the 4096-byte limit"]
        );
        assert_eq!(frames(&written(&mut s))[0].1[..2], 1009u16.to_be_bytes());

        let (mut s, _) = open_with(&config, OFFER);
        let mut frame = masked(OpCode::Binary, &[0xff, 0xff, 0xff]);
        frame[0] |= 0x40;
        let got = feed(&mut s, ms(1), &config, &frame);
        assert_eq!(
            got,
            ["error: protocol error: compressed message is not valid DEFLATE data"]
        );
        assert_eq!(frames(&written(&mut s))[0].1[..2], 1007u16.to_be_bytes());

        // Valid DEFLATE, invalid UTF-8 once inflated.
        let (mut s, _) = open_with(&config, OFFER);
        let got = feed(
            &mut s,
            ms(1),
            &config,
            &compressed_frame(b"\xff\xfe not text"),
        );
        assert_eq!(got, ["error: protocol error: text is not valid UTF-8"]);
    }

    #[test]
    fn context_takeover_keeps_each_direction_s_window() {
        let config = Config::default().deflate(Some(
            DeflateConfig::default()
                .min_size(64)
                .server_context_takeover(true)
                .client_context_takeover(true),
        ));
        let (mut s, response) = open_with(&config, OFFER);
        assert!(response.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\n"
        ));
        // The client's second message refers back into its first.
        let mut client = Compress::new(Compression::new(6), false);
        let line = b"the quick brown fox jumps over the lazy dog, again and again and again";
        let mut input = Vec::new();
        for _ in 0..2 {
            let mut payload = Vec::new();
            deflate::compress(&mut client, line, &mut payload);
            let mut frame = masked(OpCode::Text, &payload);
            frame[0] |= 0x40;
            input.extend(frame);
        }
        let want = format!("Text({:?})", std::str::from_utf8(line).unwrap());
        assert_eq!(feed(&mut s, ms(1), &config, &input), [want.clone(), want]);
        // Our second copy is smaller: it refers back into the first.
        for _ in 0..2 {
            assert_eq!(
                s.send(ms(1), &config, Message::Binary(line)),
                SendStatus::Queued
            );
        }
        let out = written(&mut s);
        let first = 2 + usize::from(out[1] & 0x7f);
        let second = &out[first..];
        assert!(second.len() < first / 2, "{} then {}", first, second.len());
        let mut inflater = Decompress::new(false);
        for payload in [&out[2..first], &second[2..]] {
            let mut back = Vec::new();
            deflate::inflate(&mut inflater, payload, 1 << 20, &mut back).unwrap();
            assert_eq!(back, line);
        }
    }

    #[test]
    fn a_broadcast_is_compressed_once_for_every_lean_subscriber() {
        let config = lean();
        let text = "everyone: the meeting moved to room 4, see you there at noon".repeat(4);
        let mut shared = SharedFrame::encode(Message::Text(&text));
        let (mut a, _) = open_with(&config, OFFER);
        let (mut b, _) = open_with(&config, OFFER);
        let (mut plain, _) = open_with(&config, "\r\n");
        for s in [&mut a, &mut b, &mut plain] {
            assert_eq!(
                s.send_shared(ms(1), &config, &mut shared),
                SendStatus::Queued
            );
        }
        // One compressed frame was made, and both queues hold it.
        let made = shared
            .deflated(15, config.deflate.as_ref().unwrap())
            .unwrap();
        assert_eq!(std::sync::Arc::strong_count(&made), 4);
        let (a, b, plain) = (written(&mut a), written(&mut b), written(&mut plain));
        assert_eq!(a, b);
        assert_eq!(a[0], 0xC1);
        assert!(a.len() < text.len() / 3);
        assert_eq!(frames(&plain), [(OpCode::Text, text.into_bytes())]);
    }
}
