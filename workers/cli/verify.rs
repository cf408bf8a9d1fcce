//! `docpipe verify`: check results offline, as a receiving authority does. Needs no broker, no
//! store and no configuration: the results, the manifest, the public keys, optionally the originals.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::inputs::printable;
use crate::evidence::manifest::path_beside;
use crate::evidence::signature::short;
use crate::evidence::verify::{verify, Inputs};
use crate::evidence::TrustedKeys;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Results as JSON lines (`results.jsonl`, `<batch>.jsonl`) or a single result as JSON.
    pub results: PathBuf,
    /// The batch manifest (default: X.manifest.json beside X.jsonl, when it exists).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Trusted public keys: .pub files or directories of them (repeat for rotated keys).
    #[arg(long = "keys", required = true)]
    pub keys: Vec<PathBuf>,
    /// Directory of the original files, to check each submitted document's sha256.
    #[arg(long)]
    pub originals: Option<PathBuf>,
    /// Check signatures without a manifest (additions and removals then go unnoticed).
    #[arg(long, conflicts_with = "manifest")]
    pub no_manifest: bool,
    /// Accept a manifest written before its batch was complete (`docpipe results` stopped by
    /// its idle timeout).
    #[arg(long)]
    pub allow_incomplete: bool,
}

/// Exit status 0 when everything verifies, 1 when anything does not.
pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let trusted = TrustedKeys::load(&args.keys)?;
    anyhow::ensure!(!trusted.is_empty(), "--keys: no public key found in {:?}", args.keys);
    let text = std::fs::read_to_string(&args.results).with_context(|| format!("reading {}", args.results.display()))?;
    // A single pretty-printed result is one JSON value over many lines: make it one line.
    let results = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(value) if text.trim_end().contains('\n') => value.to_string(),
        _ => text,
    };
    let manifest_path = match args.no_manifest {
        true => None,
        false => args.manifest.clone().or_else(|| Some(path_beside(&args.results)).filter(|p| p.is_file())),
    };
    let manifest = match &manifest_path {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    let report = verify(Inputs {
        results: &results,
        manifest: manifest.as_deref(),
        trusted: &trusted,
        originals: args.originals.as_deref(),
        without_manifest: args.no_manifest,
        incomplete: args.allow_incomplete,
    });

    let mut out = std::io::stdout().lock();
    // Everything below comes from the files being checked: control characters could rewrite the
    // report on a terminal, so they are shown as `?`.
    for d in &report.documents {
        let id = printable(d.job_id.as_deref().unwrap_or("-"));
        let name = printable(&d.name);
        if d.ok() {
            let key = match &d.signature {
                crate::evidence::SignatureCheck::Valid { key_id } => printable(short(key_id)),
                _ => String::new(),
            };
            writeln!(out, "OK       {id}  {name}  (key {key}; checked: {})", d.checked.join(", "))?;
        } else {
            for problem in &d.problems {
                writeln!(out, "FAILED   {id}  {name}  line {}: {}", d.line, printable(&problem.to_string()))?;
            }
        }
    }
    for entry in &report.missing {
        writeln!(
            out,
            "MISSING  {}  input sha256 {}: in the manifest, no result for it (dropped)",
            printable(&entry.job_id),
            printable(&entry.input_sha256)
        )?;
    }
    match (&report.manifest, &manifest_path) {
        (Some(m), Some(path)) => {
            for problem in &m.problems {
                writeln!(out, "FAILED   manifest {}: {}", path.display(), printable(problem))?;
            }
            if m.problems.is_empty() {
                writeln!(
                    out,
                    "manifest {}: case {}, batch {}; {}; Merkle root matches; {} entries{}",
                    path.display(),
                    printable(&m.case_id),
                    printable(&m.batch_id),
                    printable(&m.signature.to_string()),
                    m.entries,
                    if m.complete { "" } else { " (written before the batch was complete)" }
                )?;
            }
        }
        _ => writeln!(out, "no manifest: additions and removals were not checked")?,
    }
    for problem in &report.problems {
        writeln!(out, "FAILED   {problem}")?;
    }
    let failed = report.documents.iter().filter(|d| !d.ok()).count();
    writeln!(
        out,
        "{} results: {} verified, {} failed; {} missing; {}",
        report.documents.len(),
        report.documents.len() - failed,
        failed,
        report.missing.len(),
        if report.ok() { "VERIFIED" } else { "NOT VERIFIED" }
    )?;
    Ok(if report.ok() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE })
}
