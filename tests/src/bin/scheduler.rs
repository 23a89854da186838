//! The scheduler binary under test: identical to `lucid-scheduler`, built for
//! this package so the end-to-end tests can run replicas and SIGKILL them.

fn main() -> anyhow::Result<()> {
    lucid_jobs::process::run(lucid_scheduler::cli_main())
}
