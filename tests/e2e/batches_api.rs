//! Batch submission, status polling and the queue endpoints over HTTP.
