//! Legacy binary Office files (Word 97-2003 .doc, Excel .xls, PowerPoint .ppt) and the rest of the
//! OLE compound-file family. Text comes from Debian's `antiword` (.doc, `catdoc` when antiword
//! refuses a file) and `catdoc`'s `xls2csv` and `catppt`, run as child processes with the
//! converter deadline; the document properties (author, last saved by, revision, dates, company)
//! are read here from the property-set streams.
//!
//! Why these converters and not LibreOffice: measured on the fixtures (`bench/legacy_office.py`,
//! README "Extraction and OCR"), they give the same text in a few milliseconds a file where
//! LibreOffice headless takes over two seconds; LibreOffice is not needed.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Cursor, Read};

use super::process::{run, TempFile};
use super::{msg, text, ExtractError, ExtractErrorKind, Extracted, Limits, Page, Source};

type Ole = cfb::CompoundFile<Cursor<Vec<u8>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Doc,
    Xls,
    Ppt,
}

impl Kind {
    fn media_type(self) -> &'static str {
        match self {
            Kind::Doc => "application/msword",
            Kind::Xls => "application/vnd.ms-excel",
            Kind::Ppt => "application/vnd.ms-powerpoint",
        }
    }
}

/// An OLE compound file: an Outlook message, a legacy Office document, or a refusal that says
/// which it is.
pub fn extract(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let mut ole = cfb::CompoundFile::open(Cursor::new(bytes.to_vec()))
        .map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, format!("damaged OLE compound file: {e}")))?;
    if msg::is_msg(&ole) {
        return msg::extract(ole);
    }
    if ole.is_stream("/EncryptedPackage") {
        return Err(ExtractError::new(ExtractErrorKind::Encrypted, "password-protected Office document (encrypted package)"));
    }
    let kind = if ole.is_stream("/WordDocument") {
        Kind::Doc
    } else if ole.is_stream("/Workbook") || ole.is_stream("/Book") {
        Kind::Xls
    } else if ole.is_stream("/PowerPoint Document") {
        Kind::Ppt
    } else {
        return Err(ExtractError::new(ExtractErrorKind::Unsupported, "OLE compound file of an unknown kind (not a message, .doc, .xls or .ppt)"));
    };
    if is_encrypted(&mut ole, kind) {
        return Err(ExtractError::new(ExtractErrorKind::Encrypted, format!("password-protected {}", kind.media_type())));
    }
    let mut extracted = Extracted { media_type: kind.media_type().into(), ..Default::default() };
    properties(&mut ole, "/\u{5}SummaryInformation", &SUMMARY, &mut extracted.metadata);
    properties(&mut ole, "/\u{5}DocumentSummaryInformation", &DOCUMENT_SUMMARY, &mut extracted.metadata);
    let file = TempFile::new(bytes, "input")?;
    let pages = match kind {
        Kind::Doc => vec![doc_text(&file, limits)?],
        // xls2csv ends every sheet with a form feed.
        Kind::Xls => converted("xls2csv", &[OsStr::new("-q3"), OsStr::new("-d"), OsStr::new("utf-8")], &file, limits)?
            .split('\u{c}')
            .map(str::to_owned)
            .filter(|sheet| !sheet.trim().is_empty())
            .collect(),
        Kind::Ppt => vec![converted("catppt", &[OsStr::new("-d"), OsStr::new("utf-8")], &file, limits)?],
    };
    extracted.page_count = Some(pages.len().max(1) as u32);
    extracted.pages = pages.into_iter().enumerate().map(|(i, t)| Page::text(i as u32 + 1, t, Source::Text)).collect();
    Ok(extracted)
}

/// antiword first (it keeps paragraphs and reads Word 97-2003 exactly); catdoc for what it
/// refuses (Word 6/95, fast-saved files).
fn doc_text(file: &TempFile, limits: &Limits) -> Result<String, ExtractError> {
    match converted("antiword", &[OsStr::new("-m"), OsStr::new("UTF-8.txt"), OsStr::new("-w"), OsStr::new("0")], file, limits) {
        Ok(text) => Ok(text),
        Err(e) if e.kind == ExtractErrorKind::Timeout || e.kind == ExtractErrorKind::TooLarge => Err(e),
        Err(_) => converted("catdoc", &[OsStr::new("-d"), OsStr::new("utf-8"), OsStr::new("-w")], file, limits),
    }
}

fn converted(program: &str, args: &[&OsStr], file: &TempFile, limits: &Limits) -> Result<String, ExtractError> {
    let mut all: Vec<&OsStr> = args.to_vec();
    all.push(file.path.as_os_str());
    let out = run(program, &all, limits.tool_timeout)?;
    if !out.status.success() {
        let reason = out.stderr.lines().next().unwrap_or("failed").trim().to_owned();
        return Err(ExtractError::new(ExtractErrorKind::Corrupt, format!("{program}: {reason}")));
    }
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    Ok(text.trim_end().to_owned())
}

/// Word's file-information block flags the document encrypted (fEncrypted); Excel's workbook
/// starts with a FILEPASS record.
fn is_encrypted(ole: &mut Ole, kind: Kind) -> bool {
    let head = |ole: &mut Ole, path: &str| -> Vec<u8> {
        let mut data = Vec::new();
        if let Ok(stream) = ole.open_stream(path) {
            let _ = stream.take(64 * 1024).read_to_end(&mut data);
        }
        data
    };
    match kind {
        Kind::Doc => head(ole, "/WordDocument").get(0x0A..0x0C).is_some_and(|f| u16::from_le_bytes([f[0], f[1]]) & 0x0100 != 0),
        Kind::Xls => {
            let path = if ole.is_stream("/Workbook") { "/Workbook" } else { "/Book" };
            let data = head(ole, path);
            let mut at = 0;
            for _ in 0..64 {
                let Some(record) = data.get(at..at + 4) else { return false };
                let (kind, len) = (u16::from_le_bytes([record[0], record[1]]), u16::from_le_bytes([record[2], record[3]]) as usize);
                if kind == 0x002F {
                    return true;
                }
                at += 4 + len;
            }
            false
        }
        Kind::Ppt => false,
    }
}

/// Property ids of the summary information set and the metadata keys they become.
const SUMMARY: [(u32, &str); 11] = [
    (2, "title"),
    (3, "subject"),
    (4, "author"),
    (5, "keywords"),
    (6, "comments"),
    (8, "last_modified_by"),
    (9, "revision"),
    (11, "last_printed"),
    (12, "created"),
    (13, "modified"),
    (18, "application"),
];
const DOCUMENT_SUMMARY: [(u32, &str); 3] = [(2, "category"), (14, "manager"), (15, "company")];

/// Read one property-set stream ([MS-OLEPS]): the first section's string, number and time
/// properties named in `wanted`. A damaged set gives what could be read.
fn properties(ole: &mut Ole, path: &str, wanted: &[(u32, &str)], meta: &mut BTreeMap<String, String>) {
    let mut data = Vec::new();
    match ole.open_stream(path) {
        Ok(stream) => {
            let _ = stream.take(1 << 20).read_to_end(&mut data);
        }
        Err(_) => return,
    }
    let u32_at = |at: usize| data.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let Some(section) = u32_at(44).map(|o| o as usize) else { return };
    let Some(count) = u32_at(section + 4) else { return };
    let mut entries = Vec::new();
    for i in 0..count.min(1000) as usize {
        let (Some(id), Some(offset)) = (u32_at(section + 8 + i * 8), u32_at(section + 12 + i * 8)) else { break };
        entries.push((id, section + offset as usize));
    }
    let codepage = entries.iter().find(|(id, _)| *id == 1).and_then(|(_, at)| data.get(at + 4..at + 6)).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32);
    let encoding = codepage.and_then(text::encoding_for_codepage).unwrap_or(encoding_rs::WINDOWS_1252);
    for (id, at) in entries {
        let Some(&(_, key)) = wanted.iter().find(|(w, _)| *w == id) else { continue };
        let Some(kind) = u32_at(at) else { continue };
        let value = match kind {
            // VT_LPSTR: length-prefixed, NUL-terminated, in the set's code page.
            0x1E => u32_at(at + 4).and_then(|len| data.get(at + 8..(at + 8).saturating_add(len as usize))).map(|b| encoding.decode(b).0.into_owned()),
            // VT_LPWSTR: a length in characters, UTF-16LE.
            0x1F => u32_at(at + 4).and_then(|len| data.get(at + 8..(at + 8).saturating_add(len as usize * 2))).map(|b| encoding_rs::UTF_16LE.decode_without_bom_handling(b).0.into_owned()),
            0x02 => data.get(at + 4..at + 6).map(|b| i16::from_le_bytes([b[0], b[1]]).to_string()),
            0x03 => u32_at(at + 4).map(|v| (v as i32).to_string()),
            0x40 => data.get(at + 4..at + 12).and_then(|b| filetime(u64::from_le_bytes(b.try_into().expect("8 bytes")))),
            _ => None,
        };
        if let Some(value) = value.map(|v| v.trim_end_matches('\0').trim().to_owned()).filter(|v| !v.is_empty()) {
            meta.insert(key.to_owned(), value);
        }
    }
}

/// FILETIME (100 ns since 1601-01-01 UTC) as RFC 3339; None for zero or out-of-range values.
pub(super) fn filetime(value: u64) -> Option<String> {
    const UNIX_EPOCH_IN_FILETIME_SECS: i64 = 11_644_473_600;
    let secs = (value / 10_000_000) as i64 - UNIX_EPOCH_IN_FILETIME_SECS;
    if value == 0 || !(0..=253_402_300_799).contains(&secs) {
        return None;
    }
    chrono::DateTime::from_timestamp(secs, 0).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}
