//! What a checkpoint of the service holds (everything the worker applied, with the
//! positions that make recovery exact), and how payloads of the previous format are
//! read, so an upgrade keeps its state.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::aggregates::Aggregates;
use crate::engine::snapshot::{EngineSnapshot, EngineSnapshotV2};
use crate::engine::Engine;
use crate::ledger::{LedgerRef, LedgerSnapshot};
use crate::margins::Margins;
use crate::service::input::Resume;

/// Checkpoint payload format; bump on any change to [`CheckpointRef`].
pub const CHECKPOINT_FORMAT: u32 = 4;
/// The formats this build reads: 2 had no state directory id and no caught-up sources;
/// 3 had no credit log and no model costs.
pub const READS: RangeInclusive<u32> = 2..=CHECKPOINT_FORMAT;

/// The first field names the state directory, so a checkpoint copied in from another
/// one is recognised (it is read alone, before the rest).
#[derive(Serialize)]
pub(super) struct CheckpointRef<'a> {
    pub dir_id: u128,
    pub wal_pos: u64,
    pub output_len: u64,
    pub dead_len: u64,
    pub credits_len: u64,
    pub sources: &'a BTreeMap<String, Resume>,
    pub sinks: BTreeMap<String, u64>,
    pub usage: &'a Aggregates,
    pub verdicts: Vec<(u128, u64)>,
    pub engine: &'a Engine,
    pub ledger: LedgerRef<'a>,
    pub margins: &'a Margins,
}

/// A checkpoint as read back, whatever its format.
#[derive(Deserialize)]
pub(super) struct Payload {
    /// Checked (by [`dir_id`]) before the rest is decoded.
    pub dir_id: u128,
    pub wal_pos: u64,
    pub output_len: u64,
    pub dead_len: u64,
    pub credits_len: u64,
    pub sources: BTreeMap<String, Resume>,
    pub sinks: BTreeMap<String, u64>,
    pub usage: Aggregates,
    pub verdicts: Vec<(u128, u64)>,
    pub engine: EngineSnapshot,
    pub ledger: LedgerSnapshot,
    pub margins: Margins,
}

/// Format 3: as 4, without the credit log's length (there was no credit log) and the
/// model costs (they start empty).
#[derive(Deserialize)]
struct PayloadV3 {
    dir_id: u128,
    wal_pos: u64,
    output_len: u64,
    dead_len: u64,
    sources: BTreeMap<String, Resume>,
    sinks: BTreeMap<String, u64>,
    usage: Aggregates,
    verdicts: Vec<(u128, u64)>,
    engine: EngineSnapshot,
    ledger: LedgerSnapshot,
}

#[derive(Deserialize)]
struct PayloadV2 {
    wal_pos: u64,
    output_len: u64,
    dead_len: u64,
    sources: BTreeMap<String, Resume>,
    sinks: BTreeMap<String, u64>,
    usage: Aggregates,
    verdicts: Vec<(u128, u64)>,
    engine: EngineSnapshotV2,
}

type Decoded<T> = Result<T, bincode::error::DecodeError>;

/// The state directory a payload of format `version` was written in; `None` for a
/// format from before directories had ids.
pub(super) fn dir_id(version: u32, payload: &[u8]) -> Decoded<Option<u128>> {
    if version < 3 {
        return Ok(None);
    }
    bincode::serde::decode_from_slice(payload, bincode::config::standard()).map(|(id, _)| Some(id))
}

/// Decodes a payload of format `version`; one of format 2 takes `dir_id` as its own.
pub(super) fn decode(version: u32, payload: &[u8], dir_id: u128) -> Decoded<Payload> {
    let cfg = bincode::config::standard();
    if version >= 4 {
        return bincode::serde::decode_from_slice(payload, cfg).map(|(p, _)| p);
    }
    if version == 3 {
        let (v3, _): (PayloadV3, _) = bincode::serde::decode_from_slice(payload, cfg)?;
        return Ok(Payload {
            dir_id: v3.dir_id,
            wal_pos: v3.wal_pos,
            output_len: v3.output_len,
            dead_len: v3.dead_len,
            credits_len: 0,
            sources: v3.sources,
            sinks: v3.sinks,
            usage: v3.usage,
            verdicts: v3.verdicts,
            engine: v3.engine,
            ledger: v3.ledger,
            margins: Margins::default(),
        });
    }
    let (v2, _): (PayloadV2, _) = bincode::serde::decode_from_slice(payload, cfg)?;
    Ok(Payload {
        dir_id,
        wal_pos: v2.wal_pos,
        output_len: v2.output_len,
        dead_len: v2.dead_len,
        credits_len: 0,
        sources: v2.sources,
        sinks: v2.sinks,
        usage: v2.usage,
        verdicts: v2.verdicts,
        engine: v2.engine.into(),
        // Format 2 came before billing in the service.
        ledger: LedgerSnapshot::default(),
        margins: Margins::default(),
    })
}
