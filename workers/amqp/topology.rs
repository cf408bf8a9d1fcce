//! Exchanges and queues. Declaring is idempotent; `docpipe declare` and every worker do it.
//!
//! ```text
//! <p>.jobs (fanout) ──► <p>.stage.<entry>
//! <p>.work (direct, key = stage) ──► <p>.stage.<name>      quorum, delivery limit, DLX <p>.dead
//! <p>.retry (headers, step = i) ──► <p>.retry.<i>          quorum, TTL = backoff[i], DLX <p>.work
//! <p>.dead (fanout) ──► <p>.dead                            quorum
//! <p>.results (topic, key = <case>.<batch>) ──► <p>.results (#), <p>.results.batch.<id> (*.<id>)
//! <p>.progress (fanout) ──► <p>.progress                   stream, 7 days / 1 GB
//! ```

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use super::{routing_word, TransportError};
use super::short;
use crate::config::Config;

/// Names derived from the configured prefix.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(config: &Config) -> Self {
        Self { prefix: config.broker.prefix.clone() }
    }
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }
    pub fn work_exchange(&self) -> String {
        format!("{}.work", self.prefix)
    }
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    pub fn results_exchange(&self) -> String {
        format!("{}.results", self.prefix)
    }
    pub fn stage_queue(&self, stage: &str) -> String {
        format!("{}.stage.{stage}", self.prefix)
    }
    pub fn retry_queue(&self, step: usize) -> String {
        format!("{}.retry.{step}", self.prefix)
    }
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    pub fn results_queue(&self) -> String {
        format!("{}.results", self.prefix)
    }
    pub fn progress_exchange(&self) -> String {
        format!("{}.progress", self.prefix)
    }
    /// A stream: read from the start by every `docpipe status`, trimmed by age and size.
    pub fn progress_queue(&self) -> String {
        format!("{}.progress", self.prefix)
    }
    pub fn batch_queue(&self, batch_id: &str) -> String {
        format!("{}.results.batch.{}", self.prefix, routing_word(batch_id))
    }
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

async fn exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> Result<(), TransportError> {
    let options = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel.exchange_declare(short(name), kind, options, FieldTable::default()).await?;
    Ok(())
}

/// Declare everything the pipeline uses.
pub async fn declare(channel: &Channel, config: &Config) -> Result<(), TransportError> {
    let names = Names::new(config);
    exchange(channel, &names.jobs_exchange(), ExchangeKind::Fanout).await?;
    exchange(channel, &names.work_exchange(), ExchangeKind::Direct).await?;
    exchange(channel, &names.retry_exchange(), ExchangeKind::Headers).await?;
    exchange(channel, &names.dead_exchange(), ExchangeKind::Fanout).await?;
    exchange(channel, &names.results_exchange(), ExchangeKind::Topic).await?;

    let quorum = ("x-queue-type", s("quorum"));
    let dead = names.dead_queue();
    channel.queue_declare(short(&dead), durable(), table(std::slice::from_ref(&quorum))).await?;
    channel.queue_bind(short(&dead), short(&names.dead_exchange()), short(""), QueueBindOptions::default(), FieldTable::default()).await?;

    for (i, stage) in config.stages.iter().enumerate() {
        let queue = names.stage_queue(&stage.name);
        let args = table(&[
            quorum.clone(),
            ("x-delivery-limit", AMQPValue::LongInt(config.broker.delivery_limit as i32)),
            ("x-dead-letter-exchange", s(&names.dead_exchange())),
        ]);
        channel.queue_declare(short(&queue), durable(), args).await?;
        channel
            .queue_bind(short(&queue), short(&names.work_exchange()), short(&stage.name), QueueBindOptions::default(), FieldTable::default())
            .await?;
        if i == 0 {
            channel
                .queue_bind(short(&queue), short(&names.jobs_exchange()), short(""), QueueBindOptions::default(), FieldTable::default())
                .await?;
        }
    }

    for (step, delay) in config.retry.backoff_ms.iter().enumerate() {
        let queue = names.retry_queue(step);
        // at-least-once: a delayed message is not dropped on its way back to work.
        let args = table(&[
            quorum.clone(),
            ("x-message-ttl", AMQPValue::LongLongInt(*delay as i64)),
            ("x-dead-letter-exchange", s(&names.work_exchange())),
            ("x-dead-letter-strategy", s("at-least-once")),
            ("x-overflow", s("reject-publish")),
        ]);
        channel.queue_declare(short(&queue), durable(), args).await?;
        let binding = table(&[("x-match", s("all")), (super::H_RETRY_STEP, s(&step.to_string()))]);
        channel.queue_bind(short(&queue), short(&names.retry_exchange()), short(""), QueueBindOptions::default(), binding).await?;
    }

    // Progress events: a stream, so every reader reads from the start and nothing is consumed
    // away; old events age out (a week) or are trimmed at 1 GB (about 3 million events).
    exchange(channel, &names.progress_exchange(), ExchangeKind::Fanout).await?;
    let progress = names.progress_queue();
    let args = table(&[("x-queue-type", s("stream")), ("x-max-age", s("7D")), ("x-max-length-bytes", AMQPValue::LongLongInt(1 << 30))]);
    channel.queue_declare(short(&progress), durable(), args).await?;
    channel.queue_bind(short(&progress), short(&names.progress_exchange()), short(""), QueueBindOptions::default(), FieldTable::default()).await?;

    let results = names.results_queue();
    channel.queue_declare(short(&results), durable(), table(&[quorum])).await?;
    channel
        .queue_bind(short(&results), short(&names.results_exchange()), short("#"), QueueBindOptions::default(), FieldTable::default())
        .await?;
    Ok(())
}

/// The queue that collects one batch's results, declared before its jobs are published.
pub async fn declare_batch_queue(channel: &Channel, config: &Config, batch_id: &str) -> Result<String, TransportError> {
    let names = Names::new(config);
    let queue = names.batch_queue(batch_id);
    channel.queue_declare(short(&queue), durable(), table(&[("x-queue-type", s("quorum"))])).await?;
    let key = format!("*.{}", routing_word(batch_id));
    channel.queue_bind(short(&queue), short(&names.results_exchange()), short(&key), QueueBindOptions::default(), FieldTable::default()).await?;
    Ok(queue)
}
