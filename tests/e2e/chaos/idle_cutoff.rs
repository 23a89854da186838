//! Readiness after a quiet spell. Load balancers, NAT and some servers close
//! connections that carried nothing for a while (commonly 300-350 s); a
//! readiness probe that then fails takes every replica out of service after
//! each quiet spell. Here each store is reached through a proxy that closes
//! connections idle for 2 s, the API sits idle past that, and its first
//! `GET /ready` must answer 200.

use std::{net::SocketAddr, time::Duration};

use super::proxy::FaultProxy;
use crate::helpers::{spawn_app_with, test_settings};

const CUTOFF: Duration = Duration::from_secs(2);

/// `host:port` of `url` (after `scheme://` and any `user@`, before the path).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let hostport = &rest[..end];
    hostport.rsplit_once('@').map_or(hostport, |(_, h)| h)
}

/// `url` with its `host:port` replaced by the proxy's.
fn through(url: &str, proxy: &FaultProxy) -> String {
    url.replacen(authority(url), &format!("127.0.0.1:{}", proxy.port()), 1)
}

async fn cutting_proxy(url: &str) -> FaultProxy {
    let upstream: SocketAddr = tokio::net::lookup_host(authority(url))
        .await
        .expect("resolve store address")
        .next()
        .expect("an address");
    FaultProxy::with_idle_cutoff(upstream, CUTOFF).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_readiness_check_after_connections_were_cut_while_idle_answers_200() {
    use secrecy::ExposeSecret as _;
    let mut settings = test_settings();
    let (mongo, redis, pg) = (
        settings.mongodb_url.expose_secret().to_string(),
        settings.redis_url.expose_secret().to_string(),
        settings.postgres_url.expose_secret().to_string(),
    );
    let (mongo_proxy, redis_proxy, pg_proxy) = (
        cutting_proxy(&mongo).await,
        cutting_proxy(&redis).await,
        cutting_proxy(&pg).await,
    );
    // Directly to the proxy (no replica-set discovery of the real address);
    // the driver's monitors talk every 0.5 s, so only pooled connections
    // go idle, as in production, where monitors talk every 10 s.
    settings.mongodb_url = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true&heartbeatFrequencyMS=500",
        mongo_proxy.port()
    )
    .into();
    settings.redis_url = through(&redis, &redis_proxy).into();
    settings.postgres_url = through(&pg, &pg_proxy).into();
    let app = spawn_app_with(settings, 0).await;
    let ready = app.get("/ready").await;
    assert_eq!(
        ready.status().as_u16(),
        200,
        "warm-up: {:?}",
        ready.text().await
    );

    tokio::time::sleep(CUTOFF * 2 + Duration::from_secs(1)).await;
    let r = app.get("/ready").await;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(status, 200, "first /ready after the idle cut: {body}");
    assert_eq!(
        body["checks"],
        serde_json::json!({ "redis": "up", "mongodb": "up", "postgres": "up" })
    );
}
