//! `docpipe resubmit`: send a batch's failed documents again (see `crate::resubmit`).

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::error::ErrorKind;
use crate::resubmit::{resubmit, Selection, Via};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The batch whose documents to send again.
    #[arg(long)]
    pub batch: String,
    /// Its case (default: defaults.case_id).
    #[arg(long)]
    pub case: Option<String>,
    /// Send the documents whose result is `failed`.
    #[arg(long, required = true)]
    pub failed: bool,
    /// Send the `partial` ones too.
    #[arg(long)]
    pub partial: bool,
    /// Only documents with a stage error of this kind (e.g. timeout, model, too_large).
    #[arg(long)]
    pub kind: Option<ErrorKind>,
    /// Publish them to RabbitMQ for the workers (their results reach the store through
    /// `docpipe store consume` or `serve --consume`). Default: run them in this process, each
    /// result straight into the store.
    #[arg(long)]
    pub broker: bool,
}

/// Exit status 2 when some documents could not be sent (they are listed).
pub async fn run(config: Config, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let store = crate::store::open(&config.store).await.context("opening the results store")?;
    let selection = Selection {
        case_id: args.case.unwrap_or_else(|| config.defaults.case_id.clone()),
        batch_id: args.batch,
        partial: args.partial,
        kind: args.kind,
    };
    let via = if args.broker { Via::Broker } else { Via::Embedded };
    // Who did it, for the audit trail: the account running the command.
    let user = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
    let outcome = resubmit(Arc::new(config), store.as_ref(), &selection, &user, via).await?;
    for (filename, reason) in &outcome.not_sent {
        eprintln!("not sent: {}: {reason}", super::inputs::printable(filename));
    }
    println!("{} documents sent again ({}), {} could not be", outcome.sent.len(), via.as_str(), outcome.not_sent.len());
    if let Some(t) = outcome.tally {
        println!("{} complete, {} partial, {} failed", t.complete, t.partial, t.failed);
    }
    Ok(if outcome.not_sent.is_empty() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(2) })
}
