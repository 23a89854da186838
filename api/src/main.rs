//! `lucid-api`: the Node Management REST API (see [`lucid_api::cli_main`]).

fn main() -> anyhow::Result<()> {
    lucid_jobs::process::run(lucid_api::cli_main())
}
