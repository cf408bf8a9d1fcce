//! ZIP, TAR and gzip in process; 7z and RAR through Debian's `unar`/`lsar` as child processes.
//! Members become child documents. Limits (the document tree's bytes and member count, nesting
//! depth, compression ratio) stop zip bombs; bytes are counted as they are read, so a member that
//! lies about its size in the header is caught too. Reaching a limit stops reading and keeps
//! what was read, with a `too_large` condition.
//!
//! Pattern to copy: never trust a size a file states about itself. Read through [`read_limited`]
//! (a `take(budget + 1)` reader) and judge limits on the bytes actually produced, so a forged
//! header or a decompression bomb hits the limit instead of the worker's memory.

use std::ffi::OsStr;
use std::io::Read;
use std::time::Instant;

use super::input::{Input, ReadSeek};
use super::process::{run, run_into};
use super::spill::{ChildBytes, Spill};
use super::{Child, ExtractError, ExtractErrorKind, Extracted, Limits, Request};

fn too_large(reason: String) -> ExtractError {
    ExtractError::new(ExtractErrorKind::TooLarge, reason)
}

/// What the submitted document's tree may still unpack below the document being read: bytes
/// produced and documents found, across every archive, mailbox and attachment in it. Each
/// document gets its share from its parent (`Budget::split`), so nesting cannot multiply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    pub members: u64,
}

impl Budget {
    /// A submitted document's whole tree.
    pub fn of_tree(limits: &Limits) -> Self {
        Self { bytes: limits.tree_max_total_bytes, members: limits.tree_max_members }
    }

    /// Count one member of `size` bytes. Past the budget: the `too_large` condition that stops
    /// reading (what was read before stays).
    pub fn take(&mut self, size: u64, limits: &Limits) -> Result<(), ExtractError> {
        if self.members == 0 {
            return Err(too_large(format!("the document tree holds more than limits.tree_max_members ({}) documents: reading stopped here", limits.tree_max_members)));
        }
        if size > self.bytes {
            return Err(too_large(format!("the document tree unpacks past limits.tree_max_total_bytes ({}): reading stopped here", limits.tree_max_total_bytes)));
        }
        self.members -= 1;
        self.bytes -= size;
        Ok(())
    }

    /// Shares of what is left after the children (sizes in bytes) were taken, one per child, in
    /// proportion to its size: together they never exceed the parent's budget.
    pub fn split(self, sizes: &[u64]) -> Vec<Budget> {
        let total: u64 = sizes.iter().sum();
        let left = Budget { bytes: self.bytes.saturating_sub(total), members: self.members.saturating_sub(sizes.len() as u64) };
        let n = sizes.len().max(1) as u128;
        let share = |amount: u64, size: u64| -> u64 {
            if total == 0 {
                (amount as u128 / n) as u64
            } else {
                (amount as u128 * size as u128 / total as u128) as u64
            }
        };
        sizes.iter().map(|&size| Budget { bytes: share(left.bytes, size), members: share(left.members, size) }).collect()
    }
}

/// Whether this document's children would still be within the tree's depth.
pub(super) fn check_depth(limits: &Limits, request: &Request) -> Result<(), ExtractError> {
    if request.depth + 1 > limits.tree_max_depth {
        return Err(too_large(format!("documents nested {} deep, over limits.tree_max_depth ({})", request.depth + 1, limits.tree_max_depth)));
    }
    Ok(())
}

/// Read at most `budget` bytes into a child's bytes (spilled to a file past a megabyte); more
/// means the limit is exceeded.
fn read_limited(reader: impl Read, budget: u64, what: &str) -> Result<ChildBytes, ExtractError> {
    let mut spill = Spill::default();
    std::io::copy(&mut reader.take(budget.saturating_add(1)), &mut spill).map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, format!("{what}: {e}")))?;
    if spill.len() > budget {
        return Err(too_large(format!("{what} expands past its limit (archive_max_ratio, tree_max_total_bytes)")));
    }
    spill.finish().map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, format!("{what}: spilling to a temporary file: {e}")))
}

pub fn zip(input: Input<'_>, limits: &Limits, request: &Request, budget: &mut Budget) -> Result<Extracted, ExtractError> {
    check_depth(limits, request)?;
    let mut archive = match zip::ZipArchive::new(input.open()?) {
        Ok(archive) => archive,
        // No readable central directory: walk the local headers instead, as far as they go.
        Err(e) => return zip_stream(input.open()?, limits, budget, &e.to_string()),
    };
    let mut extracted = Extracted { media_type: "application/zip".into(), ..Default::default() };
    let mut damaged = Vec::new();
    let mut encrypted = 0;
    for i in 0..archive.len() {
        request.check_cancelled()?;
        let (name, is_dir, size, compressed, is_encrypted) = match archive.by_index_raw(i) {
            Ok(f) => (f.name().to_owned(), f.is_dir(), f.size(), f.compressed_size(), f.encrypted()),
            Err(e) => {
                damaged.push(format!("#{i}: {e}"));
                continue;
            }
        };
        if is_dir {
            continue;
        }
        if is_encrypted {
            encrypted += 1;
            continue;
        }
        if compressed > 0 && size as f64 / compressed as f64 > limits.archive_max_ratio {
            extracted.condition = Some(too_large(format!(
                "member {name} expands {:.0}x, over limits.archive_max_ratio ({}): reading stopped here",
                size as f64 / compressed as f64,
                limits.archive_max_ratio
            )));
            break;
        }
        if let Err(stop) = budget.take(size, limits) {
            extracted.condition = Some(stop);
            break;
        }
        // Counted as read, so a member whose header understates its size is still caught.
        let member_budget = (budget.bytes + size).min((compressed.max(1) as f64 * limits.archive_max_ratio) as u64);
        let member = match archive.by_index(i) {
            Ok(file) => read_limited(file, member_budget, &format!("member {name}")),
            Err(e) => Err(ExtractError::new(ExtractErrorKind::Corrupt, e.to_string())),
        };
        match member {
            Ok(data) => {
                // The header's size was taken; the bytes actually read are what count.
                budget.bytes = (budget.bytes + size).saturating_sub(data.len());
                extracted.children.push(Child { path: name, bytes: data });
            }
            Err(e) if e.kind == ExtractErrorKind::TooLarge => {
                extracted.condition = Some(e);
                break;
            }
            Err(e) => damaged.push(format!("{name}: {}", e.reason)),
        }
    }
    finish(extracted, "ZIP", encrypted, damaged)
}

/// `.tar`, `.tar.gz`, or a lone gzip-compressed file.
pub fn tar(input: Input<'_>, media: &str, limits: &Limits, request: &Request, budget: &mut Budget) -> Result<Extracted, ExtractError> {
    check_depth(limits, request)?;
    // The gzip stream is unpacked once, to memory or a spill file: bytes actually produced are
    // what count, at most the tree's budget and archive_max_ratio times the compressed size
    // (MultiGz: concatenated members all count).
    let plain = if media == "application/gzip" {
        let limit = budget.bytes.min((input.len() as f64 * limits.archive_max_ratio) as u64);
        Some(read_limited(flate2::read::MultiGzDecoder::new(input.open()?), limit, "gzip stream").map_err(|e| {
            if e.kind == ExtractErrorKind::TooLarge { too_large(format!("gzip stream expands past {limit} bytes (limits.archive_max_ratio / tree_max_total_bytes)")) } else { e }
        })?)
    } else {
        None
    };
    let reader = || -> Result<Box<dyn Read + '_>, ExtractError> {
        match &plain {
            Some(plain) => plain.reader().map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, format!("gzip stream: {e}"))),
            None => Ok(input.open()?),
        }
    };
    let mut head = Vec::new();
    reader()?.take(262).read_to_end(&mut head).map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, e.to_string()))?;
    let is_tar = head.len() >= 262 && &head[257..262] == b"ustar";
    if !is_tar {
        // A single compressed file: its content is the one child. (Without gzip this is
        // unreachable: only the tar header makes a file `application/x-tar`.)
        let plain = match plain {
            Some(plain) => plain,
            None => read_limited(input.open()?, budget.bytes, "TAR")?,
        };
        let mut extracted = Extracted { media_type: media.into(), ..Default::default() };
        budget.take(plain.len(), limits)?;
        extracted.children.push(Child { path: "(gunzipped)".into(), bytes: plain });
        return Ok(extracted);
    }
    let mut extracted = Extracted {
        media_type: if plain.is_some() { "application/x-gtar".into() } else { "application/x-tar".into() },
        ..Default::default()
    };
    let mut archive = tar::Archive::new(reader()?);
    let entries = archive.entries().map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, format!("TAR is damaged: {e}")))?;
    let mut damaged = Vec::new();
    for entry in entries {
        request.check_cancelled()?;
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                damaged.push(e.to_string());
                break; // a broken header loses the position of everything after it
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|_| "(unnamed)".into());
        if let Err(stop) = budget.take(0, limits) {
            extracted.condition = Some(stop);
            break;
        }
        match read_limited(entry, budget.bytes, &format!("member {path}")) {
            Ok(data) => {
                budget.bytes -= data.len();
                extracted.children.push(Child { path, bytes: data });
            }
            Err(e) if e.kind == ExtractErrorKind::TooLarge => {
                extracted.condition = Some(e);
                break;
            }
            Err(e) => damaged.push(format!("{path}: {}", e.reason)),
        }
    }
    if extracted.children.is_empty() && !damaged.is_empty() {
        return Err(ExtractError::new(ExtractErrorKind::Corrupt, format!("no member could be read: {}", damaged.join("; "))));
    }
    if !damaged.is_empty() {
        extracted.metadata.insert("damaged_members".into(), damaged.join("; "));
    }
    extracted.metadata.insert("members".into(), extracted.children.len().to_string());
    Ok(extracted)
}

/// Members of a ZIP whose central directory is damaged, read from their local headers.
fn zip_stream(mut cursor: Box<dyn ReadSeek + '_>, limits: &Limits, budget: &mut Budget, damage: &str) -> Result<Extracted, ExtractError> {
    let mut extracted = Extracted { media_type: "application/zip".into(), ..Default::default() };
    let mut problems = vec![format!("central directory: {damage}")];
    let mut limit_hit = None;
    loop {
        let file = match zip::read::read_zipfile_from_stream(&mut cursor) {
            Ok(Some(file)) => file,
            Ok(None) => break,
            Err(e) => {
                problems.push(e.to_string());
                break;
            }
        };
        if file.is_dir() {
            continue;
        }
        let name = file.name().to_owned();
        if let Err(stop) = budget.take(0, limits) {
            limit_hit = Some(stop);
            break;
        }
        match read_limited(file, budget.bytes, &format!("member {name}")) {
            Ok(data) => {
                budget.bytes -= data.len();
                extracted.children.push(Child { path: name, bytes: data });
            }
            Err(e) if e.kind == ExtractErrorKind::TooLarge => {
                limit_hit = Some(e);
                break;
            }
            Err(e) => {
                problems.push(format!("{name}: {}", e.reason));
                break; // the stream position after a broken member cannot be trusted
            }
        }
    }
    if extracted.children.is_empty() {
        return Err(limit_hit.unwrap_or_else(|| ExtractError::new(ExtractErrorKind::Corrupt, format!("ZIP is damaged: {}", problems.join("; ")))));
    }
    extracted.metadata.insert("damaged_members".into(), problems.join("; "));
    extracted.metadata.insert("members".into(), extracted.children.len().to_string());
    extracted.condition = Some(limit_hit.unwrap_or_else(|| {
        ExtractError::new(ExtractErrorKind::Corrupt, format!("ZIP is damaged; {} members recovered from local headers", extracted.children.len()))
    }));
    Ok(extracted)
}

/// One entry of `lsar -j`'s listing.
#[derive(serde::Deserialize)]
struct Listed {
    #[serde(rename = "XADIndex")]
    index: u64,
    #[serde(rename = "XADFileName", default)]
    name: String,
    #[serde(rename = "XADIsDirectory", default)]
    directory: u8,
    #[serde(rename = "XADIsLink", default)]
    link: u8,
    #[serde(rename = "XADIsEncrypted", default)]
    encrypted: u8,
}

#[derive(serde::Deserialize)]
struct Listing {
    #[serde(rename = "lsarContents", default)]
    contents: Vec<Listed>,
    #[serde(rename = "lsarError", default)]
    error: Option<serde_json::Value>,
}

/// 7z and RAR through `lsar` (listing) and `unar` (one member at a time to standard output,
/// counted and cut off as it streams). unar never writes a file here and is told not to unpack
/// archives inside archives: those become children like any other member.
pub fn unar(input: Input<'_>, media: &str, limits: &Limits, request: &Request, budget: &mut Budget) -> Result<Extracted, ExtractError> {
    check_depth(limits, request)?;
    let file = input.on_disk("archive")?;
    let deadline = Instant::now() + limits.tool_timeout;
    let listed = run("lsar", &[OsStr::new("-j"), file.path().as_os_str()], limits.tool_timeout)?;
    // With encrypted headers lsar stops mid-listing and says so on standard error.
    let password = listed.stderr.contains("requires a password");
    let listing = match serde_json::from_slice::<Listing>(&listed.stdout) {
        Ok(listing) if !listing.contents.is_empty() => listing,
        _ if password => return Err(ExtractError::new(ExtractErrorKind::Encrypted, format!("{media} archive is password-protected (names encrypted too)"))),
        Ok(listing) => {
            let message = format!("{}{}", listed.stderr, listing.error.map(|e| e.to_string()).unwrap_or_default());
            return Err(ExtractError::new(ExtractErrorKind::Corrupt, format!("{media} archive is unreadable: {}", message.lines().next().unwrap_or("no member listed").trim())));
        }
        Err(e) => return Err(ExtractError::new(ExtractErrorKind::Corrupt, format!("archive listing unreadable: {e}"))),
    };
    let mut extracted = Extracted { media_type: media.into(), ..Default::default() };
    // Bytes produced are judged against the archive as a whole: solid archives do not say what
    // one member compresses to.
    let mut ratio_left = (input.len() as f64 * limits.archive_max_ratio) as u64;
    let (mut damaged, mut encrypted) = (Vec::new(), 0);
    for entry in listing.contents.iter().filter(|e| e.directory == 0 && e.link == 0) {
        request.check_cancelled()?;
        if entry.encrypted != 0 {
            encrypted += 1;
            continue;
        }
        if let Err(stop) = budget.take(0, limits) {
            extracted.condition = Some(stop);
            break;
        }
        let limit = budget.bytes.min(ratio_left);
        let left = deadline.saturating_duration_since(Instant::now());
        let index = entry.index.to_string();
        let mut data = Spill::default();
        let args = [OsStr::new("-q"), OsStr::new("-nr"), OsStr::new("-o"), OsStr::new("-"), OsStr::new("-i"), file.path().as_os_str(), OsStr::new(&index)];
        match run_into("unar", &args, left, limit, &mut data) {
            Ok((status, _)) if status.success() => {
                budget.bytes -= data.len();
                ratio_left -= data.len();
                let data = data.finish().map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, format!("spilling {}: {e}", entry.name)))?;
                extracted.children.push(Child { path: entry.name.clone(), bytes: data });
            }
            Ok((_, stderr)) => damaged.push(format!("{}: {}", entry.name, stderr.lines().next().unwrap_or("unreadable").trim())),
            Err(e) if e.kind == ExtractErrorKind::TooLarge => {
                let reason = if limit == ratio_left { format!("{media} archive expands past limits.archive_max_ratio ({})", limits.archive_max_ratio) } else { e.reason };
                extracted.condition = Some(too_large(format!("{reason}: reading stopped at {}", entry.name)));
                break;
            }
            Err(e) => {
                extracted.condition = Some(e);
                break;
            }
        }
    }
    finish(extracted, media, encrypted, damaged)
}

/// What an archive's reading came to: `encrypted` when every member was, `corrupt` when none
/// could be read (unless a limit stopped it first), else the members with counts of what was
/// skipped.
fn finish(mut extracted: Extracted, what: &str, encrypted: usize, damaged: Vec<String>) -> Result<Extracted, ExtractError> {
    if encrypted > 0 && extracted.children.is_empty() && extracted.condition.is_none() {
        return Err(ExtractError::new(ExtractErrorKind::Encrypted, format!("{what} archive is password-protected ({encrypted} members)")));
    }
    if extracted.children.is_empty() && !damaged.is_empty() && extracted.condition.is_none() {
        return Err(ExtractError::new(ExtractErrorKind::Corrupt, format!("no member could be read: {}", damaged.join("; "))));
    }
    if encrypted > 0 {
        extracted.metadata.insert("encrypted_members".into(), encrypted.to_string());
    }
    if !damaged.is_empty() {
        extracted.metadata.insert("damaged_members".into(), damaged.join("; "));
    }
    extracted.metadata.insert("members".into(), extracted.children.len().to_string());
    Ok(extracted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_never_add_up_to_more_than_the_parent_had() {
        let parent = Budget { bytes: 1000, members: 10 };
        let shares = parent.split(&[100, 300]);
        assert_eq!(shares, vec![Budget { bytes: 150, members: 2 }, Budget { bytes: 450, members: 6 }]);
        let spent: u64 = shares.iter().map(|b| b.bytes).sum::<u64>() + 400;
        assert!(spent <= 1000);
        // Children that took everything leave nothing to their own children.
        assert_eq!(Budget { bytes: 10, members: 1 }.split(&[10, 5]), vec![Budget { bytes: 0, members: 0 }; 2]);
        assert_eq!(Budget { bytes: 9, members: 4 }.split(&[0, 0, 0]), vec![Budget { bytes: 3, members: 0 }; 3]);
    }

    #[test]
    fn taking_past_the_budget_stops_with_too_large() {
        let limits = Limits::default();
        let mut budget = Budget { bytes: 10, members: 2 };
        budget.take(6, &limits).unwrap();
        assert_eq!(budget.take(6, &limits).unwrap_err().kind, ExtractErrorKind::TooLarge);
        budget.take(4, &limits).unwrap();
        assert!(budget.take(0, &limits).unwrap_err().reason.contains("tree_max_members"));
    }
}
