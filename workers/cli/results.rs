//! `docpipe results`: drain a batch's results queue into JSON lines, one per job.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

use super::inputs;
use crate::amqp::short;
use crate::amqp::topology::{declare, declare_batch_queue};
use crate::amqp::connect;
use crate::config::Config;
use crate::schema::JobResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Batch id printed by `docpipe submit`.
    #[arg(long)]
    pub batch: String,
    /// Directory for <batch>.jsonl and its manifest <batch>.manifest.json (default: the results
    /// on standard output, no manifest).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Results to wait for (default: batch_total from the results themselves).
    #[arg(long)]
    pub expect: Option<u64>,
    /// Give up after this many seconds without a new result (0: wait for ever).
    #[arg(long, default_value_t = 0)]
    pub idle_timeout: u64,
    /// Keep the batch's results queue after the batch is complete.
    #[arg(long)]
    pub keep: bool,
}

/// Exit status 3 when the idle timeout ended collection before the batch was complete.
pub async fn run(config: &Config, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let (seen, expected) = collect(config, args).await?;
    let complete = expected.is_some_and(|n| seen >= n);
    eprintln!("{seen} results collected{}", expected.map(|n| format!(" of {n}")).unwrap_or_default());
    Ok(if complete { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(3) })
}

/// Collect results; returns how many distinct jobs were seen and how many were expected.
pub async fn collect(config: &Config, args: Args) -> anyhow::Result<(u64, Option<u64>)> {
    let connection = connect(config).await.context("connecting to the broker")?;
    let channel = connection.create_channel().await?;
    declare(&channel, config).await?;
    let queue = declare_batch_queue(&channel, config, &args.batch).await?;
    channel.basic_qos(256, BasicQosOptions::default()).await?;
    let mut consumer = channel.basic_consume(short(&queue), short(""), BasicConsumeOptions::default(), FieldTable::default()).await?;

    let store = crate::blob::open(&config.blobs)?;
    // Loaded before collecting: a bad key should stop us before results are taken off the queue.
    let signer = crate::evidence::signer_from(config)?;
    let mut earlier = Vec::new();
    let out_path = args.out.as_ref().map(|dir| dir.join(format!("{}.jsonl", crate::amqp::routing_word(&args.batch))));
    let mut case_id = None;
    let mut out: Box<dyn Write> = match (&args.out, &out_path) {
        (Some(dir), Some(path)) => {
            std::fs::create_dir_all(dir)?;
            // Resuming after an interruption: results already written were acked and are gone
            // from the queue, so they count from the file.
            if let Ok(text) = std::fs::read_to_string(path) {
                earlier = text.lines().filter_map(|l| serde_json::from_str::<JobResult>(l).ok()).collect();
            }
            Box::new(std::io::BufWriter::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?))
        }
        _ => Box::new(std::io::stdout().lock()),
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut expected = args.expect;
    // The batch is complete when every submitted document has a result and so has every child
    // document (archive member, attachment) that some parent result lists. Children can arrive
    // before their parent, and other documents' results in any order.
    let mut top_level = 0u64;
    let mut children: HashSet<String> = HashSet::new();
    let bar = inputs::progress(expected.unwrap_or(0), "results");
    let idle = (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout));
    let complete = |top_level: u64, expected: Option<u64>, children: &HashSet<String>, seen: &HashSet<String>| {
        expected.is_some_and(|n| top_level >= n) && children.iter().all(|c| seen.contains(c))
    };
    for result in &earlier {
        case_id.get_or_insert_with(|| result.case_id.clone());
        expected = expected.or(result.batch_total);
        record(result, &mut seen, &mut top_level, &mut children);
    }
    while !complete(top_level, expected, &children, &seen) {
        let next = match idle {
            Some(limit) => match tokio::time::timeout(limit, consumer.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => consumer.next().await,
        };
        let Some(delivery) = next else { break };
        let delivery = delivery?;
        let result = match serde_json::from_slice::<JobResult>(&delivery.data) {
            Ok(result) => result,
            Err(e) => {
                // Not a result: reject it (without requeue) rather than stall on it for ever.
                eprintln!("skipping a message that is not a result: {}", crate::logging::json_error(&e));
                delivery.acker.reject(lapin::options::BasicRejectOptions { requeue: false }).await?;
                continue;
            }
        };
        expected = expected.or(result.batch_total);
        case_id.get_or_insert_with(|| result.case_id.clone());
        // A redelivered job yields a second, equivalent result: keep the first.
        if !seen.contains(&result.idempotency_key) {
            record(&result, &mut seen, &mut top_level, &mut children);
            // A result too large for the broker comes by claim check: write the full one.
            let full = match &result.annotations_blob {
                Some(blob) => match store.get(blob) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        eprintln!(
                            "result {}: full result not readable from the blob store ({e}); writing it without annotations",
                            result.idempotency_key
                        );
                        delivery.data.clone()
                    }
                },
                None => delivery.data.clone(),
            };
            out.write_all(&full)?;
            out.write_all(b"\n")?;
            out.flush()?;
            bar.set_length(expected.unwrap_or(0) + children.len() as u64);
            bar.inc(1);
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
    }
    bar.finish_and_clear();
    let complete = complete(top_level, expected, &children, &seen);
    drop(out);
    if let Some(path) = &out_path {
        // Rewritten after every run, so a resumed collection ends with the manifest of all of it.
        let case_id = case_id.unwrap_or_default();
        // A signing collector vouches only for results it could verify ([signing] trusted_keys
        // and its own key).
        let trusted = match &signer {
            Some(signer) => Some(crate::evidence::trusted_with(config, Some(signer))?),
            None => None,
        };
        let (manifest, left_out) =
            crate::evidence::manifest::write_beside(path, &case_id, &args.batch, complete, signer.as_ref(), trusted.as_ref())?;
        eprintln!("manifest in {}{}", manifest.display(), if signer.is_some() { " (signed)" } else { " (not signed: no [signing] key_file)" });
        if left_out > 0 {
            eprintln!("{left_out} results are left out of the manifest: not signed by a trusted key, or not results");
        }
    }
    let expected = expected.map(|n| n + children.len() as u64);
    if complete && !args.keep {
        channel.queue_delete(short(&queue), QueueDeleteOptions::default()).await?;
    }
    connection.close(200, short("collected")).await?;
    Ok((seen.len() as u64, expected))
}

/// Count one result: its key, whether it is a submitted document, and the children it lists.
fn record(result: &JobResult, seen: &mut HashSet<String>, top_level: &mut u64, children: &mut HashSet<String>) {
    if !seen.insert(result.idempotency_key.clone()) {
        return;
    }
    if result.parent.is_none() {
        *top_level += 1;
    }
    children.extend(result.children.iter().map(|c| c.job_id.to_string()));
}
