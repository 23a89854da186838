//! The scheduler binary under test: identical to `lucid-scheduler`, built for
//! this package so the end-to-end tests can run replicas and SIGKILL them.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lucid_scheduler::cli_main().await
}
