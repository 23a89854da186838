//! `lucid-scheduler`: enqueues periodic work.

use anyhow::Context as _;
use lucid_jobs::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("load configuration")?;
    lucid_jobs::telemetry::init(&settings);
    let stop = lucid_jobs::shutdown::signal_token();
    lucid_scheduler::Application::build(settings)
        .await?
        .run_until_stopped(stop)
        .await
}
