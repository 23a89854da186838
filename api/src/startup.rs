//! Building and running the API server.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Router, extract::DefaultBodyLimit, middleware};
use lucid_jobs::{config::Settings, handlers::JobContext, queue::Queue, storage::Db};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use crate::{request_id, routes, state::AppState};

/// Default body limit of ordinary endpoints.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;
/// Body limit of batch endpoints (100,000 items).
pub const BATCH_BODY_LIMIT: usize = 256 * 1024 * 1024;

/// A built API server: connected and bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
    grace: Duration,
}

impl Application {
    /// Connects to the stores and binds `LUCID_NODE_API_HOST:LUCID_NODE_API_PORT` (port 0 = any).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let keys = Arc::new(crate::auth::TokenKeys::from_settings(&settings)?);
        lucid_jobs::metrics::install();
        let queue = Queue::connect(settings.redis_url.expose_secret(), settings.queue())
            .await
            .context("connect to Redis (LUCID_REDIS_URL)")?;
        let db = Db::connect(
            settings.mongodb_url.expose_secret(),
            &settings.database_name,
        )
        .await
        .context("connect to MongoDB (LUCID_MONGODB_URL)")?
        .with_resource_retention_days(settings.resource_retention_days);
        db.ensure_indexes()
            .await
            .context("create MongoDB indexes (LUCID_MONGODB_URL)")?;
        let ledger = lucid_jobs::ledger::Ledger::connect(
            settings.postgres_url.expose_secret(),
            &settings.postgres_schema,
        )
        .await
        .context("connect to PostgreSQL and migrate the ledger (LUCID_POSTGRES_URL)")?;
        let pg = ledger.pool().clone();
        let listener = TcpListener::bind((settings.node_api_host.as_str(), settings.node_api_port))
            .await
            .with_context(|| {
                format!(
                    "bind {}:{} (LUCID_NODE_API_HOST/LUCID_NODE_API_PORT)",
                    settings.node_api_host, settings.node_api_port
                )
            })?;
        let grace = Duration::from_secs(settings.shutdown_grace_secs);
        let guard = crate::auth::Guard {
            keys,
            redis: queue.redis(),
            prefix: settings.queue_prefix.clone(),
            limits: settings.rate_limit,
            metrics_public: settings.metrics_public,
            db: db.clone(),
        };
        let hardening = Hardening {
            timeout: Duration::from_secs(settings.request_timeout_secs),
            cors_origins: settings.cors_origins.clone(),
        };
        let nodes = lucid_jobs::storage::nodes::NodeRepo::new(&db);
        let resources = lucid_jobs::storage::resources::ResourceRepo::new(&db);
        let pools = lucid_jobs::storage::pools::PoolRepo::new(&db);
        let schedules = Arc::new(settings.scheduler.schedules()?);
        let schedule_store = lucid_jobs::schedule::store::ScheduleStore::new(queue.clone());
        let jobs = JobContext::new(db, queue, ledger, Arc::new(settings));
        jobs.ensure_indexes()
            .await
            .context("create PoOT and payout indexes (LUCID_MONGODB_URL)")?;
        let state = AppState {
            nodes,
            resources,
            pools,
            // The API scores on demand: every answer reflects the latest proofs.
            validator: jobs.validator.clone(),
            jobs,
            schedules,
            schedule_store,
            pg,
        };
        Ok(Self {
            listener,
            router: router(state, guard, hardening),
            grace,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `stop` is cancelled, then drains in-flight requests.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let drain = stop.clone();
        let serve = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { drain.cancelled().await });
        tokio::select! {
            r = serve => r.context("serve HTTP"),
            () = async { stop.cancelled().await; tokio::time::sleep(self.grace).await } => {
                tracing::warn!("drain grace period over; closing remaining connections");
                Ok(())
            }
        }
    }
}

/// Request limits that are not per route.
#[derive(Debug, Clone)]
pub struct Hardening {
    /// Request timeout.
    pub timeout: Duration,
    /// Allowed CORS origins, comma-separated.
    pub cors_origins: String,
}

/// The full router with its middleware: request id, tracing, panics, security
/// headers, CORS, then (per route) the guard (rate limit, token, scope,
/// audit), the timeout and the body limit.
pub fn router(state: AppState, guard: crate::auth::Guard, hardening: Hardening) -> Router {
    let batch = routes::batch_routes().layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT));
    let limit = hardening.timeout;
    Router::new()
        .merge(routes::routes().layer(DefaultBodyLimit::max(BODY_LIMIT)))
        .merge(batch)
        .merge(crate::openapi::routes())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(middleware::from_fn(move |req, next| {
            crate::hardening::timeout(limit, req, next)
        }))
        .layer(middleware::from_fn_with_state(guard, crate::auth::guard))
        .layer(middleware::from_fn(crate::hardening::http_metrics))
        .with_state(state)
        .layer(crate::hardening::cors(&hardening.cors_origins))
        .layer(middleware::from_fn(crate::hardening::security_headers))
        .layer(CatchPanicLayer::custom(routes::panic_response))
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn(request_id::assign))
}
