//! Storage helpers against the real MongoDB: the group commit of batch records.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use futures::future::join_all;
use lucid_jobs::storage::{StorageError, coalesce::InsertCoalescer};
use mongodb::{
    Client,
    bson::{Document, doc},
    event::{EventHandler, command::CommandEvent},
    options::ClientOptions,
};
use secrecy::ExposeSecret;

use crate::helpers::test_settings;

/// A collection of a fresh database, and a count of the `insert` commands sent to it.
async fn watched_collection() -> (mongodb::Collection<Document>, Arc<AtomicUsize>) {
    let settings = test_settings();
    let inserts = Arc::new(AtomicUsize::new(0));
    let mut options = ClientOptions::parse(settings.mongodb_url.expose_secret())
        .await
        .expect("mongo url");
    let seen = inserts.clone();
    options.command_event_handler = Some(EventHandler::callback(move |e: CommandEvent| {
        if let CommandEvent::Started(s) = e
            && s.command_name == "insert"
        {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    }));
    let client = Client::with_options(options).expect("client");
    let collection = client
        .database(&settings.database_name)
        .collection::<Document>("grouped");
    (collection, inserts)
}

async fn stored_ids(collection: &mongodb::Collection<Document>) -> Vec<i64> {
    use futures::TryStreamExt;
    let mut ids: Vec<i64> = collection
        .find(doc! {})
        .await
        .expect("find")
        .try_collect::<Vec<Document>>()
        .await
        .expect("collect")
        .iter()
        .map(|d| d.get_i64("_id").expect("_id"))
        .collect();
    ids.sort_unstable();
    ids
}

// Current-thread runtime: every call below queues its document before the
// flush task first runs, so the grouping is deterministic.
#[tokio::test]
async fn concurrent_inserts_go_out_in_groups_of_at_most_256_and_each_caller_gets_its_own_answer() {
    let (collection, inserts) = watched_collection().await;
    collection
        .insert_one(doc! { "_id": 7_i64, "first": true })
        .await
        .expect("seed");
    inserts.store(0, Ordering::SeqCst);
    let coalescer = InsertCoalescer::new(collection.clone());

    // 600 calls: ids 0..500, then ids 0..100 again; id 7 exists already.
    let ids: Vec<i64> = (0..500).chain(0..100).collect();
    let answers = join_all(
        ids.iter()
            .map(|&id| coalescer.insert_new(doc! { "_id": id, "call": id })),
    )
    .await;

    let stored: Vec<bool> = answers.into_iter().map(|a| a.expect("insert")).collect();
    for (call, (&id, &new)) in ids.iter().zip(&stored).enumerate() {
        let want = call < 500 && id != 7;
        assert_eq!(new, want, "call {call} (id {id})");
    }
    assert_eq!(stored_ids(&collection).await, (0..500).collect::<Vec<_>>());
    let seeded = collection
        .find_one(doc! { "_id": 7_i64 })
        .await
        .expect("find")
        .expect("id 7");
    assert_eq!(
        seeded.get_bool("first"),
        Ok(true),
        "the existing document is kept"
    );
    assert_eq!(
        inserts.load(Ordering::SeqCst),
        3,
        "600 documents in groups of 256, 256 and 88"
    );

    // Later, a lone caller is not kept waiting for company: one command.
    assert!(
        coalescer
            .insert_new(doc! { "_id": 1000_i64 })
            .await
            .expect("insert")
    );
    assert_eq!(inserts.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inserts_from_many_tasks_are_each_stored_once() {
    let (collection, _) = watched_collection().await;
    let coalescer = InsertCoalescer::new(collection.clone());
    let tasks: Vec<_> = (0..400_i64)
        .map(|i| {
            let c = coalescer.clone();
            tokio::spawn(async move { c.insert_new(doc! { "_id": i % 200 }).await })
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        if t.await.expect("task").expect("insert") {
            new += 1;
        }
    }
    assert_eq!(new, 200, "each id stored by exactly one caller");
    assert_eq!(stored_ids(&collection).await, (0..200).collect::<Vec<_>>());
}

#[tokio::test]
async fn with_the_store_unreachable_every_caller_gets_an_error_and_none_waits_forever() {
    let client = Client::with_uri_str("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300")
        .await
        .expect("client");
    let coalescer = InsertCoalescer::new(client.database("x").collection::<Document>("y"));
    let answers = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        join_all((0..20_i64).map(|i| coalescer.insert_new(doc! { "_id": i }))),
    )
    .await
    .expect("answered");
    for a in answers {
        assert!(matches!(a, Err(StorageError::Mongo(_))), "{a:?}");
    }
    // The coalescer is usable again afterwards (still failing fast here).
    assert!(coalescer.insert_new(doc! { "_id": 99_i64 }).await.is_err());
}
