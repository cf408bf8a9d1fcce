//! Office Open XML (DOCX, XLSX, PPTX), OpenDocument (ODT, ODS, ODP) and RTF. Legacy binary
//! Office files are `legacy.rs`'s.

use std::io::{Cursor, Read, Seek};

use quick_xml::events::Event;

use super::{text::decode_entities, ExtractError, ExtractErrorKind, Extracted, Page, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Docx,
    Xlsx,
    Pptx,
    Odf(&'static str),
}

/// The office format of a ZIP container, if it is one (from its part names and ODF mimetype).
pub fn kind(package: impl Read + Seek) -> Option<Kind> {
    let mut zip = zip::ZipArchive::new(package).ok()?;
    let has = |zip: &zip::ZipArchive<_>, name: &str| zip.index_for_name(name).is_some();
    if has(&zip, "word/document.xml") {
        return Some(Kind::Docx);
    }
    if has(&zip, "xl/workbook.xml") {
        return Some(Kind::Xlsx);
    }
    if has(&zip, "ppt/presentation.xml") {
        return Some(Kind::Pptx);
    }
    let mut mimetype = String::new();
    zip.by_name("mimetype").ok()?.take(200).read_to_string(&mut mimetype).ok()?;
    [
        ("application/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.text"),
        ("application/vnd.oasis.opendocument.spreadsheet", "application/vnd.oasis.opendocument.spreadsheet"),
        ("application/vnd.oasis.opendocument.presentation", "application/vnd.oasis.opendocument.presentation"),
    ]
    .iter()
    .find(|(m, _)| mimetype.trim() == *m)
    .map(|(_, media)| Kind::Odf(media))
}

/// XML read from one office file, all parts together: office files are ZIP archives too, and a
/// deck of slides each inflating to hundreds of megabytes is a zip bomb like any other.
const OFFICE_BUDGET: u64 = 1 << 30;
/// Largest inflation of one part relative to its compressed size (XML compresses well, ~20x).
const PART_RATIO: u64 = 400;

fn part(zip: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str, budget: &mut u64) -> Result<Option<String>, ExtractError> {
    let Ok(file) = zip.by_name(name) else { return Ok(None) };
    if file.encrypted() {
        return Err(ExtractError::new(ExtractErrorKind::Encrypted, "office document is password-protected"));
    }
    let limit = (*budget).min(file.compressed_size().max(1024).saturating_mul(PART_RATIO));
    let mut buf = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, format!("{name}: {e}")))?;
    if buf.len() as u64 > limit {
        return Err(ExtractError::new(ExtractErrorKind::TooLarge, format!("{name} inflates past {limit} bytes: treated as a zip bomb")));
    }
    *budget -= buf.len() as u64;
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Text of an XML part: text nodes, with line breaks at `breaks` elements and tabs at `tabs`.
fn xml_text(xml: &str, breaks: &[&[u8]], tabs: &[&[u8]], skip: &[&[u8]]) -> String {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = String::new();
    let mut skipping = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = e.local_name();
                if skip.contains(&name.as_ref()) {
                    skipping += 1;
                } else if tabs.contains(&name.as_ref()) {
                    out.push('\t');
                }
            }
            Ok(Event::Empty(e)) => {
                let name = e.local_name();
                if breaks.contains(&name.as_ref()) {
                    out.push('\n');
                } else if tabs.contains(&name.as_ref()) {
                    out.push('\t');
                }
            }
            Ok(Event::End(e)) => {
                let name = e.local_name();
                if skip.contains(&name.as_ref()) {
                    skipping = skipping.saturating_sub(1);
                } else if breaks.contains(&name.as_ref()) {
                    out.push('\n');
                }
            }
            Ok(Event::Text(t)) if skipping == 0 => {
                out.push_str(&decode_entities(&String::from_utf8_lossy(&t)));
            }
            Ok(Event::CData(t)) if skipping == 0 => out.push_str(&String::from_utf8_lossy(&t)),
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out.trim().to_owned()
}

/// Simple elements (`<dc:title>x</dc:title>`) of a metadata part, by local name.
fn simple_fields(xml: &str, fields: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (local, key) in fields {
        let text = xml_text(&only_element(xml, local), &[], &[], &[]);
        if !text.is_empty() {
            found.push((key.to_string(), text));
        }
    }
    found
}

fn only_element(xml: &str, local: &str) -> String {
    let open = [format!("<dc:{local}"), format!("<dcterms:{local}"), format!("<cp:{local}"), format!("<meta:{local}")];
    for tag in &open {
        let Some(start) = xml.find(tag.as_str()) else { continue };
        let close = tag.replacen('<', "</", 1);
        let (Some(head_end), Some(end)) = (xml[start..].find('>'), xml[start..].find(&close)) else { continue };
        // A malformed part (`<dc:title</dc:title>`) puts the close before the head's end.
        if let Some(inner) = xml.get(start + head_end + 1..start + end) {
            return format!("<x>{inner}</x>");
        }
    }
    String::new()
}

pub fn extract(kind: Kind, bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, format!("damaged office container: {e}")))?;
    let mut extracted = Extracted::default();
    let mut budget = OFFICE_BUDGET;
    let budget = &mut budget;
    let texts: Vec<String> = match kind {
        Kind::Docx => {
            extracted.media_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document".into();
            let body = part(&mut zip, "word/document.xml", budget)?.unwrap_or_default();
            vec![xml_text(&body, &[b"p", b"br", b"cr"], &[b"tab"], &[b"instrText"])]
        }
        Kind::Pptx => {
            extracted.media_type = "application/vnd.openxmlformats-officedocument.presentationml.presentation".into();
            let mut texts = Vec::new();
            for name in numbered_parts(&zip, "ppt/slides/slide") {
                let xml = part(&mut zip, &name, budget)?.unwrap_or_default();
                texts.push(xml_text(&xml, &[b"p", b"br"], &[], &[]));
            }
            texts
        }
        Kind::Xlsx => {
            extracted.media_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".into();
            xlsx(&mut zip, budget)?
        }
        Kind::Odf(media) => {
            extracted.media_type = media.into();
            let content = part(&mut zip, "content.xml", budget)?.ok_or_else(|| ExtractError::new(ExtractErrorKind::Corrupt, "OpenDocument without content.xml"))?;
            vec![xml_text(&content, &[b"p", b"h", b"line-break", b"table-row"], &[b"tab", b"table-cell"], &[b"annotation"])]
        }
    };
    let meta_part = if matches!(kind, Kind::Odf(_)) { "meta.xml" } else { "docProps/core.xml" };
    if let Some(meta) = part(&mut zip, meta_part, budget)? {
        let fields = [
            ("title", "title"),
            ("creator", "author"),
            ("initial-creator", "author"),
            ("subject", "subject"),
            ("keywords", "keywords"),
            ("description", "comments"),
            ("created", "created"),
            ("creation-date", "created"),
            ("modified", "modified"),
            ("date", "modified"),
            ("lastModifiedBy", "last_modified_by"),
            ("lastPrinted", "last_printed"),
            ("print-date", "last_printed"),
            ("revision", "revision"),
            ("editing-cycles", "revision"),
            ("editing-duration", "editing_time"),
            ("generator", "application"),
        ];
        for (key, value) in simple_fields(&meta, &fields) {
            extracted.metadata.entry(key).or_insert(value);
        }
    }
    // Extended properties of Office Open XML: company, manager, the application that wrote it.
    if !matches!(kind, Kind::Odf(_)) {
        if let Some(app) = part(&mut zip, "docProps/app.xml", budget)? {
            for (element, key) in [("Company", "company"), ("Manager", "manager"), ("Application", "application"), ("AppVersion", "application_version"), ("TotalTime", "editing_minutes")] {
                let Some(start) = app.find(&format!("<{element}>")) else { continue };
                let inner = &app[start + element.len() + 2..];
                let Some(end) = inner.find(&format!("</{element}>")) else { continue };
                let value = decode_entities(inner[..end].trim());
                if !value.is_empty() {
                    extracted.metadata.entry(key.to_owned()).or_insert(value);
                }
            }
        }
    }
    extracted.page_count = Some(texts.len() as u32);
    extracted.pages = texts.into_iter().enumerate().map(|(i, t)| Page::text(i as u32 + 1, t, Source::Text)).collect();
    Ok(extracted)
}

/// Parts named `<prefix><n>.xml` (slides, sheets), in numeric order (slide10 after slide9).
fn numbered_parts(zip: &zip::ZipArchive<Cursor<&[u8]>>, prefix: &str) -> Vec<String> {
    let mut parts: Vec<(u32, String)> = zip
        .file_names()
        .filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(".xml")?.parse().ok().map(|i| (i, n.to_owned())))
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, name)| name).collect()
}

/// One text per sheet: rows on lines, cells separated by tabs, shared strings resolved.
fn xlsx(zip: &mut zip::ZipArchive<Cursor<&[u8]>>, budget: &mut u64) -> Result<Vec<String>, ExtractError> {
    let shared: Vec<String> = match part(zip, "xl/sharedStrings.xml", budget)? {
        Some(xml) => split_elements(&xml, "si").iter().map(|si| xml_text(si, &[], &[], &[b"rPh"])).collect(),
        None => Vec::new(),
    };
    let mut texts = Vec::new();
    for name in numbered_parts(zip, "xl/worksheets/sheet") {
        let xml = part(zip, &name, budget)?.unwrap_or_default();
        let mut out = String::new();
        for row in split_elements(&xml, "row") {
            let cells: Vec<String> = split_elements(&row, "c")
                .iter()
                .map(|cell| {
                    let shared_ref = cell.split('>').next().is_some_and(|open| open.contains("t=\"s\""));
                    let value = xml_text(cell, &[], &[], &[b"f"]);
                    match value.parse::<usize>() {
                        Ok(i) if shared_ref => shared.get(i).cloned().unwrap_or_default(),
                        _ => value,
                    }
                })
                .collect();
            out.push_str(cells.join("\t").trim_end());
            out.push('\n');
        }
        texts.push(out.trim_end().to_owned());
    }
    Ok(texts)
}

/// Whole `<tag ...>...</tag>` elements (not nested in themselves), as strings.
fn split_elements(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        if !after.starts_with([' ', '>', '/']) {
            rest = after;
            continue;
        }
        let head_end = after.find('>').map_or(after.len(), |e| e + 1);
        if after[..head_end].ends_with("/>") {
            found.push(format!("{open}{}", &after[..head_end]));
            rest = &after[head_end..];
            continue;
        }
        let end = after.find(&close).map_or(after.len(), |e| e + close.len());
        found.push(format!("{open}{}", &after[..end]));
        rest = &after[end..];
    }
    found
}

/// RTF to text: groups, control words, hex escapes in the document's code page, \uN escapes.
pub fn rtf(bytes: &[u8]) -> Extracted {
    let source = String::from_utf8_lossy(bytes);
    let codepage = source.find("\\ansicpg").and_then(|at| source[at + 8..].chars().take_while(char::is_ascii_digit).collect::<String>().parse::<u16>().ok()).unwrap_or(1252);
    let encoding = super::text::encoding_for_codepage(codepage as u32).unwrap_or(encoding_rs::WINDOWS_1252);
    let skip_groups = ["fonttbl", "colortbl", "stylesheet", "info", "pict", "header", "footer", "listtable", "listoverridetable", "rsidtbl", "generator", "themedata", "colorschememapping", "latentstyles", "datastore", "xmlnstbl"];
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut stack: Vec<bool> = vec![false]; // per group: skipping?
    let mut skip_next = 0usize;
    let mut i = 0;
    let flush = |pending: &mut Vec<u8>, out: &mut String| {
        if !pending.is_empty() {
            out.push_str(&encoding.decode(pending).0);
            pending.clear();
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let skipping = *stack.last().unwrap_or(&false);
        match c {
            '{' => {
                stack.push(skipping);
                i += 1;
                if chars.get(i..i + 2) == Some(&['\\', '*']) {
                    *stack.last_mut().expect("pushed") = true;
                }
            }
            '}' => {
                flush(&mut pending, &mut out);
                stack.pop();
                if stack.is_empty() {
                    stack.push(false);
                }
                i += 1;
            }
            '\\' => {
                i += 1;
                let Some(&next) = chars.get(i) else { break };
                if next == '\'' {
                    let hex: String = chars.get(i + 1..i + 3).map(|h| h.iter().collect()).unwrap_or_default();
                    if let (Ok(b), false) = (u8::from_str_radix(&hex, 16), skipping) {
                        if skip_next > 0 {
                            skip_next -= 1;
                        } else {
                            pending.push(b);
                        }
                    }
                    i += 3;
                    continue;
                }
                if !next.is_ascii_alphabetic() {
                    if !skipping && matches!(next, '\\' | '{' | '}') {
                        flush(&mut pending, &mut out);
                        out.push(next);
                    }
                    i += 1;
                    continue;
                }
                let word: String = chars[i..].iter().take_while(|c| c.is_ascii_alphabetic()).collect();
                i += word.len();
                let arg: String = chars[i..].iter().enumerate().take_while(|(k, c)| c.is_ascii_digit() || (*k == 0 && **c == '-')).map(|(_, c)| *c).collect();
                i += arg.len();
                if chars.get(i) == Some(&' ') {
                    i += 1;
                }
                if skip_groups.contains(&word.as_str()) {
                    *stack.last_mut().expect("group") = true;
                    continue;
                }
                if skipping {
                    continue;
                }
                flush(&mut pending, &mut out);
                match word.as_str() {
                    "par" | "line" | "row" | "sect" | "page" => out.push('\n'),
                    "tab" | "cell" => out.push('\t'),
                    "u" => {
                        if let Ok(n) = arg.parse::<i32>() {
                            let code = if n < 0 { n + 65536 } else { n } as u32;
                            out.extend(char::from_u32(code));
                            skip_next = 1; // the ANSI fallback character that follows
                        }
                    }
                    _ => {}
                }
            }
            '\r' | '\n' => i += 1,
            _ => {
                if !skipping {
                    if skip_next > 0 {
                        skip_next -= 1;
                    } else {
                        flush(&mut pending, &mut out);
                        out.push(c);
                    }
                }
                i += 1;
            }
        }
    }
    flush(&mut pending, &mut out);
    Extracted {
        media_type: "application/rtf".into(),
        pages: vec![Page::text(1, out.trim().to_owned(), Source::Text)],
        page_count: Some(1),
        ..Default::default()
    }
}
