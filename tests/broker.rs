//! The worker against the real RabbitMQ: results, hand-offs, retries, dead letters, reply-to.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use docpipe::amqp::short;
use docpipe::amqp::topology::{declare, Names};
use docpipe::amqp::{confirm_channel, connect, json_properties, JOB_TYPE};
use docpipe::blob::sha256_hex;
use docpipe::cli::{dlq, results, submit};
use docpipe::error::ErrorKind;
use docpipe::schema::{AnnotationBody, JobResult, JobStatus, StageStatus};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};

#[tokio::test]
async fn submitted_documents_each_get_one_result_with_hash_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("submit"), &dir.path().join("blobs"));
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(inputs.join("nested")).unwrap();
    let mut expected = std::collections::HashMap::new();
    for i in 0..12 {
        // Some above the 64-byte inline limit, so both the inline and the claim-check paths run.
        let text = format!("Exhibit {i}: {}\n", "протокол допроса ".repeat(i));
        let path = if i % 2 == 0 { inputs.join(format!("doc{i}.txt")) } else { inputs.join(format!("nested/doc{i}.txt")) };
        std::fs::write(&path, &text).unwrap();
        expected.insert(path.display().to_string(), (sha256_hex(text.as_bytes()), text.chars().count() as u64));
    }

    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract"]);
    let args = submit::Args {
        paths: vec![inputs.clone()],
        case: "case-42".into(),
        batch: Some("batch-a".into()),
        job: docpipe::cli::JobArgs { stages: vec!["extract".into()], ..Default::default() },
    };
    let submitted = submit::submit(&config, args).await.unwrap();
    assert_eq!(submitted.published, 12);
    assert!(submitted.not_submitted.is_empty());

    let out = dir.path().join("out");
    let args = results::Args { batch: "batch-a".into(), out: Some(out.clone()), expect: None, idle_timeout: 60, keep: false };
    let (seen, total) = results::collect(&config, args).await.unwrap();
    assert_eq!((seen, total), (12, Some(12)));

    let lines = std::fs::read_to_string(out.join("batch-a.jsonl")).unwrap();
    let results: Vec<JobResult> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results.len(), 12);
    for result in &results {
        let (sha, chars) = &expected[&result.document.filename];
        assert_eq!(&result.document.sha256, sha);
        assert_eq!(result.case_id, "case-42");
        assert_eq!(result.status, JobStatus::Complete);
        let annotation = &result.annotations[0];
        assert_eq!(annotation.provenance.stage, "extract");
        assert_eq!(annotation.provenance.engine, "docpipe-extract");
        assert!(!annotation.provenance.worker_id.is_empty());
        assert!(annotation.provenance.finished_at >= annotation.provenance.started_at);
        let AnnotationBody::Text { chars: got, .. } = &annotation.body else { panic!("expected a text annotation") };
        assert_eq!(got, chars);
    }
    // Large documents went by claim check: their blobs exist in the store.
    assert!(std::fs::read_dir(dir.path().join("blobs")).unwrap().count() > 0);

    common::finish(&config, stop, worker).await;
}

#[tokio::test]
async fn stages_hand_off_through_their_own_queues_and_workers() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("handoff"), dir.path());
    // Two workers, each serving one stage: the way a site scales stages independently.
    let (stop_a, a) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract"]);
    let (stop_b, b) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["counts"]);
    let jobs: Vec<_> = (0..5).map(|i| common::job(&format!("text {i}"), &["extract", "counts"], "b")).collect();
    common::publish_jobs(&config, &jobs).await;
    let results = common::collect_results(&config, 5, Duration::from_secs(30)).await;
    assert_eq!(results.len(), 5);
    for r in &results {
        let names: Vec<_> = r.stages.iter().map(|s| (s.stage.as_str(), s.status)).collect();
        assert_eq!(names, [("extract", StageStatus::Ok), ("counts", StageStatus::Ok)]);
        assert_eq!(r.status, JobStatus::Complete);
    }
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    common::cleanup(&config).await;
}

#[tokio::test]
async fn poison_messages_go_to_the_dead_letter_queue_and_the_worker_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("poison"), dir.path());
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract", "panics"]);

    let mut future = serde_json::to_value(common::job("x", &[], "p")).unwrap();
    future["schema_version"] = 99.into();
    let panicking = common::job("this input makes a stage panic", &["extract", "panics"], "p");
    let good = common::job("a normal document", &["extract"], "p");
    common::publish_raw(
        &config,
        &[
            (b"{not json".to_vec(), json_properties(JOB_TYPE)),
            (serde_json::to_vec(&future).unwrap(), json_properties(JOB_TYPE)),
            (serde_json::to_vec(&panicking).unwrap(), json_properties(JOB_TYPE)),
            (serde_json::to_vec(&good).unwrap(), json_properties(JOB_TYPE)),
        ],
    )
    .await;

    // The panicking job is reported as failed; the good one, published after it, completes.
    let results = common::collect_results(&config, 2, Duration::from_secs(30)).await;
    let by_id = |id| results.iter().find(|r| r.job_id == id).expect("result present");
    assert_eq!(by_id(good.job_id).status, JobStatus::Complete);
    let crashed = by_id(panicking.job_id);
    assert_eq!(crashed.status, JobStatus::Partial, "extract succeeded, the panicking stage did not");
    let report = crashed.stages.iter().find(|s| s.stage == "panics").unwrap();
    assert_eq!(report.error.as_ref().unwrap().kind, ErrorKind::Panic);

    let parked = common::dead_letters(&config).await;
    let kinds: Vec<_> = parked.iter().map(|p| p.error_kind.clone().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "bad_message").count(), 2, "{parked:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "panic").count(), 1, "{parked:?}");
    let reasons: Vec<_> = parked.iter().map(|p| p.reason.clone().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("schema_version 99")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("not JSON")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("injected panic")), "{reasons:?}");
    let panic_entry = parked.iter().find(|p| p.error_kind.as_deref() == Some("panic")).unwrap();
    assert_eq!(panic_entry.stage.as_deref(), Some("panics"));
    assert_eq!(panic_entry.job_id, Some(panicking.job_id.to_string()));

    common::finish(&config, stop, worker).await;
}

#[tokio::test]
async fn transient_failure_is_retried_after_a_delay_then_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("retry"), dir.path());
    // Two failures: the delays are 300 ms then 600 ms, so success comes on attempt 3.
    let (stop, worker) = common::spawn_worker(&config, common::catalog(2, Duration::ZERO), &["extract", "flaky"]);
    let job = common::job("retry me", &["extract", "flaky"], "r");
    let started = Instant::now();
    common::publish_jobs(&config, std::slice::from_ref(&job)).await;
    let results = common::collect_results(&config, 1, Duration::from_secs(30)).await;
    let elapsed = started.elapsed();
    assert_eq!(results[0].status, JobStatus::Complete);
    let flaky = results[0].stages.iter().find(|s| s.stage == "flaky").unwrap();
    assert_eq!(flaky.attempts, 3);
    assert!(elapsed >= Duration::from_millis(900), "retries waited in the delay queues: {elapsed:?}");
    // Each retry went through exactly one delay queue: no second copy turns up later.
    let late = common::collect_results(&config, 1, Duration::from_secs(2)).await;
    assert!(late.is_empty(), "duplicate results: {late:?}");
    common::finish(&config, stop, worker).await;
}

#[tokio::test]
async fn exhausted_retries_end_in_the_dead_letter_queue_and_replay_works() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("exhaust"), dir.path());
    // Three failures against two retries: the third attempt gives up.
    let (stop, worker) = common::spawn_worker(&config, common::catalog(3, Duration::ZERO), &["extract", "flaky"]);
    let job = common::job("never works", &["extract", "flaky"], "x");
    common::publish_jobs(&config, std::slice::from_ref(&job)).await;
    let results = common::collect_results(&config, 1, Duration::from_secs(30)).await;
    let report = results[0].stages.iter().find(|s| s.stage == "flaky").unwrap();
    assert_eq!(report.error.as_ref().unwrap().kind, ErrorKind::RetriesExhausted);
    assert_eq!(report.attempts, 3);

    let parked = common::dead_letters(&config).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].error_kind.as_deref(), Some("retries_exhausted"));
    assert_eq!(parked[0].attempts, Some(3));
    assert_eq!(parked[0].stage.as_deref(), Some("flaky"));

    // The fault has cleared (the stage fails only three times): replay completes the job.
    let connection = connect(&config).await.unwrap();
    let channel = confirm_channel(&connection).await.unwrap();
    assert_eq!(dlq::replay(&channel, &config, Some(docpipe::error::ErrorKind::RetriesExhausted), 10).await.unwrap(), 1);
    connection.close(200, short("")).await.unwrap();
    let results = common::collect_results(&config, 1, Duration::from_secs(30)).await;
    assert_eq!(results[0].job_id, job.job_id);
    assert_eq!(results[0].status, JobStatus::Complete);

    common::finish(&config, stop, worker).await;
}

#[tokio::test]
async fn stage_time_limit_gives_a_timeout_status_and_the_worker_continues() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("timeout"), dir.path());
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract", "sleepy"]);
    let slow = common::job("takes too long", &["extract", "sleepy"], "t");
    let quick = common::job("quick", &["extract"], "t");
    common::publish_jobs(&config, &[slow.clone(), quick.clone()]).await;
    let results = common::collect_results(&config, 2, Duration::from_secs(30)).await;
    let slow_result = results.iter().find(|r| r.job_id == slow.job_id).unwrap();
    let report = slow_result.stages.iter().find(|s| s.stage == "sleepy").unwrap();
    assert_eq!(report.error.as_ref().unwrap().kind, ErrorKind::Timeout);
    assert_eq!(slow_result.status, JobStatus::Partial);
    assert_eq!(results.iter().find(|r| r.job_id == quick.job_id).unwrap().status, JobStatus::Complete);
    common::finish(&config, stop, worker).await;
}

#[tokio::test]
async fn reply_to_and_correlation_id_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("reply"), dir.path());
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract"]);
    let connection = connect(&config).await.unwrap();
    let channel = confirm_channel(&connection).await.unwrap();
    declare(&channel, &config).await.unwrap();
    let reply_queue = format!("{}.reply", config.broker.prefix);
    let options = QueueDeclareOptions { auto_delete: true, ..Default::default() };
    channel.queue_declare(short(&reply_queue), options, FieldTable::default()).await.unwrap();
    let mut consumer =
        channel.basic_consume(short(&reply_queue), short(""), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await.unwrap();

    let job = common::job("reply to me", &["extract"], "rt");
    let properties = json_properties(JOB_TYPE)
        .with_reply_to(ShortString::from(reply_queue.clone()))
        .with_correlation_id(ShortString::from("case-system-123"));
    docpipe::amqp::publish(&channel, &Names::new(&config).jobs_exchange(), "", &serde_json::to_vec(&job).unwrap(), properties, Duration::from_secs(10))
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(delivery.properties.correlation_id().as_ref().unwrap().as_str(), "case-system-123");
    let result: JobResult = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(result.job_id, job.job_id);
    connection.close(200, short("")).await.unwrap();
    common::finish(&config, stop, worker).await;
}

#[tokio::test]
async fn tampered_blob_is_reported_as_an_integrity_failure() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("tamper"), &dir.path().join("blobs"));
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract"]);
    let text = "a long enough document to travel by claim check, not inline in the job";
    let path = dir.path().join("in.txt");
    std::fs::write(&path, text).unwrap();
    // Store it, then alter the stored copy behind docpipe's back before a worker reads it.
    let store = docpipe::blob::FileStore::new(dir.path().join("blobs"));
    let sha = sha256_hex(text.as_bytes());
    use docpipe::blob::BlobStore;
    store.put(&sha, text.as_bytes()).unwrap();
    let blob = dir.path().join("blobs").join(&sha[..2]).join(&sha[2..4]).join(&sha);
    let mut job = common::job(text, &["extract"], "tm");
    job.document.content = docpipe::schema::Content::Blob { key: docpipe::blob::key_for(&sha) };
    std::fs::write(&blob, text.replace("long", "LONG")).unwrap();
    common::publish_jobs(&config, &[job]).await;
    let results = common::collect_results(&config, 1, Duration::from_secs(30)).await;
    assert_eq!(results[0].status, JobStatus::Failed);
    assert_eq!(results[0].stages[0].error.as_ref().unwrap().kind, ErrorKind::Integrity);
    common::finish(&config, stop, worker).await;
}

#[tokio::test]
async fn archive_members_become_child_jobs_with_their_own_results() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("children"), &dir.path().join("blobs"));
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract"]);
    let zip = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/docs/targz-with-pdf-doc-docx.tar.gz")).unwrap();
    let mut job = common::job("", &["extract"], "kids");
    job.document.sha256 = sha256_hex(&zip);
    job.document.size = zip.len() as u64;
    job.document.filename = "targz-with-pdf-doc-docx.tar.gz".into();
    use base64::Engine as _;
    job.document.content = docpipe::schema::Content::Inline { base64: base64::engine::general_purpose::STANDARD.encode(&zip) };
    common::publish_jobs(&config, std::slice::from_ref(&job)).await;

    // The archive and its three members (a PDF, a DOCX and a legacy DOC, each read).
    let results = common::collect_results(&config, 4, Duration::from_secs(120)).await;
    let parent = results.iter().find(|r| r.job_id == job.job_id).expect("archive result");
    assert_eq!(parent.children.len(), 3);
    for child in &parent.children {
        let result = results.iter().find(|r| r.job_id == child.job_id).expect("child result");
        assert_eq!(result.document.sha256, child.sha256);
        let link = result.parent.as_ref().unwrap();
        assert_eq!((link.job_id, link.sha256.as_str(), link.depth), (job.job_id, job.document.sha256.as_str(), 1));
    }
    let doc = results.iter().find(|r| r.document.filename.ends_with(".doc")).unwrap();
    assert!(doc.stages[0].error.is_none(), "{:?}", doc.stages[0].error);
    assert_eq!(doc.document.detected_media_type.as_deref(), Some("application/msword"));
    common::finish(&config, stop, worker).await;
}

#[tokio::test]
async fn results_waits_for_every_child_listed_by_a_parent() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("batchkids"), &dir.path().join("blobs"));
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract"]);
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/docs/targz-with-pdf-doc-docx.tar.gz"), inputs.join("a.tar.gz")).unwrap();
    std::fs::write(inputs.join("b.txt"), "a short note that finishes long before the archive").unwrap();
    let args = submit::Args { paths: vec![inputs], case: "c".into(), batch: Some("kids".into()), job: docpipe::cli::JobArgs { stages: vec!["extract".into()], ..Default::default() } };
    assert_eq!(submit::submit(&config, args).await.unwrap().published, 2);
    let out = dir.path().join("out");
    let args = results::Args { batch: "kids".into(), out: Some(out.clone()), expect: None, idle_timeout: 120, keep: false };
    let (seen, total) = results::collect(&config, args).await.unwrap();
    // Two submitted files and the archive's three members.
    assert_eq!((seen, total), (5, Some(5)));
    let lines = std::fs::read_to_string(out.join("kids.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 5);
    common::finish(&config, stop, worker).await;
}

#[tokio::test]
async fn a_job_past_its_delivery_limit_is_parked_with_a_failed_result() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("crashloop"), dir.path());
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract"]);
    // As the broker marks a message that workers kept dying on.
    let job = common::job("this document killed every worker", &["extract"], "cl");
    let mut headers = lapin::types::FieldTable::default();
    headers.insert("x-delivery-count".into(), lapin::types::AMQPValue::LongLongInt(config.broker.delivery_limit as i64));
    common::publish_raw(&config, &[(serde_json::to_vec(&job).unwrap(), json_properties(JOB_TYPE).with_headers(headers))]).await;
    let results = common::collect_results(&config, 1, Duration::from_secs(30)).await;
    assert_eq!(results[0].status, JobStatus::Failed);
    assert_eq!(results[0].stages[0].error.as_ref().unwrap().kind, ErrorKind::WorkerCrash);
    let parked = common::dead_letters(&config).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].error_kind.as_deref(), Some("worker_crash"));
    common::finish(&config, stop, worker).await;
}

#[tokio::test]
async fn results_resumes_from_its_file_after_an_interruption() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("resume"), &dir.path().join("blobs"));
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract"]);
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    for i in 0..6 {
        std::fs::write(inputs.join(format!("{i}.txt")), format!("note number {i}")).unwrap();
    }
    let args = submit::Args { paths: vec![inputs], case: "c".into(), batch: Some("resume".into()), job: docpipe::cli::JobArgs { stages: vec!["extract".into()], ..Default::default() } };
    submit::submit(&config, args).await.unwrap();
    let out = dir.path().join("out");
    // First run stops after three results (as if interrupted), keeping the queue.
    let args = results::Args { batch: "resume".into(), out: Some(out.clone()), expect: Some(3), idle_timeout: 60, keep: true };
    assert_eq!(results::collect(&config, args).await.unwrap().0, 3);
    // The second run counts those three from the file and collects the other three.
    let args = results::Args { batch: "resume".into(), out: Some(out.clone()), expect: None, idle_timeout: 60, keep: false };
    assert_eq!(results::collect(&config, args).await.unwrap(), (6, Some(6)));
    assert_eq!(std::fs::read_to_string(out.join("resume.jsonl")).unwrap().lines().count(), 6);
    common::finish(&config, stop, worker).await;
}

#[tokio::test]
async fn oversized_hand_offs_and_results_travel_by_claim_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(&common::prefix("claimcheck"), &dir.path().join("blobs"));
    config.broker.max_message_bytes = 4096;
    // Signed by the worker and by `results` (the manifest): the signature must survive the claim check.
    docpipe::evidence::keys::generate(&dir.path().join("keys")).unwrap();
    config.signing.key_file = Some(dir.path().join("keys/signing.key"));
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract", "counts"]);
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mt/flores200-devtest-1-100.eng_Latn")).unwrap();
    std::fs::write(inputs.join("long.txt"), &text).unwrap();
    let args = submit::Args { paths: vec![inputs.clone()], case: "c".into(), batch: Some("big".into()), job: docpipe::cli::JobArgs { stages: vec!["extract".into(), "counts".into()], ..Default::default() } };
    submit::submit(&config, args).await.unwrap();
    let out = dir.path().join("out");
    let args = results::Args { batch: "big".into(), out: Some(out.clone()), expect: None, idle_timeout: 60, keep: false };
    assert_eq!(results::collect(&config, args).await.unwrap().0, 1);
    // The second stage read the hand-off from the blob store; the written result is complete.
    let result: JobResult = serde_json::from_str(std::fs::read_to_string(out.join("big.jsonl")).unwrap().trim()).unwrap();
    assert_eq!(result.status, JobStatus::Complete, "{:?}", result.stages);
    assert!(result.annotations_blob.is_none());
    let AnnotationBody::Text { chars, .. } = &result.annotations[0].body else { panic!("expected a text annotation") };
    assert_eq!(*chars, text.chars().count() as u64);
    // Both went through the blob store: a stored hand-off (job + result) and the stored result.
    let stored: Vec<serde_json::Value> = walkdir::WalkDir::new(dir.path().join("blobs"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    assert!(stored.iter().any(|v| v.get("job").is_some() && v.get("result").is_some()), "hand-off by claim check");
    assert!(stored.iter().any(|v| v.get("idempotency_key").and_then(|k| k.as_str()) == Some(&result.idempotency_key)), "result by claim check");
    // The full result written by `results` carries the worker's signature, and with the signed
    // manifest beside it the batch verifies offline.
    let trusted = docpipe::evidence::TrustedKeys::load(&[dir.path().join("keys")]).unwrap();
    let written = std::fs::read_to_string(out.join("big.jsonl")).unwrap();
    let manifest = std::fs::read_to_string(out.join("big.manifest.json")).unwrap();
    let report = docpipe::evidence::verify::verify(docpipe::evidence::verify::Inputs {
        results: &written,
        manifest: Some(&manifest),
        trusted: &trusted,
        originals: Some(&inputs),
        without_manifest: false,
        incomplete: false,
    });
    assert!(report.ok(), "{report:?}");
    assert!(report.documents[0].checked.contains(&"original"), "{report:?}");
    common::finish(&config, stop, worker).await;
}

/// A claim-check message whose hand-off cannot be read ends at once, with a reason in the
/// dead-letter queue and a failed result for its job; it is not redelivered until the broker
/// parks it silently.
#[tokio::test]
async fn a_hand_off_reference_that_cannot_be_read_gets_a_failed_result_at_once() {
    use docpipe::amqp::worker::HandoffRef;
    use docpipe::amqp::{publish, HANDOFF_REF_TYPE};
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("lostref"), &dir.path().join("blobs"));
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["counts"]);
    let malformed = common::job("a hand-off with a malformed key", &["extract", "counts"], "lr");
    let missing = common::job("a hand-off whose blob is gone", &["extract", "counts"], "lr");
    let references = [
        HandoffRef { schema_version: 1, key: "sha256:not-a-digest".into(), job: malformed.clone() },
        HandoffRef { schema_version: 1, key: format!("sha256:{}", "ab".repeat(32)), job: missing.clone() },
    ];
    let connection = connect(&config).await.unwrap();
    let channel = confirm_channel(&connection).await.unwrap();
    declare(&channel, &config).await.unwrap();
    let work = Names::new(&config).work_exchange();
    for reference in &references {
        let body = serde_json::to_vec(reference).unwrap();
        publish(&channel, &work, "counts", &body, json_properties(HANDOFF_REF_TYPE), Duration::from_secs(10)).await.unwrap();
    }
    // A reference that is not one at all: parked as unreadable, with the reason.
    publish(&channel, &work, "counts", br#"{"schema_version":1,"key":"sha256:x"}"#, json_properties(HANDOFF_REF_TYPE), Duration::from_secs(10)).await.unwrap();
    connection.close(200, short("")).await.ok();

    let results = common::collect_results(&config, 2, Duration::from_secs(30)).await;
    assert_eq!(results.len(), 2, "one result each, no redelivery: {results:?}");
    for job in [&malformed, &missing] {
        let result = results.iter().find(|r| r.job_id == job.job_id).expect("a result for each job");
        assert_eq!(result.status, JobStatus::Failed);
        let report = result.stages.iter().find(|s| s.stage == "counts").unwrap();
        assert_eq!(report.error.as_ref().unwrap().kind, ErrorKind::Integrity, "{report:?}");
        assert_eq!(report.attempts, 1);
    }
    let parked = common::dead_letters(&config).await;
    assert_eq!(parked.len(), 3, "{parked:?}");
    assert_eq!(parked.iter().filter(|p| p.error_kind.as_deref() == Some("integrity")).count(), 2, "{parked:?}");
    let unreadable = parked.iter().find(|p| p.error_kind.as_deref() == Some("bad_message")).expect("unreadable reference parked");
    assert!(unreadable.reason.as_deref().unwrap().contains("hand-off reference"), "{unreadable:?}");
    assert!(parked.iter().all(|p| p.reason.is_some() && p.stage.as_deref() == Some("counts")), "{parked:?}");
    common::finish(&config, stop, worker).await;
}

/// Batch ids that differ only in characters a routing key cannot carry keep their own results
/// queue and file.
#[tokio::test]
async fn batches_whose_ids_differ_only_in_punctuation_keep_their_own_results() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("twobatches"), &dir.path().join("blobs"));
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract"]);
    for (batch, text) in [("coll2.a", "first batch's note"), ("coll2_a", "second batch's note")] {
        let inputs = dir.path().join(format!("in-{text}"));
        std::fs::create_dir_all(&inputs).unwrap();
        std::fs::write(inputs.join("note.txt"), text).unwrap();
        let args = submit::Args { paths: vec![inputs], case: "c".into(), batch: Some(batch.into()), job: docpipe::cli::JobArgs { stages: vec!["extract".into()], ..Default::default() } };
        assert_eq!(submit::submit(&config, args).await.unwrap().published, 1);
    }
    let out = dir.path().join("out");
    for (batch, text) in [("coll2.a", "first batch's note"), ("coll2_a", "second batch's note")] {
        let args = results::Args { batch: batch.into(), out: Some(out.clone()), expect: None, idle_timeout: 30, keep: false };
        assert_eq!(results::collect(&config, args).await.unwrap(), (1, Some(1)), "batch {batch}");
        let file = out.join(format!("{}.jsonl", docpipe::amqp::routing_word(batch)));
        let result: JobResult = serde_json::from_str(std::fs::read_to_string(&file).unwrap().trim()).unwrap();
        assert_eq!(result.batch_id, batch);
        assert_eq!(result.document.size, text.len() as u64);
    }
    // Two results files, each with its manifest.
    let mut names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with(".manifest.json")).count(), 2, "{names:?}");
    common::finish(&config, stop, worker).await;
}

/// Log lines of concurrent jobs each sit in their own job's span, never in another job's.
#[tokio::test]
async fn each_log_line_names_the_job_it_is_about() {
    let lines = common::CapturedLogs::default();
    let _capture = tracing::subscriber::set_default(lines.subscriber());
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(&common::prefix("spans"), &dir.path().join("blobs"));
    config.worker.concurrency = 8;
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract", "counts"]);
    let jobs: Vec<_> = (0..24).map(|i| common::job(&format!("note {i}"), &["extract", "counts"], "spans")).collect();
    common::publish_jobs(&config, &jobs).await;
    let results = common::collect_results(&config, jobs.len(), Duration::from_secs(60)).await;
    assert_eq!(results.len(), jobs.len());
    common::finish(&config, stop, worker).await;

    let ours: std::collections::HashSet<String> = jobs.iter().map(|j| j.job_id.to_string()).collect();
    let mut published = std::collections::HashMap::<String, usize>::new();
    for line in lines.json() {
        let job_spans: Vec<&serde_json::Value> =
            line["spans"].as_array().into_iter().flatten().filter(|s| s["name"] == "job").collect();
        assert!(job_spans.len() <= 1, "a line inside two jobs' spans: {line}");
        if line["fields"]["message"] == "result published" {
            let id = job_spans[0]["job_id"].as_str().expect("job id on the span").to_owned();
            assert!(ours.contains(&id), "{line}");
            *published.entry(id).or_default() += 1;
        }
    }
    assert_eq!(published.len(), jobs.len(), "every job's result line names that job");
    assert!(published.values().all(|n| *n == 1), "{published:?}");
}

/// `docpipe resubmit --broker`: the failed document goes back to the workers as the same job
/// (same id, `resubmission` 1, its original from the blob store), its new result replaces the
/// failed one in the store, and the documents that did not fail are not sent.
#[tokio::test]
async fn resubmitted_documents_go_through_the_workers_as_the_same_jobs() {
    use docpipe::blob::{BlobStore, FileStore};
    use docpipe::resubmit::{resubmit, Selection, Via};
    use docpipe::store::{Ingested, ResultStore, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("resubmit"), &dir.path().join("blobs"));
    let store = SqliteStore::open(&dir.path().join("results.sqlite")).unwrap();
    let text = "Протокол допроса свидетеля, страница первая.";
    let mut failed = common::results::result("case-r", "batch-r", "protocol.txt", text, "", false);
    failed.requested_stages = vec!["extract".into()];
    let fine = common::results::result("case-r", "batch-r", "fine.txt", "Всё хорошо.", "", true);
    store.ingest(&failed).await.unwrap();
    store.ingest(&fine).await.unwrap();
    FileStore::new(dir.path().join("blobs")).put(&failed.document.sha256, text.as_bytes()).unwrap();

    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract"]);
    let selection = Selection { case_id: "case-r".into(), batch_id: "batch-r".into(), partial: false, kind: Some(ErrorKind::Unavailable) };
    let outcome = resubmit(std::sync::Arc::new(config.clone()), &store, &selection, "tester", Via::Broker).await.unwrap();
    assert_eq!((outcome.sent.as_slice(), outcome.not_sent.len()), ([failed.job_id].as_slice(), 0));

    let results = common::collect_results(&config, 1, Duration::from_secs(60)).await;
    assert_eq!(results.len(), 1);
    let again = &results[0];
    assert_eq!((again.job_id, again.status, again.resubmission), (failed.job_id, JobStatus::Complete, 1));
    assert_eq!(again.document.sha256, failed.document.sha256);
    assert_eq!(store.ingest(again).await.unwrap(), Ingested::Replaced);
    assert!(store.failures("case-r", "batch-r").await.unwrap().is_empty());
    assert_eq!(store.audit(&failed.idempotency_key).await.unwrap()[0].after, "sent again (resubmission 1, broker)");
    common::finish(&config, stop, worker).await;
}

/// A plain HTTP GET on 127.0.0.1: status code and body.
async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The worker's /metrics move as a batch runs; /healthz answers; /readyz says ready once the
/// worker consumes, and not ready once it has stopped.
#[tokio::test]
async fn metrics_and_health_follow_what_the_worker_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(&common::prefix("metrics"), &dir.path().join("blobs"));
    std::fs::create_dir_all(&config.blobs.dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    config.worker.metrics_bind = format!("127.0.0.1:{port}");
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::ZERO), &["extract", "panics"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() && http_get(port, "/readyz").await.0 == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "worker never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_get(port, "/healthz").await.0, 200);

    let good = common::job("a normal document", &["extract"], "m");
    let panicking = common::job("this input makes a stage panic", &["extract", "panics"], "m");
    common::publish_jobs(&config, &[good.clone(), panicking.clone()]).await;
    let results = common::collect_results(&config, 2, Duration::from_secs(30)).await;
    assert_eq!(results.len(), 2);

    let (status, text) = http_get(port, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "docpipe_deliveries_total{stage=\"extract\"} 2",
        "docpipe_deliveries_total{stage=\"panics\"} 1",
        "docpipe_stage_runs_total{stage=\"extract\",outcome=\"ok\"} 2",
        "docpipe_stage_runs_total{stage=\"panics\",outcome=\"panic\"} 1",
        "docpipe_results_total{status=\"complete\"} 1",
        "docpipe_results_total{status=\"partial\"} 1",
        "docpipe_dead_letters_total{kind=\"panic\"} 1",
        "docpipe_stage_seconds_count{stage=\"extract\"} 2",
        "docpipe_broker_connected 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
    }
    common::finish(&config, stop, worker).await;
    let (status, body) = http_get(port, "/readyz").await;
    assert_eq!((status, body.trim()), (503, "broker not connected"));
}

#[tokio::test]
async fn status_counts_a_batch_per_stage_from_the_progress_stream() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("status"), &dir.path().join("blobs"));
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::from_millis(100)), &["extract", "slow", "panics"]);
    // Ten documents through extract and a slow stage, one of them into a stage that panics.
    let mut jobs: Vec<_> = (0..9).map(|i| {
        let mut job = common::job(&format!("document {i}"), &["extract", "slow"], "st");
        job.batch_total = Some(10);
        job
    }).collect();
    let mut failing = common::job("this one breaks", &["extract", "panics"], "st");
    failing.batch_total = Some(10);
    jobs.push(failing);
    common::publish_jobs(&config, &jobs).await;

    // Part way: the first results are in; extract is ahead of the slow stage or level with it.
    let first = common::collect_results(&config, 3, Duration::from_secs(60)).await;
    assert!(first.len() >= 3);
    let partway = docpipe::cli::status::status(&config, "st").await.unwrap();
    assert_eq!(partway.total, 10);
    let stage = |p: &docpipe::amqp::progress::Progress, name: &str| p.stages.iter().find(|s| s.stage == name).cloned().unwrap();
    assert!(partway.finished() >= 3, "{partway:?}");
    assert!(stage(&partway, "extract").done >= stage(&partway, "slow").done, "{partway:?}");

    let mut all = first;
    let want: HashSet<_> = jobs.iter().map(|j| j.job_id).collect();
    common::collect_all(&config, &want, &mut all, Duration::from_secs(60)).await;
    let done = docpipe::cli::status::status(&config, "st").await.unwrap();
    assert_eq!(done.finished(), 10, "{done:?}");
    assert_eq!(done.results.get("complete"), Some(&9));
    assert_eq!(done.results.get("partial").or(done.results.get("failed")), Some(&1), "{done:?}");
    assert_eq!((stage(&done, "extract").done, stage(&done, "extract").total), (10, 10));
    assert_eq!((stage(&done, "slow").done, stage(&done, "slow").total), (9, 9));
    assert!(stage(&done, "extract").per_minute.is_some());
    // Another batch's status is its own: nothing of this one.
    assert_eq!(docpipe::cli::status::status(&config, "other").await.unwrap().total, 0);
    common::finish(&config, stop, worker).await;
}
