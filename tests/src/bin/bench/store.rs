//! `store`: the MongoDB server's own costs, measured with the driver the
//! platform uses, so the other benchmarks' MongoDB figures can be read
//! against the server they ran on (it replaced a pymongo script).
//!
//! - `insert_many` of N validation-shaped records in groups of 500, into a
//!   collection with no secondary index, with each of `poot_validations`'
//!   two indexes, and with both;
//! - a small document by `insert_one`, and by `insert_many` of 50;
//! - 500 nodes' proofs over 60 proofs per node: one `$in` query against 500
//!   indexed per-node queries run 8 at a time (what PoOT scoring does);
//! - inserts by 1 and 2 concurrent writers, into one collection and into
//!   one each (does the server write one collection from two connections
//!   side by side?).
//!
//! `bench store [--docs N]` (default 20,000); writes a database of its own
//! at `LUCID_MONGODB_URL` (default the local one) and drops it.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use mongodb::{
    Collection, IndexModel,
    bson::{DateTime, Document, doc},
    options::IndexOptions,
};

const GROUP: usize = 500;
const NODES: usize = 1_000;

fn record(tag: usize, i: usize, now: DateTime) -> Document {
    let node = format!("node-{:04}", i % NODES);
    doc! {
        "_id": format!("batch-{tag}:{i:06}"), "node_id": &node, "is_valid": true,
        "score": 41.25, "confidence": 0.8, "suspicious": false, "output_hash": "ab".repeat(32),
        "timestamp": now, "nonce": format!("n{i}"), "node_type": "relay", "pool_id": null,
        "validation_time_ms": 0.3, "errors": [], "status": "succeeded", "error_code": null,
        "validated_at": DateTime::from_millis(now.timestamp_millis() + i as i64),
        "batch_id": format!("batch-{tag}"), "chunk_index": (i / GROUP) as i64,
        "item_index": i as i64, "nonce_key": format!("{node}:n{i}"),
    }
}

fn history_index() -> IndexModel {
    IndexModel::builder()
        .keys(doc! { "node_id": 1, "validated_at": -1 })
        .build()
}

fn nonce_index() -> IndexModel {
    IndexModel::builder()
        .keys(doc! { "nonce_key": 1 })
        .options(IndexOptions::builder().unique(true).sparse(true).build())
        .build()
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let docs = match args {
        [] => 20_000,
        [flag, n] if flag == "--docs" => n.parse().context("--docs N")?,
        _ => anyhow::bail!("usage: bench store [--docs N]"),
    };
    let url =
        std::env::var("LUCID_MONGODB_URL").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
    let client = mongodb::Client::with_uri_str(&url).await?;
    let name = format!(
        "bench_store_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let db = client.database(&name);
    let now = DateTime::now();

    println!("insert_many of {docs} records in groups of {GROUP}, by the collection's indexes:");
    let layouts: [(&str, Vec<IndexModel>); 4] = [
        ("no secondary index", vec![]),
        ("node_id+validated_at", vec![history_index()]),
        ("nonce_key unique sparse", vec![nonce_index()]),
        (
            "both (poot_validations)",
            vec![history_index(), nonce_index()],
        ),
    ];
    for (tag, (label, indexes)) in layouts.into_iter().enumerate() {
        let col = db.collection::<Document>(&format!("records_{tag}"));
        for index in indexes {
            col.create_index(index).await?;
        }
        let all: Vec<Document> = (0..docs).map(|i| record(tag, i, now)).collect();
        let t = Instant::now();
        for group in all.chunks(GROUP) {
            col.insert_many(group).ordered(false).await?;
        }
        let dt = t.elapsed();
        println!(
            "  {label:26} {:6.2} s  {:6.1} us/doc  ({:.0} docs/s)",
            dt.as_secs_f64(),
            dt.as_secs_f64() / docs as f64 * 1e6,
            docs as f64 / dt.as_secs_f64()
        );
    }

    let batches = db.collection::<Document>("batches");
    batches
        .create_index(
            IndexModel::builder()
                .keys(doc! { "created_at": -1 })
                .build(),
        )
        .await?;
    let small = |i: usize| doc! { "_id": format!("b{i}"), "status": "queued", "total": 1, "created_at": now };
    let t = Instant::now();
    for i in 0..500 {
        batches.insert_one(small(i)).await?;
    }
    let one = t.elapsed() / 500;
    let t = Instant::now();
    for k in 0..10 {
        batches
            .insert_many((0..50).map(|j| small(1000 + k * 50 + j)))
            .await?;
    }
    let many = t.elapsed() / 500;
    println!(
        "small document: insert_one {:.3} ms each; insert_many of 50 {:.3} ms per document",
        ms(one),
        ms(many)
    );

    lookups(db.collection("proofs")).await?;
    concurrent_writers(&db, docs, now).await?;
    db.drop().await?;
    Ok(())
}

/// Whether the server runs concurrent inserts side by side: `docs` records
/// by 1 and by 2 concurrent writers, into one collection and into one
/// collection each (what more worker processes can gain on record writes).
async fn concurrent_writers(
    db: &mongodb::Database,
    docs: usize,
    now: DateTime,
) -> anyhow::Result<()> {
    println!("insert_many of {docs} records (no secondary index) by concurrent writers:");
    for (label, shared) in [("one collection", true), ("a collection each", false)] {
        let mut line = format!("  {label:18}");
        for writers in [1usize, 2] {
            let per = docs / writers;
            let work: Vec<(Collection<Document>, Vec<Document>)> = (0..writers)
                .map(|w| {
                    let name = if shared {
                        format!("conc_{label}_{writers}")
                    } else {
                        format!("conc_{label}_{writers}_{w}")
                    };
                    let all = (0..per).map(|i| record(100 + w, i, now)).collect();
                    (db.collection(&name), all)
                })
                .collect();
            let t = Instant::now();
            futures::future::try_join_all(work.into_iter().map(|(col, all)| async move {
                for group in all.chunks(GROUP) {
                    col.insert_many(group).ordered(false).await?;
                }
                anyhow::Ok(())
            }))
            .await?;
            let rate = (per * writers) as f64 / t.elapsed().as_secs_f64();
            line.push_str(&format!("  {writers} writer(s) {rate:.0} docs/s"));
        }
        println!("{line}");
    }
    Ok(())
}

/// 500 nodes' proofs, by `$in` and by indexed per-node queries.
async fn lookups(proofs: Collection<Document>) -> anyhow::Result<()> {
    proofs
        .create_index(
            IndexModel::builder()
                .keys(doc! { "node_id": 1, "slot": 1 })
                .build(),
        )
        .await?;
    let all: Vec<Document> = (0..NODES * 60)
        .map(|i| doc! { "node_id": format!("node-{:04}", i % NODES), "slot": (i / NODES) as i64, "kind": "uptime_beacon", "seconds": 300 })
        .collect();
    for group in all.chunks(5_000) {
        proofs.insert_many(group).ordered(false).await?;
    }
    let ids: Vec<String> = (0..500).map(|i| format!("node-{:04}", i * 2)).collect();
    let window = doc! { "$gt": 0_i64, "$lte": 59_i64 };

    let t = Instant::now();
    let by_in: Vec<Document> = proofs
        .find(doc! { "node_id": { "$in": &ids }, "slot": window.clone() })
        .await?
        .try_collect()
        .await?;
    let in_time = t.elapsed();

    let t = Instant::now();
    let per_node: Vec<usize> = futures::stream::iter(ids.iter())
        .map(|id| {
            let proofs = proofs.clone();
            let filter = doc! { "node_id": id, "slot": window.clone() };
            async move {
                let found: Vec<Document> = proofs.find(filter).await?.try_collect().await?;
                anyhow::Ok(found.len())
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    let per_node_time = t.elapsed();
    anyhow::ensure!(
        by_in.len() == per_node.iter().sum::<usize>(),
        "the two lookups found different proofs ({} and {})",
        by_in.len(),
        per_node.iter().sum::<usize>()
    );
    println!(
        "500 nodes' proofs over {} ({} found): one $in query {:.1} ms; 500 indexed queries, 8 at a time, {:.1} ms",
        all.len(),
        by_in.len(),
        ms(in_time),
        ms(per_node_time)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
