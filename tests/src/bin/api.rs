//! The API binary under test: identical to `lucid-api`, built for this
//! package so tests can run it as a process and read its logs.

fn main() -> anyhow::Result<()> {
    lucid_jobs::process::run(lucid_api::cli_main())
}
