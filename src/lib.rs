//! `verdict`: an outcome metering engine. Conversation events flow
//! sources -> decode -> engine (state, time, rules) -> verdicts -> sinks and aggregates.

pub mod aggregates;
pub mod bytes;
pub mod checkpoint;
pub mod cluster;
pub mod decode;
pub mod engine;
pub mod export;
pub mod gen;
pub mod kinds;
pub mod ledger;
pub mod margin_view;
pub mod margins;
pub mod money;
pub mod replay;
pub mod rules;
pub mod service;
pub mod sinks;
pub mod sources;
pub mod statedir;
pub mod summary;
pub mod telemetry;
pub mod timestamp;
pub mod verdicts;
pub mod wal;
