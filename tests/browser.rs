//! The review workspace in a real browser: Debian's headless Chromium driven through
//! ChromeDriver (WebDriver), over the sample's Chinese document as the real pipeline translated
//! and summarized it. Screenshots go to the test's output folder (`target/tmp/browser/`).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::webdriver::Driver;
use docpipe::blob::FileStore;
use docpipe::schema::{AnnotationBody, JobResult};
use docpipe::store::{ResultStore, SqliteStore};
use docpipe::web::{auth, serve_on, AppState};

const PASSWORD: &str = "analyst passphrase for the test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_checks_the_chinese_sample_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();

    // The sample's Chinese document through the real pipeline (GGUF translation included).
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(root.join("samples/batch/flores-zho.txt"), input.join("flores-zho.txt")).unwrap();
    // And a scanned page, whose image the document view renders from the blob store.
    std::fs::copy(root.join("samples/batch/scansmpl.pdf"), input.join("scansmpl.pdf")).unwrap();
    let out = dir.path().join("out");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_docpipe"))
        .current_dir(root)
        .args(["process", "--case", "sample", "--batch", "sample", "--stages", "extract,langid,translate,summarize", "--out"])
        .arg(&out)
        .arg(&input)
        .env("OMP_THREAD_LIMIT", "1")
        .env("DOCPIPE_BLOBS__DIR", format!("\"{}\"", dir.path().join("blobs").display()))
        .status()
        .unwrap();
    assert!(status.success());
    let store = Arc::new(SqliteStore::open(&dir.path().join("results.sqlite")).unwrap());
    let blobs = FileStore::new(dir.path().join("blobs"));
    let tally = docpipe::store::import(store.as_ref(), &[out.join("results.jsonl")], &blobs).await.unwrap();
    assert_eq!(tally.inserted, 2);
    let results: Vec<JobResult> =
        std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let result = results.iter().find(|r| r.document.filename.ends_with("flores-zho.txt")).expect("the Chinese result").clone();
    // Search terms taken from what the pipeline produced, not written here.
    let translation: String = result
        .annotations
        .iter()
        .find_map(|a| match &a.body {
            AnnotationBody::Translation { segments, .. } => Some(segments.iter().filter_map(|s| s.text.clone()).collect::<Vec<_>>().join(" ")),
            _ => None,
        })
        .expect("a translation");
    let english_word = translation
        .split(|c: char| !c.is_ascii_alphabetic())
        .find(|w| w.len() >= 6)
        .expect("an English word in the translation")
        .to_owned();
    store.put_user("analyst", &auth::hash_password(PASSWORD).unwrap(), &["sample".into()]).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(store.clone(), Arc::new(blobs));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(listener, state, async move {
        let _ = stopped.await;
    }));

    let browser = Driver::start(&dir.path().join("chromium-profile")).await;
    // Sign in.
    browser.goto(&format!("{base}/")).await;
    assert!(browser.url().await.ends_with("/login"));
    browser.type_into("input[name=name]", "analyst").await;
    browser.type_into("input[name=password]", PASSWORD).await;
    browser.click("form[action='/login'] button").await;
    browser.wait_for("return location.pathname === '/'").await;
    browser.screenshot(&shots.join("1-cases.png")).await;

    // The sample batch, then the Chinese document.
    browser.click("a[href='/cases/sample/batches/sample']").await;
    browser.wait_for("return location.pathname.startsWith('/cases/sample/batches/sample')").await;
    assert!(browser.text("table.documents").await.contains("flores-zho.txt"));
    let zh_href = browser.eval("return [...document.querySelectorAll('table.documents a')].find(a => a.innerText.endsWith('flores-zho.txt')).getAttribute('href')").await;
    browser.goto(&format!("{base}{}", zh_href.as_str().expect("a link to the Chinese document"))).await;
    browser.wait_for("return location.pathname.startsWith('/documents/')").await;
    browser.screenshot(&shots.join("2-document.png")).await;

    // The translation sits beside its original, in the same row, for every sentence.
    let rows = browser
        .eval("return [...document.querySelectorAll('table.aligned tbody tr')].map(r => [r.querySelector('.original').innerText, r.querySelector('.translation').innerText])")
        .await;
    let rows = rows.as_array().expect("rows");
    assert!(rows.len() >= 5, "{rows:?}");
    let first_sentence = rows[0][0].as_str().unwrap();
    assert!(first_sentence.starts_with("他补充道"), "{first_sentence}");
    let first_translation = rows[0][1].as_str().unwrap();
    assert!(first_translation.chars().filter(|c| c.is_ascii_alphabetic()).count() > 10, "{first_translation}");

    // A summary sentence, clicked, highlights its source sentence and scrolls it into view.
    let target = browser.eval("return document.querySelector('a.source-link').dataset.target").await;
    let target = target.as_str().expect("a linked summary sentence").to_owned();
    browser.eval("window.scrollTo(0, 0); return true").await;
    browser.click("a.source-link").await;
    browser
        .wait_for(&format!(
            "const r = document.getElementById('{target}'); const b = r.getBoundingClientRect(); \
             return r.classList.contains('highlighted') && b.top >= 0 && b.bottom <= window.innerHeight"
        ))
        .await;
    let summary = browser.text("a.source-link").await;
    let source = browser.eval(&format!("return document.getElementById('{target}').querySelector('.original').innerText")).await;
    assert_eq!(summary.trim(), source.as_str().unwrap().trim().replace('\n', ""), "the summary quotes the highlighted sentence");
    browser.screenshot(&shots.join("3-summary-source.png")).await;

    // Search a Chinese substring and an English word from the translation.
    for query in ["糖尿病", english_word.as_str()] {
        browser.type_into("header form.search input[name=q]", query).await;
        browser.click("header form.search button").await;
        // The new results page, not the one this search was typed on.
        browser
            .wait_for(&format!(
                "return location.pathname === '/search' && new URLSearchParams(location.search).get('q') === {} && document.readyState === 'complete'",
                serde_json::to_string(query).unwrap()
            ))
            .await;
        let hits = browser.text("ol.hits").await;
        assert!(hits.contains("flores-zho.txt"), "{query}: {hits}");
        let marked = browser.text("ol.hits mark").await;
        assert_eq!(marked.to_lowercase(), query.to_lowercase());
    }
    browser.screenshot(&shots.join("4-search.png")).await;

    // Mark the document reviewed and see it in the audit trail.
    browser.click("ol.hits a").await;
    browser.wait_for("return location.pathname.startsWith('/documents/')").await;
    browser.eval("document.querySelector('select[name=state]').value = 'reviewed'; return true").await;
    browser.type_into("textarea[name=note]", "checked against the original").await;
    browser.click("section.review button").await;
    browser.wait_for("return document.getElementById('review-state').innerText === 'reviewed'").await;
    let audit = browser.text("ol.audit").await;
    assert!(audit.contains("analyst") && audit.contains("reviewed") && audit.contains("checked against the original"), "{audit}");
    browser.screenshot(&shots.join("5-reviewed.png")).await;
    assert_eq!(store.audit(&result.idempotency_key).await.unwrap().len(), 1);

    // The scanned page: its image, rendered from the original, under a box for every word OCR
    // found; hovering a box names the word.
    let scan = results.iter().find(|r| r.document.filename.ends_with("scansmpl.pdf")).expect("the scanned result");
    let words = scan
        .annotations
        .iter()
        .find_map(|a| match &a.body {
            AnnotationBody::Text { segments, .. } => segments[0].ocr.as_ref().map(|o| o.words.len()),
            _ => None,
        })
        .expect("the page was read by OCR");
    browser.goto(&format!("{base}/documents/{}", scan.idempotency_key)).await;
    browser
        .wait_for("return performance.getEntriesByType('resource').some(e => e.name.endsWith('/pages/1/image') && e.responseStatus === 200)")
        .await;
    let drawn = browser.eval("return document.querySelectorAll('figure.scan rect.word').length").await;
    assert_eq!(drawn.as_u64(), Some(words as u64));
    let first_word = browser.eval("return document.querySelector('figure.scan rect.word title').textContent").await;
    assert!(first_word.as_str().unwrap().contains('%'), "{first_word}");
    browser.eval("document.getElementById('page-1').scrollIntoView(); return true").await;
    browser.screenshot(&shots.join("6-scanned-page.png")).await;

    browser.quit().await;
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
