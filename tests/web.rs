//! The review workspace over HTTP, on SQLite and on the real PostgreSQL: sign-in, every view,
//! access per case (another case's document is 404, not forbidden), CSRF on every form, login
//! rate limiting, review with its append-only audit trail, and escaping of everything a
//! document can put on a page.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::results::{document, TestDatabase};
use docpipe::blob::{BlobStore, FileStore};
use docpipe::store::{PostgresStore, ResultStore, SqliteStore};
use docpipe::web::{auth, router, AppState};
use tower::ServiceExt;

const PASSWORD: &str = "a long enough passphrase";

/// What a hostile document puts in every field that is shown.
const HOSTILE: &str = "<script>alert(1)</script><img src=x onerror=alert(2)><a href=\"javascript:alert(3)\">x</a>";

struct Browser {
    app: axum::Router,
    cookies: Vec<(String, String)>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn new(state: AppState) -> Self {
        Self { app: router(state), cookies: Vec::new() }
    }

    async fn send(&mut self, request: Request<Body>) -> Page {
        let response = self.app.clone().oneshot(request).await.unwrap();
        for value in response.headers().get_all(header::SET_COOKIE) {
            let (pair, _) = value.to_str().unwrap().split_once(';').unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let status = response.status();
        let location = response.headers().get(header::LOCATION).map(|l| l.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 10 << 20).await.unwrap();
        Page { status, location, body: String::from_utf8_lossy(&body).into_owned() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn get(&mut self, uri: &str) -> Page {
        let request = Request::get(uri).header(header::COOKIE, self.cookie_header()).body(Body::empty()).unwrap();
        self.send(request).await
    }

    async fn post(&mut self, uri: &str, form: &[(&str, &str)]) -> Page {
        let body = form.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&");
        let request = Request::post(uri)
            .header(header::COOKIE, self.cookie_header())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(request).await
    }

    async fn login(&mut self, name: &str, password: &str) -> Page {
        let form = self.get("/login").await;
        let csrf = hidden(&form.body, "csrf");
        self.post("/login", &[("name", name), ("password", password), ("csrf", &csrf)]).await
    }
}

/// Page text with the escapes askama writes for `<`, `>` and `"` spelled as named entities.
fn named(body: &str) -> String {
    body.replace("&#60;", "&lt;").replace("&#62;", "&gt;").replace("&#34;", "&quot;")
}

fn enc(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// The value of a hidden form field.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html.find(&marker).unwrap_or_else(|| panic!("no {name} field in {html}")) + marker.len();
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

async fn workspace_rules(store: Arc<dyn ResultStore>, blob_dir: &std::path::Path) {
    let zh = document(
        "case-a",
        "batch-1",
        "evidence/转账.txt",
        &[("张三在北京。", "Zhang San is in Beijing. "), ("他把钱转到中国银行。", "He moved the money to the Bank of China.")],
        &[("from", "zhang@example.cn")],
    );
    let hostile = document("case-a", "batch-1", HOSTILE, &[(HOSTILE, HOSTILE)], &[(HOSTILE, HOSTILE)]);
    let secret = document("case-b", "batch-9", "other-case.txt", &[("北京的秘密。", "A secret in Beijing.")], &[]);
    // Signed, and a copy edited after signing: the document page checks each against the
    // trusted key, after the store (JSONB in PostgreSQL) has re-serialized them.
    let signer = docpipe::evidence::Signer::new(ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]));
    let mut zh = zh;
    docpipe::evidence::sign_result(&mut zh, &signer);
    let mut edited = zh.clone();
    edited.idempotency_key = "edited-after-signing".into();
    edited.job_id = uuid::Uuid::new_v4();
    let mut trusted = docpipe::evidence::TrustedKeys::default();
    trusted.add(signer.public());
    for r in [&zh, &hostile, &secret] {
        store.ingest(r).await.unwrap();
    }
    store.put_user("ana", &auth::hash_password(PASSWORD).unwrap(), &["case-a".into()]).await.unwrap();
    let blobs = FileStore::new(blob_dir);
    let state = AppState { trusted: Arc::new(trusted), ..AppState::new(store.clone(), Arc::new(FileStore::new(blob_dir))) };
    let mut browser = Browser::new(state.clone());

    // Nothing without signing in; the login form needs its own token.
    let page = browser.get("/").await;
    assert_eq!((page.status, page.location.as_deref()), (StatusCode::SEE_OTHER, Some("/login")));
    assert_eq!(browser.get(&format!("/documents/{}", zh.idempotency_key)).await.status, StatusCode::SEE_OTHER);
    let page = browser.post("/login", &[("name", "ana"), ("password", PASSWORD), ("csrf", "forged")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.login("ana", "wrong password").await.status, StatusCode::UNAUTHORIZED);
    let page = browser.login("ana", PASSWORD).await;
    assert_eq!((page.status, page.location.as_deref()), (StatusCode::SEE_OTHER, Some("/")));
    let session = browser.cookies.iter().find(|(n, _)| n == auth::SESSION_COOKIE).expect("session cookie").1.clone();

    // Cases and batches: only the granted case.
    let home = browser.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("batch-1") && !home.body.contains("batch-9"), "{}", home.body);
    let csrf = hidden(&home.body, "csrf");

    // The batch: counts, filters, the document list.
    let batch = browser.get("/cases/case-a/batches/batch-1").await;
    assert_eq!(batch.status, StatusCode::OK);
    assert!(batch.body.contains("evidence/转账.txt"));
    let filtered = browser.get("/cases/case-a/batches/batch-1?status=failed").await;
    assert!(filtered.body.contains("0 documents"), "{}", filtered.body);
    let counts = browser.get("/cases/case-a/batches/batch-1/counts.json").await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&counts.body).unwrap()["complete"], 2);

    // The document: original and translation side by side, segment by segment; the summary
    // sentence links to the row of the sentence it quotes; the abstractive summary is labelled
    // and its unverified name marked; provenance and metadata shown.
    let view = browser.get(&format!("/documents/{}", zh.idempotency_key)).await;
    assert_eq!(view.status, StatusCode::OK);
    let row = view.body.find("id=\"seg-1\"").expect("second row");
    let row_html = &view.body[row..row + view.body[row..].find("</tr>").unwrap()];
    assert!(row_html.contains("他把钱转到中国银行。") && row_html.contains("He moved the money to the Bank of China."), "{row_html}");
    assert!(view.body.contains("href=\"#seg-1\" data-target=\"seg-1\""), "summary sentence links to its source row");
    assert!(view.body.contains("machine-generated"));
    assert!(view.body.contains("<mark class=\"unverified\" title=\"not found in the source\">Wang Wu</mark>"));
    assert!(view.body.contains(&zh.document.sha256) && view.body.contains("zhang@example.cn"));
    assert!(view.body.contains("class=\"signature-valid\">signature valid (key"), "{}", view.body);
    edited.batch_id = "batch-edited".into();
    store.ingest(&edited).await.unwrap();
    let page = browser.get("/documents/edited-after-signing").await;
    assert!(page.body.contains("class=\"signature-mismatch\"") && page.body.contains("changed after signing"), "{}", page.body);
    let page = browser.get(&format!("/documents/{}", hostile.idempotency_key)).await;
    assert!(page.body.contains("class=\"signature-unsigned\">not signed"), "{}", page.body);

    // Result JSON; the original is refused while the blob store lacks it, served once it holds it.
    let json = browser.get(&format!("/documents/{}/result.json", zh.idempotency_key)).await;
    assert_eq!(serde_json::from_str::<docpipe::schema::JobResult>(&json.body).unwrap(), zh);
    assert_eq!(browser.get(&format!("/documents/{}/original", zh.idempotency_key)).await.status, StatusCode::NOT_FOUND);
    let bytes = "张三在北京。他把钱转到中国银行。".as_bytes();
    let mut with_original = zh.clone();
    with_original.idempotency_key = "with-original".into();
    with_original.document.sha256 = docpipe::blob::sha256_hex(bytes);
    store.ingest(&with_original).await.unwrap();
    blobs.put(&with_original.document.sha256, bytes).unwrap();
    let original = browser.get("/documents/with-original/original").await;
    assert_eq!((original.status, original.body.as_bytes()), (StatusCode::OK, bytes));

    // Search: a Chinese substring and an English word from a translation, with snippets, query in the URL.
    let found = browser.get(&format!("/search?q={}", enc("中国银行"))).await;
    assert!(found.body.contains("<mark>中国银行</mark>"), "{}", found.body);
    let found = browser.get("/search?q=Beijing").await;
    assert!(found.body.contains("evidence/转账.txt") && found.body.contains("<mark>Beijing</mark>"));
    assert!(!found.body.contains("other-case.txt"), "another case's document is never found");

    // Another case: 404 everywhere, as if it did not exist.
    for uri in [
        format!("/documents/{}", secret.idempotency_key),
        format!("/documents/{}/result.json", secret.idempotency_key),
        format!("/documents/{}/original", secret.idempotency_key),
        "/cases/case-b/batches/batch-9".to_owned(),
        "/cases/case-b/batches/batch-9/counts.json".to_owned(),
        "/documents/no-such-document".to_owned(),
    ] {
        assert_eq!(browser.get(&uri).await.status, StatusCode::NOT_FOUND, "{uri}");
    }
    let search_other = browser.get("/search?q=secret&case=case-b").await;
    assert!(!search_other.body.contains("other-case.txt"));
    let page = browser.post(&format!("/documents/{}/review", secret.idempotency_key), &[("csrf", &csrf), ("state", "reviewed")]).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);

    // Review: refused without the session's CSRF token, recorded with it, audited with before/after.
    let review = format!("/documents/{}/review", zh.idempotency_key);
    let page = browser.post(&review, &[("csrf", "forged"), ("state", "reviewed")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.post(&review, &[("state", "reviewed")]).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    let page = browser.post(&review, &[("csrf", &csrf), ("state", "needs_attention"), ("note", "check the account <b>")]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let page = browser.post(&review, &[("csrf", &csrf), ("state", "reviewed"), ("note", "")]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let audit = store.audit(&zh.idempotency_key).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!((audit[0].before.as_deref(), audit[0].after.as_str()), (None, "needs_attention\ncheck the account <b>"));
    assert_eq!((audit[1].before.as_deref(), audit[1].after.as_str()), (Some("needs_attention\ncheck the account <b>"), "reviewed"));
    let view = browser.get(&format!("/documents/{}", zh.idempotency_key)).await;
    assert!(view.body.contains("<strong id=\"review-state\">reviewed</strong>"));
    assert!(named(&view.body).contains("check the account &lt;b&gt;") && !view.body.contains("check the account <b>"));
    let reviewed = browser.get("/cases/case-a/batches/batch-1?review=reviewed").await;
    assert!(reviewed.body.contains("1 documents"), "{}", reviewed.body);

    // Escaping: the hostile document's name, text, translation, metadata and summaries.
    for uri in [
        format!("/documents/{}", hostile.idempotency_key),
        "/cases/case-a/batches/batch-1".to_owned(),
        format!("/search?q={}", enc("alert")),
        "/".to_owned(),
    ] {
        let page = browser.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}");
        for raw in ["<script>alert", "<img src=x", "href=\"javascript:"] {
            assert!(!page.body.contains(raw), "{uri} carries {raw} unescaped");
        }
        if uri.starts_with("/documents/") {
            let shown = named(&page.body).matches("&lt;script&gt;alert(1)&lt;/script&gt;").count();
            assert!(shown >= 5, "name, text, translation, metadata key and value shown escaped: {shown}");
        }
    }

    // Every page forbids inline and foreign script.
    let request = Request::get("/login").body(Body::empty()).unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let csp = response.headers().get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));

    // Sign out: the session no longer opens anything, the cookie alone is worthless.
    assert_eq!(browser.post("/logout", &[("csrf", &csrf)]).await.status, StatusCode::SEE_OTHER);
    browser.cookies.push((auth::SESSION_COOKIE.into(), session));
    assert_eq!(browser.get("/").await.status, StatusCode::SEE_OTHER);

    // Login attempts are limited per user: after five failures even the right password waits.
    let mut attacker = Browser::new(state);
    for _ in 0..5 {
        assert_eq!(attacker.login("ana", "guess").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(attacker.login("ana", PASSWORD).await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_workspace_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("results.sqlite")).unwrap());
    workspace_rules(store, &dir.path().join("blobs")).await;
}

#[tokio::test]
async fn the_workspace_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await;
    let store = Arc::new(PostgresStore::connect(&db.connection()).await.unwrap());
    workspace_rules(store.clone(), &dir.path().join("blobs")).await;
    drop(store);
    db.drop().await;
}

/// The batch page's "send again" button, run in the workspace (embedded): exactly the failed
/// documents of the chosen kind are sent, as the same jobs; the one whose original the blob store
/// lacks is reported, not lost; the better result replaces the failed one; the act is audited.
#[tokio::test]
async fn failed_documents_are_sent_again_from_the_batch_page() {
    use docpipe::schema::JobStatus;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ResultStore> = Arc::new(SqliteStore::open(&dir.path().join("results.sqlite")).unwrap());
    let blobs = FileStore::new(dir.path().join("blobs"));
    let mut config = docpipe::config::Config::load(None).unwrap();
    config.blobs.dir = dir.path().join("blobs");

    let text = "Перевод на счёт 4417-22 был сделан в понедельник.";
    let mut kept = common::results::result("case-a", "batch-2", "kept.txt", text, "", false);
    let mut lost = common::results::result("case-a", "batch-2", "lost.txt", "Другой документ.", "", false);
    // Extraction only, so no model is loaded.
    kept.requested_stages = vec!["extract".into()];
    lost.requested_stages = vec!["extract".into()];
    let fine = common::results::result("case-a", "batch-2", "fine.txt", "Хороший документ.", "", true);
    for r in [&kept, &lost, &fine] {
        store.ingest(r).await.unwrap();
    }
    blobs.put(&kept.document.sha256, text.as_bytes()).unwrap();
    store.put_user("ana", &auth::hash_password(PASSWORD).unwrap(), &["case-a".into()]).await.unwrap();
    let resubmit = docpipe::web::resubmit::Resubmitter::new(Arc::new(config), docpipe::resubmit::Via::Embedded);
    let state = AppState { resubmit: Some(Arc::new(resubmit)), ..AppState::new(store.clone(), Arc::new(blobs)) };
    let mut browser = Browser::new(state);
    browser.login("ana", PASSWORD).await;

    let batch = browser.get("/cases/case-a/batches/batch-2").await;
    assert!(batch.body.contains("Send these again") && batch.body.contains("Send all 2 failed documents again"), "{}", batch.body);
    let csrf = hidden(&batch.body, "csrf");
    let action = "/cases/case-a/batches/batch-2/resubmit";
    assert_eq!(browser.post(action, &[("csrf", "forged"), ("kind", "unavailable")]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.post("/cases/case-b/batches/batch-9/resubmit", &[("csrf", &csrf)]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(browser.post(action, &[("csrf", &csrf), ("kind", "no_such_kind")]).await.status, StatusCode::BAD_REQUEST);
    // A kind none of them failed with sends nothing.
    let page = browser.post(action, &[("csrf", &csrf), ("kind", "timeout")]).await;
    assert_eq!(page.location.as_deref(), Some("/cases/case-a/batches/batch-2?sent=0&not_sent=0"));
    assert!(store.audit(&kept.idempotency_key).await.unwrap().is_empty());

    let page = browser.post(action, &[("csrf", &csrf), ("kind", "unavailable"), ("partial", "true")]).await;
    let location = page.location.expect("redirect back to the batch");
    assert_eq!(location, "/cases/case-a/batches/batch-2?sent=1&not_sent=1");
    let notice = browser.get(&location).await;
    assert!(notice.body.contains("1 documents sent again") && notice.body.contains("1 could not be sent"), "{}", notice.body);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let again = loop {
        let stored = store.get(&kept.idempotency_key).await.unwrap().unwrap();
        if stored.status != JobStatus::Failed {
            break stored;
        }
        assert!(std::time::Instant::now() < deadline, "the resubmitted document never came back");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!((again.status, again.job_id, again.resubmission), (JobStatus::Complete, kept.job_id, 1));
    assert_eq!(again.requested_stages, kept.requested_stages, "sent as it was asked");
    let docpipe::schema::AnnotationBody::Text { segments, .. } = &again.annotations[0].body else { panic!("text first") };
    assert_eq!(segments[0].text.trim(), text);
    let audit = store.audit(&kept.idempotency_key).await.unwrap();
    assert_eq!((audit.len(), audit[0].user_name.as_str(), audit[0].action.as_str()), (1, "ana", "resubmit"));
    assert_eq!(audit[0].before.as_deref(), Some("failed: extract unavailable"));
    assert_eq!(audit[0].after, "sent again (resubmission 1, embedded)");
    // The lost one stays failed and unaudited; the batch now has one failure left.
    assert_eq!(store.get(&lost.idempotency_key).await.unwrap().unwrap().status, JobStatus::Failed);
    assert!(store.audit(&lost.idempotency_key).await.unwrap().is_empty());
    assert_eq!(store.failures("case-a", "batch-2").await.unwrap().len(), 1);
}

/// A scanned page: the document view draws its OCR word boxes over the page image, which is
/// rendered from the original in the blob store turned as OCR turned it; word text is escaped.
#[tokio::test]
async fn scanned_pages_show_their_word_boxes_over_the_page_image() {
    use docpipe::schema::{AnnotationBody, OcrDetails, OcrWord};
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ResultStore> = Arc::new(SqliteStore::open(&dir.path().join("results.sqlite")).unwrap());
    let blobs = FileStore::new(dir.path().join("blobs"));
    let image = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ocr/phototest-rotated-R.png")).unwrap();
    let mut scanned = document("case-a", "batch-3", "scan.png", &[("This is a lot of 12 point text", "")], &[]);
    scanned.document.sha256 = docpipe::blob::sha256_hex(&image);
    let word = |text: &str, x, confidence| OcrWord { text: text.into(), confidence, x, y: 36, width: 60, height: 20 };
    for annotation in &mut scanned.annotations {
        if let AnnotationBody::Text { segments, .. } = &mut annotation.body {
            segments[0].width = Some(640);
            segments[0].height = Some(480);
            segments[0].ocr = Some(OcrDetails {
                rotation_degrees: 270,
                deskew_degrees: 0.0,
                script: Some("Latin".into()),
                detection: Some(docpipe_models::ocr::Detection::Osd),
                languages: vec!["eng".into()],
                dictionary_rate: Some(0.25),
                low_confidence: true,
                words: vec![word("This", 36, 0.95), word(HOSTILE, 100, 0.3)],
            });
        }
    }
    store.ingest(&scanned).await.unwrap();
    let mut browser = Browser::new(AppState::new(store.clone(), Arc::new(FileStore::new(dir.path().join("blobs")))));
    store.put_user("ana", &auth::hash_password(PASSWORD).unwrap(), &["case-a".into()]).await.unwrap();
    browser.login("ana", PASSWORD).await;

    let href = format!("/documents/{}/pages/1/image", scanned.idempotency_key);
    assert_eq!(browser.get(&href).await.status, StatusCode::NOT_FOUND, "no original in the blob store yet");
    blobs.put(&scanned.document.sha256, &image).unwrap();
    let request = Request::get(&href).header(header::COOKIE, browser.cookie_header()).body(Body::empty()).unwrap();
    let response = browser.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/png");
    let png = axum::body::to_bytes(response.into_body(), 10 << 20).await.unwrap();
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((size(16), size(20)), (640, 480), "turned upright as OCR read it (the file is 480 x 640)");
    assert_eq!(browser.get(&format!("/documents/{}/pages/2/image", scanned.idempotency_key)).await.status, StatusCode::NOT_FOUND);

    let view = browser.get(&format!("/documents/{}", scanned.idempotency_key)).await;
    assert!(view.body.contains("<svg viewBox=\"0 0 640 480\""), "{}", view.body);
    assert!(view.body.contains(&format!("<image href=\"{href}\"")));
    assert_eq!(view.body.matches("<rect class=\"word").count(), 2);
    assert!(view.body.contains("<rect class=\"word doubtful\" x=\"100\""), "the unsure word is marked");
    assert!(view.body.contains("turned 270°") && view.body.contains("OCR confidence"));
    assert!(view.body.contains("script Latin (detected by OSD)"), "how the script was settled is shown");
    assert!(view.body.contains("Poor reading: check the text against the image.") && view.body.contains("25 % of words in the dictionary"), "a poor page says so");
    let flagged = browser.get("/cases/case-a/batches/batch-3?flag=low_ocr_confidence").await;
    assert!(flagged.body.contains("scan.png"), "the batch list finds the poorly read page by its flag");
    assert!(!browser.get("/cases/case-a/batches/batch-3?flag=unsupported").await.body.contains("scan.png"), "and only by its own flags");
    assert!(!view.body.contains("<script>alert") && !view.body.contains("<img src=x"), "word text escaped");

    // Another case's page image is as absent as its document.
    let mut other = Browser::new(AppState::new(store.clone(), Arc::new(blobs)));
    store.put_user("bo", &auth::hash_password(PASSWORD).unwrap(), &["case-b".into()]).await.unwrap();
    other.login("bo", PASSWORD).await;
    assert_eq!(other.get(&href).await.status, StatusCode::NOT_FOUND);
}
