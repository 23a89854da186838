//! The API binary under test: identical to `lucid-api`, built for this
//! package so tests can run it as a process and read its logs.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lucid_api::cli_main().await
}
