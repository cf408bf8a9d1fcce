//! `docpipe keys`: make the Ed25519 key pair that signs results and batch manifests.

use std::path::PathBuf;

use crate::evidence::keys;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Write a new key pair: DIR/signing.key (mode 0600, never overwritten) and DIR/signing.pub.
    /// Point `[signing] key_file` (or DOCPIPE_SIGNING__KEY_FILE) at the key; hand the .pub file
    /// to whoever checks the results.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the key id of public or private key files.
    Id { files: Vec<PathBuf> },
}

pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    match args.command {
        KeysCommand::Generate { out } => {
            let (id, private, public) = keys::generate(&out)?;
            println!("key id     {id}");
            println!("private    {} (mode 0600: keep it on the signing hosts only)", private.display());
            println!("public     {}", public.display());
        }
        KeysCommand::Id { files } => {
            for file in files {
                let id = match keys::TrustedKeys::load(std::slice::from_ref(&file)) {
                    Ok(trusted) => trusted.ids().next().map(str::to_owned),
                    Err(_) => Some(keys::Signer::load(&file)?.id().to_owned()),
                };
                println!("{}  {}", id.unwrap_or_default(), file.display());
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
