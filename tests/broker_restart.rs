//! The broker restarts mid-batch (`rabbitmqctl stop_app` / `start_app`): workers reconnect and
//! the batch completes. Alone in its test binary, because it stops the shared broker.

mod common;

use std::collections::HashSet;
use std::time::Duration;

fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl").args(args).stdout(std::process::Stdio::null()).status();
    assert!(status.expect("rabbitmqctl runs").success(), "rabbitmqctl {args:?}");
}

#[tokio::test]
async fn workers_reconnect_after_a_broker_restart_and_the_batch_completes() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&common::prefix("restart"), dir.path());
    let jobs: Vec<_> = (0..20).map(|i| common::job(&format!("doc {i}"), &["extract", "slow"], "restart")).collect();
    let ids: HashSet<_> = jobs.iter().map(|j| j.job_id).collect();
    common::publish_jobs(&config, &jobs).await;
    let (stop, worker) = common::spawn_worker(&config, common::catalog(0, Duration::from_millis(200)), &["extract", "slow"]);

    let mut results = common::collect_results(&config, 3, Duration::from_secs(60)).await;
    assert!(results.len() >= 3);
    rabbitmqctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    common::collect_all(&config, &ids, &mut results, Duration::from_secs(120)).await;
    let got: HashSet<_> = results.iter().map(|r| r.job_id).collect();
    assert_eq!(got, ids, "every job has a result after the restart");
    assert!(!worker.is_finished(), "the worker survived the restart");
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
    common::cleanup(&config).await;
}
