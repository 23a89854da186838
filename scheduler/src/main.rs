//! `lucid-scheduler`: enqueues periodic work (one leader among any number of replicas).

fn main() -> anyhow::Result<()> {
    lucid_jobs::process::run(lucid_scheduler::cli_main())
}
