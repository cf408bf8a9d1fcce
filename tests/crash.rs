//! Worker processes killed with SIGKILL or stopped with SIGTERM mid-batch lose nothing.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use docpipe::schema::JobStatus;

const SLOW: Duration = Duration::from_millis(300);

/// Child process entry: a worker with a slow stage that stops on SIGTERM/SIGINT like the binary.
#[tokio::test]
#[ignore = "entry point for child processes of the tests in this file"]
async fn child_worker() {
    let Some((prefix, blobs)) = common::child_env() else { return };
    let config = common::config(&prefix, &blobs);
    let catalog = common::catalog(0, SLOW);
    let stages = vec!["extract".to_string(), "slow".to_string()];
    docpipe::amqp::worker::run(Arc::new(config), catalog, stages, docpipe::cli::shutdown_signal()).await.unwrap();
}

fn batch(n: usize) -> Vec<docpipe::schema::Job> {
    (0..n).map(|i| common::job(&format!("document {i}"), &["extract", "slow"], "crash")).collect()
}

fn check_exactly_once(results: &[docpipe::schema::JobResult], ids: &HashSet<uuid::Uuid>) {
    let keys: HashSet<_> = results.iter().map(|r| r.idempotency_key.clone()).collect();
    let expected: HashSet<_> = ids.iter().map(|id| id.to_string()).collect();
    assert_eq!(keys, expected, "one result per job after dedupe, none missing, none foreign");
    for r in results {
        assert_eq!(r.idempotency_key, r.job_id.to_string());
        assert_eq!(r.status, JobStatus::Complete);
    }
}

#[tokio::test]
async fn kill_9_mid_batch_then_a_new_worker_finishes_every_job() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = common::prefix("kill9");
    let config = common::config(&prefix, dir.path());
    let jobs = batch(16);
    let ids: HashSet<_> = jobs.iter().map(|j| j.job_id).collect();
    common::publish_jobs(&config, &jobs).await;

    let mut first = common::spawn_child("child_worker", &prefix, dir.path());
    let early = common::collect_results(&config, 3, Duration::from_secs(60)).await;
    assert!(early.len() >= 3, "the first worker made progress before being killed");
    first.kill().unwrap(); // SIGKILL: no chance to clean up; its unacked deliveries return to the queues
    first.wait().unwrap();

    let mut second = common::spawn_child("child_worker", &prefix, dir.path());
    let mut results = early;
    common::collect_all(&config, &ids, &mut results, Duration::from_secs(90)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    check_exactly_once(&results, &ids);
    common::cleanup(&config).await;
}

#[tokio::test]
async fn sigterm_drains_in_flight_work_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = common::prefix("sigterm");
    let config = common::config(&prefix, dir.path());
    let jobs = batch(12);
    let ids: HashSet<_> = jobs.iter().map(|j| j.job_id).collect();
    common::publish_jobs(&config, &jobs).await;

    let mut first = common::spawn_child("child_worker", &prefix, dir.path());
    let early = common::collect_results(&config, 2, Duration::from_secs(60)).await;
    assert!(early.len() >= 2);
    let status = std::process::Command::new("kill").args(["-TERM", &first.id().to_string()]).status().unwrap();
    assert!(status.success());
    let stopping = Instant::now();
    let exit = loop {
        if let Some(exit) = first.try_wait().unwrap() {
            break exit;
        }
        assert!(stopping.elapsed() < Duration::from_secs(30), "worker did not stop within its grace period");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "SIGTERM exit status: {exit:?}");

    // Whatever it had not finished went back to the queue: a new worker completes the batch.
    let mut second = common::spawn_child("child_worker", &prefix, dir.path());
    let mut results = early;
    common::collect_all(&config, &ids, &mut results, Duration::from_secs(90)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    check_exactly_once(&results, &ids);
    common::cleanup(&config).await;
}
