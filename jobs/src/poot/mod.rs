//! PoOT batch validation: the chunk job and the per-item check.
//!
//! For now an item is valid when its node exists and its `output_data` is
//! base64 of at most `max_output_bytes`; the result records
//! `output_hash = sha256(decoded)`. Issue 4 replaces this with PoOT scoring.

pub mod assess;
mod chunk;
mod item;
pub mod proof;
pub mod repo;
pub mod score;
pub mod stats;
pub mod validation;

pub use chunk::{
    BATCH_KIND, JOB_NAME, PootValidationJob, handle_chunk, run_chunk, submit_batch,
    sweep_dead_chunks,
};
pub use item::*;
