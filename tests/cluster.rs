//! A 3-node RabbitMQ cluster (scripts/rabbitmq-cluster.sh) that loses nodes while a batch runs:
//! stopped, killed with SIGKILL, and two at once. The worker follows `broker.failover_urls`;
//! quorum queues keep every job; nothing is lost, and after dedupe nothing is doubled.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use docpipe::schema::{JobResult, JobStatus};

const NAME: &str = "docpipe-t";

struct Cluster {
    dir: tempfile::TempDir,
    ports: [u16; 3],
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Three consecutive free ports (AMQP), away from the default node's 5672 and the TLS test's.
        let first = (21000..30000)
            .step_by(7)
            .find(|&p| (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", p + i + 20000)).is_ok()))
            .expect("free ports");
        let status = script("rabbitmq-cluster.sh").arg("start").arg(dir.path()).arg(first.to_string()).arg(NAME).status().unwrap();
        assert!(status.success(), "the cluster starts");
        Self { dir, ports: [first, first + 1, first + 2] }
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{NAME}{}", i + 1))
    }

    fn stop(&self, i: usize) {
        let status = script("rabbitmq-node.sh").args(["stop", &format!("{NAME}{}", i + 1)]).arg(self.node_dir(i)).status().unwrap();
        assert!(status.success());
    }

    fn kill(&self, i: usize) {
        let pid = std::fs::read_to_string(self.node_dir(i).join(format!("{NAME}{}.pid", i + 1))).unwrap();
        let status = Command::new("kill").args(["-KILL", pid.trim()]).status().unwrap();
        assert!(status.success());
    }

    fn restart(&self, i: usize) {
        let status = script("rabbitmq-node.sh")
            .args(["start", &format!("{NAME}{}", i + 1), &self.ports[i].to_string()])
            .arg(self.node_dir(i))
            .status()
            .unwrap();
        assert!(status.success(), "node {} restarts", i + 1);
    }

    /// Run `rabbitmqctl` against node `i`, its output on the test's output.
    fn ctl(&self, i: usize, args: &[&str]) {
        let _ = script("rabbitmq-node.sh").args(["ctl", &format!("{NAME}{}", i + 1)]).arg(self.node_dir(i)).args(args).status();
    }

    fn url(&self, i: usize) -> String {
        format!("amqp://guest@127.0.0.1:{}/%2f", self.ports[i])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = script("rabbitmq-cluster.sh").arg("stop").arg(self.dir.path()).arg(NAME).status();
    }
}

fn script(name: &str) -> Command {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name))
}

/// The longest pause between two consecutive results (when the worker finished each job): how
/// long the batch stood still while the cluster recovered.
fn longest_stall(results: &[JobResult]) -> Duration {
    let mut finished: Vec<_> = results.iter().filter_map(|r| r.completed_at).collect();
    finished.sort();
    finished.windows(2).map(|w| (w[1] - w[0]).to_std().unwrap_or_default()).max().unwrap_or_default()
}

/// Publish `n` jobs, collect `before` results, run `fault`, collect the rest. Asserts every job
/// has a complete result; returns the results (duplicates included) and the longest stall.
async fn batch_through(cluster: &Cluster, config: &docpipe::config::Config, batch: &str, n: usize, before: usize, fault: impl FnOnce()) -> (Vec<JobResult>, Duration) {
    let jobs: Vec<_> = (0..n).map(|i| common::job(&format!("Exhibit {i}: ledger line."), &["extract", "slow"], batch)).collect();
    let want: HashSet<_> = jobs.iter().map(|j| j.job_id).collect();
    common::publish_jobs(config, &jobs).await;
    let mut results = common::collect_results(config, before, Duration::from_secs(120)).await;
    assert!(results.len() >= before, "{batch}: the batch was moving before the fault");
    tokio::task::block_in_place(fault);
    common::collect_all(config, &want, &mut results, Duration::from_secs(300)).await;
    let mine: Vec<JobResult> = results.into_iter().filter(|r| want.contains(&r.job_id)).collect();
    let by_job: HashMap<_, _> = mine.iter().map(|r| (r.job_id, r)).collect();
    if by_job.len() != n {
        // Where the missing jobs are: ready, or checked out to a consumer that never settles them.
        cluster.ctl(0, &["list_queues", "name", "type", "leader", "messages_ready", "messages_unacknowledged", "consumers"]);
        cluster.ctl(0, &["list_connections", "name", "peer_port", "state"]);
    }
    assert_eq!(by_job.len(), n, "{batch}: every job has a result");
    for result in by_job.values() {
        assert_eq!(result.status, JobStatus::Complete, "{batch}: {:?}", result.stages);
    }
    let stall = longest_stall(&mine);
    println!("{batch}: {n} jobs, {} results ({} duplicates), longest stall {:.1} s", mine.len(), mine.len() - n, stall.as_secs_f64());
    (mine, stall)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_survives_losing_cluster_nodes() {
    let cluster = Cluster::start();
    let blobs = tempfile::tempdir().unwrap();
    let mut config = common::config(&common::prefix("cluster"), blobs.path());
    config.broker.url = cluster.url(0);
    config.broker.failover_urls = vec![cluster.url(1), cluster.url(2)];
    config.broker.confirm_timeout_secs = 10;
    // Every dropped connection returns the worker's unacked deliveries, and RabbitMQ counts each
    // return against the delivery limit. While nodes come back, publishes can go unconfirmed
    // several times in a row (each time the worker drops the connection): in one full-suite run of
    // five, four jobs reached the default limit of 5 there and were dead-lettered as worker_crash
    // instead of completing. The limit guards against poison messages, not outages; a cluster
    // that may flap needs it higher (README, "Several hosts").
    config.broker.delivery_limit = 20;
    let catalog = common::catalog(0, Duration::from_millis(150));
    let (stop, worker) = common::spawn_worker(&config, catalog, &["extract", "slow"]);

    // Node 1 (where everyone connected first) stopped cleanly mid-batch.
    batch_through(&cluster, &config, "stopped", 120, 25, || cluster.stop(0)).await;
    cluster.restart(0);
    // Node 2 (where the worker went next) killed with SIGKILL mid-batch: no goodbye to clients.
    batch_through(&cluster, &config, "killed", 120, 25, || cluster.kill(1)).await;
    // Two of three nodes down: no majority, so the queues stand still. The worker waits and
    // retries; once a majority is back the batch completes.
    batch_through(&cluster, &config, "two-down", 60, 10, || {
        cluster.stop(2);
        std::thread::sleep(Duration::from_secs(10));
        cluster.restart(1);
        cluster.restart(2);
    })
    .await;
    common::finish(&config, stop, worker).await;
}
