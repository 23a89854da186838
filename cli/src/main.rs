//! `lucidctl`: see [`lucid_cli`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    lucid_cli::main().await
}
