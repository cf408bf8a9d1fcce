//! `docpipe models list|install|verify`: models carried in on media, known by their hashes.

use std::path::PathBuf;

use crate::config::Config;
use crate::registry::Registry;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Installed models with their kind and weights sha256.
    List,
    /// Install a model from a local directory or archive (.tar, .tar.gz, .zip), hashing every file.
    Install {
        /// Directory in the Hugging Face layout, or an archive of one.
        source: PathBuf,
        /// Name to install it under (e.g. opus-mt-zh-en).
        #[arg(long)]
        name: String,
        /// Model kind: marian, t5 or gguf.
        #[arg(long)]
        kind: String,
        /// Refuse the model unless its weights hash to this (as published by its maker).
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Re-hash installed models (all, or the one named); exit 1 if any file changed.
    Verify { name: Option<String> },
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let registry = Registry::new(config.models.dir.clone());
    match args.command {
        ModelsCommand::List => {
            for m in registry.list()? {
                println!("{}\t{}\t{}\t{}", m.name, m.kind, m.weights_sha256, m.weights);
            }
        }
        ModelsCommand::Install { source, name, kind, sha256 } => {
            let m = registry.install(&source, &name, &kind, sha256.as_deref())?;
            println!("installed {} ({}): {} files, weights {} sha256 {}", m.name, m.kind, m.files.len(), m.weights, m.weights_sha256);
        }
        ModelsCommand::Verify { name } => {
            let names: Vec<String> = match name {
                Some(n) => vec![n],
                None => registry.list()?.into_iter().map(|m| m.name).collect(),
            };
            let mut bad = 0;
            for n in names {
                match registry.verify(&n) {
                    Ok(m) => println!("ok\t{}\t{}", m.name, m.weights_sha256),
                    Err(e) => {
                        println!("FAILED\t{e}");
                        bad += 1;
                    }
                }
            }
            if bad > 0 {
                return Ok(std::process::ExitCode::from(1));
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
