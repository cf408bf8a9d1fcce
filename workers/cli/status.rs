//! `docpipe status --batch ID`: how far a batch is, per stage, with an ETA from measured rates,
//! read from the progress stream (any host, any time, as often as wanted; nothing is consumed).

use std::time::Duration;

use anyhow::Context;

use crate::amqp::short;
use crate::amqp::progress::{self, Progress};
use crate::amqp::topology::declare;
use crate::amqp::connect;
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Batch id printed by `docpipe submit`.
    #[arg(long)]
    pub batch: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The batch's progress as the workers have reported it.
pub async fn status(config: &Config, batch: &str) -> anyhow::Result<Progress> {
    let connection = connect(config).await.context("connecting to the broker")?;
    let channel = connection.create_channel().await?;
    declare(&channel, config).await?;
    let events = progress::read_all(&channel, config, Duration::from_millis(700), Duration::from_secs(120)).await?;
    let _ = connection.close(200, short("status read")).await;
    let order: Vec<String> = config.stages.iter().map(|s| s.name.clone()).collect();
    Ok(Progress::of(batch, &order, &events))
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let progress = status(config, &args.batch).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&args.batch, &progress))?);
    } else {
        print!("{}", render(&args.batch, &progress));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn to_json(batch: &str, p: &Progress) -> serde_json::Value {
    serde_json::json!({
        "batch_id": batch,
        "case_id": p.case_id,
        "documents": p.total,
        "finished": p.finished(),
        "results": p.results,
        "stages": p.stages.iter().map(|s| serde_json::json!({
            "stage": s.stage, "done": s.done, "total": s.total,
            "per_minute": s.per_minute, "eta_seconds": s.eta.map(|d| d.as_secs()),
        })).collect::<Vec<_>>(),
        "last_event_at": p.last_at,
    })
}

fn render(batch: &str, p: &Progress) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if p.total == 0 {
        let _ = writeln!(out, "batch {}: no progress reported yet (no worker has finished a stage of it)", super::inputs::printable(batch));
        return out;
    }
    let results: Vec<String> = p.results.iter().map(|(status, n)| format!("{n} {}", super::inputs::printable(status))).collect();
    let _ = writeln!(
        out,
        "batch {} (case {}): {} of {} documents finished{}",
        super::inputs::printable(batch),
        super::inputs::printable(p.case_id.as_deref().unwrap_or("?")),
        p.finished(),
        p.total,
        if results.is_empty() { String::new() } else { format!(" ({})", results.join(", ")) }
    );
    let _ = writeln!(out, "{:<14} {:>13} {:>10} {:>10}", "stage", "done/total", "per min", "ETA");
    for s in &p.stages {
        let rate = s.per_minute.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into());
        let eta = match (s.done >= s.total, s.eta) {
            (true, _) => "done".to_owned(),
            (false, Some(eta)) => human(eta),
            (false, None) => "-".to_owned(),
        };
        let _ = writeln!(out, "{:<14} {:>13} {:>10} {:>10}", s.stage, format!("{}/{}", s.done, s.total), rate, eta);
    }
    if let Some(at) = p.last_at {
        let _ = writeln!(out, "last report {}", at.format("%Y-%m-%d %H:%M:%S UTC"));
    }
    out
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}
