//! The [RFC 6455 §5] frame codec: opcodes, headers and masking. Pure: it takes
//! and returns bytes and never touches a socket.
//!
//! [RFC 6455 §5]: https://www.rfc-editor.org/rfc/rfc6455#section-5

mod header;
mod mask;
mod opcode;

pub use header::{FrameHeader, Role, MAX_HEADER_LEN};
pub use mask::apply_mask;
pub use opcode::OpCode;
