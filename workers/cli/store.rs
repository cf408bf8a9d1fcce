//! `docpipe store import|search|consume`: fill the results store and look into it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;

use crate::amqp::short;
use crate::amqp::topology::{declare, Names};
use crate::amqp::{connect, Backoff};
use crate::config::Config;
use crate::schema::JobResult;
use crate::store::{self, full_result, Ingested, ResultStore, Search};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Read results from JSON lines files or folders of them (`docpipe process --out`,
    /// `docpipe results --out`) into the store; a result already stored as well is kept.
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Find documents whose text, translation, summary, file name or metadata holds every term.
    Search {
        query: String,
        /// Case to search (repeat for several).
        #[arg(long = "case", required = true)]
        cases: Vec<String>,
        #[arg(long)]
        batch: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Take results from the broker's results queue into the store, acking each only after the
    /// store committed it. Runs until SIGINT/SIGTERM.
    Consume,
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let store = store::open(&config.store).await.context("opening the results store")?;
    match args.command {
        StoreCommand::Import { paths } => {
            let files = jsonl_files(&paths)?;
            let blobs = crate::blob::open(&config.blobs)?;
            let tally = store::import(store.as_ref(), &files, blobs.as_ref()).await?;
            println!(
                "{} files: {} results stored, {} replaced a worse one, {} already stored; {} lines unreadable",
                files.len(),
                tally.inserted,
                tally.replaced,
                tally.kept,
                tally.unreadable
            );
            Ok(if tally.unreadable == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(2) })
        }
        StoreCommand::Search { query, cases, batch, limit } => {
            for hit in store.search(&Search { query, cases, batch, limit }).await? {
                let line = serde_json::json!({
                    "key": hit.key,
                    "case_id": hit.case_id,
                    "batch_id": hit.batch_id,
                    "filename": hit.filename,
                    "status": store::status_str(hit.status),
                    "field": hit.field.as_str(),
                    "snippet": format!("{}[{}]{}", hit.snippet.before, hit.snippet.hit, hit.snippet.after),
                });
                println!("{line}");
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        StoreCommand::Consume => {
            consume(config, store.as_ref(), super::shutdown_signal()).await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// The `.jsonl` files among `paths`, folders walked, sorted.
fn jsonl_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            for entry in walkdir::WalkDir::new(path).follow_links(false).sort_by_file_name() {
                let entry = entry?;
                if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == "jsonl") {
                    files.push(entry.into_path());
                }
            }
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// What one consumer session did, for tests and the final log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Consumed {
    pub stored: u64,
    pub kept: u64,
    pub rejected: u64,
}

/// Consume `<prefix>.results` into `store` until `shutdown`; reconnects when the broker goes away.
pub async fn consume(
    config: &Config,
    store: &dyn ResultStore,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Consumed> {
    tokio::pin!(shutdown);
    let blobs = crate::blob::open(&config.blobs)?;
    let queue = Names::new(config).results_queue();
    let mut backoff = Backoff::new(config);
    let consumed = std::sync::Mutex::new(Consumed::default());
    loop {
        let session = async {
            let connection = connect(config).await?;
            let channel = connection.create_channel().await?;
            declare(&channel, config).await?;
            channel.basic_qos(config.broker.prefetch, BasicQosOptions::default()).await?;
            let mut deliveries =
                channel.basic_consume(short(&queue), short(""), BasicConsumeOptions::default(), FieldTable::default()).await?;
            tracing::info!(queue = %queue, "storing results");
            while let Some(delivery) = deliveries.next().await {
                let delivery = delivery?;
                let result = match serde_json::from_slice::<JobResult>(&delivery.data) {
                    Ok(result) => full_result(result, blobs.as_ref()),
                    Err(e) => Err(anyhow::anyhow!("not a result: {}", crate::logging::json_error(&e))),
                };
                let result = match result {
                    Ok(result) => result,
                    Err(e) => {
                        // Redelivering it would not make it readable.
                        tracing::error!(error = %e, "result message refused");
                        delivery.acker.reject(BasicRejectOptions { requeue: false }).await?;
                        consumed.lock().expect("counts").rejected += 1;
                        continue;
                    }
                };
                match store.ingest(&result).await {
                    Ok(ingested) => {
                        delivery.acker.ack(BasicAckOptions::default()).await?;
                        match ingested {
                            Ingested::Inserted | Ingested::Replaced => consumed.lock().expect("counts").stored += 1,
                            Ingested::Kept => consumed.lock().expect("counts").kept += 1,
                        }
                        tracing::debug!(job_id = %result.job_id, ?ingested, "result stored");
                    }
                    Err(e) => {
                        // The store is down or full: the result stays in the queue.
                        tracing::error!(job_id = %result.job_id, error = %e, "result not stored; returned to the queue");
                        delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            anyhow::Ok(())
        };
        tokio::select! {
            _ = &mut shutdown => return Ok(*consumed.lock().expect("counts")),
            ended = session => {
                let delay = backoff.next_delay();
                match ended {
                    Ok(()) => tracing::warn!(retry_in_ms = delay.as_millis() as u64, "results consumer cancelled; reconnecting"),
                    Err(e) => tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "results consumer lost the broker; reconnecting"),
                }
                tokio::select! {
                    _ = &mut shutdown => return Ok(*consumed.lock().expect("counts")),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
