//! `lucid-worker`: runs queued jobs until SIGINT/SIGTERM.

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    lucid_jobs::process::run(Box::pin(lucid_workers::cli_main())).context("lucid-worker failed")
}
