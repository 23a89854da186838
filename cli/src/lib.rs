//! `lucidctl`: nodes, pools, PoOT batch submission with progress, payout
//! batches, batch watching, queues, dead letters, schedules and tokens.
//! Human tables by default, `--json` for scripts. Configuration:
//! `~/.config/lucid/config.toml` (`api_url`, `token`), then `LUCID_API_URL`
//! and `LUCID_API_TOKEN`. Exit codes: 0 done, 1 some items failed, 2 error.

pub mod client;
mod output;
mod submit;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use client::{Client, Config};

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "lucidctl", version, about = "Operate the Lucid node platform")]
pub struct Cli {
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Draw the progress bar even when standard error is not a terminal
    /// (CI logs); by default it is drawn only on a terminal.
    #[arg(long, global = true)]
    pub progress: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Nodes.
    #[command(subcommand)]
    Nodes(Resource),
    /// Node pools.
    #[command(subcommand)]
    Pools(Resource),
    /// PoOT validation batches.
    #[command(subcommand)]
    Poot(Poot),
    /// Payouts.
    #[command(subcommand)]
    Payouts(Payouts),
    /// Batches.
    #[command(subcommand)]
    Batches(Batches),
    /// Queue counts and live workers.
    Queues,
    /// Dead letters.
    #[command(subcommand)]
    Dead(Dead),
    /// Schedules: list, or pause/resume/trigger one.
    Schedules {
        /// `pause`, `resume` or `trigger`.
        action: Option<String>,
        /// Schedule name.
        name: Option<String>,
    },
    /// Mint a token with the local LUCID_JWT_SECRET (same options as `lucid-api token`).
    Token {
        /// Options passed on, e.g. `--admin` or `--node node_a`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// list / get / create.
#[derive(Debug, Subcommand)]
pub enum Resource {
    /// A page of them.
    List {
        /// Page (from 1).
        #[arg(long, default_value_t = 1)]
        page: u64,
        /// Page size (1-100).
        #[arg(long, default_value_t = 50)]
        page_size: u64,
    },
    /// One by id.
    Get {
        /// Id.
        id: String,
    },
    /// Create one from a JSON file (`-` for standard input).
    Create {
        /// JSON body.
        file: PathBuf,
    },
}

/// PoOT.
#[derive(Debug, Subcommand)]
pub enum Poot {
    /// Stream a JSONL file of validation items, submit it in batches, and
    /// follow them to the end with a progress bar (exit 1 if any item failed).
    Submit {
        /// One item per line: `{node_id, output_data, timestamp, nonce}`.
        file: PathBuf,
        /// Items per batch.
        #[arg(long, default_value_t = 10_000)]
        batch_size: usize,
    },
}

/// Payouts.
#[derive(Debug, Subcommand)]
pub enum Payouts {
    /// Submit a CSV (`node_id,amount,currency,wallet_address[,priority]`, with a header) as one batch.
    Batch {
        /// The CSV file.
        file: PathBuf,
        /// Batch id (replays are answered with the same batch).
        #[arg(long)]
        id: Option<String>,
    },
}

/// Batches.
#[derive(Debug, Subcommand)]
pub enum Batches {
    /// Follow a batch with a progress bar until it finishes (exit 1 if items failed).
    Watch {
        /// Batch id.
        id: String,
    },
}

/// Dead letters.
#[derive(Debug, Subcommand)]
pub enum Dead {
    /// Dead jobs of a queue.
    List {
        /// Queue name.
        queue: String,
    },
    /// Requeue a dead job.
    Retry {
        /// Job id.
        job_id: String,
    },
}

/// Parses the process arguments, runs, prints errors with their code.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Token { args } = &cli.command {
        let settings = lucid_jobs::config::Settings::load().context("load LUCID_* settings")?;
        println!("{}", lucid_api::auth::token_command(&settings, args)?);
        return Ok(ExitCode::SUCCESS);
    }
    let client = Client::new(&Config::load()?);
    let out = output::Out {
        json: cli.json,
        progress: cli.progress,
    };
    match cli.command {
        Command::Nodes(r) => resource(&client, &out, "/api/v1/nodes/", r).await,
        Command::Pools(r) => resource(&client, &out, "/api/v1/nodes/pools/", r).await,
        Command::Poot(Poot::Submit { file, batch_size }) => {
            submit::poot_submit(&client, &out, &file, batch_size).await
        }
        Command::Batches(Batches::Watch { id }) => submit::watch(&client, &out, &[id]).await,
        Command::Payouts(Payouts::Batch { file, id }) => {
            let body = payout_batch(&file, id)?;
            out.value(
                &client.post("/api/v1/nodes/payouts/batch", &body).await?,
                &["batch_id", "total", "status_url"],
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Queues => {
            let v = client.get("/api/v1/queues").await?;
            if out.json {
                // Queues and workers, as the API answered them.
                out.value(&v, &[]);
                return Ok(ExitCode::SUCCESS);
            }
            out.rows(
                &v["queues"],
                &[
                    "queue",
                    "queued",
                    "scheduled",
                    "running",
                    "succeeded",
                    "dead",
                    "retried",
                ],
            );
            out.rows(
                &output::with_job_counts(&v["workers"]),
                &["name", "host", "last_seen", "running_jobs", "queues"],
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Dead(Dead::List { queue }) => {
            let v = client
                .get(&format!("/api/v1/queues/{queue}/dead?page_size=100"))
                .await?;
            out.rows(
                &v["jobs"],
                &["job_id", "kind", "attempts", "last_error", "finished_at"],
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Dead(Dead::Retry { job_id }) => {
            let v = client
                .post(&format!("/api/v1/jobs/{job_id}/retry"), &json!({}))
                .await?;
            out.value(&v, &["job_id", "status", "queue"]);
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedules { action, name } => {
            match (action.as_deref(), name) {
                (None, _) => {
                    let v = client.get("/api/v1/schedules").await?;
                    out.rows(
                        &v["items"],
                        &[
                            "name",
                            "cron",
                            "enabled",
                            "paused",
                            "next_fire",
                            "last_fire",
                            "last_job_id",
                            "leader",
                        ],
                    );
                }
                (Some(a @ ("pause" | "resume" | "trigger")), Some(n)) => {
                    let v = client
                        .post(&format!("/api/v1/schedules/{n}/{a}"), &json!({}))
                        .await?;
                    out.value(&v, &["name", "paused", "job_id", "next_fire"]);
                }
                _ => anyhow::bail!("usage: lucidctl schedules [pause|resume|trigger NAME]"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { .. } => Ok(ExitCode::SUCCESS),
    }
}

async fn resource(
    client: &Client,
    out: &output::Out,
    base: &str,
    r: Resource,
) -> anyhow::Result<ExitCode> {
    let columns: &[&str] = if base.contains("pools") {
        &["pool_id", "name", "node_count", "max_nodes", "created_at"]
    } else {
        &[
            "node_id",
            "name",
            "status",
            "node_type",
            "pool_id",
            "poot_score",
        ]
    };
    match r {
        Resource::List { page, page_size } => {
            let v = client
                .get(&format!("{base}?page={page}&page_size={page_size}"))
                .await?;
            out.rows(&v["items"], columns);
            if !out.json {
                println!("page {page}, {} in all", v["total"]);
            }
        }
        Resource::Get { id } => out.value(&client.get(&format!("{base}{id}")).await?, columns),
        Resource::Create { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("read standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("read {}", file.display()))?
            };
            let body: Value = serde_json::from_str(&text).context("the body is not JSON")?;
            out.value(&client.post(base, &body).await?, columns);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn payout_batch(file: &std::path::Path, id: Option<String>) -> anyhow::Result<Value> {
    let mut reader =
        csv::Reader::from_path(file).with_context(|| format!("read {}", file.display()))?;
    let mut payouts = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("line {}", i + 2))?;
        let field = |n: usize, what: &str| {
            row.get(n)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .with_context(|| format!("line {}: missing {what}", i + 2))
        };
        let mut p = json!({
            "node_id": field(0, "node_id")?,
            "amount": field(1, "amount")?,
            "currency": field(2, "currency")?,
            "wallet_address": field(3, "wallet_address")?,
        });
        if let Some(priority) = row.get(4).map(str::trim).filter(|s| !s.is_empty()) {
            p["priority"] = json!(priority);
        }
        payouts.push(p);
    }
    let mut body = json!({ "payouts": payouts });
    if let Some(id) = id {
        body["batch_id"] = json!(id);
    }
    Ok(body)
}
