//! Whole-system throughput: jobs per second through RabbitMQ with the trivial intake stage,
//! with 1 and 2 workers, against `docpipe process` on the same documents in the same run.
//! Run: `cargo bench --bench transport` (needs RabbitMQ on 127.0.0.1:5672). Prints a table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use docpipe::amqp::short;
use docpipe::amqp::topology::{declare, declare_batch_queue, Names};
use docpipe::amqp::{confirm_channel, connect};
use docpipe::cli::{process, results, submit};
use docpipe::config::{Config, EMBEDDED};
use docpipe::stages::StageCatalog;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};

const DOCS: usize = 2000;

fn config(prefix: &str, blobs: &std::path::Path) -> Config {
    let env = [
        ("DOCPIPE_BROKER__PREFIX".to_string(), prefix.to_string()),
        ("DOCPIPE_BLOBS__DIR".to_string(), format!("\"{}\"", blobs.display())),
        ("DOCPIPE_BROKER__PREFETCH".to_string(), "64".to_string()),
        ("DOCPIPE_WORKER__CONCURRENCY".to_string(), "64".to_string()),
        ("DOCPIPE_WORKER__THREADS".to_string(), "1".to_string()),
    ];
    Config::from_toml("bench", EMBEDDED, env).expect("bench config")
}

async fn cleanup(config: &Config, batch: &str) {
    let names = Names::new(config);
    let connection = connect(config).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut queues = vec![names.stage_queue("extract"), names.dead_queue(), names.results_queue(), names.batch_queue(batch)];
    queues.extend((0..config.retry.backoff_ms.len()).map(|i| names.retry_queue(i)));
    for q in queues {
        let _ = channel.queue_delete(short(&q), QueueDeleteOptions::default()).await;
    }
    for e in [names.jobs_exchange(), names.work_exchange(), names.retry_exchange(), names.dead_exchange(), names.results_exchange()] {
        let _ = channel.exchange_delete(short(&e), ExchangeDeleteOptions::default()).await;
    }
}

/// Submit DOCS jobs, then start `workers` workers and time until every result is collected.
async fn broker_run(dir: &std::path::Path, workers: usize) -> (f64, f64) {
    let prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let config = config(&prefix, &dir.join("blobs"));
    let batch = format!("b-{workers}");
    {
        let connection = connect(&config).await.unwrap();
        let channel = confirm_channel(&connection).await.unwrap();
        declare(&channel, &config).await.unwrap();
        declare_batch_queue(&channel, &config, &batch).await.unwrap();
    }
    let started = Instant::now();
    let args = submit::Args {
        paths: vec![dir.join("docs")],
        case: "bench".into(),
        batch: Some(batch.clone()),
        job: docpipe::cli::JobArgs::default(),
    };
    let submitted = submit::submit(&config, args).await.unwrap();
    assert_eq!(submitted.published, DOCS);
    let submit_secs = started.elapsed().as_secs_f64();

    let mut stops = Vec::new();
    let mut handles = Vec::new();
    let started = Instant::now();
    for _ in 0..workers {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        handles.push(tokio::spawn(docpipe::amqp::worker::run(
            Arc::new(config.clone()),
            StageCatalog::builtin(&config),
            vec!["extract".into()],
            shutdown,
        )));
        stops.push(stop);
    }
    let args = results::Args { batch: batch.clone(), out: Some(dir.join(format!("out-{workers}"))), expect: Some(DOCS as u64), idle_timeout: 120, keep: false };
    let (seen, _) = results::collect(&config, args).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(seen as usize, DOCS);
    for stop in stops {
        let _ = stop.send(());
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    cleanup(&config, &batch).await;
    (DOCS as f64 / submit_secs, DOCS as f64 / secs)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    // Real text: FLORES-200 lines in Russian, one or a few per document, some above the inline limit.
    let lines: Vec<&str> = include_str!("../samples/batch/flores-rus.txt").lines().collect();
    for i in 0..DOCS {
        let text: String = (0..=(i % 5)).map(|k| lines[(i + k) % lines.len()]).collect::<Vec<_>>().join("\n");
        std::fs::write(docs.join(format!("{i:05}.txt")), text).unwrap();
    }

    runtime.block_on(async {
        let config = Arc::new(config("bench-embedded", &dir.path().join("blobs")));
        let started = Instant::now();
        let args = process::Args {
            paths: vec![docs.clone()],
            out: dir.path().join("out-embedded"),
            case: None,
            batch: None,
            job: docpipe::cli::JobArgs::default(),
        };
        let catalog = StageCatalog::builtin(&config);
        let summary = process::process(config, catalog, args).await.unwrap();
        assert_eq!(summary.complete, DOCS);
        let embedded = DOCS as f64 / started.elapsed().as_secs_f64();

        let (submit1, broker1) = broker_run(dir.path(), 1).await;
        let (submit2, broker2) = broker_run(dir.path(), 2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;

        println!("\n{DOCS} text documents (FLORES-200 Russian, 1-5 lines each), extract stage only (text files)\n");
        println!("| path | documents/s | per-document time | vs embedded |");
        println!("|---|---|---|---|");
        println!("| `docpipe process` (embedded, no broker) | {embedded:.0} | {:.3} ms | 1.00x |", 1000.0 / embedded);
        println!("| `docpipe submit` (hash, store, publish with confirms; two runs) | {:.0} / {:.0} | {:.3} ms | - |", submit1, submit2, 1000.0 / submit1);
        println!("| broker, 1 worker (consume, run, publish result, ack) | {broker1:.0} | {:.3} ms | {:.2}x |", 1000.0 / broker1, broker1 / embedded);
        println!("| broker, 2 workers | {broker2:.0} | {:.3} ms | {:.2}x |", 1000.0 / broker2, broker2 / embedded);
        println!(
            "\nbroker-path overhead per document: {:.3} ms (1 worker), {:.3} ms (2 workers)",
            1000.0 / broker1 - 1000.0 / embedded,
            1000.0 / broker2 - 1000.0 / embedded
        );
    });
}
