//! PDF with poppler: `pdfinfo` for metadata and page count, `pdftotext` for the text layer of each
//! page, `pdftoppm` to rasterize only the pages that need OCR.
//!
//! Why poppler and not pdf-extract: measured here, pdf-extract panics on about 16 % of
//! byte-mutated PDFs and on Chinese PDFs with non-embedded CID fonts, and it runs in-process;
//! poppler reads those, and as a child process a crash or hang costs one document, not a worker.
//! pdftoppm rather than PDFium: it comes from Debian with pdftotext, no wheel to unpack.

use std::ffi::OsStr;

use super::input::{Input, OnDisk};
use super::process::run;
use super::{ExtractError, ExtractErrorKind, Extracted, Extractor, Page, Request, Source};

/// Below this many letters or digits, a page's text layer is treated as absent.
const MIN_TEXT_CHARS: usize = 16;

pub fn extract(extractor: &mut Extractor, input: Input<'_>, request: &Request) -> Result<Extracted, ExtractError> {
    let limits = extractor.limits().clone();
    let file = input.on_disk("input.pdf")?;
    let info = run("pdfinfo", &[OsStr::new("-isodates"), file.path().as_os_str()], limits.tool_timeout)?;
    let sizes = page_sizes(&file, limits.max_pages, limits.tool_timeout);
    let info_text = String::from_utf8_lossy(&info.stdout).into_owned();
    if !info.status.success() {
        return Err(classify_failure(&info.stderr));
    }
    let mut extracted = Extracted { media_type: "application/pdf".into(), ..Default::default() };
    let mut pages = 0u32;
    for line in info_text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match key {
            "Pages" => pages = value.parse().unwrap_or(0),
            "Title" | "Author" | "Subject" | "Keywords" | "Creator" | "Producer" | "CreationDate" | "ModDate" if !value.is_empty() => {
                extracted.metadata.insert(key.to_ascii_lowercase(), value.to_owned());
            }
            "Encrypted" if value.starts_with("yes") => {
                extracted.metadata.insert("encrypted".into(), value.to_owned());
            }
            _ => {}
        }
    }
    extracted.page_count = Some(pages);
    // XMP: the document and instance ids link versions of one document across a seizure; the
    // creator tool names the scanner or program. A missing or unreadable packet adds nothing.
    if let Ok(meta) = run("pdfinfo", &[OsStr::new("-meta"), file.path().as_os_str()], limits.tool_timeout) {
        let xml = String::from_utf8_lossy(&meta.stdout);
        for (local, key) in [
            ("DocumentID", "xmp_document_id"),
            ("InstanceID", "xmp_instance_id"),
            ("OriginalDocumentID", "xmp_original_document_id"),
            ("CreatorTool", "creator_tool"),
            ("CreateDate", "xmp_created"),
            ("ModifyDate", "xmp_modified"),
        ] {
            if let Some(value) = xmp_field(&xml, local) {
                extracted.metadata.insert(key.to_owned(), value);
            }
        }
    }
    let readable = pages.min(limits.max_pages);

    let text = run(
        "pdftotext",
        &[OsStr::new("-enc"), OsStr::new("UTF-8"), OsStr::new("-l"), OsStr::new(&readable.max(1).to_string()), file.path().as_os_str(), OsStr::new("-")],
        limits.tool_timeout,
    )?;
    if !text.status.success() {
        return Err(classify_failure(&text.stderr));
    }
    let layer = String::from_utf8_lossy(&text.stdout).into_owned();
    // pdftotext ends every page with a form feed.
    let mut layer_pages: Vec<&str> = layer.split('\u{c}').collect();
    layer_pages.truncate(readable as usize);

    // Pages with a usable text layer are taken as they are; the others are rendered and read by
    // OCR, spread over the extractor's page engines.
    let mut scanned = Vec::new();
    for number in 1..=readable {
        let page_text = layer_pages.get(number as usize - 1).copied().unwrap_or("");
        if usable(page_text) {
            extracted.pages.push(Page::text(number, page_text.trim_end().to_owned(), Source::TextLayer));
        } else {
            scanned.push(number);
        }
    }
    if !scanned.is_empty() {
        request.check_cancelled()?;
        let render = |number: u32| {
            let dpi = dpi_for(sizes.get(number as usize - 1), &limits);
            rasterize(&file, number, dpi, limits.ocr_page_timeout).map(|image| (image, Some(dpi)))
        };
        extracted.pages.extend(extractor.ocr_rendered(scanned, render, request));
        request.check_cancelled()?;
        extracted.pages.sort_by_key(|page| page.number);
    }
    if pages > readable {
        // One entry for the pages not read, not one per page: a 100,000-page file stays small.
        extracted.pages.push(Page::failed(
            readable + 1,
            ExtractError::new(ExtractErrorKind::TooLarge, format!("pages {}-{pages} not read: past limits.max_pages ({})", readable + 1, limits.max_pages)),
        ));
    }
    Ok(extracted)
}

/// Render at the configured resolution unless the page is so large that the image would pass the
/// megapixel cap: then at the resolution that fits (never below 72 dpi).
fn dpi_for(size: Option<&(f64, f64)>, limits: &super::Limits) -> u32 {
    match size {
        Some(&(w, h)) if w > 0.0 && h > 0.0 => {
            let fit = (limits.ocr_max_megapixels * 1e6 / (w / 72.0 * h / 72.0)).sqrt();
            (limits.ocr_dpi as f64).min(fit).max(72.0) as u32
        }
        _ => limits.ocr_dpi,
    }
}

/// Page `number` rendered exactly as extraction rendered it for OCR (same resolution rule), PGM.
pub fn render_page(bytes: &[u8], number: u32, limits: &super::Limits) -> Result<Vec<u8>, ExtractError> {
    let file = Input::Bytes(bytes).on_disk("input.pdf")?;
    let sizes = page_sizes(&file, number, limits.tool_timeout);
    rasterize(&file, number, dpi_for(sizes.get(number as usize - 1), limits), limits.ocr_page_timeout)
}

/// Page sizes in points (up to `max` pages), from pdfinfo; empty when it cannot tell.
fn page_sizes(file: &OnDisk<'_>, max: u32, timeout: std::time::Duration) -> Vec<(f64, f64)> {
    let last = max.to_string();
    let Ok(out) = run("pdfinfo", &[OsStr::new("-f"), OsStr::new("1"), OsStr::new("-l"), OsStr::new(&last), file.path().as_os_str()], timeout) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("Page ") && l.contains(" size:"))
        .filter_map(|l| {
            let dims = l.split("size:").nth(1)?;
            let mut numbers = dims.split_whitespace().filter_map(|t| t.parse::<f64>().ok());
            Some((numbers.next()?, numbers.next()?))
        })
        .collect()
}

/// Enough letters or digits, and not mostly unmapped glyphs.
fn usable(text: &str) -> bool {
    let alnum = text.chars().filter(|c| c.is_alphanumeric()).count();
    let junk = text.chars().filter(|c| *c == '\u{fffd}' || ('\u{e000}'..='\u{f8ff}').contains(c)).count();
    alnum >= MIN_TEXT_CHARS && junk * 4 < alnum
}

/// Page `page` as an 8-bit grey PGM. Not PNG: compressing an A4 page at 300 dpi cost pdftoppm
/// 1.8 s of its 2.0 s on the scans of tests/data/docs (0.35 of 0.40 s on a blank page), and the
/// pixels are the same either way.
fn rasterize(file: &OnDisk<'_>, page: u32, dpi: u32, timeout: std::time::Duration) -> Result<Vec<u8>, ExtractError> {
    let n = page.to_string();
    let prefix = file.dir().join(format!("page-{page}"));
    let out = run(
        "pdftoppm",
        &[
            OsStr::new("-r"), OsStr::new(&dpi.to_string()), OsStr::new("-gray"), OsStr::new("-singlefile"),
            OsStr::new("-f"), OsStr::new(&n), OsStr::new("-l"), OsStr::new(&n), file.path().as_os_str(), prefix.as_os_str(),
        ],
        timeout,
    )?;
    if !out.status.success() {
        return Err(ExtractError::new(ExtractErrorKind::Corrupt, format!("page {page} could not be rendered: {}", out.stderr.trim())));
    }
    let image = prefix.with_extension("pgm");
    let bytes = std::fs::read(&image).map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, format!("page {page} rendering missing: {e}")))?;
    let _ = std::fs::remove_file(image);
    Ok(bytes)
}

fn classify_failure(stderr: &str) -> ExtractError {
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("password") || lower.contains("encrypt") {
        ExtractError::new(ExtractErrorKind::Encrypted, "PDF is password-protected")
    } else {
        let detail = stderr.lines().last().unwrap_or("unreadable").trim();
        ExtractError::new(ExtractErrorKind::Corrupt, format!("PDF is damaged: {detail}"))
    }
}

/// An XMP property by local name, whatever its namespace prefix (`xmp:`, `xap:`, `xmpMM:`,
/// `xapMM:`), as an element (`<xmp:CreatorTool>x</xmp:CreatorTool>`) or an attribute
/// (`xmp:CreatorTool="x"`).
fn xmp_field(xml: &str, local: &str) -> Option<String> {
    let element = format!(":{local}>");
    for (at, _) in xml.match_indices(&element) {
        let open = xml[..at].rfind('<')?;
        let prefix = &xml[open + 1..at];
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let value = xml[at + element.len()..].split('<').next().unwrap_or("").trim();
        if !value.is_empty() {
            return Some(super::text::decode_entities(value));
        }
    }
    let attribute = format!(":{local}=\"");
    let at = xml.find(&attribute)?;
    let value = xml[at + attribute.len()..].split('"').next().unwrap_or("").trim();
    (!value.is_empty()).then(|| super::text::decode_entities(value))
}

#[cfg(test)]
mod tests {
    #[test]
    fn xmp_fields_are_found_by_local_name_in_elements_and_attributes() {
        let xml = r#"<rdf:Description xmlns:xapMM="x"><xapMM:DocumentID>uuid:1</xapMM:DocumentID></rdf:Description>
            <rdf:Description xmp:CreatorTool="Scan &amp; Co"/><a:CreateDate></a:CreateDate>"#;
        assert_eq!(super::xmp_field(xml, "DocumentID").as_deref(), Some("uuid:1"));
        assert_eq!(super::xmp_field(xml, "CreatorTool").as_deref(), Some("Scan & Co"));
        assert_eq!(super::xmp_field(xml, "CreateDate"), None);
        assert_eq!(super::xmp_field(xml, "InstanceID"), None);
    }
}
