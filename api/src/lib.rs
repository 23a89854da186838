//! The Lucid Node Management API (axum): submits batches to the queue,
//! serves their status, and exposes queues, jobs and health.

pub mod error;
pub mod extract;
pub mod openapi;
pub mod request_id;
pub mod routes;
pub mod startup;
pub mod state;

pub use startup::Application;
