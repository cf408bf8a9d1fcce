//! PDF with poppler: `pdfinfo` for metadata and page count, `pdftotext` for the text layer of each
//! page, `pdftoppm` to rasterize only the pages that need OCR.
//!
//! Why poppler and not pdf-extract: measured here, pdf-extract panics on about 16 % of
//! byte-mutated PDFs and on Chinese PDFs with non-embedded CID fonts, and it runs in-process;
//! poppler reads those, and as a child process a crash or hang costs one document, not a worker.
//! pdftoppm rather than PDFium: it comes from Debian with pdftotext, no wheel to unpack.

use std::ffi::OsStr;

use super::process::{run, TempFile};
use super::{too_many_pages, ErrorKind, ExtractError, Extracted, Extractor, Page, Request, Source};

/// Below this many letters or digits, a page's text layer is treated as absent.
const MIN_TEXT_CHARS: usize = 16;

pub fn extract(extractor: &mut Extractor, bytes: &[u8], request: &Request) -> Result<Extracted, ExtractError> {
    let limits = extractor.limits().clone();
    let file = TempFile::new(bytes, "input.pdf")?;
    let info = run("pdfinfo", &[OsStr::new("-isodates"), file.path.as_os_str()], limits.tool_timeout)?;
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
    let readable = pages.min(limits.max_pages);

    let text = run(
        "pdftotext",
        &[OsStr::new("-enc"), OsStr::new("UTF-8"), OsStr::new("-l"), OsStr::new(&readable.max(1).to_string()), file.path.as_os_str(), OsStr::new("-")],
        limits.tool_timeout,
    )?;
    if !text.status.success() {
        return Err(classify_failure(&text.stderr));
    }
    let layer = String::from_utf8_lossy(&text.stdout).into_owned();
    // pdftotext ends every page with a form feed.
    let mut layer_pages: Vec<&str> = layer.split('\u{c}').collect();
    layer_pages.truncate(readable as usize);

    for number in 1..=pages {
        if number > readable {
            extracted.pages.push(Page::failed(number, too_many_pages(limits.max_pages)));
            continue;
        }
        let page_text = layer_pages.get(number as usize - 1).copied().unwrap_or("");
        if usable(page_text) {
            extracted.pages.push(Page::text(number, page_text.trim_end().to_owned(), Source::TextLayer));
            continue;
        }
        extracted.pages.push(match rasterize(&file, number, limits.ocr_dpi, limits.ocr_page_timeout) {
            Ok(png) => extractor.ocr_page(number, &png, request),
            Err(e) => Page::failed(number, e),
        });
    }
    Ok(extracted)
}

/// Enough letters or digits, and not mostly unmapped glyphs.
fn usable(text: &str) -> bool {
    let alnum = text.chars().filter(|c| c.is_alphanumeric()).count();
    let junk = text.chars().filter(|c| *c == '\u{fffd}' || ('\u{e000}'..='\u{f8ff}').contains(c)).count();
    alnum >= MIN_TEXT_CHARS && junk * 4 < alnum
}

fn rasterize(file: &TempFile, page: u32, dpi: u32, timeout: std::time::Duration) -> Result<Vec<u8>, ExtractError> {
    let n = page.to_string();
    let prefix = file.dir().join(format!("page-{page}"));
    let out = run(
        "pdftoppm",
        &[
            OsStr::new("-r"), OsStr::new(&dpi.to_string()), OsStr::new("-gray"), OsStr::new("-png"), OsStr::new("-singlefile"),
            OsStr::new("-f"), OsStr::new(&n), OsStr::new("-l"), OsStr::new(&n), file.path.as_os_str(), prefix.as_os_str(),
        ],
        timeout,
    )?;
    if !out.status.success() {
        return Err(ExtractError::new(ErrorKind::Corrupt, format!("page {page} could not be rendered: {}", out.stderr.trim())));
    }
    let png = prefix.with_extension("png");
    let bytes = std::fs::read(&png).map_err(|e| ExtractError::new(ErrorKind::Corrupt, format!("page {page} rendering missing: {e}")))?;
    let _ = std::fs::remove_file(png);
    Ok(bytes)
}

fn classify_failure(stderr: &str) -> ExtractError {
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("password") || lower.contains("encrypt") {
        ExtractError::new(ErrorKind::Encrypted, "PDF is password-protected")
    } else {
        let detail = stderr.lines().last().unwrap_or("unreadable").trim();
        ExtractError::new(ErrorKind::Corrupt, format!("PDF is damaged: {detail}"))
    }
}
