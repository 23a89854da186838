//! `x-request-id`: taken from the request or generated, echoed in the
//! response, recorded in the request's log span and in error envelopes.

use axum::{extract::Request, http::HeaderValue, middleware::Next, response::Response};

/// Header name.
pub const HEADER: &str = "x-request-id";

/// The current request's id (empty outside a request).
pub fn current_request_id() -> String {
    lucid_jobs::telemetry::current_request_id()
}

/// Runs `fut` to completion on a task of its own, in the current request's
/// id and span. A submission that stores and then enqueues uses it: when the
/// client hangs up, hyper drops the handler, and the work must not stop
/// between the two steps. If the task panics, the answer is 503
/// `LUCID_ERR_5010` (the submission may be retried: its steps are idempotent).
pub async fn run_to_completion<F>(fut: F) -> Result<F::Output, crate::error::ApiError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = lucid_jobs::telemetry::with_request_id(current_request_id(), fut);
    tokio::spawn(tracing::Instrument::instrument(
        task,
        tracing::Span::current(),
    ))
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "submission task failed");
        crate::error::ApiError::batch_failed()
    })
}

/// Middleware: assigns the id and runs the rest of the stack inside its scope.
pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(HEADER, v);
    }
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    // A caller's W3C `traceparent` makes this request part of its trace.
    if let Some(parent) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        lucid_jobs::telemetry::set_remote_parent(&span, parent);
    }
    let mut response = lucid_jobs::telemetry::with_request_id(
        id.clone(),
        tracing::Instrument::instrument(next.run(req), span),
    )
    .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}
