//! Lucid's job library: configuration, domain types, job payloads and
//! handlers, storage, and the Redis queue the API, workers and scheduler share.
//!
//! Every job handler is idempotent: jobs are delivered at least once, so a
//! handler writes its effects with deterministic ids (or upserts) and a re-run
//! changes nothing.

pub mod batch;
pub mod config;
pub mod domain;
pub mod handlers;
pub mod ledger;
pub mod metrics;
pub mod payouts;
pub mod poot;
pub mod process;
pub mod queue;
pub mod retention;
pub mod scaling;
pub mod schedule;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
