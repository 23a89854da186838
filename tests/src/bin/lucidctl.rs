//! `lucidctl` built for the end-to-end tests (same code as the `lucidctl` binary).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    lucid_cli::main().await
}
