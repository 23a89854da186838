//! PoOT (Proof of Operational Tasks): work proofs, the score over a sliding
//! window ([`score`]), its assessment against the node's history
//! ([`assess`]), single validations ([`validation`]) and batch validation
//! through the `poot-validation` queue (chunk jobs scored from per-batch
//! node [`snapshot`]s).

pub mod assess;
mod chunk;
mod inputs;
mod item;
pub mod proof;
pub mod repo;
pub mod score;
pub mod snapshot;
pub mod stats;
pub mod validation;

pub use chunk::{
    BATCH_KIND, JOB_NAME, PootValidationJob, handle_chunk, run_chunk, submit_batch,
    submit_batch_with_id, sweep_dead_chunks,
};
pub use item::*;
