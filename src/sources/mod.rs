//! Sources: where records come from, each with positions for dead letters and, in the
//! service, for checkpoints.

pub mod body;
pub mod fluvio;
pub mod ndjson;
pub mod tail;

pub use ndjson::{Line, LineReader};

/// Opens a finite input: a file path, or `-` for stdin.
pub fn open_input(path: &str) -> std::io::Result<Box<dyn std::io::Read + Send>> {
    if path == "-" {
        Ok(Box::new(std::io::stdin()))
    } else {
        Ok(Box::new(std::fs::File::open(path)?))
    }
}
