//! The guard every request passes: rate limit (by token subject, or client
//! IP when anonymous), token check, scope check, node-self check, and the
//! audit record of writes on payouts, pools and schedules.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use lucid_jobs::config::RateLimits;
use mongodb::bson::{self, doc};

use super::{
    Principal, Tier, TokenKeys,
    limiter::{self, Verdict},
    scopes::{self, Access, Bucket},
};
use crate::error::{ApiError, codes};

/// Collection of the audit log (append-only: the API only inserts).
pub const AUDIT_LOG: &str = "audit_log";

/// What the guard needs; cheap to clone.
#[derive(Clone)]
pub struct Guard {
    /// Token keys.
    pub keys: Arc<TokenKeys>,
    /// Redis (rate limits).
    pub redis: redis::aio::ConnectionManager,
    /// Key prefix of the rate-limit buckets.
    pub prefix: String,
    /// Limits.
    pub limits: RateLimits,
    /// Whether `/metrics` is public.
    pub metrics_public: bool,
    /// MongoDB (audit log).
    pub db: lucid_jobs::storage::Db,
}

fn www_authenticate(value: String) -> impl FnOnce(Response) -> Response {
    move |mut r| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

fn unauthorized(code: &'static str, message: &str) -> Response {
    let challenge = if code == codes::UNAUTHORIZED {
        r#"Bearer realm="lucid-node-management""#.to_string()
    } else {
        format!(
            r#"Bearer realm="lucid-node-management", error="invalid_token", error_description="{message}""#
        )
    };
    www_authenticate(challenge)(
        ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response(),
    )
}

fn forbidden(code: &'static str, message: String, scope: Option<String>) -> Response {
    let mut challenge =
        r#"Bearer realm="lucid-node-management", error="insufficient_scope""#.to_string();
    if let Some(s) = scope {
        challenge.push_str(&format!(r#", scope="{s}""#));
    }
    www_authenticate(challenge)(ApiError::new(StatusCode::FORBIDDEN, code, message).into_response())
}

fn bearer(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let v = headers.get(header::AUTHORIZATION)?;
    let v = v.to_str().map_err(|_| ());
    Some(v.and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or(())
    }))
}

/// The actual value of the `{node_id}` segment of `template` in `path`.
fn node_param<'a>(template: &str, path: &'a str) -> Option<&'a str> {
    template
        .split('/')
        .zip(path.split('/'))
        .find(|(t, _)| *t == "{node_id}")
        .map(|(_, v)| v)
}

fn audited(method: &Method, template: &str) -> bool {
    *method != Method::GET
        && *method != Method::HEAD
        && (template.starts_with("/api/v1/nodes/payouts")
            || template.starts_with("/api/v1/nodes/pools")
            || template.starts_with("/api/v1/schedules")
            || template == "/api/v1/nodes/{node_id}/payouts")
}

fn limit_headers(r: &mut Response, v: &Verdict) {
    let h = r.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", v.limit.to_string()),
        ("x-ratelimit-remaining", v.remaining.to_string()),
        ("x-ratelimit-reset", v.reset_secs.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            h.insert(name, value);
        }
    }
}

impl Guard {
    /// Takes the request from the subject's tier bucket and, if any, the
    /// route's bucket; returns the tighter verdict. `Err` is a response to
    /// send instead (Redis down on a payout write: fail closed).
    async fn limit(
        &self,
        subject: &str,
        tier: Tier,
        bucket: Option<Bucket>,
    ) -> Result<Option<Verdict>, Response> {
        let l = &self.limits;
        let tier_limit = match tier {
            Tier::Public => l.public,
            Tier::Authenticated => l.authenticated,
            Tier::Admin => l.admin,
        };
        let mut conn = self.redis.clone();
        let tier_key = format!("{}:rl:{tier:?}:{subject}", self.prefix);
        let mut verdicts = vec![limiter::take(&mut conn, &tier_key, tier_limit).await];
        if let Some(b) = bucket {
            let limit = match b {
                Bucket::PootValidation => l.poot_validation,
                Bucket::PayoutWrites => l.payout_writes,
            };
            let key = format!("{}:rl:{}:{subject}", self.prefix, b.as_str());
            verdicts.push(limiter::take(&mut conn, &key, limit).await);
        }
        let mut tightest: Option<Verdict> = None;
        for v in verdicts {
            match v {
                Ok(v) => {
                    let replace = tightest.is_none_or(|t| {
                        (!v.allowed && t.allowed)
                            || (v.allowed == t.allowed && v.remaining < t.remaining)
                    });
                    if replace {
                        tightest = Some(v);
                    }
                }
                Err(e) if bucket == Some(Bucket::PayoutWrites) => {
                    tracing::error!(error = %e, "rate limiter unavailable: refusing a payout write (fail closed)");
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        codes::UNAVAILABLE,
                        "rate limiting is unavailable; payout writes are paused, retry later",
                    )
                    .into_response());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rate limiter unavailable: letting the request through (fail open)");
                }
            }
        }
        Ok(tightest)
    }
}

/// The guard middleware.
pub async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let probe = matches!(path.as_str(), "/health" | "/ready" | "/metrics");
    let claims = match bearer(req.headers()) {
        None => None,
        Some(Err(())) => Some(Err(super::TokenError(
            "the Authorization header is not `Bearer <token>`".into(),
        ))),
        Some(Ok(token)) => Some(g.keys.verify(token)),
    };
    let principal: Option<Principal> = match &claims {
        Some(Ok(c)) => Some(c.clone().into()),
        _ => None,
    };
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let (subject, tier) = match &principal {
        Some(p) => (format!("sub:{}", p.sub), p.tier),
        None => (format!("ip:{ip}"), Tier::Public),
    };
    let verdict = if probe {
        None
    } else {
        match g
            .limit(&subject, tier, scopes::bucket(&method, &path))
            .await
        {
            Ok(v) => v,
            Err(response) => return response,
        }
    };
    let finish = |mut r: Response| {
        if let Some(v) = &verdict {
            limit_headers(&mut r, v);
        }
        r
    };
    if let Some(v) = verdict.filter(|v| !v.allowed) {
        let bucket = scopes::bucket(&method, &path).map_or("tier", Bucket::as_str);
        metrics::counter!(lucid_jobs::metrics::RATE_LIMIT_REJECTIONS, "bucket" => bucket)
            .increment(1);
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::RATE_LIMITED,
            format!(
                "rate limit of {} requests per minute reached; retry in {} s",
                v.limit, v.retry_after_secs
            ),
        )
        .into_response();
        if let Ok(h) = HeaderValue::from_str(&v.retry_after_secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, h);
        }
        return finish(r);
    }
    if let Some(Err(e)) = &claims {
        return finish(unauthorized(codes::TOKEN_INVALID, &e.0));
    }
    let Some(template) = template else {
        return finish(next.run(req).await); // unknown route: 404 from the fallback
    };
    match scopes::required(&method, &template, g.metrics_public) {
        Some(Access::Public) => {}
        // Not in the table (a method the route does not serve: the router
        // answers 405): still only for callers with a valid token.
        None if principal.is_none() => {
            return finish(unauthorized(
                codes::UNAUTHORIZED,
                "a bearer token is required",
            ));
        }
        None => {}
        Some(Access::AnyOf(needed)) => {
            let Some(p) = &principal else {
                return finish(unauthorized(
                    codes::UNAUTHORIZED,
                    "a bearer token is required",
                ));
            };
            if !needed.iter().any(|s| p.scopes.contains(*s)) {
                return finish(forbidden(
                    codes::FORBIDDEN,
                    format!("this endpoint needs the scope {}", needed.join(" or ")),
                    Some(needed.join(" ")),
                ));
            }
            if p.is_node
                && let Some(node) = node_param(&template, &path)
                && node != p.sub
            {
                return finish(forbidden(
                    codes::NODE_MISMATCH,
                    format!("a node token may only act for its own node ({})", p.sub),
                    None,
                ));
            }
        }
    }
    let request_id = crate::request_id::current_request_id();
    let response = next.run(req).await;
    if audited(&method, &template) {
        let entry = doc! {
            "_id": uuid::Uuid::now_v7().to_string(),
            "at": bson::DateTime::now(),
            "actor": principal.as_ref().map_or("anonymous", |p| p.sub.as_str()),
            "tier": format!("{tier:?}").to_lowercase(),
            "method": method.as_str(),
            "path": &path,
            "route": &template,
            "status": i32::from(response.status().as_u16()),
            "request_id": request_id,
        };
        if let Err(e) =
            g.db.collection::<bson::Document>(AUDIT_LOG)
                .insert_one(entry)
                .await
        {
            tracing::error!(error = %e, "could not write the audit log");
        }
    }
    finish(response)
}
