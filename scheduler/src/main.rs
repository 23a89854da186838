//! `lucid-scheduler`: enqueues periodic work (one leader among any number of replicas).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lucid_scheduler::cli_main().await
}
