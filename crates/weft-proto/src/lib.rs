//! weft's reliable multicast protocol, as a pure state machine.
//!
//! The crate owns no socket, no clock, no thread and no OS randomness (the
//! quinn-proto and smoltcp discipline): bytes and the current time go in,
//! datagrams to send, timers and events come out, so a deterministic simulator can
//! drive it through any network it can imagine. This first part is the wire
//! format ([`wire`]): every frame as a checked view over bytes plus a typed value
//! that parses and emits, with decoders that never panic on any input.
//!
//! ```
//! use weft_proto::wire::{Frame, Header, Kind, Status};
//! let status = Frame::Status(Status { receiver_id: 7, position: 100, window: 64 });
//! let header = Header { stream_id: 1, session_id: 0xABCD };
//! let mut buf = [0u8; 64];
//! let n = status.emit(header, &mut buf).unwrap();
//! let (h, parsed) = Frame::parse(&buf[..n]).unwrap();
//! assert_eq!((h, parsed.kind()), (header, Kind::Status));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod wire;
