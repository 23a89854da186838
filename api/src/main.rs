//! `lucid-api`: the Node Management REST API (see [`lucid_api::cli_main`]).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lucid_api::cli_main().await
}
