//! ZIP, TAR and gzip. Members become child documents. Limits (total bytes, member count, nesting
//! depth, compression ratio) stop zip bombs; bytes are counted as they are read, so a member that
//! lies about its size in the header is caught too.
//!
//! Pattern to copy: never trust a size a file states about itself. Read through [`read_limited`]
//! (a `take(budget + 1)` reader) and judge limits on the bytes actually produced, so a forged
//! header or a decompression bomb hits the limit instead of the worker's memory.

use std::io::{Cursor, Read};

use super::{Child, ExtractError, ExtractErrorKind, Extracted, Limits, Request};

fn too_large(reason: String) -> ExtractError {
    ExtractError::new(ExtractErrorKind::TooLarge, reason)
}

fn check_depth(limits: &Limits, request: &Request) -> Result<(), ExtractError> {
    if request.depth + 1 > limits.archive_max_depth {
        return Err(too_large(format!("archive nested {} deep, over limits.archive_max_depth ({})", request.depth + 1, limits.archive_max_depth)));
    }
    Ok(())
}

/// Read at most `budget` bytes; more means the limit is exceeded.
fn read_limited(reader: impl Read, budget: u64, what: &str) -> Result<Vec<u8>, ExtractError> {
    let mut buf = Vec::new();
    reader
        .take(budget.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, format!("{what}: {e}")))?;
    if buf.len() as u64 > budget {
        return Err(too_large(format!("{what} expands past its limit (archive_max_ratio, archive_max_total_bytes)")));
    }
    Ok(buf)
}

pub fn zip(bytes: &[u8], limits: &Limits, request: &Request) -> Result<Extracted, ExtractError> {
    check_depth(limits, request)?;
    let mut archive = match zip::ZipArchive::new(Cursor::new(bytes)) {
        Ok(archive) => archive,
        // No readable central directory: walk the local headers instead, as far as they go.
        Err(e) => return zip_stream(bytes, limits, &e.to_string()),
    };
    if archive.len() > limits.archive_max_members {
        return Err(too_large(format!("{} members, over limits.archive_max_members ({})", archive.len(), limits.archive_max_members)));
    }
    let mut extracted = Extracted { media_type: "application/zip".into(), ..Default::default() };
    let mut budget = limits.archive_max_total_bytes;
    let mut damaged = Vec::new();
    let mut encrypted = 0;
    for i in 0..archive.len() {
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
            return Err(too_large(format!(
                "member {name} expands {:.0}x, over limits.archive_max_ratio ({})",
                size as f64 / compressed as f64,
                limits.archive_max_ratio
            )));
        }
        if size > budget {
            return Err(too_large(format!("members expand past limits.archive_max_total_bytes ({})", limits.archive_max_total_bytes)));
        }
        // Counted as read, so a member whose header understates its size is still caught.
        let member_budget = budget.min((compressed.max(1) as f64 * limits.archive_max_ratio) as u64);
        let member = match archive.by_index(i) {
            Ok(file) => read_limited(file, member_budget, &format!("member {name}")),
            Err(e) => Err(ExtractError::new(ExtractErrorKind::Corrupt, e.to_string())),
        };
        match member {
            Ok(data) => {
                budget -= data.len() as u64;
                extracted.children.push(Child { path: name, bytes: data });
            }
            Err(e) if e.kind == ExtractErrorKind::TooLarge => return Err(e),
            Err(e) => damaged.push(format!("{name}: {}", e.reason)),
        }
    }
    if encrypted > 0 && extracted.children.is_empty() {
        return Err(ExtractError::new(ExtractErrorKind::Encrypted, format!("ZIP is password-protected ({encrypted} members)")));
    }
    if extracted.children.is_empty() && !damaged.is_empty() {
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

/// `.tar`, `.tar.gz`, or a lone gzip-compressed file.
pub fn tar(bytes: &[u8], media: &str, limits: &Limits, request: &Request) -> Result<Extracted, ExtractError> {
    check_depth(limits, request)?;
    let (plain, gzipped) = if media == "application/gzip" {
        // Bytes actually produced are what count: at most the total budget, and at most
        // archive_max_ratio times the compressed size. MultiGz: concatenated members all count.
        let budget = limits.archive_max_total_bytes.min((bytes.len() as f64 * limits.archive_max_ratio) as u64);
        let data = read_limited(flate2::read::MultiGzDecoder::new(bytes), budget, "gzip stream")
            .map_err(|e| if e.kind == ExtractErrorKind::TooLarge { too_large(format!("gzip stream expands past {budget} bytes (limits.archive_max_ratio / archive_max_total_bytes)")) } else { e })?;
        (data, true)
    } else {
        (bytes.to_vec(), false)
    };
    let is_tar = plain.len() > 262 && &plain[257..262] == b"ustar";
    if !is_tar {
        // A single compressed file: its content is the one child.
        let mut extracted = Extracted { media_type: media.into(), ..Default::default() };
        extracted.children.push(Child { path: "(gunzipped)".into(), bytes: plain });
        return Ok(extracted);
    }
    let mut extracted = Extracted {
        media_type: if gzipped { "application/x-gtar".into() } else { "application/x-tar".into() },
        ..Default::default()
    };
    let mut archive = tar::Archive::new(Cursor::new(&plain));
    let entries = archive.entries().map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, format!("TAR is damaged: {e}")))?;
    let mut damaged = Vec::new();
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                damaged.push(e.to_string());
                break; // a broken header loses the position of everything after it
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if extracted.children.len() >= limits.archive_max_members {
            return Err(too_large(format!("over limits.archive_max_members ({})", limits.archive_max_members)));
        }
        let path = entry.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|_| "(unnamed)".into());
        let mut data = Vec::new();
        match entry.read_to_end(&mut data) {
            Ok(_) => extracted.children.push(Child { path, bytes: data }),
            Err(e) => damaged.push(format!("{path}: {e}")),
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
fn zip_stream(bytes: &[u8], limits: &Limits, damage: &str) -> Result<Extracted, ExtractError> {
    let mut extracted = Extracted { media_type: "application/zip".into(), ..Default::default() };
    let mut cursor = Cursor::new(bytes);
    let mut budget = limits.archive_max_total_bytes;
    let mut problems = vec![format!("central directory: {damage}")];
    loop {
        if extracted.children.len() >= limits.archive_max_members {
            return Err(too_large(format!("over limits.archive_max_members ({})", limits.archive_max_members)));
        }
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
        match read_limited(file, budget, &format!("member {name}")) {
            Ok(data) => {
                budget -= data.len() as u64;
                extracted.children.push(Child { path: name, bytes: data });
            }
            Err(e) if e.kind == ExtractErrorKind::TooLarge => return Err(e),
            Err(e) => {
                problems.push(format!("{name}: {}", e.reason));
                break; // the stream position after a broken member cannot be trusted
            }
        }
    }
    if extracted.children.is_empty() {
        return Err(ExtractError::new(ExtractErrorKind::Corrupt, format!("ZIP is damaged: {}", problems.join("; "))));
    }
    extracted.metadata.insert("damaged_members".into(), problems.join("; "));
    extracted.metadata.insert("members".into(), extracted.children.len().to_string());
    extracted.condition = Some(ExtractError::new(ExtractErrorKind::Corrupt, format!("ZIP is damaged; {} members recovered from local headers", extracted.children.len())));
    Ok(extracted)
}
