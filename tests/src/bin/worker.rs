//! The worker binary under test: identical to `lucid-worker`, built for this
//! package so the end-to-end tests can spawn and SIGKILL real worker processes.

fn main() -> anyhow::Result<()> {
    lucid_jobs::process::run(Box::pin(lucid_workers::cli_main()))
}
