//! Domain types: validated on construction, shared by the API and the jobs.

pub mod node;
pub mod payout;
pub mod pool;
pub mod resources;
mod validation;

pub use validation::{Check, ValidationErrors};
