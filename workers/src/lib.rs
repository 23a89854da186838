//! The worker process: one apalis worker per queue over the Redis queue, a
//! lease keeper per queue, a registry heartbeat and a small health server.

mod health;
mod runtime;

pub use runtime::{Application, run_registered_worker};

use anyhow::Context as _;
use lucid_jobs::config::Settings;

/// Entry point shared by `lucid-worker` and the end-to-end tests' copy of it.
/// `lucid-worker healthcheck` probes a running worker's `/ready` (for containers).
pub async fn cli_main() -> anyhow::Result<()> {
    let settings = Settings::load().context("load configuration")?;
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return health::probe(settings.worker_health_port).await;
    }
    let _telemetry = lucid_jobs::telemetry::init(&settings, "lucid-worker");
    let stop = lucid_jobs::shutdown::signal_token();
    let app = Application::build(settings).await?;
    tracing::info!(worker = %app.worker_name(), health_port = app.health_port(), "worker started");
    Box::pin(app.run_until_stopped(stop)).await
}
