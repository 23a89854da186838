//! `lucid-api store ping` and `lucid-api store drop-database NAME`: the
//! development scripts' handle on the MongoDB at `LUCID_MONGODB_URL`,
//! through the driver and connection options the platform itself uses, so
//! no other MongoDB client (a Python one, say) is needed on the machine.

use std::time::Duration;

use anyhow::Context as _;
use lucid_jobs::{config::Settings, storage::Db};
use secrecy::ExposeSecret as _;

const USAGE: &str = "usage: lucid-api store ping | lucid-api store drop-database NAME";

/// How long a script waits for the server before the command fails.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the subcommand; returns the line to print.
pub async fn run(settings: &Settings, args: &[String]) -> anyhow::Result<String> {
    let url = settings.mongodb_url.expose_secret();
    let db = Db::connect(url, &settings.database_name)
        .await
        .context("parse LUCID_MONGODB_URL")?;
    match args {
        [cmd] if cmd == "ping" => {
            let (version, set) = tokio::time::timeout(TIMEOUT, db.server_info())
                .await
                .context("MongoDB did not answer within 10 s")?
                .context("MongoDB ping")?;
            let topology =
                set.map_or_else(|| "standalone".into(), |s| format!("replica set {s:?}"));
            Ok(format!("ping ok: version {version}, {topology}"))
        }
        [cmd, name] if cmd == "drop-database" => {
            tokio::time::timeout(TIMEOUT, db.database().client().database(name).drop())
                .await
                .context("MongoDB did not answer within 10 s")?
                .with_context(|| format!("drop database {name}"))?;
            Ok(format!("dropped database {name}"))
        }
        _ => anyhow::bail!(USAGE),
    }
}
