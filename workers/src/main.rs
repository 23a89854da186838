//! `lucid-worker`: runs queued jobs until SIGINT/SIGTERM.

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Box::pin(lucid_workers::cli_main())
        .await
        .context("lucid-worker failed")
}
