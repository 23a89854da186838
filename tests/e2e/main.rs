//! End-to-end tests against real Redis, MongoDB and PostgreSQL: the real API
//! on port 0, in-process workers and real worker processes.

mod batches_api;
mod cli;
mod helpers;
mod nodes_api;
mod observability;
mod payouts_api;
mod pools_api;
mod poot_api;
// `start_worker!` (in-process workers with closure handlers) is used by `chaos`,
// declared after it.
#[macro_use]
mod queue_guarantees;
mod receiver;
mod resources_api;
mod scaling_api;
mod scheduler;
mod security;
mod storage;
mod worker_kill;
// After `queue_guarantees`, whose `start_worker!` it uses.
mod chaos;
