//! permessage-deflate (RFC 7692), pure: the offer in
//! `Sec-WebSocket-Extensions`, the agreement we answer, and the codec.
//!
//! # Memory: one compressor per thread, not per connection
//! A DEFLATE compressor with a 32 KiB window costs a few hundred KiB, and
//! an inflater tens of KiB. Kept per connection, as most servers keep them,
//! that dwarfs the 100 bytes an idle wsloop connection costs. The default
//! agreement avoids that:
//! - `server_no_context_takeover`: we start every message from an empty
//!   window, so one compressor can serve every connection of a thread and
//!   is reset after each message.
//! - `client_no_context_takeover`: [RFC 7692 §7.1.1.2] lets a server put it
//!   in its response whether or not the offer had it, and a client that
//!   accepts the extension must then honour it. Each incoming message is
//!   then a stream of its own, so one inflater per thread serves too.
//!
//! Since a worker is one thread, "per thread" is "per worker": the shared
//! codec is a thread-local, reached only from `Context`. A connection
//! that negotiated deflate holds a `Context` of a few bytes, plus its own
//! compressor or inflater only where [`DeflateConfig`] allows context
//! takeover, which trades that memory for a better ratio.
//!
//! # Messages, not frames
//! A compressed message is inflated whole, once its last frame is in: the
//! frame reader gathers the compressed bytes as it gathers any fragmented
//! message. So no inflater state is held between reads, and a message
//! cannot be half-inflated by a shared inflater when another connection's
//! message comes in. The inflated size is checked as it grows.
//!
//! [RFC 7692 §7.1.1.2]: https://www.rfc-editor.org/rfc/rfc7692#section-7.1.1.2

use std::cell::RefCell;
use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::ProtocolError;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const NAME: &str = "permessage-deflate";

/// The bytes a sync flush ends with, removed by the sender and put back by
/// the receiver ([RFC 7692 §7.2.1], [§7.2.2]).
///
/// [RFC 7692 §7.2.1]: https://www.rfc-editor.org/rfc/rfc7692#section-7.2.1
/// [§7.2.2]: https://www.rfc-editor.org/rfc/rfc7692#section-7.2.2
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The window sizes zlib can compress with, as bits: a 256-byte window
/// (8 bits) is not supported for raw DEFLATE.
const MIN_WINDOW_BITS: u8 = 9;
const MAX_WINDOW_BITS: u8 = 15;

/// How many window sizes a thread or a broadcast keeps a compressor or a
/// frame for, one each.
pub(crate) const WINDOW_SIZES: usize = (MAX_WINDOW_BITS - MIN_WINDOW_BITS + 1) as usize;

/// The place of a window size among the `WINDOW_SIZES`.
pub(crate) fn window_slot(bits: u8) -> usize {
    usize::from(bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS) - MIN_WINDOW_BITS)
}

/// A raw-DEFLATE compressor (no zlib header) at `level` with a window of
/// `bits`.
fn deflater(level: u32, bits: u8) -> Compress {
    Compress::new_with_window_bits(Compression::new(level), false, bits)
}

/// How the server takes up permessage-deflate, in
/// [`Config::deflate`](crate::Config::deflate). The default is the lean
/// mode: no context kept between messages in either direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Keep our compressor's window from one message to the next: a better
    /// ratio for similar messages, at the price of a compressor per
    /// connection (see the README's limits table). Default `false`: one
    /// compressor per worker, reset after each message. A client's offer
    /// of `server_no_context_takeover` is honoured either way.
    pub server_context_takeover: bool,
    /// Let the client keep its window between messages, which needs an
    /// inflater per connection. Default `false`: the response carries
    /// `client_no_context_takeover`, and one inflater per worker serves.
    pub client_context_takeover: bool,
    /// The largest window we compress with, 9 to 15 bits (512 B to 32 KiB).
    /// A smaller one saves memory where context is kept. Default 15.
    pub server_max_window_bits: u8,
    /// The largest window we ask the client to compress with, 9 to 15
    /// bits, when it offers `client_max_window_bits` and keeps context.
    /// Default 15.
    pub client_max_window_bits: u8,
    /// The zlib compression level, 0 (store) to 9 (smallest). Default 1:
    /// on chat-like JSON it compresses 1 KiB in about 6 µs to 42% of its
    /// size, where level 6 takes about 19 µs for 33%, and 16 KiB about four
    /// times faster than level 6 (see docs/DEFLATE.md).
    pub level: u32,
    /// Messages shorter than this many bytes are sent uncompressed, since
    /// below it DEFLATE rarely saves more than its own overhead; so are
    /// longer ones that compression does not shrink, where no context is
    /// kept. [RFC 7692 §6] lets any message go either way. 0 compresses every
    /// message, shrunk or not. Default 256: a 100-byte chat line shrinks
    /// by about 15% for about 3 µs of CPU, a 1 KiB one by about 58%.
    ///
    /// [RFC 7692 §6]: https://www.rfc-editor.org/rfc/rfc7692#section-6
    pub min_size: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_context_takeover: false,
            client_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
            level: 1,
            min_size: 256,
        }
    }
}

setters! {
    DeflateConfig {
        server_context_takeover: bool,
        client_context_takeover: bool,
        server_max_window_bits: u8,
        client_max_window_bits: u8,
        level: u32,
        min_size: usize,
    }
}

impl DeflateConfig {
    /// Checks the window sizes and the level; `None` when they can work,
    /// else the field and its largest or smallest value.
    pub(crate) fn invalid(&self) -> Option<(&'static str, u64, u64)> {
        let windows = MIN_WINDOW_BITS..=MAX_WINDOW_BITS;
        let w = (MIN_WINDOW_BITS as u64, MAX_WINDOW_BITS as u64);
        if !windows.contains(&self.server_max_window_bits) {
            return Some(("deflate.server_max_window_bits", w.0, w.1));
        }
        if !windows.contains(&self.client_max_window_bits) {
            return Some(("deflate.client_max_window_bits", w.0, w.1));
        }
        if self.level > 9 {
            return Some(("deflate.level", 0, 9));
        }
        None
    }
}

/// One permessage-deflate offer, its parameters checked ([RFC 7692 §7.1]).
///
/// [RFC 7692 §7.1]: https://www.rfc-editor.org/rfc/rfc7692#section-7.1
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Offer {
    /// The client asks us not to keep context between messages.
    pub server_no_context_takeover: bool,
    /// The client offers not to keep context between its messages.
    pub client_no_context_takeover: bool,
    /// The largest window the client will inflate our messages with.
    pub server_max_window_bits: Option<u8>,
    /// The client lets us limit its window: `Some(15)` for the parameter
    /// with no value, else the largest it will use.
    pub client_max_window_bits: Option<u8>,
}

/// Why an offer was declined.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfferError {
    /// A parameter RFC 7692 does not define.
    UnknownParameter(String),
    /// A parameter given twice.
    DuplicateParameter(&'static str),
    /// A parameter with a value it may not have.
    InvalidValue(&'static str),
}

impl fmt::Display for OfferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OfferError::UnknownParameter(name) => write!(f, "unknown parameter {name:?}"),
            OfferError::DuplicateParameter(name) => write!(f, "parameter {name} given twice"),
            OfferError::InvalidValue(name) => write!(f, "parameter {name} has an invalid value"),
        }
    }
}

impl std::error::Error for OfferError {}

/// The permessage-deflate offers in the values of the request's
/// `Sec-WebSocket-Extensions` headers, in order, each parsed or refused.
/// Other extensions are skipped.
pub fn offers<'a>(
    header_values: impl Iterator<Item = &'a str> + 'a,
) -> impl Iterator<Item = Result<Offer, OfferError>> + 'a {
    header_values
        .flat_map(|value| value.split(','))
        .filter_map(|extension| {
            let mut parts = extension.split(';');
            let name = parts.next()?.trim();
            name.eq_ignore_ascii_case(NAME).then(|| parse_offer(parts))
        })
}

fn parse_offer<'a>(params: impl Iterator<Item = &'a str>) -> Result<Offer, OfferError> {
    let mut offer = Offer::default();
    let mut seen = [false; 4];
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim()))),
            None => (param.trim(), None),
        };
        let (index, name) = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => (0, "server_no_context_takeover"),
            "client_no_context_takeover" => (1, "client_no_context_takeover"),
            "server_max_window_bits" => (2, "server_max_window_bits"),
            "client_max_window_bits" => (3, "client_max_window_bits"),
            _ => return Err(OfferError::UnknownParameter(name.to_string())),
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(OfferError::DuplicateParameter(name));
        }
        match (index, value) {
            (0, None) => offer.server_no_context_takeover = true,
            (1, None) => offer.client_no_context_takeover = true,
            (2, Some(v)) => offer.server_max_window_bits = Some(window_bits(v, name)?),
            (3, None) => offer.client_max_window_bits = Some(MAX_WINDOW_BITS),
            (3, Some(v)) => offer.client_max_window_bits = Some(window_bits(v, name)?),
            _ => return Err(OfferError::InvalidValue(name)),
        }
    }
    Ok(offer)
}

/// A quoted-string's content; the value must still be a plain number.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// A window size as [RFC 7692 §7.1.2] writes it: a decimal from 8 to 15,
/// without leading zeros.
///
/// [RFC 7692 §7.1.2]: https://www.rfc-editor.org/rfc/rfc7692#section-7.1.2
fn window_bits(value: &str, name: &'static str) -> Result<u8, OfferError> {
    match value.parse::<u8>() {
        Ok(bits @ 8..=15) if !value.starts_with('0') && !value.starts_with('+') => Ok(bits),
        _ => Err(OfferError::InvalidValue(name)),
    }
}

/// The parameters in force on a connection, exactly as the response states
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Agreement {
    /// We start each message from an empty window.
    pub server_no_context_takeover: bool,
    /// The client starts each message from an empty window.
    pub client_no_context_takeover: bool,
    /// The window we compress with, when the response limits it.
    pub server_max_window_bits: Option<u8>,
    /// The window the client compresses with, when the response limits it.
    pub client_max_window_bits: Option<u8>,
}

impl Agreement {
    /// The value of the response's `Sec-WebSocket-Extensions` header.
    pub fn response(&self) -> String {
        let mut out = String::from(NAME);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            out.push_str(&format!("; server_max_window_bits={bits}"));
        }
        if let Some(bits) = self.client_max_window_bits {
            out.push_str(&format!("; client_max_window_bits={bits}"));
        }
        out
    }

    /// The window bits we compress with.
    fn our_window(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS)
    }

    /// The window bits the client's messages need, at least 9: an inflater
    /// with a larger window reads a stream made with a smaller one.
    fn their_window(&self) -> u8 {
        self.client_max_window_bits
            .unwrap_or(MAX_WINDOW_BITS)
            .max(MIN_WINDOW_BITS)
    }
}

/// Picks the first offer we can honour and the parameters to answer with
/// ([RFC 7692 §5.1]). Malformed offers are passed over.
///
/// [RFC 7692 §5.1]: https://www.rfc-editor.org/rfc/rfc7692#section-5.1
pub fn negotiate<'a>(
    offers: impl Iterator<Item = Result<Offer, OfferError>> + 'a,
    config: &DeflateConfig,
) -> Option<Agreement> {
    offers.flatten().find_map(|offer| accept(&offer, config))
}

fn accept(offer: &Offer, config: &DeflateConfig) -> Option<Agreement> {
    // zlib cannot compress raw DEFLATE with a 256-byte window.
    if offer.server_max_window_bits == Some(8) {
        return None;
    }
    let server_max_window_bits = match offer.server_max_window_bits {
        Some(bits) => Some(bits.min(config.server_max_window_bits)),
        None => (config.server_max_window_bits < MAX_WINDOW_BITS)
            .then_some(config.server_max_window_bits),
    };
    let client_no_context_takeover =
        offer.client_no_context_takeover || !config.client_context_takeover;
    // The client's window matters only where its context is kept, and may
    // be stated only if the offer allowed it (§7.1.2.2).
    let client_max_window_bits = match offer.client_max_window_bits {
        Some(bits) if !client_no_context_takeover => Some(bits.min(config.client_max_window_bits)),
        _ => None,
    };
    Some(Agreement {
        server_no_context_takeover: offer.server_no_context_takeover
            || !config.server_context_takeover,
        client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
    })
}

/// One connection's permessage-deflate state: the agreement, and its own
/// compressor or inflater only where context is kept between messages.
/// Boxed in the session, so a plain connection pays one null pointer.
#[derive(Debug)]
pub(crate) struct Context {
    agreement: Agreement,
    /// Boxed apart (about 300 bytes before zlib's own allocations), so a
    /// connection that keeps no context holds only the agreement.
    deflater: Option<Box<Compress>>,
    inflater: Option<Box<Decompress>>,
}

/// What a thread shares among its connections: compressors by window size,
/// made on first use, and one inflater.
struct Shared {
    deflaters: [Option<(u32, Compress)>; WINDOW_SIZES],
    inflater: Decompress,
}

thread_local! {
    static SHARED: RefCell<Shared> = RefCell::new(Shared {
        deflaters: Default::default(),
        inflater: Decompress::new_with_window_bits(false, MAX_WINDOW_BITS),
    });
}

impl Context {
    pub(crate) fn new(agreement: Agreement) -> Self {
        Context {
            agreement,
            deflater: None,
            inflater: None,
        }
    }

    /// The agreement in force.
    pub(crate) fn agreement(&self) -> &Agreement {
        &self.agreement
    }

    /// Whether a compressed frame made once for many connections (no
    /// context kept, this window) suits this one; `None` when it must
    /// compress its own, because it keeps context.
    pub(crate) fn shared_window(&self) -> Option<u8> {
        self.agreement
            .server_no_context_takeover
            .then(|| self.agreement.our_window())
    }

    /// Compresses one message onto `out`. Returns `false`, with `out` as it
    /// was, when that would not make it smaller and no context is kept, so
    /// the message can go plain instead.
    pub(crate) fn compress(
        &mut self,
        config: &DeflateConfig,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let bits = self.agreement.our_window();
        if self.agreement.server_no_context_takeover {
            return compress_shared(bits, config, payload, out);
        }
        let own = self
            .deflater
            .get_or_insert_with(|| Box::new(deflater(config.level, bits)));
        compress(own, payload, out);
        true
    }

    /// Inflates one compressed message, of at most `max` bytes, onto `out`.
    pub(crate) fn inflate(
        &mut self,
        payload: &[u8],
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        if self.agreement.client_no_context_takeover {
            return SHARED.with(|shared| {
                let inflater = &mut shared.borrow_mut().inflater;
                let result = inflate(inflater, payload, max, out);
                inflater.reset(false);
                result
            });
        }
        let bits = self.agreement.their_window();
        let inflater = self
            .inflater
            .get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, bits)));
        let result = inflate(inflater, payload, max, out);
        if result.is_err() {
            // The stream is broken; the connection is failing anyway.
            inflater.reset(false);
        }
        result
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Lends this thread's scratch buffer, empty, to `f`: compressed bytes are
/// made there and copied into the outbox, so sends allocate nothing.
pub(crate) fn with_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.clear();
        let result = f(&mut scratch);
        // A huge message's buffer is not kept.
        if scratch.capacity() > 1 << 20 {
            *scratch = Vec::new();
        }
        result
    })
}

/// Compresses with this thread's compressor for `bits`, then resets it.
/// Returns `false`, with `out` as it was, when the result is no smaller
/// and `min_size` allows plain messages.
pub(crate) fn compress_shared(
    bits: u8,
    config: &DeflateConfig,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let level = config.level;
    SHARED.with(|shared| {
        let slot = &mut shared.borrow_mut().deflaters[window_slot(bits)];
        if slot.as_ref().is_none_or(|(at, _)| *at != level) {
            *slot = Some((level, deflater(level, bits)));
        }
        let (_, deflater) = slot.as_mut().expect("filled above");
        let start = out.len();
        compress(deflater, payload, out);
        deflater.reset();
        if config.min_size > 0 && out.len() - start >= payload.len() {
            out.truncate(start);
            return false;
        }
        true
    })
}

/// Compresses one message as [RFC 7692 §7.2.1] says: raw DEFLATE ended with
/// a sync flush, whose 4-byte empty-block tail is removed.
///
/// [RFC 7692 §7.2.1]: https://www.rfc-editor.org/rfc/rfc7692#section-7.2.1
pub fn compress(deflater: &mut Compress, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let base = deflater.total_in();
    loop {
        let used = (deflater.total_in() - base) as usize;
        out.reserve(payload.len() - used + 64);
        deflater
            .compress_vec(&payload[used..], out, FlushCompress::Sync)
            .expect("a sync flush on a stream of our own cannot fail");
        let used = (deflater.total_in() - base) as usize;
        // The flush is complete when all input is taken and zlib stopped
        // with output room to spare.
        if used == payload.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out[start..].ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    } else if out.len() == start {
        // zlib writes nothing when there is nothing new to flush: an empty
        // message right after another, with context kept. The receiver
        // still appends the tail, so the message must be an empty stored
        // block's first byte, as RFC 7692 §7.2.3.6 shows.
        out.push(0x00);
    }
}

/// Inflates one message ([RFC 7692 §7.2.2]): the payload with the tail put
/// back. Fails once the output would pass `max` bytes, before it does.
///
/// [RFC 7692 §7.2.2]: https://www.rfc-editor.org/rfc/rfc7692#section-7.2.2
pub fn inflate(
    inflater: &mut Decompress,
    payload: &[u8],
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    // Nothing at all: what zlib writes for an empty message with nothing
    // new to flush. The inflater is left as it is, as the sender's
    // compressor was.
    if payload.is_empty() {
        return Ok(());
    }
    let start = out.len();
    'inputs: for (pass, input) in [payload, &TAIL[..]].into_iter().enumerate() {
        let base = inflater.total_in();
        loop {
            let used = (inflater.total_in() - base) as usize;
            let room = inflate_room(max, out.len() - start, input.len());
            // A reservation too large for memory (a 32-bit target, a
            // message size without limit) fails the message, not the worker.
            out.try_reserve_exact(room)
                .map_err(|_| ProtocolError::InflatedTooLarge { max })?;
            let spare = out.capacity() - out.len();
            let status = inflater
                .decompress_vec(&input[used..], out, FlushDecompress::Sync)
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            if out.len() - start > max {
                out.truncate(start);
                return Err(ProtocolError::InflatedTooLarge { max });
            }
            let used_now = (inflater.total_in() - base) as usize;
            if status == Status::StreamEnd {
                // A final block (BFINAL) ends the stream. All that may
                // follow is the first byte of the empty block a sender
                // appends (RFC 7692 §7.2.1, §7.2.3.4). The next message
                // starts afresh.
                inflater.reset(false);
                let rest = if pass == 0 { &input[used_now..] } else { &[] };
                if rest.len() > 1 || rest.first().is_some_and(|&b| b != 0) {
                    return Err(ProtocolError::InvalidCompressedData);
                }
                break 'inputs;
            }
            let room_left = out.capacity() - out.len();
            let progressed = used_now != used || room_left != spare;
            if used_now == input.len() && (room_left > 0 || !progressed) {
                break;
            }
            if !progressed {
                // Input and room, yet no progress.
                return Err(ProtocolError::InvalidCompressedData);
            }
        }
    }
    Ok(())
}

/// How much more output room to give the inflater: what is allowed and
/// one byte more, to see an overrun, but no more than doubling what it has
/// made, or four times the input for a start. All saturating: `max` may be
/// `usize::MAX`, and the input's length is the peer's.
fn inflate_room(max: usize, produced: usize, input_len: usize) -> usize {
    max.saturating_add(1)
        .saturating_sub(produced)
        .min(produced.max(input_len.saturating_mul(4)).max(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(header: &str) -> Vec<Result<Offer, OfferError>> {
        offers(std::iter::once(header)).collect()
    }

    fn agree(header: &str, config: &DeflateConfig) -> Option<String> {
        negotiate(offers(std::iter::once(header)), config).map(|a| a.response())
    }

    #[test]
    fn offers_are_parsed_and_malformed_ones_declined() {
        let full = Offer {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(15),
        };
        assert_eq!(
            parse("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits"),
            [Ok(full)]
        );
        assert_eq!(
            parse("x-webkit-deflate-frame, Permessage-Deflate ;client_max_window_bits=\"12\""),
            [Ok(Offer {
                client_max_window_bits: Some(12),
                ..Offer::default()
            })]
        );
        use OfferError::*;
        let bad = [
            ("permessage-deflate; foo", UnknownParameter("foo".into())),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                DuplicateParameter("server_no_context_takeover"),
            ),
            (
                "permessage-deflate; server_max_window_bits",
                InvalidValue("server_max_window_bits"),
            ),
            (
                "permessage-deflate; server_max_window_bits=16",
                InvalidValue("server_max_window_bits"),
            ),
            (
                "permessage-deflate; client_max_window_bits=7",
                InvalidValue("client_max_window_bits"),
            ),
            (
                "permessage-deflate; client_max_window_bits=010",
                InvalidValue("client_max_window_bits"),
            ),
            (
                "permessage-deflate; client_no_context_takeover=1",
                InvalidValue("client_no_context_takeover"),
            ),
        ];
        for (header, want) in bad {
            assert_eq!(parse(header), [Err(want)], "{header}");
        }
    }

    #[test]
    fn lean_mode_answers_no_context_takeover_both_ways() {
        let lean = DeflateConfig::default();
        let both = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        // RFC 7692 §5.1's examples of offers.
        assert_eq!(agree("permessage-deflate", &lean).as_deref(), Some(both));
        assert_eq!(
            agree("permessage-deflate; client_max_window_bits", &lean).as_deref(),
            Some(both)
        );
        assert_eq!(
            agree("permessage-deflate; server_max_window_bits=10", &lean).as_deref(),
            Some(format!("{both}; server_max_window_bits=10").as_str())
        );
        // The first offer we can honour wins; malformed and 8-bit ones are passed over.
        assert_eq!(
            agree(
                "permessage-deflate; server_max_window_bits=8, permessage-deflate; bogus, permessage-deflate; server_max_window_bits=12",
                &lean
            )
            .as_deref(),
            Some(format!("{both}; server_max_window_bits=12").as_str())
        );
        assert_eq!(agree("permessage-deflate; bogus", &lean), None);
        assert_eq!(agree("x-webkit-deflate-frame", &lean), None);
    }

    #[test]
    fn context_takeover_mode_states_the_windows_in_force() {
        let keep = DeflateConfig::default()
            .server_context_takeover(true)
            .client_context_takeover(true)
            .server_max_window_bits(12)
            .client_max_window_bits(11);
        assert_eq!(
            agree("permessage-deflate; client_max_window_bits", &keep).as_deref(),
            Some("permessage-deflate; server_max_window_bits=12; client_max_window_bits=11")
        );
        // The client's requests are honoured; its window is stated only if offered.
        assert_eq!(
            agree(
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=9",
                &keep
            )
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=9")
        );
        assert_eq!(
            agree(
                "permessage-deflate; client_no_context_takeover; client_max_window_bits=10",
                &keep
            )
            .as_deref(),
            Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=12")
        );
    }

    fn inflate_all(
        inflater: &mut Decompress,
        payload: &[u8],
        max: usize,
    ) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::new();
        inflate(inflater, payload, max, &mut out).map(|()| out)
    }

    fn fresh_inflater() -> Decompress {
        Decompress::new_with_window_bits(false, 15)
    }

    #[test]
    fn rfc_7692_examples_inflate() {
        let mut d = fresh_inflater();
        // §7.2.3.1: "Hello" in one compressed block.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate_all(&mut d, &hello, 100).unwrap(), b"Hello");
        // §7.2.3.2: the same again, with the window kept: a back-reference.
        assert_eq!(
            inflate_all(&mut d, &[0xf2, 0x00, 0x11, 0x00, 0x00], 100).unwrap(),
            b"Hello"
        );
        // §7.2.3.3: a stored block.
        let mut d = fresh_inflater();
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate_all(&mut d, &stored, 100).unwrap(), b"Hello");
        // §7.2.3.4: BFINAL set on the block.
        let mut d = fresh_inflater();
        let last = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflate_all(&mut d, &last, 100).unwrap(), b"Hello");
        // §7.2.3.6: an empty message as one byte.
        let mut d = fresh_inflater();
        assert_eq!(inflate_all(&mut d, &[0x00], 100).unwrap(), b"");
    }

    #[test]
    fn compress_then_inflate_at_every_size_and_window() {
        let text: Vec<u8> = b"alice: hello lobby, how is everyone today? "
            .iter()
            .cycle()
            .take(70_000)
            .copied()
            .collect();
        for bits in [9, 12, 15] {
            let mut c = Compress::new_with_window_bits(Compression::new(6), false, bits);
            let mut d = Decompress::new_with_window_bits(false, bits);
            for len in [0, 1, 63, 64, 1000, 40_000, 70_000] {
                let mut out = Vec::new();
                compress(&mut c, &text[..len], &mut out);
                assert!(!out.ends_with(&TAIL) || len == 0);
                assert_eq!(
                    inflate_all(&mut d, &out, len).unwrap(),
                    &text[..len],
                    "{bits} {len}"
                );
            }
        }
    }

    #[test]
    fn an_unlimited_message_size_does_not_overflow() {
        let mut d = fresh_inflater();
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate_all(&mut d, &hello, usize::MAX).unwrap(), b"Hello");
    }

    #[test]
    fn the_output_room_saturates_at_extreme_sizes() {
        // Input past usize::MAX / 4 (a 1 GiB message on a 32-bit target).
        let huge = usize::MAX / 4 + 1;
        assert_eq!(inflate_room(usize::MAX, 0, huge), usize::MAX);
        assert_eq!(inflate_room(100, 0, huge), 101);
        assert_eq!(inflate_room(usize::MAX, usize::MAX, 0), 0);
        assert_eq!(inflate_room(10, 20, 5), 0);
        assert_eq!(inflate_room(1 << 20, 4096, 16), 4096);
        assert_eq!(inflate_room(1 << 20, 0, 16), 1024);
    }

    #[test]
    fn an_empty_payload_is_an_empty_message_and_leaves_the_window_alone() {
        let mut d = fresh_inflater();
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate_all(&mut d, &hello, 100).unwrap(), b"Hello");
        assert_eq!(inflate_all(&mut d, &[], 100).unwrap(), b"");
        // §7.2.3.2's back-reference still finds the first "Hello".
        assert_eq!(
            inflate_all(&mut d, &[0xf2, 0x00, 0x11, 0x00, 0x00], 100).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn empty_messages_in_a_row_keep_the_stream_in_step() {
        // With context kept, zlib has nothing to flush for a second empty
        // message; it must still go out as one byte.
        let mut c = Compress::new(Compression::new(6), false);
        let mut d = fresh_inflater();
        for text in [&b""[..], b"", b"", b"after the empty ones", b""] {
            let mut out = Vec::new();
            compress(&mut c, text, &mut out);
            assert!(!out.is_empty());
            assert_eq!(inflate_all(&mut d, &out, 100).unwrap(), text);
        }
    }

    #[test]
    fn the_inflated_size_is_capped_while_inflating() {
        // 1 MiB of zeros compresses to about 1 KiB: a small bomb.
        let mut c = Compress::new(Compression::best(), false);
        let mut bomb = Vec::new();
        compress(&mut c, &vec![0; 1 << 20], &mut bomb);
        assert!(bomb.len() < 2048, "{}", bomb.len());
        let mut d = fresh_inflater();
        let mut out = Vec::new();
        assert_eq!(
            inflate(&mut d, &bomb, 65_536, &mut out),
            Err(ProtocolError::InflatedTooLarge { max: 65_536 })
        );
        assert!(out.capacity() <= 2 * 65_536, "{}", out.capacity());
        // Exactly at the limit is fine.
        let mut d = fresh_inflater();
        assert_eq!(inflate_all(&mut d, &bomb, 1 << 20).unwrap().len(), 1 << 20);
    }

    #[test]
    fn corrupt_streams_are_refused() {
        for bad in [
            &[0xff, 0xff, 0xff][..],             // block type 3 (reserved)
            &[0x02, 0xff, 0xff, 0xff, 0xff][..], // a fixed block with garbage codes
            &[0x00, 0x05, 0x00, 0x00, 0x00][..], // stored block, LEN and NLEN disagree
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x42][..], // bytes after BFINAL
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x01][..], // not the empty block
        ] {
            let mut d = fresh_inflater();
            assert_eq!(
                inflate_all(&mut d, bad, 1000),
                Err(ProtocolError::InvalidCompressedData),
                "{bad:x?}"
            );
        }
    }

    #[test]
    fn the_shared_codec_gives_up_on_incompressible_messages() {
        let mut agreed = Context::new(Agreement {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: None,
            client_max_window_bits: None,
        });
        let mut out = vec![7];
        let noise: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let config = DeflateConfig::default();
        assert!(!agreed.compress(&config, &noise, &mut out));
        assert_eq!(out, [7]);
        // Unless every message is to be compressed.
        assert!(agreed.compress(&config.min_size(0), &noise, &mut vec![]));
        let text = b"the same words, the same words, the same words again".repeat(4);
        assert!(agreed.compress(&config, &text, &mut out));
        let mut back = Vec::new();
        agreed.inflate(&out[1..], 1000, &mut back).unwrap();
        assert_eq!(back, text);
    }
}
