//! `lucid-api`: the Node Management REST API. `lucid-api healthcheck` probes a running one.

use anyhow::Context as _;
use lucid_api::Application;
use lucid_jobs::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("load configuration")?;
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return lucid_api::routes::probe(settings.node_api_port).await;
    }
    lucid_jobs::telemetry::init(&settings);
    let stop = lucid_jobs::shutdown::signal_token();
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "lucid-api listening");
    app.run_until_stopped(stop).await
}
