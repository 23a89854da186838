//! The queue guarantees, each against real Redis.
