//! What is queued to write: encoded frames in order, owned or shared, and
//! a broadcast's frame encoded once for many connections.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use super::events::encode_event;
use super::{encode_frame, frame_header, Message};
use crate::frame::{FrameHeader, OpCode, Role, MAX_HEADER_LEN};
use crate::history::MessageId;

/// One piece of queued output: bytes of its own, or a frame shared with
/// other connections (a broadcast).
#[derive(Debug)]
enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(bytes) => bytes,
            Chunk::Shared(bytes) => bytes,
        }
    }
}

/// Most emptied buffers a thread keeps for its next bursts.
const SPARES: usize = 4;
/// Largest buffer kept: one that grew past it (a large message) goes back
/// to the allocator.
const SPARE_CAPACITY: usize = 16 * 1024;
/// What a new buffer starts with: room for a burst of small replies, so
/// that a header and its payload, and the next few, need no regrowth.
const FIRST_CAPACITY: usize = 512;

thread_local! {
    /// Buffers of queues that emptied, and their boxes, kept for the next
    /// queue on this thread. A worker corks each burst of sends into a
    /// connection's queue and writes it at once; without these, every
    /// burst would allocate a buffer and a box and free both a moment
    /// later. Bounded: `SPARES` of each, buffers of `SPARE_CAPACITY` at
    /// most, per thread, whatever the number of connections; an idle
    /// connection still holds nothing.
    static SPARE: RefCell<Spare> = const {
        RefCell::new(Spare {
            buffers: Vec::new(),
            queues: Vec::new(),
        })
    };
}

/// A thread's kept buffers and queue boxes, all empty.
struct Spare {
    buffers: Vec<Vec<u8>>,
    /// Boxed: the boxes themselves are what is kept, to be handed to
    /// outboxes as they are.
    #[allow(clippy::vec_box)]
    queues: Vec<Box<Queue>>,
}

/// A buffer for a new run of owned bytes: a kept one, or a new one.
fn buffer(min: usize) -> Vec<u8> {
    let kept = SPARE.with(|s| s.borrow_mut().buffers.pop());
    match kept {
        Some(mut buffer) => {
            buffer.reserve(min);
            buffer
        }
        None => Vec::with_capacity(min.max(FIRST_CAPACITY)),
    }
}

/// Keeps an emptied chunk's buffer for the next queue, if it is owned,
/// not too large, and there is room.
fn recycle(chunk: Chunk) {
    let Chunk::Owned(mut buffer) = chunk else {
        return;
    };
    if buffer.capacity() > SPARE_CAPACITY {
        return;
    }
    buffer.clear();
    SPARE.with(|s| {
        let mut spare = s.borrow_mut();
        if spare.buffers.len() < SPARES {
            spare.buffers.push(buffer);
        }
    });
}

/// Encoded frames waiting to be written, in order. A shared frame is queued
/// by reference, not copied. It knows nothing of the close handshake: what
/// may still be sent is the session's rule. Empty, it is one null pointer:
/// the queue is boxed while it holds bytes and freed when they are written.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: Option<Box<Queue>>,
}

/// The chunks of a non-empty [`Outbox`]. The first is kept apart, so
/// that the usual queue, one run of owned bytes, allocates no deque.
#[derive(Debug)]
struct Queue {
    front: Chunk,
    rest: VecDeque<Chunk>,
    /// Bytes of `front` already written.
    written: usize,
    /// Bytes waiting, over all chunks.
    len: usize,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many bytes wait to be written.
    pub fn len(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len)
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.queue.is_none()
    }

    /// The waiting bytes, in order, as contiguous pieces (for `sendmsg`).
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.queue.iter().flat_map(|q| {
            std::iter::once(&q.front.bytes()[q.written..]).chain(q.rest.iter().map(Chunk::bytes))
        })
    }

    /// All waiting bytes in one vector (for tests and tools).
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces().flatten().copied().collect()
    }

    /// Marks `n` waiting bytes as written. Memory is freed as chunks
    /// empty, and the queue with the last, so an idle connection holds none.
    pub fn consume(&mut self, n: usize) {
        let Some(q) = self.queue.as_mut() else {
            debug_assert_eq!(n, 0);
            return;
        };
        debug_assert!(n <= q.len);
        q.len -= n;
        if q.len == 0 {
            if let Some(mut q) = self.queue.take() {
                let front = std::mem::replace(&mut q.front, Chunk::Owned(Vec::new()));
                recycle(front);
                q.rest.drain(..).for_each(recycle);
                q.written = 0;
                SPARE.with(|s| {
                    let mut spare = s.borrow_mut();
                    // A deque that grew keeps its memory: let it go.
                    if spare.queues.len() < SPARES && q.rest.capacity() == 0 {
                        spare.queues.push(q);
                    }
                });
            }
            return;
        }
        q.written += n;
        while q.written >= q.front.bytes().len() {
            q.written -= q.front.bytes().len();
            // Bytes remain, so a chunk follows.
            match q.rest.pop_front() {
                Some(next) => recycle(std::mem::replace(&mut q.front, next)),
                None => break,
            }
        }
    }

    /// Appends a chunk, or starts the queue with it.
    fn push_chunk(&mut self, chunk: Chunk) {
        let len = chunk.bytes().len();
        match self.queue.as_mut() {
            Some(q) => {
                q.len += len;
                q.rest.push_back(chunk);
            }
            None => {
                let kept = SPARE.with(|s| s.borrow_mut().queues.pop());
                self.queue = Some(match kept {
                    Some(mut q) => {
                        q.front = chunk;
                        q.len = len;
                        q
                    }
                    None => Box::new(Queue {
                        front: chunk,
                        rest: VecDeque::new(),
                        written: 0,
                        len,
                    }),
                });
            }
        }
    }

    /// Appends raw bytes, such as an HTTP response.
    pub fn push_raw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(q) = self.queue.as_mut() {
            // Never onto a chunk partly written: its written bytes are only
            // freed with it, so a queue that never quite empties would keep
            // every byte ever sent.
            let last = match q.rest.back_mut() {
                Some(last) => Some(last),
                None => (q.written == 0).then_some(&mut q.front),
            };
            if let Some(Chunk::Owned(last)) = last {
                last.extend_from_slice(bytes);
                q.len += bytes.len();
                return;
            }
        }
        let mut owned = buffer(bytes.len());
        owned.extend_from_slice(bytes);
        self.push_chunk(Chunk::Owned(owned));
    }

    /// Appends bytes the caller built, without copying them.
    pub fn push_owned(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.push_chunk(Chunk::Owned(bytes));
        }
    }

    /// Appends a whole encoded frame shared with other connections, without
    /// copying it.
    pub fn push_shared(&mut self, frame: Arc<[u8]>) {
        if !frame.is_empty() {
            self.push_chunk(Chunk::Shared(frame));
        }
    }

    /// Queues one unfragmented, unmasked frame, as a server sends it.
    pub fn push(&mut self, opcode: OpCode, payload: &[u8]) {
        self.push_frame(false, opcode, payload);
    }

    /// Queues one unfragmented, unmasked frame, with RSV1 set when its
    /// payload is compressed ([RFC 7692 §6]).
    ///
    /// [RFC 7692 §6]: https://www.rfc-editor.org/rfc/rfc7692#section-6
    pub fn push_frame(&mut self, rsv1: bool, opcode: OpCode, payload: &[u8]) {
        let (header, n) = frame_header(true, rsv1, opcode, None, payload.len());
        self.push_raw(&header[..n]);
        self.push_raw(payload);
    }
}

/// A message encoded once for many connections (a broadcast): the plain
/// frame, queued by reference on each; and, with permessage-deflate,
/// compressed frames made from it on first need, one per window size,
/// shared the same way.
#[derive(Debug)]
pub struct SharedFrame {
    frame: Arc<[u8]>,
    /// Where the payload starts in `frame`.
    header_len: usize,
    opcode: OpCode,
    /// The message's id in its topic's history, for event streams.
    id: Option<MessageId>,
    /// The message as a Server-Sent Event, made for the first stream that
    /// takes it: not tried yet, or the event (`None` for binary).
    event: Option<Option<Arc<[u8]>>>,
    /// By window bits 9 to 15: not tried yet, or the frame (`None` where
    /// compressing did not make it smaller).
    #[cfg(feature = "deflate")]
    deflated: [Option<Option<Arc<[u8]>>>; crate::deflate::WINDOW_SIZES],
}

impl SharedFrame {
    /// Encodes `msg` as one unmasked frame.
    pub fn encode(msg: Message<'_>) -> Self {
        let mut frame = Vec::with_capacity(msg.as_bytes().len() + MAX_HEADER_LEN);
        encode_frame(&mut frame, true, msg.opcode(), None, msg.as_bytes());
        Self::from_frame(frame.into())
    }

    /// Wraps a frame that [`SharedFrame::encode`] made.
    pub fn from_frame(frame: Arc<[u8]>) -> Self {
        let (header_len, opcode) = match FrameHeader::parse(&frame, Role::Client) {
            Ok(Some((header, len))) => (len, header.opcode),
            // Not a frame after all: it can still go out as bytes.
            _ => (frame.len(), OpCode::Binary),
        };
        SharedFrame {
            frame,
            header_len,
            opcode,
            id: None,
            event: None,
            #[cfg(feature = "deflate")]
            deflated: Default::default(),
        }
    }

    /// The same message, with its id in its topic's history: an event
    /// stream writes it in the event's `id` line.
    pub fn with_id(self, id: Option<MessageId>) -> Self {
        SharedFrame { id, ..self }
    }

    /// The plain frame.
    pub fn frame(&self) -> &Arc<[u8]> {
        &self.frame
    }

    /// The message's opcode and payload.
    pub fn payload(&self) -> (OpCode, &[u8]) {
        (self.opcode, &self.frame[self.header_len..])
    }

    /// The message as a Server-Sent Event (its id, then its text as
    /// `data` lines), made on the first call and shared by every stream
    /// after; `None` for a binary message, which an event stream cannot
    /// carry.
    pub fn event(&mut self) -> Option<Arc<[u8]>> {
        let (opcode, payload, id) = (self.opcode, &self.frame[self.header_len..], self.id);
        self.event
            .get_or_insert_with(|| {
                if opcode != OpCode::Text {
                    return None;
                }
                let text = String::from_utf8_lossy(payload);
                let mut event = Vec::with_capacity(payload.len() + 40);
                let id = id.as_ref().map(|id| id as &dyn std::fmt::Display);
                encode_event(&mut event, id, &text);
                Some(event.into())
            })
            .clone()
    }

    /// The frame compressed for a connection that keeps no context and
    /// inflates with a window of `bits`, made on the first call; `None`
    /// when compressing does not make it smaller.
    #[cfg(feature = "deflate")]
    pub(crate) fn deflated(
        &mut self,
        bits: u8,
        config: &crate::deflate::DeflateConfig,
    ) -> Option<Arc<[u8]>> {
        let slot = &mut self.deflated[crate::deflate::window_slot(bits)];
        let (opcode, payload) = (self.opcode, &self.frame[self.header_len..]);
        slot.get_or_insert_with(|| {
            crate::deflate::with_scratch(|compressed| {
                if !crate::deflate::compress_shared(bits, config, payload, compressed) {
                    return None;
                }
                let (header, n) = frame_header(true, true, opcode, None, compressed.len());
                let mut frame = Vec::with_capacity(n + compressed.len());
                frame.extend_from_slice(&header[..n]);
                frame.extend_from_slice(compressed);
                Some(frame.into())
            })
        })
        .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_keeps_order_across_owned_and_shared_chunks() {
        let mut out = Outbox::new();
        out.push_raw(b"ab");
        let shared: Arc<[u8]> = Arc::from(&b"cde"[..]);
        out.push_shared(shared.clone());
        out.push_raw(b"f");
        out.push_raw(b"g");
        assert_eq!((out.len(), out.to_vec()), (7, b"abcdefg".to_vec()));
        out.consume(3);
        assert_eq!(out.pieces().collect::<Vec<_>>(), [&b"de"[..], b"fg"]);
        out.consume(4);
        assert!(out.is_empty() && out.queue.is_none());
    }

    #[test]
    fn emptied_buffers_are_kept_for_the_next_burst_within_bounds() {
        let spare = || SPARE.with(|s| (s.borrow().buffers.len(), s.borrow().queues.len()));
        // Many connections' bursts, written and emptied: the thread keeps
        // at most SPARES of each, and never a large buffer.
        let mut boxes: Vec<Outbox> = (0..10).map(|_| Outbox::new()).collect();
        for (i, out) in boxes.iter_mut().enumerate() {
            out.push(
                OpCode::Text,
                &vec![b'x'; if i == 0 { 64 * 1024 } else { 20 }],
            );
        }
        for out in &mut boxes {
            out.consume(out.len());
            assert!(out.is_empty() && out.queue.is_none());
        }
        let (buffers, queues) = spare();
        assert!(buffers <= SPARES && queues <= SPARES);
        SPARE.with(|s| {
            for b in &s.borrow().buffers {
                assert!(b.is_empty() && b.capacity() <= SPARE_CAPACITY);
            }
        });
        // The next burst takes a kept buffer and box, and gives them back.
        let mut out = Outbox::new();
        out.push(OpCode::Text, b"hi");
        assert_eq!(spare(), (buffers - 1, queues - 1));
        assert_eq!(frames(&out), [(OpCode::Text, b"hi".to_vec())]);
        out.consume(out.len());
        assert_eq!(spare(), (buffers, queues));
    }

    /// The frames in an outbox, as (opcode, payload).
    fn frames(out: &Outbox) -> Vec<(OpCode, Vec<u8>)> {
        let bytes = out.to_vec();
        let mut rest = &bytes[..];
        let mut got = Vec::new();
        while let Ok(Some((h, n))) = FrameHeader::parse(rest, Role::Client) {
            let end = n + h.payload_len as usize;
            got.push((h.opcode, rest[n..end].to_vec()));
            rest = &rest[end..];
        }
        got
    }

    #[test]
    fn a_queue_that_never_empties_does_not_keep_written_bytes() {
        let mut out = Outbox::new();
        out.push_raw(&[1; 100]);
        for _ in 0..1000 {
            // The peer reads a little less than we send, forever.
            out.consume(out.len() - 10);
            out.push_raw(&[2; 100]);
        }
        assert_eq!(out.len(), 110);
        let held: usize = out.queue.as_ref().map_or(0, |q| {
            q.front.bytes().len() + q.rest.iter().map(|c| c.bytes().len()).sum::<usize>()
        });
        assert!(held <= 2 * 110, "{held} bytes held for 110 waiting");
        assert_eq!(out.to_vec()[..10], [2; 10]);
    }
}
