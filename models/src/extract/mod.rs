//! Extraction: any input file to text per page or part, child documents for attachments and
//! archive members, and OCR exactly where a page has no usable text.
//!
//! The type is sniffed from the bytes. Each format module returns an [`Extracted`] or an
//! [`ExtractError`] with a specific kind; nothing here panics on bad input by design, and the
//! caller still runs it under `catch_unwind` and a time limit.

mod archive;
mod email;
mod input;
mod legacy;
mod media;
mod msg;
mod office;
mod pdf;
mod process;
mod pst;
mod spill;
pub mod text;

pub use archive::Budget;
pub use input::{Input, SNIFF_BYTES};
pub use spill::ChildBytes;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ocr::{OcrEngine, OcrError, OcrOptions, OcrPage};
use crate::sniff;

/// Limits that stop bad inputs from taking a worker with them. Read as pipeline.toml's
/// `[extract]` section as it is (durations in whole seconds, keys `*_secs`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Bytes unpacked from one submitted document's whole tree (archives in archives, mailboxes,
    /// attachments), however it nests.
    pub tree_max_total_bytes: u64,
    /// Documents found in one submitted document's whole tree.
    pub tree_max_members: u64,
    /// Containers inside containers, counting the outermost as 1.
    pub tree_max_depth: u32,
    /// Largest uncompressed/compressed ratio of one member.
    pub archive_max_ratio: f64,
    /// Pages read from one document; later pages get a `too_large` page status.
    pub max_pages: u32,
    pub ocr_max_megapixels: f64,
    /// Wall-clock limit for one page's OCR (rasterizing included).
    #[serde(rename = "ocr_page_timeout_secs", deserialize_with = "whole_seconds")]
    pub ocr_page_timeout: Duration,
    /// Resolution for rasterizing PDF pages that need OCR.
    pub ocr_dpi: u32,
    /// OCR engines one long document's pages are spread over (each thread's own Tesseract,
    /// loaded on its first such document); rendering runs beside them, a page ahead.
    #[serde(default = "one")]
    pub ocr_page_threads: usize,
    /// Time limit for external converters (poppler).
    #[serde(rename = "tool_timeout_secs", deserialize_with = "whole_seconds")]
    pub tool_timeout: Duration,
    /// Largest document read into memory whole. A larger one stays in its file: PDFs, archives
    /// and mailboxes are read from there, and formats parsed whole (images, office files, single
    /// emails, HTML) are refused as `too_large`.
    #[serde(default = "in_memory_default")]
    pub max_in_memory_bytes: u64,
    /// Plain text and XML are read up to this many bytes (to the last line end in them); the rest
    /// is reported as not read (`too_large`). A document's text is held in memory several times
    /// over (decoded, in the result, serialized), and a text file is the one input that is all text.
    #[serde(default = "text_default")]
    pub max_text_bytes: u64,
}

fn in_memory_default() -> u64 {
    128 << 20
}

fn text_default() -> u64 {
    64 << 20
}

fn one() -> usize {
    1
}

fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_secs)
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            tree_max_total_bytes: 4 << 30,
            tree_max_members: 100_000,
            tree_max_depth: 5,
            archive_max_ratio: 200.0,
            max_pages: 5000,
            ocr_max_megapixels: 60.0,
            ocr_page_timeout: Duration::from_secs(120),
            ocr_dpi: 300,
            ocr_page_threads: 1,
            tool_timeout: Duration::from_secs(300),
            max_in_memory_bytes: in_memory_default(),
            max_text_bytes: text_default(),
        }
    }
}

/// What a caller asks of one extraction.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Tesseract language codes to use; empty means automatic (orientation and script detection).
    pub ocr_languages: Vec<String>,
    /// The document's file name, when it has one: its extension breaks ties the bytes leave open
    /// (`sniff::media_type_named`), never more.
    pub name: Option<String>,
    /// Archive nesting level of this document (0 for a submitted file).
    pub depth: u32,
    /// What this document's descendants may still take of the tree's budget; `None` for a
    /// submitted file (the whole tree's budget).
    pub budget: Option<Budget>,
    /// Raised by the caller to stop between pages (the stage's time limit passed).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Request {
    fn check_cancelled(&self) -> Result<(), ExtractError> {
        match &self.cancel {
            Some(flag) if flag.load(std::sync::atomic::Ordering::Relaxed) => Err(ExtractError::new(ExtractErrorKind::Timeout, "stopped: the stage's time limit passed")),
            _ => Ok(()),
        }
    }
}

/// Why an extraction (or one page of it) failed; the service maps each onto its own error kind
/// table (`docpipe::error::ErrorKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractErrorKind {
    Encrypted,
    Corrupt,
    Unsupported,
    TooLarge,
    Timeout,
    /// Nothing readable: a blank page, a picture without text.
    Empty,
    /// OCR traineddata for the page's script or the requested language is not installed.
    MissingLanguage,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct ExtractError {
    pub kind: ExtractErrorKind,
    pub reason: String,
}

impl ExtractError {
    pub fn new(kind: ExtractErrorKind, reason: impl Into<String>) -> Self {
        Self { kind, reason: reason.into() }
    }
}

/// Where a page's text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The file is text (or a text format such as HTML, email, office XML).
    Text,
    /// A PDF's text layer.
    TextLayer,
    Ocr,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Text => "text",
            Source::TextLayer => "text-layer",
            Source::Ocr => "ocr",
        }
    }
}

/// One page (or part) of a document.
#[derive(Debug, Clone)]
pub struct Page {
    /// 1-based.
    pub number: u32,
    pub text: String,
    pub source: Source,
    /// OCR mean confidence (0..1); None for text that was read, not recognised.
    pub confidence: Option<f32>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// OCR details: rotation applied, languages, word boxes.
    pub ocr: Option<OcrPage>,
    /// Why this page has no text, when it has none (`too_large`, `timeout`, OCR failure).
    pub problem: Option<ExtractError>,
}

impl Page {
    fn text(number: u32, text: String, source: Source) -> Self {
        Self { number, text, source, confidence: None, width: None, height: None, ocr: None, problem: None }
    }

    fn failed(number: u32, error: ExtractError) -> Self {
        Self { problem: Some(error), ..Self::text(number, String::new(), Source::Ocr) }
    }
}

/// A document inside a document: archive member, attachment, message of a mailbox.
#[derive(Debug)]
pub struct Child {
    pub path: String,
    pub bytes: ChildBytes,
}

#[derive(Debug, Default)]
pub struct Extracted {
    pub media_type: String,
    /// Character encoding the text was decoded from, for text formats.
    pub encoding: Option<String>,
    pub pages: Vec<Page>,
    /// Title, author, dates, email headers: whatever the format carries.
    pub metadata: BTreeMap<String, String>,
    pub children: Vec<Child>,
    /// Pages the document has, when known (may exceed `pages.len()` under `max_pages`).
    pub page_count: Option<u32>,
    /// A document-level condition that did not stop extraction (PGP-encrypted mail keeps its
    /// armoured body): reported as the stage's status alongside the output.
    pub condition: Option<ExtractError>,
}

/// Owns the OCR engine for the thread it runs on, and the engines one document's pages are
/// spread over.
pub struct Extractor {
    limits: Limits,
    ocr: Option<OcrEngine>,
    page_engines: Vec<OcrEngine>,
}

/// Rendered pages waiting for an OCR engine (one more may be held by the renderer while it waits
/// to hand it over): enough to keep the engines busy, few enough that a long document's pages
/// (8.7 MB each at 300 dpi) do not pile up.
const RENDERED_AHEAD: usize = 2;

impl Extractor {
    pub fn new(limits: Limits) -> Self {
        Self { limits, ocr: None, page_engines: Vec::new() }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn extract(&mut self, bytes: &[u8], request: &Request) -> Result<Extracted, ExtractError> {
        self.extract_input(Input::Bytes(bytes), request)
    }

    /// Extract from bytes or from a file. Read from a file, a document costs memory in proportion
    /// to `max_in_memory_bytes` at most, whatever its size: see [`Input`].
    pub fn extract_input(&mut self, input: Input<'_>, request: &Request) -> Result<Extracted, ExtractError> {
        let media = sniff::media_type_named(&input.head(input::SNIFF_BYTES)?, request.name.as_deref());
        spill::start_document();
        let limits = self.limits.clone();
        let whole = || input.whole(limits.max_in_memory_bytes, media);
        let mut budget = request.budget.unwrap_or_else(|| Budget::of_tree(&limits));
        let mut extracted = match media {
            "application/pdf" => pdf::extract(self, input, request)?,
            "image/png" | "image/jpeg" | "image/gif" | "image/bmp" | "image/webp" | "image/jp2" => {
                let bytes = whole()?;
                let page = self.ocr_page(1, &bytes, request);
                Extracted { pages: vec![page], page_count: Some(1), metadata: media::exif(&bytes), ..Default::default() }
            }
            "image/tiff" => {
                let bytes = whole()?;
                let mut extracted = self.tiff(&bytes, request)?;
                extracted.metadata = media::exif(&bytes);
                extracted
            }
            "application/zip" => match office::kind(input.open()?) {
                Some(kind) => office::extract(kind, &whole()?)?,
                None => archive::zip(input, &limits, request, &mut budget)?,
            },
            "application/gzip" | "application/x-tar" => archive::tar(input, media, &limits, request, &mut budget)?,
            "application/x-7z-compressed" | "application/vnd.rar" => archive::unar(input, media, &limits, request, &mut budget)?,
            "application/x-ole-storage" => legacy::extract(&whole()?, &limits)?,
            "application/vnd.ms-outlook-pst" => pst::extract(input, &limits, &mut budget)?,
            "application/rtf" => office::rtf(&whole()?),
            "message/rfc822" => email::eml(&whole()?)?,
            "application/pgp-encrypted" => {
                return Err(ExtractError::new(ExtractErrorKind::Encrypted, "PGP-encrypted file"))
            }
            "application/mbox" => email::mbox(input, limits.max_in_memory_bytes, &limits, request, &mut budget)?,
            "text/calendar" | "text/vcard" => media::fields(&whole()?, media)?,
            "text/html" => text::html(&whole()?)?,
            "text/plain" | "application/xml" => text::plain_from(input, limits.max_text_bytes)?,
            other => return Err(ExtractError::new(ExtractErrorKind::Unsupported, format!("no extractor for {other}"))),
        };
        if extracted.media_type.is_empty() {
            extracted.media_type = media.to_owned();
        }
        within_budget(&mut extracted, request, &limits);
        missing_languages(&mut extracted);
        let no_text = extracted.pages.iter().all(|p| p.text.trim().is_empty());
        if no_text && extracted.children.is_empty() && extracted.condition.is_none() {
            // Never a silent empty result: say that nothing readable was found.
            let reason = if extracted.pages.is_empty() { "the document holds no text" } else { "no page holds readable text" };
            extracted.condition = Some(ExtractError::new(ExtractErrorKind::Empty, reason));
        }
        Ok(extracted)
    }

    fn ocr_page(&mut self, number: u32, image: &[u8], request: &Request) -> Page {
        self.ocr(number, Image::Encoded(image, None), request)
    }

    /// OCR one page image; failures become the page's problem, not the document's.
    fn ocr(&mut self, number: u32, image: Image<'_>, request: &Request) -> Page {
        match loaded(&mut self.ocr) {
            Ok(engine) => ocr_with(engine, &self.limits, number, image, request),
            Err(e) => engine_unavailable(number, e),
        }
    }

    /// OCR pages that `render` produces, in page order, on up to `limits.ocr_page_threads`
    /// engines at once while the next pages are rendered. Stops taking pages when the job is
    /// cancelled (the caller checks).
    fn ocr_rendered<R>(&mut self, numbers: Vec<u32>, render: R, request: &Request) -> Vec<Page>
    where
        R: Fn(u32) -> Result<(Vec<u8>, Option<u32>), ExtractError> + Sync,
    {
        let threads = self.limits.ocr_page_threads.clamp(1, numbers.len().max(1));
        if let Err(e) = loaded(&mut self.ocr) {
            return numbers.into_iter().map(|n| engine_unavailable(n, &e)).collect();
        }
        while self.page_engines.len() + 1 < threads {
            match OcrEngine::new(None) {
                Ok(engine) => self.page_engines.push(engine),
                Err(_) => break, // the main engine loaded: fewer threads, same pages
            }
        }
        let limits = &self.limits;
        let engines = self.ocr.iter_mut().chain(self.page_engines.iter_mut()).take(threads);
        let (rendered, queue) = std::sync::mpsc::sync_channel::<(u32, Result<(Vec<u8>, Option<u32>), ExtractError>)>(RENDERED_AHEAD);
        // Only the OCR threads hold the receiving end: once they have all stopped (a panic
        // included), the renderer's next send fails and it stops too, instead of waiting forever.
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        let pages = std::sync::Mutex::new(Vec::with_capacity(numbers.len()));
        // A panic while reading a page stops that thread; the first one is raised again once all
        // threads are done, so the stage reports it as a panic, as it did with one engine.
        let panicked = std::sync::Mutex::new(None);
        std::thread::scope(|scope| {
            let render = &render;
            scope.spawn(move || {
                for number in numbers {
                    if request.check_cancelled().is_err() || rendered.send((number, render(number))).is_err() {
                        break;
                    }
                }
            });
            for engine in engines {
                let (queue, pages, panicked) = (queue.clone(), &pages, &panicked);
                scope.spawn(move || loop {
                    // The lock is held only while waiting for the next rendered page.
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((number, image)) = next else { break };
                    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match image {
                        Ok((image, dpi)) => ocr_with(engine, limits, number, Image::Encoded(&image, dpi), request),
                        Err(e) => Page::failed(number, e),
                    }));
                    match read {
                        Ok(page) => pages.lock().unwrap_or_else(|e| e.into_inner()).push(page),
                        Err(payload) => {
                            panicked.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(payload);
                            break;
                        }
                    }
                });
            }
            drop(queue);
        });
        if let Some(payload) = panicked.into_inner().unwrap_or_else(|e| e.into_inner()) {
            std::panic::resume_unwind(payload);
        }
        let mut pages = pages.into_inner().unwrap_or_else(|e| e.into_inner());
        pages.sort_by_key(|page| page.number);
        pages
    }

    fn tiff(&mut self, bytes: &[u8], request: &Request) -> Result<Extracted, ExtractError> {
        let total = crate::ocr::tiff_page_count(bytes, self.limits.max_pages as usize + 1) as u32;
        if total == 0 {
            return Err(ExtractError::new(ExtractErrorKind::Corrupt, "unreadable TIFF"));
        }
        let mut extracted = Extracted { page_count: Some(total), ..Default::default() };
        for number in 1..=total {
            request.check_cancelled()?;
            extracted.pages.push(if number > self.limits.max_pages {
                Page::failed(number, too_many_pages(self.limits.max_pages))
            } else {
                self.ocr(number, Image::TiffPage(bytes, number as usize - 1), request)
            });
        }
        Ok(extracted)
    }
}

/// OCR one page image on `engine`; failures become the page's problem, not the document's.
fn ocr_with(engine: &mut OcrEngine, limits: &Limits, number: u32, image: Image<'_>, request: &Request) -> Page {
    let options = OcrOptions {
        languages: request.ocr_languages.clone(),
        max_megapixels: limits.ocr_max_megapixels,
        dpi_hint: None,
        deadline: Some(limits.ocr_page_timeout),
    };
    let recognized = match image {
        Image::Encoded(bytes, dpi) => engine.recognize(bytes, &OcrOptions { dpi_hint: dpi, ..options }),
        Image::TiffPage(bytes, n) => engine.recognize_tiff_page(bytes, n, &options),
    };
    match recognized {
        Ok(OcrPage { blank_dark_ppm: Some(ppm), width, height, .. }) => Page {
            width: Some(width),
            height: Some(height),
            ..Page::failed(number, ExtractError::new(ExtractErrorKind::Empty, format!("blank page ({ppm} dark pixels per million): not sent to OCR")))
        },
        Ok(ocr) if ocr.text.trim().is_empty() => Page {
            width: Some(ocr.width),
            height: Some(ocr.height),
            confidence: Some(ocr.confidence),
            ocr: Some(ocr),
            ..Page::failed(number, ExtractError::new(ExtractErrorKind::Empty, "no text recognised on this page (blank, a picture, or unreadable)"))
        },
        Ok(ocr) => {
            Page {
                number,
                text: ocr.text.clone(),
                source: Source::Ocr,
                confidence: Some(ocr.confidence),
                width: Some(ocr.width),
                height: Some(ocr.height),
                ocr: Some(ocr),
                problem: None,
            }
        }
        Err(OcrError::TooLarge { megapixels, limit }) => Page::failed(
            number,
            ExtractError::new(ExtractErrorKind::TooLarge, format!("page is {megapixels:.1} megapixels, over the {limit} limit")),
        ),
        Err(OcrError::Timeout(limit)) => Page::failed(
            number,
            ExtractError::new(ExtractErrorKind::Timeout, format!("OCR stopped at the {}s page limit (extract.ocr_page_timeout_secs)", limit.as_secs())),
        ),
        Err(e @ (OcrError::MissingLanguage(_) | OcrError::MissingScript { .. })) => {
            Page::failed(number, ExtractError::new(ExtractErrorKind::MissingLanguage, e.to_string()))
        }
        Err(e) => Page::failed(number, ExtractError::new(ExtractErrorKind::Corrupt, format!("OCR failed: {e}"))),
    }
}

/// The thread's OCR engine, loaded on first use.
fn loaded(slot: &mut Option<OcrEngine>) -> Result<&mut OcrEngine, OcrError> {
    if slot.is_none() {
        *slot = Some(OcrEngine::new(None)?);
    }
    Ok(slot.as_mut().expect("loaded above"))
}

fn engine_unavailable(number: u32, e: impl std::fmt::Display) -> Page {
    Page::failed(number, ExtractError::new(ExtractErrorKind::Unsupported, format!("OCR engine unavailable: {e}")))
}

enum Image<'a> {
    /// An encoded image, and the resolution it was rendered at when it cannot say (a PDF page
    /// rendered to PGM).
    Encoded(&'a [u8], Option<u32>),
    TiffPage(&'a [u8], usize),
}

fn too_many_pages(limit: u32) -> ExtractError {
    ExtractError::new(ExtractErrorKind::TooLarge, format!("past limits.max_pages ({limit}): not read"))
}

/// Pages left unread for want of traineddata make the document's condition: the text is
/// incomplete until a package is installed, which whoever runs docpipe can do (and then resubmit).
fn missing_languages(extracted: &mut Extracted) {
    if extracted.condition.is_some() {
        return;
    }
    let total = extracted.pages.len();
    let mut missing = extracted.pages.iter().filter_map(|p| Some((p.number, p.problem.as_ref()?))).filter(|(_, e)| e.kind == ExtractErrorKind::MissingLanguage);
    if let Some((number, first)) = missing.next() {
        let count = 1 + missing.count();
        let reason = format!("{count} of {total} pages not read for want of OCR traineddata; page {number}: {}", first.reason);
        extracted.condition = Some(ExtractError::new(ExtractErrorKind::MissingLanguage, reason));
    }
}

/// Whatever format found them, children count against the tree's budget: attachments of a
/// message as much as members of an archive (the archive readers also stop early, as they read).
fn within_budget(extracted: &mut Extracted, request: &Request, limits: &Limits) {
    if extracted.children.is_empty() {
        return;
    }
    if let Err(too_deep) = archive::check_depth(limits, request) {
        extracted.children.clear();
        extracted.condition = Some(too_deep);
        return;
    }
    let mut budget = request.budget.unwrap_or_else(|| Budget::of_tree(limits));
    for (i, child) in extracted.children.iter().enumerate() {
        if let Err(stop) = budget.take(child.bytes.len(), limits) {
            extracted.children.truncate(i);
            extracted.condition = Some(stop);
            return;
        }
    }
}

/// Version of the linked Tesseract library, for provenance.
pub fn tesseract_version() -> String {
    // SAFETY: TessVersion returns a pointer to a static, NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(leptess::capi::TessVersion()) }.to_string_lossy().into_owned()
}

/// Page `number` (1-based) of a document, as OCR saw it when it was read (rendered at the same
/// resolution, straightened and turned as the page's OCR details record), PNG, at most
/// `max_side` pixels on its longer side: what the review page draws the word boxes over.
pub fn page_image(bytes: &[u8], number: u32, limits: &Limits, rotation_degrees: u32, deskew_degrees: f32, max_side: u32) -> Result<Vec<u8>, ExtractError> {
    let media = sniff::media_type(bytes);
    let (image, tiff_page) = match media {
        "application/pdf" => (std::borrow::Cow::Owned(pdf::render_page(bytes, number, limits)?), None),
        "image/tiff" => (std::borrow::Cow::Borrowed(bytes), Some(number.saturating_sub(1) as usize)),
        "image/png" | "image/jpeg" | "image/gif" | "image/bmp" | "image/webp" | "image/jp2" if number == 1 => (std::borrow::Cow::Borrowed(bytes), None),
        other => return Err(ExtractError::new(ExtractErrorKind::Unsupported, format!("no page {number} image for {other}"))),
    };
    let view = crate::ocr::PageView { tiff_page, rotation_degrees, deskew_degrees, max_megapixels: limits.ocr_max_megapixels, max_side };
    crate::ocr::render_page(&image, &view).map_err(|e| ExtractError::new(ExtractErrorKind::Corrupt, e.to_string()))
}

