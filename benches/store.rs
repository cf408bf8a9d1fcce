//! The results store and the review workspace at case scale: ingest rate into SQLite and
//! PostgreSQL, search latency (p50/p95) and document view time on a generated case.
//! Run: `cargo bench --bench store --profile dev` (the figures in README) or `cargo bench --bench store` (PostgreSQL on 127.0.0.1:5432; `STORE_BENCH_DOCS`, default
//! 100000, sets the case size; `STORE_BENCH_POSTGRES_DOCS` a smaller one for PostgreSQL;
//! `STORE_BENCH_POSTGRES=0` skips it).

#[path = "../tests/common/results.rs"]
mod results;
// The fixtures file refers to `super::job`; give it one.
use results::{document, TestDatabase};

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request};
use docpipe::schema::{BatchSpec, Content, DocumentRef, Job, JobOptions};
use docpipe::store::{PostgresStore, ResultStore, Search, Session, SqliteStore};
use docpipe::web::{auth, router, AppState};
use tower::ServiceExt;

pub fn job(text: &str, stages: &[&str], batch: &str) -> Job {
    let spec = BatchSpec {
        case_id: "bench".into(),
        batch_id: batch.into(),
        batch_total: None,
        stages: stages.iter().map(|s| s.to_string()).collect(),
        options: JobOptions::default(),
    };
    let bytes = text.as_bytes();
    Job::new(
        uuid::Uuid::new_v4(),
        &spec,
        DocumentRef {
            sha256: docpipe::blob::sha256_hex(bytes),
            size: bytes.len() as u64,
            filename: "x".into(),
            declared_media_type: None,
            content: Content::Blob { key: "sha256:00".into() },
        },
    )
}

fn lines(name: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mt").join(name);
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

/// Documents of 20-40 sentences in Russian, Arabic, Persian, Spanish or Chinese with English
/// translations, each with a unique account number, so searches have both common and rare terms.
fn corpus(n: usize) -> Vec<docpipe::schema::JobResult> {
    let english = lines("flores200-devtest-1-100.eng_Latn");
    let sources: Vec<Vec<String>> = ["rus_Cyrl", "arb_Arab", "pes_Arab", "spa_Latn", "deu_Latn"]
        .iter()
        .map(|l| lines(&format!("flores200-devtest-1-100.{l}")))
        .collect();
    let chinese = lines("flores200-devtest-1-100.zho_Hans");
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut next = move |m: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % m as u64) as usize
    };
    (0..n)
        .map(|i| {
            let k = 20 + next(21);
            let pick = next(6);
            let mut pairs = Vec::with_capacity(k);
            for _ in 0..k {
                let line = next(english.len());
                let original = if pick == 5 { chinese[line].clone() } else { sources[pick][line].clone() };
                pairs.push((original + " ", english[line].clone() + " "));
            }
            pairs.push((format!("IBAN DE{:020} ", i), format!("IBAN DE{:020} ", i)));
            let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            document("bench", &format!("batch-{:03}", i / 1000), &format!("doc-{i:06}.txt"), &borrowed, &[("from", "someone@example.org")])
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

async fn measure(name: &str, store: Arc<dyn ResultStore>, docs: &[docpipe::schema::JobResult]) {
    // The consumer's way (one commit per result) for the first tenth, the import's way (500 per
    // commit) for the rest.
    let tenth = docs.len() / 10;
    let started = Instant::now();
    for doc in &docs[..tenth] {
        store.ingest(doc).await.unwrap();
    }
    let ingest = tenth as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for chunk in docs[tenth..].chunks(500) {
        store.ingest_many(chunk).await.unwrap();
    }
    let import = (docs.len() - tenth) as f64 / started.elapsed().as_secs_f64();

    let queries = ["diabetes", "糖尿病", "Nobel", "العلماء", "России", "DE00000000000000004242", "mice diabetes", "someone", "瑞典学院"];
    let cases = vec!["bench".to_owned()];
    let mut times = Vec::new();
    let mut found = 0;
    for round in 0..20 {
        for q in queries {
            let q = if q.starts_with("DE") { format!("DE{:020}", (round * 4099) % docs.len()) } else { q.to_owned() };
            let t = Instant::now();
            found += store.search(&Search { query: q, cases: cases.clone(), batch: None, limit: 50 }).await.unwrap().len();
            times.push(t.elapsed());
        }
    }
    times.sort();

    // Document views through the real router, signed in.
    store.put_user("bench", &auth::hash_password("bench passphrase").unwrap(), &cases).await.unwrap();
    let token = auth::random_token();
    let session = Session { user_name: "bench".into(), csrf: auth::random_token(), expires_at: chrono::Utc::now().timestamp() + 3600 };
    store.create_session(&auth::token_sha256(&token), &session).await.unwrap();
    let app = router(AppState::new(store.clone(), Arc::new(docpipe::blob::FileStore::new("/nonexistent"))));
    let mut views = Vec::new();
    for i in 0..200 {
        let key = &docs[(i * 7919) % docs.len()].idempotency_key;
        let request = Request::get(format!("/documents/{key}")).header(header::COOKIE, format!("{}={token}", auth::SESSION_COOKIE)).body(Body::empty()).unwrap();
        let t = Instant::now();
        let response = app.clone().oneshot(request).await.unwrap();
        let _ = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
        views.push(t.elapsed());
    }
    views.sort();
    let mut lists = Vec::new();
    for i in 0..50 {
        let request = Request::get(format!("/cases/bench/batches/batch-{:03}?language=zho&page=2", i % (docs.len() / 1000).max(1)))
            .header(header::COOKIE, format!("{}={token}", auth::SESSION_COOKIE))
            .body(Body::empty())
            .unwrap();
        let t = Instant::now();
        let response = app.clone().oneshot(request).await.unwrap();
        let _ = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
        lists.push(t.elapsed());
    }
    lists.sort();
    println!(
        "| {name} | {} | {ingest:.0} | {import:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
        docs.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        percentile(&views, 0.5),
        percentile(&views, 0.95),
        percentile(&lists, 0.95),
        found / 20,
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("STORE_BENCH_DOCS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let t = Instant::now();
    let docs = corpus(n);
    let bytes: usize = docs.iter().map(|d| serde_json::to_vec(d).unwrap().len()).sum();
    eprintln!("generated {n} results ({:.0} MB of JSON) in {:.1} s", bytes as f64 / 1e6, t.elapsed().as_secs_f64());
    println!("| store | documents | ingest, 1 per commit (results/s) | import, 500 per commit (results/s) | search p50 (ms) | search p95 (ms) | document view p50 (ms) | document view p95 (ms) | batch page p95 (ms) | hits per query round |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let dir = tempfile::tempdir().unwrap();
    measure("SQLite", Arc::new(SqliteStore::open(&dir.path().join("bench.sqlite")).unwrap()), &docs).await;
    if std::env::var("STORE_BENCH_POSTGRES").as_deref() != Ok("0") {
        let n: usize = std::env::var("STORE_BENCH_POSTGRES_DOCS").ok().and_then(|v| v.parse().ok()).unwrap_or(docs.len());
        let db = TestDatabase::create().await;
        let store = Arc::new(PostgresStore::connect(&db.connection()).await.unwrap());
        measure("PostgreSQL", store.clone(), &docs[..n.min(docs.len())]).await;
        drop(store);
        db.drop().await;
    }
}
