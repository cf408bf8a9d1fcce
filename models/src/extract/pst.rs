//! Outlook PST/OST mailboxes through Debian's `readpst` (libpst) as a child process with the
//! converter deadline. Every message comes out as an RFC 822 file under its folder path and
//! becomes a child document (its attachments are then the message's children); contacts come out
//! as vCards and appointments as iCalendar files.
//!
//! readpst writes to a private temporary directory, never the worker's memory; its files become
//! the children (moved, not read) under the document tree's budget.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::archive::Budget;
use super::input::Input;
use super::process::run;
use super::{Child, ChildBytes, ExtractError, ExtractErrorKind, Extracted, Limits};

pub fn extract(input: Input<'_>, limits: &Limits, budget: &mut Budget) -> Result<Extracted, ExtractError> {
    let file = input.on_disk("mailbox.pst")?;
    let out = file.dir().join("out");
    std::fs::create_dir(&out).map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, format!("readpst output folder: {e}")))?;
    // -e: one RFC 822 file per item, with an extension; -D: deleted items too (they are evidence);
    // -b: no separate RTF copies of bodies; -8: UTF-8 bodies where the store has them; -cv: vCards;
    // -j 0: no parallel jobs. With its default, readpst can exit before a forked job has written
    // its items: on a loaded machine 1 run in 15 gave 3 of the test mailbox's 4 messages (and 2 in
    // 6 during the test suite), 15 of 15 gave 4 with -j 0. An item lost that way would be lost silently.
    let args = ["-j", "0", "-e", "-q", "-D", "-b", "-8", "-cv", "-o"].map(OsStr::new);
    let mut all: Vec<&OsStr> = args.to_vec();
    all.push(out.as_os_str());
    all.push(file.path().as_os_str());
    let ran = run("readpst", &all, limits.tool_timeout)?;
    let mut files = Vec::new();
    collect(&out, &out, &mut files);
    files.sort();
    if !ran.status.success() && files.is_empty() {
        let reason = ran.stderr.lines().next().unwrap_or("failed").trim().to_owned();
        return Err(ExtractError::new(ExtractErrorKind::Corrupt, format!("readpst: {reason}")));
    }
    let mut extracted = Extracted { media_type: "application/vnd.ms-outlook-pst".into(), ..Default::default() };
    for (relative, path) in files {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if let Err(stop) = budget.take(size, limits) {
            extracted.condition = Some(stop);
            break;
        }
        // Taken over as they are (moved, not read), so a large mailbox is never in memory whole.
        match ChildBytes::adopt(&path) {
            Ok(data) => extracted.children.push(Child { path: relative, bytes: data }),
            Err(e) => return Err(ExtractError::new(ExtractErrorKind::Corrupt, format!("readpst output: {e}"))),
        }
    }
    if !ran.status.success() {
        extracted.condition.get_or_insert_with(|| ExtractError::new(ExtractErrorKind::Corrupt, format!("readpst stopped early: {}", ran.stderr.lines().next().unwrap_or("").trim())));
    }
    extracted.metadata.insert("messages".into(), extracted.children.len().to_string());
    if extracted.children.is_empty() && extracted.condition.is_none() {
        extracted.condition = Some(ExtractError::new(ExtractErrorKind::Empty, "the mailbox holds no item"));
    }
    Ok(extracted)
}

/// Files under `dir`, as (path relative to `root`, full path). readpst names folders after the
/// mailbox's own folder names; only regular files are followed, never links.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        let path = entry.path();
        if kind.is_dir() {
            collect(root, &path, out);
        } else if kind.is_file() {
            let relative = path.strip_prefix(root).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            out.push((relative, path));
        }
    }
}
