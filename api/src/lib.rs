//! The Lucid Node Management API (axum): submits batches to the queue,
//! serves their status, and exposes queues, jobs and health.

pub mod auth;
pub mod error;
pub mod extract;
pub mod hardening;
pub mod openapi;
pub mod request_id;
pub mod routes;
pub mod startup;
pub mod state;
mod store_command;

pub use startup::Application;

/// `lucid-api`'s `main`. `lucid-api healthcheck` probes a running API;
/// `lucid-api token [--admin | --scope "a b" --tier T --sub S | --node ID] [--ttl SECS]`
/// prints a token signed with this configuration's secret;
/// `lucid-api store ping | drop-database NAME` reaches `LUCID_MONGODB_URL`.
pub async fn cli_main() -> anyhow::Result<()> {
    use anyhow::Context as _;
    let settings = lucid_jobs::config::Settings::load().context("load configuration")?;
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("healthcheck") => return routes::probe(settings.node_api_port).await,
        Some("token") => {
            println!("{}", auth::token_command(&settings, &args[2..])?);
            return Ok(());
        }
        Some("store") => {
            println!("{}", store_command::run(&settings, &args[2..]).await?);
            return Ok(());
        }
        _ => {}
    }
    let _telemetry = lucid_jobs::telemetry::init(&settings, "lucid-api");
    let stop = lucid_jobs::shutdown::signal_token();
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "lucid-api listening");
    app.run_until_stopped(stop).await
}
