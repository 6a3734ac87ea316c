//! Decode: raw records from a source become validated [`WireEvent`]s or dead letters.

pub mod deadletter;
pub mod event;
pub mod members;
pub mod scan;

pub use deadletter::DeadLetter;
pub use event::{admit, decode, DecodeError, RejectReason, WireEvent, MAX_RECORD_BYTES};
