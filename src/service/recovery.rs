//! What recovery may find wrong in a state directory, and what it does about each: a
//! torn last log entry or an unreadable newest checkpoint costs nothing (the entry was
//! never acknowledged; the previous checkpoint and the log rebuild the same state), so
//! it is logged and counted. Anything that would give up logged input or written
//! output is refused with what was found, where, and the safe way out, unless the
//! operator started with `--accept-loss`; then it is logged as an error and counted.

use crate::telemetry;

/// One kind of problem, as the `problem` label of `verdict_recovery_problems_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The log ended in a partly written entry (a crash mid-write); it was cut off.
    TornTail,
    /// A checkpoint failed its checks and the one before it was used.
    CheckpointRejected,
    /// The log is damaged with valid entries after the damage.
    LogDamaged,
    /// The log ends before the position the checkpoint recorded.
    LogShort,
    /// The log no longer holds the position the checkpoint needs (segments removed).
    LogMissing,
    /// A checkpoint was written in another state directory.
    ForeignCheckpoint,
    /// A checkpoint was written by a newer build.
    NewerCheckpoint,
    /// No checkpoint can be used, but the log holds input.
    NoCheckpoint,
    /// The verdict or dead-letter file is shorter than its checkpoint recorded.
    OutputShort,
}

impl Problem {
    pub const ALL: [Problem; 9] = [
        Problem::TornTail,
        Problem::CheckpointRejected,
        Problem::LogDamaged,
        Problem::LogShort,
        Problem::LogMissing,
        Problem::ForeignCheckpoint,
        Problem::NewerCheckpoint,
        Problem::NoCheckpoint,
        Problem::OutputShort,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Problem::TornTail => "torn_tail",
            Problem::CheckpointRejected => "checkpoint_rejected",
            Problem::LogDamaged => "log_damaged",
            Problem::LogShort => "log_short",
            Problem::LogMissing => "log_missing",
            Problem::ForeignCheckpoint => "foreign_checkpoint",
            Problem::NewerCheckpoint => "newer_checkpoint",
            Problem::NoCheckpoint => "no_checkpoint",
            Problem::OutputShort => "output_short",
        }
    }

    /// Whether going on loses nothing that was acknowledged or written.
    fn harmless(self) -> bool {
        matches!(self, Problem::TornTail | Problem::CheckpointRejected)
    }
}

/// How recovery treats problems that lose data.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    pub accept_loss: bool,
}

impl Policy {
    /// Reports problem `p`: `what` says what was found and where; `way_out` the safe way
    /// out and what `--accept-loss` would do. Ok means recovery goes on.
    pub fn found(&self, p: Problem, what: &str, way_out: &str) -> anyhow::Result<()> {
        if p.harmless() {
            tracing::warn!("recovery: {what}");
        } else if self.accept_loss {
            tracing::error!("recovery: {what}; going on as --accept-loss asks: {way_out}");
            eprintln!("verdict: recovery: {what}; going on as --accept-loss asks");
        } else {
            anyhow::bail!("recovery stopped: {what}.\nThe safe way out: {way_out}");
        }
        metrics::counter!(telemetry::RECOVERY_PROBLEMS, "problem" => p.as_str()).increment(1);
        Ok(())
    }
}
