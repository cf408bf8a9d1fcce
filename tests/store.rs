//! The results store, on SQLite and on the real PostgreSQL (a database of its own per test run):
//! idempotent ingest where better results replace worse ones, search in every script within the
//! cases a user may see, import from JSON lines (claim checks included), and the results consumer
//! acking only what the store committed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::results::{result, TestDatabase};
use docpipe::amqp::short;
use docpipe::schema::{JobStatus, StageReport, StageStatus};
use docpipe::store::{Field, Ingested, PostgresStore, ResultStore, Search, SqliteStore};

async fn ingest_rules(store: &dyn ResultStore) {
    let failed = result("case-1", "b1", "mail-1.eml", "张三把钱转到了中国银行的账户", "Zhang San moved the money to a Bank of China account", false);
    let mut good = failed.clone();
    good.stages[0] = StageReport { stage: "extract".into(), status: StageStatus::Ok, error: None, attempts: 2 };
    good.settle();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(good.status, JobStatus::Complete);

    assert_eq!(store.ingest(&failed).await.unwrap(), Ingested::Inserted);
    assert_eq!(store.ingest(&failed).await.unwrap(), Ingested::Kept, "a redelivered result is not a second document");
    assert_eq!(store.ingest(&good).await.unwrap(), Ingested::Replaced, "a replay that succeeded replaces the failed result");
    assert_eq!(store.ingest(&failed).await.unwrap(), Ingested::Kept, "a late failed copy never replaces a good result");
    assert_eq!(store.ingest(&good).await.unwrap(), Ingested::Kept);
    let stored = store.get(&good.idempotency_key).await.unwrap().expect("stored");
    assert_eq!(stored, good);
    let counts = store.counts("case-1", "b1").await.unwrap();
    assert_eq!((counts.complete, counts.partial, counts.failed), (1, 0, 0));
    // The search index follows the replacement: one document, not two.
    let hits = store.search(&Search { query: "中国银行".into(), cases: vec!["case-1".into()], batch: None, limit: 10 }).await.unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].status, JobStatus::Complete);
}

async fn search_rules(store: &dyn ResultStore) {
    let docs = [
        result("case-2", "b2", "zh.txt", "他在北京大学附近的中国银行开了账户4417-22", "He opened account 4417-22 at a Bank of China branch near Peking University", true),
        result("case-2", "b2", "ar.txt", "تم تحويل المبلغ إلى حساب مصرفي في دبي", "The sum was transferred to a bank account in Dubai", true),
        result("case-3", "b3", "other.txt", "北京的另一个案件", "Another case in Beijing", true),
    ];
    for doc in &docs {
        store.ingest(doc).await.unwrap();
    }
    let find = |query: &str, cases: &[&str]| {
        let search = Search { query: query.into(), cases: cases.iter().map(|c| c.to_string()).collect(), batch: None, limit: 20 };
        async move { store.search(&search).await.unwrap() }
    };
    // A Chinese word inside unbroken text, two characters long.
    let hits = find("北京", &["case-2"]).await;
    assert_eq!(hits.iter().map(|h| h.filename.as_str()).collect::<Vec<_>>(), ["zh.txt"], "case-3 is not granted");
    assert_eq!(hits[0].field, Field::Original);
    assert_eq!(hits[0].snippet.hit, "北京");
    // A longer Chinese substring, and one that is not in the text although its characters are.
    assert_eq!(find("中国银行", &["case-2"]).await.len(), 1);
    assert!(find("银行中国", &["case-2"]).await.is_empty());
    // An Arabic word, and an English word that only the translation holds, with its snippet.
    let hits = find("مصرفي", &["case-2"]).await;
    assert_eq!((hits.len(), hits[0].filename.as_str()), (1, "ar.txt"));
    let hits = find("Dubai", &["case-2"]).await;
    assert_eq!((hits.len(), hits[0].field), (1, Field::Translation));
    assert_eq!(hits[0].snippet.hit, "Dubai");
    assert!(hits[0].snippet.before.ends_with("bank account in "), "{:?}", hits[0].snippet);
    // An account number, a file name and email metadata.
    assert_eq!(find("4417-22", &["case-2"]).await.len(), 2, "original and translation of zh.txt");
    assert_eq!(find("ar.txt", &["case-2"]).await.iter().filter(|h| h.field == Field::Filename).count(), 1);
    assert_eq!(find("Re: zh", &["case-2"]).await.iter().filter(|h| h.field == Field::Metadata).count(), 1);
    // Every term must hold; no case granted, nothing found; a batch filter narrows.
    assert!(find("Dubai Peking", &["case-2"]).await.is_empty());
    assert!(find("北京", &[]).await.is_empty());
    assert_eq!(find("北京", &["case-2", "case-3"]).await.len(), 2);
    let narrowed = store.search(&Search { query: "北京".into(), cases: vec!["case-2".into(), "case-3".into()], batch: Some("b3".into()), limit: 20 }).await.unwrap();
    assert_eq!(narrowed.len(), 1);
}

/// A batch of four submitted documents, three of which have results (one failed, one partial, one
/// complete with a complete child inside it): the failures and what is still pending.
async fn failure_rules(store: &dyn ResultStore) {
    use docpipe::error::{ErrorKind, StageError};
    let mut docs = vec![
        result("case-4", "b4", "failed.pdf", "一", "one", false),
        result("case-4", "b4", "partial.pdf", "二", "two", true),
        result("case-4", "b4", "complete.zip", "三", "three", true),
        result("case-4", "b4", "member.txt", "四", "four", true),
    ];
    docs[1].stages.push(StageReport {
        stage: "translate".into(),
        status: StageStatus::Error,
        error: Some(StageError::new(ErrorKind::Model, "weights fail their sha256")),
        attempts: 1,
    });
    docs[3].parent = Some(docpipe::schema::ParentRef { job_id: docs[2].job_id, sha256: docs[2].document.sha256.clone(), path: "member.txt".into(), depth: 1, budget: None });
    for doc in &mut docs {
        doc.batch_total = Some(4);
        doc.settle();
        store.ingest(doc).await.unwrap();
    }
    assert_eq!(docs[1].status, JobStatus::Partial);
    let counts = store.counts("case-4", "b4").await.unwrap();
    assert_eq!((counts.complete, counts.partial, counts.failed, counts.pending), (2, 1, 1, Some(1)), "the member does not count against the four submitted");
    let failures = store.failures("case-4", "b4").await.unwrap();
    let seen: Vec<_> = failures
        .iter()
        .map(|f| (f.filename.as_str(), f.status, f.errors.iter().map(|e| (e.stage.as_str(), e.kind.as_str())).collect()))
        .collect();
    assert_eq!(seen, [("failed.pdf", JobStatus::Failed, vec![("extract", "unavailable")]), ("partial.pdf", JobStatus::Partial, vec![("translate", "model")])]);
    assert_eq!(failures[1].errors[0].reason, "weights fail their sha256");
    assert!(store.failures("case-4", "elsewhere").await.unwrap().is_empty());
    // Acts other than reviews join the same append-only trail.
    store.record(&failures[0].key, "analyst", "resubmit", Some("failed: extract unavailable"), "sent again (resubmission 1, embedded)").await.unwrap();
    let audit = store.audit(&failures[0].key).await.unwrap();
    assert_eq!((audit.len(), audit[0].action.as_str(), audit[0].before.as_deref()), (1, "resubmit", Some("failed: extract unavailable")));
    // A batch whose size nobody gave has no pending count.
    let mut unsized_doc = result("case-4", "b5", "x.txt", "五", "five", true);
    unsized_doc.batch_total = None;
    store.ingest(&unsized_doc).await.unwrap();
    assert_eq!(store.counts("case-4", "b5").await.unwrap().pending, None);
    let batches = store.batches(&["case-4".into()]).await.unwrap();
    assert_eq!(batches.iter().map(|b| (b.batch_id.as_str(), b.counts.pending)).collect::<Vec<_>>(), [("b4", Some(1)), ("b5", None)]);
}

#[tokio::test]
async fn sqlite_store_ingests_idempotently_and_finds_every_script() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/results.sqlite");
    let store = SqliteStore::open(&path).unwrap();
    ingest_rules(&store).await;
    search_rules(&store).await;
    failure_rules(&store).await;
    drop(store);
    // Reopening runs no migration twice and keeps what was stored.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.counts("case-2", "b2").await.unwrap().complete, 2);
}

#[tokio::test]
async fn postgres_store_ingests_idempotently_and_finds_every_script() {
    let db = TestDatabase::create().await;
    let store = PostgresStore::connect(&db.connection()).await.unwrap();
    ingest_rules(&store).await;
    search_rules(&store).await;
    failure_rules(&store).await;
    drop(store);
    let store = PostgresStore::connect(&db.connection()).await.unwrap();
    assert_eq!(store.counts("case-2", "b2").await.unwrap().complete, 2);
    drop(store);
    db.drop().await;
}

#[tokio::test]
async fn import_reads_result_files_and_claim_checked_results() {
    use docpipe::blob::{BlobStore, FileStore};
    let dir = tempfile::tempdir().unwrap();
    let blobs = FileStore::new(dir.path().join("blobs"));
    let whole = result("c", "b", "big.txt", "很长的文件", "A very long file", true);
    let bytes = serde_json::to_vec(&whole).unwrap();
    let key = blobs.put(&docpipe::blob::sha256_hex(&bytes), &bytes).unwrap();
    let mut claim_checked = whole.clone();
    claim_checked.annotations.clear();
    claim_checked.annotations_blob = Some(key);
    let small = result("c", "b", "small.txt", "短文件", "A short file", true);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let lines = [serde_json::to_string(&claim_checked).unwrap(), serde_json::to_string(&small).unwrap(), "{not a result".to_owned()];
    std::fs::write(out.join("results.jsonl"), lines.join("\n")).unwrap();

    let store = SqliteStore::open(&dir.path().join("s.sqlite")).unwrap();
    let tally = docpipe::store::import(&store, &[out.join("results.jsonl")], &blobs).await.unwrap();
    assert_eq!((tally.inserted, tally.kept, tally.unreadable), (2, 0, 1));
    assert_eq!(store.get(&whole.idempotency_key).await.unwrap().unwrap().annotations, whole.annotations);
    let hits = store.search(&Search { query: "long".into(), cases: vec!["c".into()], batch: None, limit: 5 }).await.unwrap();
    assert_eq!(hits.len(), 1, "the claim-checked translation is indexed");
    let again = docpipe::store::import(&store, &[out.join("results.jsonl")], &blobs).await.unwrap();
    assert_eq!((again.inserted, again.kept), (0, 2));
}

#[tokio::test]
async fn the_results_consumer_acks_only_what_the_store_committed() {
    use docpipe::amqp::topology::{declare, Names};
    use docpipe::amqp::{confirm_channel, connect, json_properties, publish, RESULT_TYPE};
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("store"), &dir.path().join("blobs"));
    let store = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite")).unwrap());
    let failed = result("c", "consumed", "a.txt", "第一份", "The first one", false);
    let mut good = failed.clone();
    good.stages[0] = StageReport { stage: "extract".into(), status: StageStatus::Ok, error: None, attempts: 2 };
    good.settle();
    let other = result("c", "consumed", "b.txt", "第二份", "The second one", true);

    let connection = connect(&config).await.unwrap();
    let channel = confirm_channel(&connection).await.unwrap();
    declare(&channel, &config).await.unwrap();
    let exchange = Names::new(&config).results_exchange();
    for body in [serde_json::to_vec(&failed).unwrap(), serde_json::to_vec(&good).unwrap(), serde_json::to_vec(&other).unwrap(), b"garbage".to_vec()] {
        publish(&channel, &exchange, "c.consumed", &body, json_properties(RESULT_TYPE), Duration::from_secs(10)).await.unwrap();
    }

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer = {
        let (config, store) = (config.clone(), store.clone());
        tokio::spawn(async move {
            docpipe::cli::store::consume(&config, store.as_ref(), async move {
                let _ = stopped.await;
            })
            .await
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.counts("c", "consumed").await.unwrap().complete < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the consumer reach the garbage message, then stop it.
    let queue = Names::new(&config).results_queue();
    while tokio::time::Instant::now() < deadline {
        let declared = channel
            .queue_declare(short(&queue), lapin::options::QueueDeclareOptions { passive: true, ..Default::default() }, Default::default())
            .await
            .unwrap();
        if declared.message_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An empty queue counts only messages not yet delivered: the last delivery may still be in
    // the consumer's hands (seen to fail under load). Give it a moment before stopping.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.send(()).unwrap();
    let consumed = consumer.await.unwrap().unwrap();
    assert_eq!((consumed.stored, consumed.kept, consumed.rejected), (3, 0, 1), "{consumed:?}");
    let counts = store.counts("c", "consumed").await.unwrap();
    assert_eq!((counts.complete, counts.failed), (2, 0), "the replayed good result replaced the failed one");
    // Nothing left unacked or waiting: every result was stored before its ack.
    let declared = channel
        .queue_declare(short(&queue), lapin::options::QueueDeclareOptions { passive: true, ..Default::default() }, Default::default())
        .await
        .unwrap();
    assert_eq!(declared.message_count(), 0);
    connection.close(200, short("")).await.ok();
    common::cleanup(&config).await;
}

/// A store written before failures and batch sizes had columns of their own gets them filled in
/// from the stored results when it is opened.
#[tokio::test]
async fn sqlite_migration_fills_failures_and_batch_size_of_results_stored_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    let mut failed = result("case-5", "b6", "old.pdf", "旧", "old", false);
    failed.batch_total = Some(3);
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection.execute_batch(include_str!("../workers/store/sqlite/0001_results.sql")).unwrap();
        connection.execute_batch(include_str!("../workers/store/sqlite/0002_review.sql")).unwrap();
        connection.pragma_update(None, "user_version", 2).unwrap();
        connection
            .execute(
                "INSERT INTO documents (key, job_id, case_id, batch_id, filename, sha256, status, status_rank, languages, flags, ingested_at, result)
                 VALUES (?1, ?1, 'case-5', 'b6', 'old.pdf', ?2, 'failed', 0, '', 'stage_error', '2026-11-30T00:00:00Z', ?3)",
                rusqlite::params![failed.idempotency_key, failed.document.sha256, serde_json::to_string(&failed).unwrap()],
            )
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let failures = store.failures("case-5", "b6").await.unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!((failures[0].errors[0].stage.as_str(), failures[0].errors[0].kind.as_str()), ("extract", "unavailable"));
    assert_eq!(failures[0].errors[0].reason, "store was down");
    assert_eq!(store.counts("case-5", "b6").await.unwrap().pending, Some(2));
}
