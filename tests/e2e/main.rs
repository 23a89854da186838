//! End-to-end tests against real Redis, MongoDB and PostgreSQL: the real API
//! on port 0, in-process workers and real worker processes.

mod batches_api;
mod helpers;
mod queue_guarantees;
mod worker_kill;
