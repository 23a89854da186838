//! Batches: a large request split into chunk jobs whose progress is polled.
//!
//! A batch record lives in MongoDB (`batches`); each chunk job writes its
//! items' results with deterministic ids and then a chunk summary in `jobs`
//! (`_id` = job id), so a re-run of a chunk changes nothing. The batch's
//! counts are always derived from the chunk summaries, never incremented.

mod model;
mod repo;

pub use model::*;
pub use repo::BatchRepo;
