//! Typed errors for the protocol core, each mapped to an [RFC 6455 §7.4] close
//! code or an HTTP status.
//!
//! [RFC 6455 §7.4]: https://www.rfc-editor.org/rfc/rfc6455#section-7.4

use std::fmt;

/// Close codes from [RFC 6455 §7.4.1] that wsloop sends or reports.
///
/// [RFC 6455 §7.4.1]: https://www.rfc-editor.org/rfc/rfc6455#section-7.4.1
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is going down or the peer is leaving.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: reported only, never sent: the close frame carried no code.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: reported only, never sent: the TCP connection ended without a close frame.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a text message or close reason was not valid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message broke the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a frame or message was over a configured limit.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the server is restarting; reconnect, after a short random
    /// wait ([`ShutdownHandle::drain`](crate::ShutdownHandle::drain)).
    /// Registered with IANA after RFC 6455. wsloop sends it; a peer that
    /// sends it breaks the RFC's rules on close codes.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later. wsloop does not send it; backpressure closes
    /// with 1008.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// Whether a peer may send this code in a close frame ([RFC 6455 §7.4.1]
    /// and [§7.4.2]): 1000-1003, 1007-1011 and the registered and private
    /// range 3000-4999. 1004-1006, 1015 and all else are protocol errors.
    ///
    /// [RFC 6455 §7.4.1]: https://www.rfc-editor.org/rfc/rfc6455#section-7.4.1
    /// [§7.4.2]: https://www.rfc-editor.org/rfc/rfc6455#section-7.4.2
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A violation of RFC 6455 framing or of a configured limit by the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1-3 set where no negotiated extension defines them: RSV2 or
    /// RSV3, RSV1 without permessage-deflate, or RSV1 on a control or
    /// continuation frame.
    ReservedBitsSet,
    /// An opcode RFC 6455 reserves (3-7, 0xB-0xF).
    InvalidOpCode(u8),
    /// A control frame (close, ping, pong) without FIN.
    FragmentedControlFrame,
    /// A control frame with more than 125 bytes of payload.
    ControlFrameTooLong,
    /// A payload length not in its shortest form, or with the top bit set.
    InvalidLength,
    /// A frame from a client without a mask.
    UnmaskedClientFrame,
    /// A frame from a server with a mask.
    MaskedServerFrame,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is unfinished.
    ExpectedContinuation,
    /// A text message or close reason that is not UTF-8.
    InvalidUtf8,
    /// A close frame with a one-byte payload.
    InvalidClosePayload,
    /// A close frame whose code may not be sent ([RFC 6455 §7.4]).
    ///
    /// [RFC 6455 §7.4]: https://www.rfc-editor.org/rfc/rfc6455#section-7.4
    InvalidCloseCode(u16),
    /// A frame whose payload is over `max_frame_size`.
    FrameTooLarge {
        /// The declared payload length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message whose total payload is over `max_message_size`.
    MessageTooLarge {
        /// The length the message would reach.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message cut into more frames than `max_fragments`.
    TooManyFragments {
        /// The configured limit.
        max: usize,
    },
    /// A compressed message that inflates to more than `max_message_size`
    /// (found while inflating, before more is produced).
    InflatedTooLarge {
        /// The configured limit.
        max: usize,
    },
    /// A compressed message that is not a valid DEFLATE stream.
    InvalidCompressedData,
    /// The peer sent more messages or bytes than the configured
    /// [`RateLimit`](crate::RateLimit) allows.
    RateLimited,
}

impl ProtocolError {
    /// The close code [RFC 6455 §7.4.1] assigns to this violation.
    ///
    /// [RFC 6455 §7.4.1]: https://www.rfc-editor.org/rfc/rfc6455#section-7.4.1
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::FrameTooLarge { .. }
            | ProtocolError::MessageTooLarge { .. }
            | ProtocolError::InflatedTooLarge { .. }
            | ProtocolError::TooManyFragments { .. } => CloseCode::TOO_BIG,
            // §7.4.1: 1008 for a message that violates the server's policy.
            ProtocolError::RateLimited => CloseCode::POLICY_VIOLATION,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedBitsSet => {
                f.write_str("reserved bits set with no extension negotiated")
            }
            ProtocolError::InvalidOpCode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::FragmentedControlFrame => f.write_str("fragmented control frame"),
            ProtocolError::ControlFrameTooLong => {
                f.write_str("control frame payload over 125 bytes")
            }
            ProtocolError::InvalidLength => {
                f.write_str("payload length not minimally encoded or over 2^63")
            }
            ProtocolError::UnmaskedClientFrame => f.write_str("client frame is not masked"),
            ProtocolError::MaskedServerFrame => f.write_str("server frame is masked"),
            ProtocolError::UnexpectedContinuation => {
                f.write_str("continuation frame with no message in progress")
            }
            ProtocolError::ExpectedContinuation => {
                f.write_str("new data frame while a fragmented message is unfinished")
            }
            ProtocolError::InvalidUtf8 => f.write_str("text is not valid UTF-8"),
            ProtocolError::InvalidClosePayload => f.write_str("close frame with 1-byte payload"),
            ProtocolError::InvalidCloseCode(code) => write!(f, "close code {code} is not allowed"),
            ProtocolError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes is over the {max}-byte limit")
            }
            ProtocolError::MessageTooLarge { len, max } => {
                write!(f, "message of {len} bytes is over the {max}-byte limit")
            }
            ProtocolError::TooManyFragments { max } => {
                write!(f, "message has more than {max} fragments")
            }
            ProtocolError::InflatedTooLarge { max } => {
                write!(
                    f,
                    "compressed message inflates to over the {max}-byte limit"
                )
            }
            ProtocolError::InvalidCompressedData => {
                f.write_str("compressed message is not valid DEFLATE data")
            }
            ProtocolError::RateLimited => f.write_str("sending faster than the rate limit"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Why an HTTP upgrade request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// httparse could not parse the request.
    Malformed,
    /// The method is not GET.
    MethodNotAllowed,
    /// An upgrade over a version other than HTTP/1.1.
    UnsupportedHttpVersion,
    /// No Host header.
    MissingHost,
    /// `Upgrade` is present but does not name websocket.
    InvalidUpgrade,
    /// `Connection` does not carry the Upgrade token.
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Key` is missing or not base64 of 16 bytes.
    InvalidKey,
    /// `Sec-WebSocket-Version` is missing or not 13.
    UnsupportedVersion,
    /// The header block is over `max_header_bytes`.
    HeadersTooLarge {
        /// The configured limit.
        max: usize,
    },
    /// More headers than `max_headers`.
    TooManyHeaders {
        /// The configured limit.
        max: usize,
    },
    /// A body announced over `max_body_bytes`.
    BodyTooLarge {
        /// The configured limit.
        max: usize,
    },
    /// A body sent with `Transfer-Encoding` (chunked) instead of
    /// `Content-Length`, which wsloop does not decode.
    LengthRequired,
    /// `Content-Length` is not a number, or two of them differ.
    InvalidContentLength,
    /// A CR or LF in the request head that is not part of a CRLF pair.
    /// Parsers that accept bare line ends disagree on where a request
    /// ends, which is how requests are smuggled, so wsloop refuses them.
    BareLineEnding,
    /// More empty lines before the request line than
    /// `max_empty_lines`.
    TooManyEmptyLines {
        /// The configured limit.
        max: usize,
    },
}

impl HandshakeError {
    /// Short names of the refusals, for counters, indexed by
    /// [`HandshakeError::label_index`]. The two size errors share one.
    pub const LABELS: &'static [&'static str] = &[
        "malformed",
        "method",
        "http-version",
        "host",
        "upgrade",
        "connection",
        "key",
        "ws-version",
        "too-large",
        "body",
    ];

    /// This refusal's place in [`HandshakeError::LABELS`].
    pub fn label_index(&self) -> usize {
        match self {
            HandshakeError::Malformed
            | HandshakeError::BareLineEnding
            | HandshakeError::TooManyEmptyLines { .. } => 0,
            HandshakeError::MethodNotAllowed => 1,
            HandshakeError::UnsupportedHttpVersion => 2,
            HandshakeError::MissingHost => 3,
            HandshakeError::InvalidUpgrade => 4,
            HandshakeError::MissingConnectionUpgrade => 5,
            HandshakeError::InvalidKey => 6,
            HandshakeError::UnsupportedVersion => 7,
            HandshakeError::HeadersTooLarge { .. } | HandshakeError::TooManyHeaders { .. } => 8,
            HandshakeError::BodyTooLarge { .. }
            | HandshakeError::LengthRequired
            | HandshakeError::InvalidContentLength => 9,
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::HeadersTooLarge { .. } | HandshakeError::TooManyHeaders { .. } => 431,
            HandshakeError::BodyTooLarge { .. } => 413,
            HandshakeError::LengthRequired => 411,
            _ => 400,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Malformed => f.write_str("malformed HTTP request"),
            HandshakeError::MethodNotAllowed => f.write_str("method is not GET"),
            HandshakeError::UnsupportedHttpVersion => {
                f.write_str("WebSocket upgrade needs HTTP/1.1")
            }
            HandshakeError::MissingHost => f.write_str("missing Host header"),
            HandshakeError::InvalidUpgrade => f.write_str("Upgrade header does not name websocket"),
            HandshakeError::MissingConnectionUpgrade => {
                f.write_str("Connection header lacks the Upgrade token")
            }
            HandshakeError::InvalidKey => {
                f.write_str("Sec-WebSocket-Key is not base64 of 16 bytes")
            }
            HandshakeError::UnsupportedVersion => f.write_str("Sec-WebSocket-Version is not 13"),
            HandshakeError::HeadersTooLarge { max } => {
                write!(f, "request headers are over the {max}-byte limit")
            }
            HandshakeError::TooManyHeaders { max } => {
                write!(f, "request has more than {max} headers")
            }
            HandshakeError::BodyTooLarge { max } => {
                write!(f, "request body is over the {max}-byte limit")
            }
            HandshakeError::LengthRequired => {
                f.write_str("request body is chunked; send it with Content-Length")
            }
            HandshakeError::InvalidContentLength => {
                f.write_str("Content-Length is not one decimal number")
            }
            HandshakeError::BareLineEnding => {
                f.write_str("request head has a CR or LF outside a CRLF line ending")
            }
            HandshakeError::TooManyEmptyLines { max } => {
                write!(f, "more than {max} empty lines before the request line")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// A ping whose payload is over the 125 bytes [RFC 6455 §5.5] allows for a
/// control frame. Nothing was sent.
///
/// [RFC 6455 §5.5]: https://www.rfc-editor.org/rfc/rfc6455#section-5.5
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingTooLong {
    /// The payload length asked for.
    pub len: usize,
}

impl fmt::Display for PingTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ping payload of {} bytes is over the 125-byte limit",
            self.len
        )
    }
}

impl std::error::Error for PingTooLong {}

/// A [`Config`](crate::Config) that cannot work, found at bind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A size or count that must be at least 1 is 0.
    Zero {
        /// The field's name.
        field: &'static str,
    },
    /// A count above what wsloop can count.
    TooLarge {
        /// The field's name.
        field: &'static str,
        /// The largest allowed.
        max: u64,
    },
    /// A duration that must be above zero is zero.
    ZeroDuration {
        /// The field's name.
        field: &'static str,
    },
    /// A duration is longer than connection timestamps can count.
    DurationTooLong {
        /// The field's name.
        field: &'static str,
        /// The longest allowed, in seconds.
        max_secs: u64,
    },
    /// A setting outside the range it can take.
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// The smallest allowed.
        min: u64,
        /// The largest allowed.
        max: u64,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Zero { field } => write!(f, "config: {field} must be at least 1"),
            ConfigError::TooLarge { field, max } => {
                write!(f, "config: {field} must be at most {max}")
            }
            ConfigError::ZeroDuration { field } => {
                write!(f, "config: {field} must be longer than zero")
            }
            ConfigError::DurationTooLong { field, max_secs } => {
                write!(f, "config: {field} must be at most {max_secs} s")
            }
            ConfigError::OutOfRange { field, min, max } => {
                write!(f, "config: {field} must be from {min} to {max}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}
