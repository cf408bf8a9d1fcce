//! `docpipe dlq list|replay`: see why messages were parked, and send them back to work.

use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

use crate::amqp::short;
use crate::amqp::topology::{declare, Names};
use crate::amqp::*;
use crate::config::Config;
use crate::error::ErrorKind;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Show dead-lettered messages (stage, error kind, reason, attempts, job id) without removing them.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Publish dead-lettered messages back to their stage queue with a fresh attempt count.
    Replay {
        /// Only messages docpipe parked with this error kind (e.g. retries_exhausted).
        #[arg(long)]
        kind: Option<ErrorKind>,
        /// Replay at most this many.
        #[arg(long, default_value_t = usize::MAX)]
        limit: usize,
    },
}

/// One parked message as `dlq list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Parked {
    pub stage: Option<String>,
    pub error_kind: Option<String>,
    pub reason: Option<String>,
    pub attempts: Option<u32>,
    pub job_id: Option<String>,
    pub dead_lettered_at: Option<String>,
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let connection = connect(config).await?;
    let channel = confirm_channel(&connection).await?;
    declare(&channel, config).await?;
    match args.command {
        DlqCommand::List { limit } => {
            for parked in list(&channel, config, limit).await? {
                println!("{}", serde_json::to_string(&parked)?);
            }
        }
        DlqCommand::Replay { kind, limit } => {
            let n = replay(&channel, config, kind, limit).await?;
            println!("replayed {n} messages");
        }
    }
    connection.close(200, short("done")).await?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Read up to `limit` parked messages. They stay unacked until the channel closes, then return.
pub async fn list(channel: &Channel, config: &Config, limit: usize) -> anyhow::Result<Vec<Parked>> {
    let queue = Names::new(config).dead_queue();
    let mut parked = Vec::new();
    while parked.len() < limit {
        let Some(message) = channel.basic_get(short(&queue), BasicGetOptions::default()).await? else { break };
        let headers = message.delivery.properties.headers();
        let job_id = serde_json::from_slice::<serde_json::Value>(&message.delivery.data).ok().and_then(|v| {
            v.get("job_id").or_else(|| v.get("job").and_then(|j| j.get("job_id"))).and_then(|id| id.as_str()).map(String::from)
        });
        parked.push(Parked {
            stage: stage_of(headers, config),
            error_kind: header_str(headers, H_ERROR_KIND).or_else(|| death_reason(headers)),
            reason: header_str(headers, H_REASON),
            attempts: header_u32(headers, H_ATTEMPT),
            job_id,
            dead_lettered_at: header_str(headers, H_DEAD_AT),
        });
    }
    Ok(parked)
}

/// Republish matching messages to their stage and ack them once the broker confirmed.
pub async fn replay(channel: &Channel, config: &Config, kind: Option<ErrorKind>, limit: usize) -> anyhow::Result<usize> {
    let names = Names::new(config);
    let timeout = std::time::Duration::from_secs(config.broker.confirm_timeout_secs);
    let mut replayed = 0;
    while replayed < limit {
        let Some(message) = channel.basic_get(short(&names.dead_queue()), BasicGetOptions::default()).await? else { break };
        let delivery = message.delivery;
        let headers = delivery.properties.headers();
        let this_kind = header_str(headers, H_ERROR_KIND).or_else(|| death_reason(headers));
        let Some(stage) = stage_of(headers, config) else { continue };
        if kind.is_some_and(|k| this_kind.as_deref() != Some(k.as_str())) {
            continue; // left unacked: returns to the dead-letter queue when the channel closes
        }
        let mut fresh = FieldTable::default();
        for (k, v) in own_headers(headers).inner() {
            if !k.as_str().starts_with("x-docpipe-") && k.as_str() != H_RETRY_STEP {
                fresh.insert(k.clone(), v.clone());
            }
        }
        let properties = delivery.properties.clone().with_headers(fresh);
        publish(channel, &names.work_exchange(), &stage, &delivery.data, properties, timeout).await?;
        delivery.acker.ack(BasicAckOptions::default()).await?;
        replayed += 1;
    }
    Ok(replayed)
}

/// The stage a parked message came from: our header, or the queue the broker dead-lettered it from.
fn stage_of(headers: &Option<FieldTable>, config: &Config) -> Option<String> {
    header_str(headers, H_STAGE).or_else(|| {
        let queue = header_str(headers, "x-first-death-queue")?;
        let prefix = format!("{}.stage.", config.broker.prefix);
        queue.strip_prefix(&prefix).map(String::from)
    })
}

/// Why the broker itself dead-lettered a message (e.g. `delivery_limit`).
fn death_reason(headers: &Option<FieldTable>) -> Option<String> {
    match headers.as_ref()?.inner().get("x-first-death-reason")? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}
