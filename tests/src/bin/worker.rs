//! The worker binary under test: identical to `lucid-worker`, built for this
//! package so the end-to-end tests can spawn and SIGKILL real worker processes.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Box::pin(lucid_workers::cli_main()).await
}
