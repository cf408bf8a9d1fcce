//! Progress events: one small message per stage a job passes and per result, kept in a RabbitMQ
//! stream (`<p>.progress`) that any number of readers can read from the start without taking
//! anything away. `docpipe status --batch` counts them into done/total per stage and an ETA.
//!
//! Events carry ids, stage names, outcomes and timings only: never text, file names or reasons.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Channel;
use serde::{Deserialize, Serialize};

use super::topology::Names;
use super::{json_properties, short, TransportError};
use crate::config::Config;
use crate::schema::JobResult;

pub const PROGRESS_TYPE: &str = "docpipe.progress.v1";

/// What became of one job at one point: a stage attempt that moved on, or the job's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub case_id: String,
    pub batch_id: String,
    /// Top-level documents in the batch, when the submitter said.
    pub batch_total: Option<u64>,
    pub job_id: uuid::Uuid,
    /// Whether the job is a document found inside another (its parent is in the batch too).
    pub child: bool,
    /// The stages this job runs, in order.
    pub stages: Vec<String>,
    /// A stage name, or `result` when the job's result was published.
    pub point: String,
    /// `ok` or an error kind for a stage; `complete`, `partial` or `failed` for a result.
    pub outcome: String,
    /// Children found by this stage (they join the batch as jobs of their own).
    pub children: u64,
    pub seconds: f64,
    pub at: DateTime<Utc>,
}

impl Event {
    pub fn new(job: &JobResult, point: &str, outcome: &str, children: u64, took: Duration) -> Self {
        Self {
            case_id: job.case_id.clone(),
            batch_id: job.batch_id.clone(),
            batch_total: job.batch_total,
            job_id: job.job_id,
            child: job.parent.is_some(),
            stages: job.requested_stages.clone(),
            point: point.to_owned(),
            outcome: outcome.to_owned(),
            children,
            seconds: took.as_secs_f64(),
            at: Utc::now(),
        }
    }
}

/// Publish an event without waiting for the broker's confirm: progress is a view, and a lost
/// event only makes a status lag. Errors are the caller's to log; jobs never wait on this.
pub async fn publish(channel: &Channel, names: &Names, event: &Event) -> Result<(), TransportError> {
    let body = serde_json::to_vec(event).expect("events serialize");
    // Dropping the confirm is deliberate (see above); the channel stays in confirm mode for the rest.
    let _unawaited = channel
        .basic_publish(short(&names.progress_exchange()), short(""), BasicPublishOptions::default(), &body, json_properties(PROGRESS_TYPE).with_delivery_mode(2))
        .await?;
    Ok(())
}

/// One batch's progress, from its events.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Progress {
    pub case_id: Option<String>,
    /// Jobs known: the batch's documents (as submitted) and the children found so far.
    pub total: u64,
    /// Per stage in pipeline order: jobs past it (ran it, or finished without needing it), of
    /// the jobs that run it.
    pub stages: Vec<StageProgress>,
    /// Results published, by status.
    pub results: BTreeMap<String, u64>,
    pub last_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct StageProgress {
    pub stage: String,
    pub done: u64,
    pub total: u64,
    /// Jobs per minute past this stage, over the time it has been seeing jobs.
    pub per_minute: Option<f64>,
    /// At that rate, time until the rest are past it.
    pub eta: Option<Duration>,
}

impl Progress {
    pub fn finished(&self) -> u64 {
        self.results.values().sum()
    }

    /// Count `events` (any batch's; only `batch_id`'s are used) into a progress report.
    pub fn of(batch_id: &str, order: &[String], events: &[Event]) -> Self {
        let mine: Vec<&Event> = events.iter().filter(|e| e.batch_id == batch_id).collect();
        let mut progress = Progress::default();
        let mut jobs: HashMap<uuid::Uuid, &Vec<String>> = HashMap::new();
        let mut children = 0u64;
        let mut submitted = None;
        let mut past: HashMap<&str, HashSet<uuid::Uuid>> = HashMap::new();
        let mut seen_at: HashMap<&str, (DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
        let mut finished: HashMap<uuid::Uuid, &str> = HashMap::new();
        for event in &mine {
            progress.case_id.get_or_insert_with(|| event.case_id.clone());
            jobs.insert(event.job_id, &event.stages);
            submitted = submitted.or(event.batch_total);
            progress.last_at = Some(progress.last_at.map_or(event.at, |t| t.max(event.at)));
            if event.point == "result" {
                // A redelivered job can publish its result twice: the last word counts once.
                finished.insert(event.job_id, event.outcome.as_str());
                continue;
            }
            // A stage that found children counts them once, however often it was redelivered.
            if past.entry(event.point.as_str()).or_default().insert(event.job_id) {
                children += event.children;
            }
            let span = seen_at.entry(event.point.as_str()).or_insert((event.at, event.at));
            span.0 = span.0.min(event.at);
            span.1 = span.1.max(event.at);
        }
        for outcome in finished.values() {
            *progress.results.entry((*outcome).to_owned()).or_default() += 1;
        }
        let top_level_seen = mine.iter().filter(|e| !e.child).map(|e| e.job_id).collect::<HashSet<_>>().len() as u64;
        progress.total = submitted.unwrap_or(top_level_seen).max(top_level_seen) + children;
        for stage in order {
            let runs = |job_stages: &Vec<String>| job_stages.iter().any(|s| s == stage);
            // Jobs not yet seen are assumed to run the stages of the jobs seen (batches share them).
            let unseen = progress.total.saturating_sub(jobs.len() as u64);
            let total = jobs.values().filter(|s| runs(s)).count() as u64 + if jobs.values().any(|s| runs(s)) { unseen } else { 0 };
            if total == 0 {
                continue;
            }
            let ran = past.get(stage.as_str());
            let done = jobs
                .iter()
                .filter(|(id, s)| runs(s) && (ran.is_some_and(|r| r.contains(*id)) || finished.contains_key(*id)))
                .count() as u64;
            let per_minute = seen_at.get(stage.as_str()).and_then(|(first, last)| {
                let minutes = (*last - *first).num_milliseconds() as f64 / 60_000.0;
                (minutes > 0.0 && done > 1).then(|| (done - 1) as f64 / minutes)
            });
            let eta = per_minute.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(total.saturating_sub(done) as f64 / r * 60.0));
            progress.stages.push(StageProgress { stage: stage.clone(), done, total, per_minute, eta });
        }
        progress
    }
}

/// Every event in the progress stream, read from its start. Reading stops once the stream has
/// been quiet for `quiet` (it is caught up), or `limit` passed.
pub async fn read_all(channel: &Channel, config: &Config, quiet: Duration, limit: Duration) -> Result<Vec<Event>, TransportError> {
    let names = Names::new(config);
    // Streams need a prefetch limit and explicit acks; acks only move the window, nothing is removed.
    channel.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-stream-offset"), AMQPValue::LongString(LongString::from("first")));
    let mut consumer = channel.basic_consume(short(&names.progress_queue()), short(""), BasicConsumeOptions::default(), args).await?;
    let deadline = tokio::time::Instant::now() + limit;
    let mut events = Vec::new();
    loop {
        let wait = quiet.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let Ok(Some(delivery)) = tokio::time::timeout(wait, consumer.next()).await else { break };
        let delivery = delivery?;
        // An event this version cannot read is skipped, not fatal: status is a view.
        if let Ok(event) = serde_json::from_slice::<Event>(&delivery.data) {
            events.push(event);
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(job: u128, point: &str, outcome: &str, children: u64, child: bool, at_s: i64) -> Event {
        Event {
            case_id: "c".into(),
            batch_id: "b".into(),
            batch_total: Some(4),
            job_id: uuid::Uuid::from_u128(job),
            child,
            stages: vec!["extract".into(), "langid".into()],
            point: point.into(),
            outcome: outcome.into(),
            children,
            seconds: 0.1,
            at: DateTime::from_timestamp(1_800_000_000 + at_s, 0).unwrap(),
        }
    }

    #[test]
    fn counts_stages_results_children_and_rates() {
        let order = vec!["extract".to_owned(), "langid".to_owned(), "translate".to_owned()];
        let events = vec![
            event(1, "extract", "ok", 1, false, 0),
            event(2, "extract", "ok", 0, false, 60),
            event(2, "extract", "ok", 0, false, 61), // redelivered: counted once
            event(1, "langid", "ok", 0, false, 62),
            event(1, "result", "complete", 0, false, 63),
            event(9, "extract", "corrupt", 0, true, 70), // the child of job 1
            event(9, "result", "failed", 0, true, 71),
            Event { batch_id: "other".into(), ..event(5, "extract", "ok", 0, false, 5) },
        ];
        let progress = Progress::of("b", &order, &events);
        // Four submitted documents and one child; two documents not seen yet.
        assert_eq!(progress.total, 5);
        assert_eq!(progress.finished(), 2);
        assert_eq!(progress.results.get("failed"), Some(&1));
        assert_eq!(progress.stages.len(), 2, "no job runs translate");
        let extract = &progress.stages[0];
        assert_eq!((extract.done, extract.total), (3, 5));
        // Three jobs past extract in 70 s: two intervals, 1.71 a minute; two to go.
        assert!((extract.per_minute.unwrap() - 2.0 / (70.0 / 60.0)).abs() < 1e-9);
        assert_eq!(extract.eta.unwrap().as_secs(), 70);
        // The failed child finished without langid: it is past it too.
        let langid = &progress.stages[1];
        assert_eq!((langid.done, langid.total), (2, 5));
    }
}
