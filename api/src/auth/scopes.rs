//! Which scope each endpoint needs, in one table (`required`), and which
//! stricter rate-limit bucket it belongs to (`bucket`).

use axum::http::Method;

/// Every scope.
pub const ALL: &[&str] = &[
    "node:read",
    "node:write",
    "pool:read",
    "pool:write",
    "resource:read",
    "resource:write",
    "poot:read",
    "poot:validate",
    "poot:batch",
    "payout:read",
    "payout:write",
    "payout:admin",
    "queue:read",
    "queue:admin",
    "schedule:admin",
];

/// What an endpoint requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// A token with any of these scopes.
    AnyOf(&'static [&'static str]),
}

/// A stricter per-route rate-limit bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// PoOT validations.
    PootValidation,
    /// Payout writes (fail closed when Redis is down).
    PayoutWrites,
}

impl Bucket {
    /// Key part.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PootValidation => "poot_validation",
            Self::PayoutWrites => "payout_writes",
        }
    }
}

/// The scope(s) `method path` needs; `path` is the route template (e.g.
/// `/api/v1/nodes/{node_id}`). `None` for a route this table does not know
/// (it is refused: every route must be listed).
pub fn required(method: &Method, path: &str, metrics_public: bool) -> Option<Access> {
    use Access::{AnyOf, Public};
    let read = *method == Method::GET || *method == Method::HEAD;
    let rest = match path.strip_prefix("/api/v1/") {
        Some(r) => r,
        None => {
            return match path {
                "/health" | "/ready" | "/openapi.json" | "/dashboard" | "/dashboard/app.js" => {
                    Some(Public)
                }
                p if p == "/docs" || p.starts_with("/docs/") => Some(Public),
                "/metrics" if metrics_public => Some(Public),
                "/metrics" => Some(AnyOf(&["queue:read"])),
                _ => None,
            };
        }
    };
    let seg: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    Some(match (seg.as_slice(), read) {
        (["batches", ..], true) => AnyOf(&["poot:read", "queue:read"]),
        (["batches", _, "cancel"], false) => AnyOf(&["poot:batch"]),
        (["jobs", _], true) | (["queues"], true) => AnyOf(&["queue:read"]),
        (["jobs", _, "retry"], false) | (["queues", _, "dead"], true) => AnyOf(&["queue:admin"]),
        (["schedules"], true) => AnyOf(&["schedule:admin", "queue:read"]),
        (["schedules", _, _], false) => AnyOf(&["schedule:admin"]),
        (["nodes", "poot", "batch-validate"], false) => AnyOf(&["poot:batch"]),
        (["nodes", "poot", "statistics"], true) => AnyOf(&["poot:read"]),
        (["nodes", "payouts", "batch"], false) => AnyOf(&["payout:admin"]),
        (["nodes", "payouts", _, "cancel"], false) => AnyOf(&["payout:admin"]),
        (["nodes", "payouts", ..], true) => AnyOf(&["payout:read"]),
        (["nodes", "pools", ..], true) => AnyOf(&["pool:read"]),
        (["nodes", "pools", ..], false) => AnyOf(&["pool:write"]),
        (["nodes", _, "payouts"], true) => AnyOf(&["payout:read"]),
        (["nodes", _, "payouts"], false) => AnyOf(&["payout:write"]),
        (["nodes", _, "resources", ..], true) => AnyOf(&["resource:read"]),
        (["nodes", _, "resources", ..], false) => AnyOf(&["resource:write"]),
        (["nodes", _, "poot", "secret", "rotate"], false) => AnyOf(&["node:write"]),
        (["nodes", _, "poot", "proofs" | "validate"], false) => AnyOf(&["poot:validate"]),
        (["nodes", _, "poot", "calculate"], false) => AnyOf(&["poot:read"]),
        (["nodes", _, "poot", _], true) => AnyOf(&["poot:read"]),
        (["nodes", ..], true) => AnyOf(&["node:read"]),
        (["nodes", ..], false) => AnyOf(&["node:write"]),
        _ => return None,
    })
}

/// The stricter bucket of `method path`, if any.
pub fn bucket(method: &Method, path: &str) -> Option<Bucket> {
    if *method != Method::POST {
        return None;
    }
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match seg.as_slice() {
        ["api", "v1", "nodes", _, "poot", "validate"]
        | ["api", "v1", "nodes", "poot", "batch-validate"] => Some(Bucket::PootValidation),
        ["api", "v1", "nodes", "payouts", ..] | ["api", "v1", "nodes", _, "payouts"] => {
            Some(Bucket::PayoutWrites)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(method: Method, path: &str) -> Vec<&'static str> {
        match required(&method, path, true) {
            Some(Access::AnyOf(s)) => s.to_vec(),
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    #[test]
    fn writes_and_reads_need_their_own_scopes() {
        assert_eq!(
            scopes(Method::GET, "/api/v1/nodes/{node_id}"),
            ["node:read"]
        );
        assert_eq!(
            scopes(Method::DELETE, "/api/v1/nodes/{node_id}"),
            ["node:write"]
        );
        assert_eq!(
            scopes(Method::POST, "/api/v1/nodes/{node_id}/resources"),
            ["resource:write"]
        );
        assert_eq!(
            scopes(Method::POST, "/api/v1/nodes/{node_id}/poot/proofs"),
            ["poot:validate"]
        );
        assert_eq!(
            scopes(Method::POST, "/api/v1/nodes/poot/batch-validate"),
            ["poot:batch"]
        );
        assert_eq!(
            scopes(Method::POST, "/api/v1/nodes/payouts/{payout_id}/cancel"),
            ["payout:admin"]
        );
        assert_eq!(
            scopes(Method::POST, "/api/v1/nodes/{node_id}/payouts"),
            ["payout:write"]
        );
        assert_eq!(
            scopes(Method::GET, "/api/v1/nodes/payouts/stats"),
            ["payout:read"]
        );
        assert_eq!(
            scopes(Method::POST, "/api/v1/nodes/pools/{pool_id}/scale"),
            ["pool:write"]
        );
        assert_eq!(
            scopes(Method::POST, "/api/v1/jobs/{job_id}/retry"),
            ["queue:admin"]
        );
        assert_eq!(
            scopes(Method::GET, "/api/v1/queues/{queue}/dead"),
            ["queue:admin"]
        );
        assert_eq!(
            scopes(Method::POST, "/api/v1/schedules/{name}/pause"),
            ["schedule:admin"]
        );
    }

    #[test]
    fn probes_and_docs_are_public_and_metrics_is_configurable() {
        for p in ["/health", "/ready", "/openapi.json", "/docs"] {
            assert_eq!(
                required(&Method::GET, p, false),
                Some(Access::Public),
                "{p}"
            );
        }
        assert_eq!(
            required(&Method::GET, "/metrics", true),
            Some(Access::Public)
        );
        assert_ne!(
            required(&Method::GET, "/metrics", false),
            Some(Access::Public)
        );
    }

    #[test]
    fn every_scope_in_the_table_exists() {
        let mut used = std::collections::HashSet::new();
        for (m, p) in crate::openapi::operations() {
            match required(&m, &p, true) {
                Some(Access::AnyOf(s)) => used.extend(s.iter().copied()),
                Some(Access::Public) => {}
                None => panic!("{m} {p} has no entry in the scope table"),
            }
        }
        for s in &used {
            assert!(ALL.contains(s), "{s}");
        }
    }

    #[test]
    fn validations_and_payout_writes_have_their_own_buckets() {
        assert_eq!(
            bucket(&Method::POST, "/api/v1/nodes/n1/poot/validate"),
            Some(Bucket::PootValidation)
        );
        assert_eq!(
            bucket(&Method::POST, "/api/v1/nodes/n1/payouts"),
            Some(Bucket::PayoutWrites)
        );
        assert_eq!(
            bucket(&Method::POST, "/api/v1/nodes/payouts/p1/cancel"),
            Some(Bucket::PayoutWrites)
        );
        assert_eq!(bucket(&Method::GET, "/api/v1/nodes/n1/payouts"), None);
        assert_eq!(bucket(&Method::POST, "/api/v1/nodes/n1/resources"), None);
    }
}
