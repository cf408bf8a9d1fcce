//! `docpipe serve` (the review workspace) and `docpipe users add`.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::web::{self, auth, AppState};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on. The default serves this machine only; choose another address only
    /// behind TLS.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Also take results from the broker's results queue into the store while serving, and send
    /// documents the batch page resubmits through the broker (without it, they run here).
    #[arg(long)]
    pub consume: bool,
}

pub async fn run(config: &Config, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let store = crate::store::open(&config.store).await.context("opening the results store")?;
    let state = AppState {
        page_limits: Arc::new(config.extract.clone()),
        trusted: Arc::new(crate::evidence::trusted_from(config)?),
        // With --consume the workers do the work and results come back through the broker;
        // without, the workspace runs resubmitted documents itself.
        resubmit: Some(Arc::new(web::resubmit::Resubmitter::new(
            Arc::new(config.clone()),
            if args.consume { crate::resubmit::Via::Broker } else { crate::resubmit::Via::Embedded },
        ))),
        ..AppState::new(store.clone(), crate::blob::open(&config.blobs)?)
    };
    println!("review workspace on http://{}/ (sign in with an account from `docpipe users add`)", args.bind);
    if args.consume {
        let config = config.clone();
        tokio::spawn(async move {
            if let Err(e) = super::store::consume(&config, store.as_ref(), std::future::pending()).await {
                tracing::error!(error = %e, "results consumer stopped");
            }
        });
    }
    web::serve(state, args.bind, super::shutdown_signal()).await?;
    Ok(std::process::ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    pub command: UsersCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Create an analyst, or change their password and cases. The password is read from
    /// DOCPIPE_NEW_PASSWORD or, without it, from the first line of standard input; never from
    /// the command line.
    Add {
        name: String,
        /// A case this analyst may see (repeat for several); replaces the cases granted before.
        #[arg(long = "case", required = true)]
        cases: Vec<String>,
    },
}

pub async fn users(config: &Config, args: UsersArgs) -> anyhow::Result<std::process::ExitCode> {
    let UsersCommand::Add { name, cases } = args.command;
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@')),
        "user names are letters, digits, '.', '-', '_' and '@'"
    );
    let password = match std::env::var("DOCPIPE_NEW_PASSWORD") {
        Ok(p) => p,
        Err(_) => std::io::stdin().lock().lines().next().transpose()?.unwrap_or_default(),
    };
    anyhow::ensure!(password.chars().count() >= 12, "passwords have at least 12 characters");
    let store = crate::store::open(&config.store).await.context("opening the results store")?;
    store.put_user(&name, &auth::hash_password(&password)?, &cases).await?;
    println!("user {name} may see: {}", cases.join(", "));
    Ok(std::process::ExitCode::SUCCESS)
}
