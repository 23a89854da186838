//! Request timeout (504 in the error envelope), security headers, CORS, and
//! the JSON depth and string-length limits of request bodies.

use std::time::Duration;

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::{ApiError, codes};

/// Deepest JSON nesting a body may have.
pub const MAX_JSON_DEPTH: usize = 32;
/// Longest JSON string (a 1 MiB output in base64 fits).
pub const MAX_JSON_STRING: usize = 1_500_000;

/// Records each request's count and duration by method, route template and status.
pub async fn http_metrics(req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(lucid_jobs::metrics::HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(lucid_jobs::metrics::HTTP_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Answers 504 (`LUCID_ERR_5040`) when the handler takes longer than `limit`.
pub async fn timeout(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            codes::TIMEOUT,
            format!("the request took longer than {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Security headers on every response (the docs page gets a CSP that lets
/// its UI load).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let docs = req.uri().path().starts_with("/docs");
    let dashboard = req.uri().path().starts_with("/dashboard");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    let csp = if dashboard {
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    } else if docs {
        "default-src 'self' https://cdn.jsdelivr.net; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data:; frame-ancestors 'none'"
    } else {
        "default-src 'none'; frame-ancestors 'none'"
    };
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, csp),
        (
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    if !docs {
        h.entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
    r
}

/// CORS for the configured origins (`LUCID_CORS_ORIGINS`); none configured
/// means browsers on other origins get no CORS headers at all.
pub fn cors(origins: &str) -> CorsLayer {
    let list: Vec<HeaderValue> = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

/// Checks nesting depth and string lengths of a JSON body without parsing
/// it; `Err` names what is exceeded.
pub fn check_json_limits(body: &[u8]) -> Result<(), String> {
    let (mut depth, mut in_string, mut escaped, mut string_len) = (0usize, false, false, 0usize);
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                continue;
            }
            string_len += 1;
            if string_len > MAX_JSON_STRING {
                return Err(format!(
                    "a JSON string is longer than {MAX_JSON_STRING} bytes"
                ));
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                string_len = 0;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(format!(
                        "JSON is nested deeper than {MAX_JSON_DEPTH} levels"
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_and_string_length_are_limited_but_strings_do_not_count_as_nesting() {
        assert!(
            check_json_limits(br#"{"a":[1,{"b":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}]}"#)
                .is_ok()
        );
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert!(
            check_json_limits(deep.as_bytes())
                .unwrap_err()
                .contains("nested")
        );
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(check_json_limits(ok.as_bytes()).is_ok());
        let long = format!(r#"{{"s":"{}"}}"#, "x".repeat(MAX_JSON_STRING + 1));
        assert!(
            check_json_limits(long.as_bytes())
                .unwrap_err()
                .contains("longer")
        );
        assert!(
            check_json_limits(br#"{"s":"a\"{{{{"}"#).is_ok(),
            "escaped quotes stay in the string"
        );
    }
}
