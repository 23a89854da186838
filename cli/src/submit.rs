//! `poot submit` (stream a JSONL file in batches) and `batches watch`, with
//! a progress bar (items/s and ETA) on standard error.

use std::{
    io::BufRead as _,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::{client::Client, output::Out};

fn bar(out: &Out) -> ProgressBar {
    let pb = if out.progress {
        // indicatif hides its stderr target when it is not a terminal.
        ProgressBar::with_draw_target(
            Some(0),
            ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stderr()), 4),
        )
    } else {
        ProgressBar::new(0)
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} items  {per_sec}  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

/// Streams `file` (one item per line), submits every `batch_size` items as
/// a batch, then follows all of them.
pub async fn poot_submit(
    client: &Client,
    out: &Out,
    file: &Path,
    batch_size: usize,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (1..=100_000).contains(&batch_size),
        "--batch-size must be 1 to 100000"
    );
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?,
    );
    let pb = bar(out);
    pb.set_message("submitting");
    let mut batch_ids = Vec::new();
    let mut buffer: Vec<Value> = Vec::with_capacity(batch_size);
    let mut submitted = 0u64;
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("read line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let item: Value =
            serde_json::from_str(&line).with_context(|| format!("line {} is not JSON", n + 1))?;
        buffer.push(item);
        if buffer.len() == batch_size {
            batch_ids.push(submit(client, &mut buffer).await?);
            submitted += batch_size as u64;
            pb.set_length(submitted);
            pb.set_message(format!("submitting: {submitted} sent"));
        }
    }
    if !buffer.is_empty() {
        submitted += buffer.len() as u64;
        batch_ids.push(submit(client, &mut buffer).await?);
        pb.set_length(submitted);
    }
    anyhow::ensure!(submitted > 0, "{} holds no items", file.display());
    follow(client, out, &batch_ids, pb).await
}

async fn submit(client: &Client, buffer: &mut Vec<Value>) -> anyhow::Result<String> {
    let items = std::mem::take(buffer);
    let v = client
        .post(
            "/api/v1/nodes/poot/batch-validate",
            &json!({ "validations": items }),
        )
        .await
        .context("submit a batch")?;
    v["batch_id"]
        .as_str()
        .map(String::from)
        .context("the answer has no batch_id")
}

/// `batches watch`: follows batches to the end.
pub async fn watch(client: &Client, out: &Out, ids: &[String]) -> anyhow::Result<ExitCode> {
    follow(client, out, ids, bar(out)).await
}

async fn follow(
    client: &Client,
    out: &Out,
    ids: &[String],
    pb: ProgressBar,
) -> anyhow::Result<ExitCode> {
    pb.set_message("running");
    let started = Instant::now();
    let views = loop {
        let mut views = Vec::with_capacity(ids.len());
        for id in ids {
            views.push(client.get(&format!("/api/v1/batches/{id}")).await?);
        }
        let total: u64 = views.iter().map(|v| v["total"].as_u64().unwrap_or(0)).sum();
        let done: u64 = views
            .iter()
            .map(|v| v["succeeded"].as_u64().unwrap_or(0) + v["failed"].as_u64().unwrap_or(0))
            .sum();
        pb.set_length(total);
        pb.set_position(done.min(total));
        let finished = views
            .iter()
            .all(|v| !matches!(v["status"].as_str(), Some("queued" | "running")));
        if finished {
            break views;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    pb.finish_and_clear();
    let sum = |k: &str| {
        views
            .iter()
            .map(|v| v[k].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let (total, succeeded, failed) = (sum("total"), sum("succeeded"), sum("failed"));
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let bad_status = views
        .iter()
        .any(|v| matches!(v["status"].as_str(), Some("failed" | "cancelled")));
    if out.json {
        println!(
            "{}",
            json!({ "batches": views, "total": total, "succeeded": succeeded, "failed": failed })
        );
    } else {
        for v in &views {
            println!(
                "{}  {}",
                v["batch_id"].as_str().unwrap_or("?"),
                v["status"].as_str().unwrap_or("?")
            );
        }
        println!(
            "{total} items: {succeeded} succeeded, {failed} failed in {secs:.1} s ({:.0} items/s)",
            total as f64 / secs
        );
    }
    Ok(if failed > 0 || bad_status {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
