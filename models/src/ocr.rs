//! OCR of page images with Tesseract 5, through its C API (the raw bindings that `leptess`
//! re-exports), with Leptonica for decoding, rotating and splitting images.
//!
//! # Threads and performance
//!
//! An [`OcrEngine`] owns its Tesseract instances and is not shared: create one per worker
//! thread and reuse it for every page. Loading traineddata costs about as much as recognising a
//! small page, so the engine keeps the loaded languages and reloads only when a page asks for
//! a different set.
//!
//! Run the process with `OMP_THREAD_LIMIT=1` in its environment. Debian's Tesseract is built with
//! OpenMP and otherwise starts extra threads inside every recognition, which burns CPU and slows
//! down engines running in parallel. libgomp reads the variable when it is loaded, at process
//! start, so it must be set by whoever starts the process (shell, service unit, container);
//! `std::env::set_var` from inside the running program comes too late.
//!
//! # What happens to a page
//!
//! 1. The size is checked against [`OcrOptions::max_megapixels`] from the header, before decoding.
//! 2. Transparency is flattened onto white, and a page skewed by 1 to 15 degrees is straightened
//!    (Tesseract loses whole lines from about 3 degrees on).
//! 3. With no languages given, Tesseract's orientation and script detection (`osd.traineddata`)
//!    runs: the page is turned upright and the traineddata for the detected script is chosen
//!    among the installed ones. When OSD finds too little text, the page is read as it is, in
//!    English. A turned page that reads poorly is read as it was too, and the better reading
//!    kept. With languages given, OSD is skipped.
//! 4. Tesseract reads the page with automatic layout analysis (as the CLI does); text, word boxes
//!    and confidences come from the same recognition.
//!
//! Every page is read on its own: nothing learnt from one page carries over to the next.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use leptess::capi as sys;

/// Language used when nothing better is known.
const FALLBACK_LANGUAGE: &str = "eng";

/// OSD orientation confidence below which the page is left as it is. Upright and turned pages
/// with a few lines of text score well above this; a wrong turn ruins a page while a missed one
/// only leaves it as the CLI would read it.
const MIN_ORIENTATION_CONFIDENCE: f32 = 2.0;

/// Below this OSD script confidence the script guess is ignored.
const MIN_SCRIPT_CONFIDENCE: f32 = 0.5;

/// OSD orientation confidence from which a turn is trusted without checking (Tesseract's own
/// `min_orientation_margin`). Right turns of pages with a few lines score 8 to 35 here; wrong
/// ones (a monospaced page) 0.1 to 4.5.
const TRUSTED_ORIENTATION_CONFIDENCE: f32 = 7.0;

/// Mean word confidence below which a page turned on less trusted OSD advice is also read as
/// it was.
const POOR_PAGE_CONFIDENCE: f32 = 0.6;

/// Smallest skew worth straightening. Below it Tesseract copes by itself and resampling costs
/// more than it gains (eurotext, skewed 0.8 degrees: 2.2% CER as it is, 2.4% straightened;
/// phototest turned 3 degrees: 65% as it is, 0% straightened).
const MIN_DESKEW_DEGREES: f32 = 1.0;

/// Leptonica's skew confidence below which the angle is noise (its own cut-off for deskewing).
const MIN_SKEW_CONFIDENCE: f32 = 3.0;

/// Largest skew searched for, either way; beyond that OSD's quarter turns take over.
const MAX_SKEW_DEGREES: f32 = 15.0;

/// Pages with a shorter side than this (in pixels) are not checked for skew: the search works
/// at a quarter of the size and needs several lines of text.
const MIN_SKEW_SEARCH_SIDE: u32 = 200;

/// Resolutions Tesseract believes (its `kMinCredibleResolution`..=`kMaxCredibleResolution`).
const CREDIBLE_DPI: std::ops::RangeInclusive<i32> = 70..=2400;

/// Traineddata to load for an OSD script, main language first; only installed ones are used,
/// at most [`MAX_AUTO_LANGUAGES`]. Latin takes the big Western European languages as well as
/// English: Tesseract tries them only on words the main language reads poorly, which fixes
/// accented words (eurotext: 2.2% CER with eng alone, 1.2% with eng+deu+fra+spa) at no loss on
/// English pages, for about 20% more recognition time on a noisy English page (8087_054.3B:
/// 1.6 s with eng, 1.9 s with the four).
const SCRIPT_LANGUAGES: &[(&str, &[&str])] = &[
    ("Latin", &["eng", "deu", "fra", "spa", "ita", "por"]),
    ("Cyrillic", &["rus", "ukr", "bul", "srp"]),
    ("Han", &["chi_sim", "chi_tra"]),
    ("HanS", &["chi_sim", "chi_tra"]),
    ("HanT", &["chi_tra", "chi_sim"]),
    ("Arabic", &["ara", "fas", "urd"]),
    ("Greek", &["ell"]),
    ("Hebrew", &["heb", "yid"]),
    ("Devanagari", &["hin", "mar", "nep"]),
    ("Bengali", &["ben", "asm"]),
    ("Gurmukhi", &["pan"]),
    ("Gujarati", &["guj"]),
    ("Tamil", &["tam"]),
    ("Telugu", &["tel"]),
    ("Kannada", &["kan"]),
    ("Malayalam", &["mal"]),
    ("Thai", &["tha"]),
    ("Lao", &["lao"]),
    ("Khmer", &["khm"]),
    ("Myanmar", &["mya"]),
    ("Georgian", &["kat"]),
    ("Armenian", &["hye"]),
    ("Ethiopic", &["amh", "tir"]),
    ("Sinhala", &["sin"]),
    ("Tibetan", &["bod"]),
    ("Japanese", &["jpn"]),
    ("Hiragana", &["jpn"]),
    ("Katakana", &["jpn"]),
    ("Hangul", &["kor"]),
    ("Korean", &["kor"]),
    ("Fraktur", &["frk", "deu"]),
];

/// Cap on traineddata loaded together: every extra model costs memory and time on uncertain
/// words, and a wrong one can swap a right word for a wrong one.
const MAX_AUTO_LANGUAGES: usize = 4;

/// What to recognise and what to refuse.
#[derive(Debug, Clone, PartialEq)]
pub struct OcrOptions {
    /// Tesseract traineddata codes such as `"eng"`, `"rus"`, `"chi_sim"`; empty means automatic.
    pub languages: Vec<String>,
    /// Pages above this many megapixels are refused with [`OcrError::TooLarge`].
    pub max_megapixels: f64,
    /// Resolution to assume when the image does not state a credible one.
    pub dpi_hint: Option<u32>,
    /// Recognition of one page stops at this limit with [`OcrError::Timeout`].
    pub deadline: Option<std::time::Duration>,
}

impl Default for OcrOptions {
    fn default() -> Self {
        // 40 MP holds an A4 page at 600 dpi with room to spare.
        OcrOptions { languages: Vec::new(), max_megapixels: 40.0, dpi_hint: None, deadline: None }
    }
}

/// One recognised word. The box is in the coordinates of the upright page.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub text: String,
    /// 0..1
    pub confidence: f32,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// The text of one page and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct OcrPage {
    pub text: String,
    /// Mean word confidence, 0..1 (0 when no words were found).
    pub confidence: f32,
    /// Clockwise rotation applied to make the page upright: 0, 90, 180 or 270.
    pub rotation_degrees: u32,
    /// Skew straightened before reading, in degrees (0 when the page was straight enough).
    pub deskew_degrees: f32,
    /// Script detected by OSD (automatic mode only), e.g. "Latin", "Cyrillic", "Han".
    pub script: Option<String>,
    /// Traineddata used, e.g. `["ara", "fas"]`.
    pub languages: Vec<String>,
    /// Size of the upright (and deskewed) page, in pixels; word boxes are relative to it.
    pub width: u32,
    pub height: u32,
    pub words: Vec<Word>,
}

#[derive(thiserror::Error, Debug)]
pub enum OcrError {
    #[error("cannot initialise Tesseract: {0}")]
    Init(String),
    #[error("traineddata for language {0:?} is not installed")]
    MissingLanguage(String),
    #[error("cannot decode image: {0}")]
    BadImage(String),
    #[error("image has {megapixels:.1} megapixels, more than the limit of {limit:.1}")]
    TooLarge { megapixels: f64, limit: f64 },
    #[error("recognition failed: {0}")]
    Recognize(String),
    #[error("recognition stopped at the {0:?} page limit")]
    Timeout(std::time::Duration),
}

/// Tesseract instances for one thread: a recogniser loaded with the last language set used,
/// and an OSD instance created on the first automatic page.
pub struct OcrEngine {
    tessdata: Option<PathBuf>,
    installed: Vec<String>,
    recognizer: TessApi,
    /// Language string ("eng+fra") the recogniser is loaded with.
    loaded: Option<String>,
    osd: Option<TessApi>,
}

impl std::fmt::Debug for OcrEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcrEngine")
            .field("tessdata", &self.tessdata)
            .field("loaded", &self.loaded)
            .field("osd", &self.osd.is_some())
            .finish()
    }
}

impl OcrEngine {
    /// Find the traineddata (given directory, else `TESSDATA_PREFIX`, else the usual system
    /// locations). No model is loaded until the first page.
    pub fn new(tessdata_dir: Option<&Path>) -> Result<Self, OcrError> {
        let tessdata = resolve_tessdata(tessdata_dir);
        let installed = tessdata.as_deref().map(list_traineddata).unwrap_or_default();
        if installed.is_empty() {
            let place = match &tessdata {
                Some(dir) => dir.display().to_string(),
                None => "TESSDATA_PREFIX or the system tessdata directories".to_string(),
            };
            return Err(OcrError::Init(format!("no traineddata found in {place}")));
        }
        Ok(OcrEngine { tessdata, installed, recognizer: TessApi::create()?, loaded: None, osd: None })
    }

    /// Traineddata codes available to this engine (including `osd` when installed).
    pub fn installed_languages(&self) -> &[String] {
        &self.installed
    }

    /// Recognise one encoded page (PNG, JPEG, TIFF (first page), BMP, GIF, WebP, JP2, PNM).
    pub fn recognize(&mut self, image: &[u8], options: &OcrOptions) -> Result<OcrPage, OcrError> {
        check_header_size(image, options.max_megapixels)?;
        let pix = Pix::decode(image)?;
        self.recognize_pix(pix, options)
    }

    /// Recognise page `index` (0-based) of a TIFF without re-encoding it.
    pub fn recognize_tiff_page(&mut self, tiff: &[u8], index: usize, options: &OcrOptions) -> Result<OcrPage, OcrError> {
        let index = c_int::try_from(index).map_err(|_| OcrError::BadImage(format!("no TIFF page {index}")))?;
        check_tiff_page_header_size(tiff, index, options.max_megapixels)?;
        let pix = Pix::decode_tiff_page(tiff, index)?;
        self.recognize_pix(pix, options)
    }

    fn recognize_pix(&mut self, pix: Pix, options: &OcrOptions) -> Result<OcrPage, OcrError> {
        check_size(pix.width(), pix.height(), options.max_megapixels)?;
        let pix = pix.flatten_alpha()?;
        // Tesseract drops whole lines from about 3 degrees of skew on, and OSD misjudges skewed
        // pages (tests/data/docs/testRotated+10.png, 10 degrees, came out "upside down").
        let (pix, skew) = pix.deskewed();
        let mut page = if options.languages.is_empty() {
            self.read_automatic(&pix, options)?
        } else {
            let languages = self.check_languages(&options.languages)?;
            self.read_with(&pix, &languages, options)?
        };
        page.deskew_degrees = skew;
        Ok(page)
    }

    /// Turn the page upright and pick languages from OSD, then read it.
    fn read_automatic(&mut self, pix: &Pix, options: &OcrOptions) -> Result<OcrPage, OcrError> {
        let detected = self.detect_orientation_script(pix, options.dpi_hint)?;
        let script = detected.as_ref().and_then(|d| d.script.clone());
        let languages = self.languages_for_script(script.as_deref());
        let (rotation, trusted) = detected.map_or((0, true), |d| (d.rotation, d.trusted));
        let mut page = if rotation == 0 {
            self.read_with(pix, &languages, options)?
        } else {
            let mut turned = self.read_with(&pix.rotate_clockwise(rotation)?, &languages, options)?;
            turned.rotation_degrees = rotation;
            // OSD misjudges some pages (monospaced text came out "180" with confidence 2.6): when
            // a turn on weak advice reads poorly, read the page as it was too and keep the better
            // reading. Costs a second recognition only on pages that read poorly anyway.
            if !trusted && turned.confidence < POOR_PAGE_CONFIDENCE {
                let as_is = self.read_with(pix, &languages, options)?;
                if as_is.confidence > turned.confidence {
                    turned = as_is;
                }
            }
            turned
        };
        page.script = script;
        Ok(page)
    }

    /// Read an upright page with the given languages.
    fn read_with(&mut self, pix: &Pix, languages: &[String], options: &OcrOptions) -> Result<OcrPage, OcrError> {
        self.load_languages(languages)?;
        let mut page = self.read_page(pix, options.dpi_hint, options.deadline)?;
        page.languages = languages.to_vec();
        Ok(page)
    }

    /// Requested languages, deduplicated, each checked to be installed.
    fn check_languages(&self, requested: &[String]) -> Result<Vec<String>, OcrError> {
        let mut languages: Vec<String> = Vec::with_capacity(requested.len());
        for code in requested.iter().map(|code| code.trim()) {
            if !self.installed.iter().any(|installed| installed == code) {
                return Err(OcrError::MissingLanguage(code.to_string()));
            }
            if !languages.iter().any(|seen| seen == code) {
                languages.push(code.to_string());
            }
        }
        Ok(languages)
    }

    /// Installed traineddata for a script; English when the script is unknown or not covered.
    fn languages_for_script(&self, script: Option<&str>) -> Vec<String> {
        let is_installed = |code: &str| self.installed.iter().any(|installed| installed == code);
        let mut languages: Vec<String> = Vec::new();
        if let Some(script) = script {
            if let Some((_, candidates)) = SCRIPT_LANGUAGES.iter().find(|(name, _)| *name == script) {
                languages.extend(
                    candidates
                        .iter()
                        .filter(|code| is_installed(code))
                        .take(MAX_AUTO_LANGUAGES)
                        .map(|code| code.to_string()),
                );
            }
            // tessdata_fast/best also ship one model per script, e.g. "script/Cyrillic".
            let script_model = format!("script/{script}");
            if languages.is_empty() && is_installed(&script_model) {
                languages.push(script_model);
            }
        }
        if languages.is_empty() {
            languages.push(FALLBACK_LANGUAGE.to_string());
        }
        languages
    }

    /// (Re)load the recogniser only when the language set differs from the loaded one.
    fn load_languages(&mut self, languages: &[String]) -> Result<(), OcrError> {
        let key = languages.join("+");
        if self.loaded.as_deref() == Some(key.as_str()) {
            return Ok(());
        }
        self.loaded = None;
        self.recognizer.init(self.tessdata.as_deref(), &key, sys::TessOcrEngineMode_OEM_DEFAULT)?;
        // The C API defaults to one uniform text block; pages need layout analysis, as in the CLI.
        self.recognizer.set_page_seg_mode(sys::TessPageSegMode_PSM_AUTO);
        self.loaded = Some(key);
        Ok(())
    }

    /// Orientation and script, or `None` when OSD is not installed or finds too little text.
    fn detect_orientation_script(&mut self, pix: &Pix, dpi_hint: Option<u32>) -> Result<Option<Detected>, OcrError> {
        if !self.installed.iter().any(|code| code == "osd") {
            return Ok(None);
        }
        let osd = match &mut self.osd {
            Some(osd) => osd,
            slot => {
                let mut api = TessApi::create()?;
                // osd.traineddata only has the legacy classifier.
                api.init(self.tessdata.as_deref(), "osd", sys::TessOcrEngineMode_OEM_TESSERACT_ONLY)?;
                slot.insert(api)
            }
        };
        // Not downscaled: halving a page cost OSD most of its confidence for 15% less time.
        osd.set_image(pix, dpi_hint);
        let result = osd.detect_orientation_script();
        osd.clear();
        Ok(result.and_then(Detected::from_osd))
    }

    /// Recognise an upright page and collect its text and words.
    fn read_page(&mut self, pix: &Pix, dpi_hint: Option<u32>, deadline: Option<std::time::Duration>) -> Result<OcrPage, OcrError> {
        let (width, height) = (pix.width(), pix.height());
        let api = &mut self.recognizer;
        api.set_image(pix, dpi_hint);
        let result = api.recognize(deadline).map(|()| (api.utf8_text().unwrap_or_default(), api.words(width, height)));
        // Free the image and results now rather than holding them until the next page, and
        // forget the page's words so the next page reads the same whatever came before.
        api.clear();
        api.forget_document();
        let (text, words) = result?;
        Ok(OcrPage {
            text,
            confidence: mean_confidence(&words),
            rotation_degrees: 0,
            deskew_degrees: 0.0,
            script: None,
            languages: Vec::new(),
            width,
            height,
            words,
        })
    }
}

/// Split a (multi-page) TIFF into single pages, each re-encoded losslessly for
/// [`OcrEngine::recognize`]: bilevel pages as G4 TIFF (small, keeps the resolution), others as PNG.
/// [`OcrEngine::recognize_tiff_page`] reads a page without the re-encoding.
pub fn tiff_pages(bytes: &[u8]) -> Result<Vec<Vec<u8>>, OcrError> {
    if !is_tiff(bytes) {
        return Err(OcrError::BadImage("not a TIFF file".to_string()));
    }
    let mut pages = Vec::new();
    let mut offset: usize = 0;
    loop {
        // SAFETY: Leptonica only reads the buffer and sets `offset` to the next page's
        // directory, or 0 after the last page.
        let raw = unsafe { sys::pixReadMemFromMultipageTiff(bytes.as_ptr(), bytes.len(), &mut offset) };
        let pix = Pix::from_raw(raw)
            .ok_or_else(|| OcrError::BadImage(format!("cannot decode TIFF page {}", pages.len() + 1)))?;
        pages.push(pix.encode_lossless()?);
        if offset == 0 {
            break;
        }
    }
    Ok(pages)
}

/// Number of pages (image directories) in a TIFF, counting at most `limit`; 0 when it is not a
/// readable TIFF. Walks the directory chain without decoding any image.
pub fn tiff_page_count(bytes: &[u8], limit: usize) -> usize {
    TiffDirectories::new(bytes).map_or(0, |directories| directories.take(limit).count())
}

/// Installed traineddata codes in the tessdata directory (given, else found like
/// [`OcrEngine::new`] does), sorted; `osd` is not a language and is left out.
pub fn installed_languages(tessdata_dir: Option<&Path>) -> Vec<String> {
    let mut codes = resolve_tessdata(tessdata_dir).as_deref().map(list_traineddata).unwrap_or_default();
    codes.retain(|code| code != "osd");
    codes
}

/// Character error rate, the measure OCR quality is judged by here: Levenshtein distance over
/// characters after collapsing whitespace runs to one space, divided by the truth's length.
pub fn character_error_rate(truth: &str, hypothesis: &str) -> f64 {
    let collapse = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").chars().collect::<Vec<char>>();
    let truth = collapse(truth);
    let hypothesis = collapse(hypothesis);
    if truth.is_empty() {
        return if hypothesis.is_empty() { 0.0 } else { 1.0 };
    }
    levenshtein(&truth, &hypothesis) as f64 / truth.len() as f64
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

fn mean_confidence(words: &[Word]) -> f32 {
    if words.is_empty() {
        return 0.0;
    }
    words.iter().map(|word| word.confidence).sum::<f32>() / words.len() as f32
}

/// Refuse oversized pages from the header alone, before decoding allocates them. Images whose
/// header Leptonica cannot read are checked again after decoding.
fn check_header_size(image: &[u8], limit: f64) -> Result<(), OcrError> {
    if image.len() < 12 {
        return Err(OcrError::BadImage(format!("only {} bytes", image.len())));
    }
    let (mut format, mut w, mut h, mut bps, mut spp, mut cmap) = (0, 0, 0, 0, 0, 0);
    // SAFETY: out-pointers are live locals; Leptonica only reads `image`.
    let ok = unsafe {
        sys::pixReadHeaderMem(image.as_ptr(), image.len(), &mut format, &mut w, &mut h, &mut bps, &mut spp, &mut cmap)
    } == 0;
    if ok && w > 0 && h > 0 {
        check_size(w as u32, h as u32, limit)?;
    }
    Ok(())
}

/// Like [`check_header_size`], for page `index` of a TIFF.
fn check_tiff_page_header_size(tiff: &[u8], index: c_int, limit: f64) -> Result<(), OcrError> {
    if !is_tiff(tiff) {
        return Err(OcrError::BadImage("not a TIFF file".to_string()));
    }
    let (mut w, mut h, mut bps, mut spp, mut res, mut cmap, mut format) = (0, 0, 0, 0, 0, 0, 0);
    // SAFETY: out-pointers are live locals; Leptonica only reads `tiff`.
    let ok = unsafe {
        sys::readHeaderMemTiff(tiff.as_ptr(), tiff.len(), index, &mut w, &mut h, &mut bps, &mut spp, &mut res, &mut cmap, &mut format)
    } == 0;
    if ok && w > 0 && h > 0 {
        check_size(w as u32, h as u32, limit)?;
    }
    Ok(())
}

fn check_size(width: u32, height: u32, limit: f64) -> Result<(), OcrError> {
    let megapixels = f64::from(width) * f64::from(height) / 1e6;
    if megapixels > limit {
        return Err(OcrError::TooLarge { megapixels, limit });
    }
    Ok(())
}

fn is_tiff(bytes: &[u8]) -> bool {
    bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") || bytes.starts_with(b"II+\0") || bytes.starts_with(b"MM\0+")
}

/// Offsets of the image directories of a classic or big TIFF, in file order. Stops at the
/// end of the chain, at an offset outside the file, or at a loop.
struct TiffDirectories<'a> {
    bytes: &'a [u8],
    little_endian: bool,
    big_tiff: bool,
    next: u64,
    seen: std::collections::HashSet<u64>,
}

impl<'a> TiffDirectories<'a> {
    fn new(bytes: &'a [u8]) -> Option<Self> {
        if !is_tiff(bytes) {
            return None;
        }
        let little_endian = bytes[0] == b'I';
        let big_tiff = bytes[2..4] == [0x2b, 0] || bytes[2..4] == [0, 0x2b];
        let mut directories = TiffDirectories { bytes, little_endian, big_tiff, next: 0, seen: Default::default() };
        directories.next = if big_tiff { directories.read(8, 8)? } else { directories.read(4, 4)? };
        Some(directories)
    }

    /// Unsigned integer of `size` bytes at `offset`, in the file's byte order.
    fn read(&self, offset: u64, size: usize) -> Option<u64> {
        let start = usize::try_from(offset).ok()?;
        let field = self.bytes.get(start..start.checked_add(size)?)?;
        let fold = |value: u64, &byte: &u8| value << 8 | u64::from(byte);
        Some(if self.little_endian { field.iter().rev().fold(0, fold) } else { field.iter().fold(0, fold) })
    }

    /// Offset of the directory after the one at `offset`.
    fn following(&self, offset: u64) -> Option<u64> {
        let (count_size, entry_size, link_size) = if self.big_tiff { (8, 20, 8) } else { (2, 12, 4) };
        let entries = self.read(offset, count_size)?;
        let link = offset.checked_add(count_size as u64)?.checked_add(entries.checked_mul(entry_size)?)?;
        self.read(link, link_size)
    }
}

impl Iterator for TiffDirectories<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let offset = self.next;
        if offset == 0 || !self.seen.insert(offset) {
            return None;
        }
        // An entry count must be readable for the directory to count as a page.
        self.read(offset, if self.big_tiff { 8 } else { 2 })?;
        self.next = self.following(offset).unwrap_or(0);
        Some(offset)
    }
}

/// The tessdata directory to use: the given one (or its `tessdata` subdirectory), else
/// `TESSDATA_PREFIX`, else the usual install locations.
fn resolve_tessdata(dir: Option<&Path>) -> Option<PathBuf> {
    let with_models = |base: PathBuf| -> Option<PathBuf> {
        [base.join("tessdata"), base].into_iter().find(|d| !list_traineddata(d).is_empty())
    };
    if let Some(dir) = dir {
        return Some(with_models(dir.to_path_buf()).unwrap_or_else(|| dir.to_path_buf()));
    }
    let from_env = std::env::var_os("TESSDATA_PREFIX").map(PathBuf::from);
    let system = [
        "/usr/share/tesseract-ocr/5/tessdata",
        "/usr/share/tesseract-ocr/4.00/tessdata",
        "/usr/share/tessdata",
        "/usr/local/share/tessdata",
        "/opt/homebrew/share/tessdata",
    ];
    from_env.into_iter().chain(system.iter().map(PathBuf::from)).find_map(with_models)
}

/// `*.traineddata` codes in `dir`, plus `script/*` ones, sorted.
fn list_traineddata(dir: &Path) -> Vec<String> {
    let codes_in = |dir: &Path, prefix: &str| -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let code = name.strip_suffix(".traineddata")?;
                Some(format!("{prefix}{code}"))
            })
            .collect()
    };
    let mut codes = codes_in(dir, "");
    codes.extend(codes_in(&dir.join("script"), "script/"));
    codes.sort();
    codes
}

/// OSD verdict after the confidence thresholds.
#[derive(Debug)]
struct Detected {
    /// Clockwise degrees that make the page upright.
    rotation: u32,
    /// Confident enough to turn the page without checking the reading.
    trusted: bool,
    script: Option<String>,
}

impl Detected {
    fn from_osd(osd: Osd) -> Option<Detected> {
        let oriented = osd.orientation_confidence >= MIN_ORIENTATION_CONFIDENCE;
        let scripted = osd.script_confidence >= MIN_SCRIPT_CONFIDENCE && !osd.script.is_empty();
        if !oriented && !scripted {
            return None;
        }
        // Tesseract reports how far the page is turned clockwise from upright (the CLI prints
        // the correction as "Rotate"); pixRotateOrth also turns clockwise.
        let turned = osd.orientation_degrees.rem_euclid(360) as u32 / 90 * 90;
        let rotation = if oriented { (360 - turned) % 360 } else { 0 };
        let trusted = osd.orientation_confidence >= TRUSTED_ORIENTATION_CONFIDENCE;
        Some(Detected { rotation, trusted, script: scripted.then_some(osd.script) })
    }
}

/// Raw result of `TessBaseAPIDetectOrientationScript`.
struct Osd {
    orientation_degrees: i32,
    orientation_confidence: f32,
    script: String,
    script_confidence: f32,
}

/// Owned Leptonica image.
struct Pix(NonNull<sys::PIX>);

// SAFETY: a Pix has one owner at a time; Leptonica images have no thread affinity.
unsafe impl Send for Pix {}

impl Pix {
    fn from_raw(raw: *mut sys::PIX) -> Option<Pix> {
        NonNull::new(raw).map(Pix)
    }

    fn decode(bytes: &[u8]) -> Result<Pix, OcrError> {
        // SAFETY: Leptonica only reads the buffer; null means it could not decode it.
        let raw = unsafe { sys::pixReadMem(bytes.as_ptr(), bytes.len()) };
        Pix::from_raw(raw)
            .ok_or_else(|| OcrError::BadImage("unknown or corrupt image format".to_string()))?
            .non_empty()
    }

    fn decode_tiff_page(bytes: &[u8], index: c_int) -> Result<Pix, OcrError> {
        if !is_tiff(bytes) {
            return Err(OcrError::BadImage("not a TIFF file".to_string()));
        }
        // SAFETY: Leptonica only reads the buffer; null past the last page or on corrupt data.
        let raw = unsafe { sys::pixReadMemTiff(bytes.as_ptr(), bytes.len(), index) };
        Pix::from_raw(raw)
            .ok_or_else(|| OcrError::BadImage(format!("cannot decode TIFF page {}", index + 1)))?
            .non_empty()
    }

    fn non_empty(self) -> Result<Pix, OcrError> {
        if self.width() == 0 || self.height() == 0 {
            return Err(OcrError::BadImage("empty image".to_string()));
        }
        Ok(self)
    }

    fn ptr(&self) -> *mut sys::PIX {
        self.0.as_ptr()
    }

    fn width(&self) -> u32 {
        // SAFETY: valid pix for the lifetime of self.
        unsafe { sys::pixGetWidth(self.ptr()) }.max(0) as u32
    }

    fn height(&self) -> u32 {
        // SAFETY: as above.
        unsafe { sys::pixGetHeight(self.ptr()) }.max(0) as u32
    }

    fn depth(&self) -> i32 {
        // SAFETY: as above.
        unsafe { sys::pixGetDepth(self.ptr()) }
    }

    fn y_resolution(&self) -> i32 {
        // SAFETY: as above.
        unsafe { sys::pixGetYRes(self.ptr()) }
    }

    /// Transparent pixels over white: Tesseract ignores alpha, and transparent areas are often
    /// stored as black, which would hide dark text.
    fn flatten_alpha(self) -> Result<Pix, OcrError> {
        // SAFETY: valid pix.
        let has_alpha = self.depth() == 32 && unsafe { sys::pixGetSpp(self.ptr()) } == 4;
        if !has_alpha {
            return Ok(self);
        }
        // SAFETY: returns a new pix (or null) and leaves ours alone.
        let raw = unsafe { sys::pixAlphaBlendUniform(self.ptr(), 0xffff_ff00) };
        Pix::from_raw(raw).ok_or_else(|| OcrError::BadImage("cannot remove the alpha channel".to_string()))
    }

    /// The page straightened when it is clearly skewed by 1 to 15 degrees, and the angle.
    fn deskewed(self) -> (Pix, f32) {
        let Some(angle) = self.skew_degrees().filter(|angle| angle.abs() >= MIN_DESKEW_DEGREES) else {
            return (self, 0.0);
        };
        // Shearing keeps bilevel pages bilevel; area mapping smooths grey and colour ones.
        let method = if self.depth() == 1 { sys::L_ROTATE_SHEAR } else { sys::L_ROTATE_AREA_MAP };
        // SAFETY: returns a new pix (or null) and leaves ours alone.
        let raw = unsafe {
            sys::pixRotate(self.ptr(), angle.to_radians(), method as c_int, sys::L_BRING_IN_WHITE as c_int, 0, 0)
        };
        match Pix::from_raw(raw) {
            Some(straight) => (straight, angle),
            None => (self, 0.0),
        }
    }

    /// Skew in degrees as Leptonica measures it (the angle pixRotate undoes), when confident.
    fn skew_degrees(&self) -> Option<f32> {
        if self.width().min(self.height()) < MIN_SKEW_SEARCH_SIDE {
            return None;
        }
        let binary;
        let bilevel = if self.depth() == 1 {
            self
        } else {
            // SAFETY: returns a new pix (or null) and leaves ours alone.
            binary = Pix::from_raw(unsafe { sys::pixConvertTo1(self.ptr(), 130) })?;
            &binary
        };
        let (mut angle, mut confidence) = (0f32, 0f32);
        // SAFETY: valid 1 bpp pix and live out-pointers. Reductions and steps are Leptonica's
        // defaults (sweep at 1/4 size in 1 degree steps, refine at 1/2 size).
        let failed = unsafe {
            sys::pixFindSkewSweepAndSearch(bilevel.ptr(), &mut angle, &mut confidence, 4, 2, MAX_SKEW_DEGREES, 1.0, 0.01)
        } != 0;
        (!failed && confidence >= MIN_SKEW_CONFIDENCE).then_some(angle)
    }

    fn rotate_clockwise(&self, degrees: u32) -> Result<Pix, OcrError> {
        // SAFETY: returns a new pix (or null) and leaves ours alone.
        let raw = unsafe { sys::pixRotateOrth(self.ptr(), (degrees / 90 % 4) as c_int) };
        Pix::from_raw(raw).ok_or_else(|| OcrError::Recognize(format!("cannot rotate the page by {degrees} degrees")))
    }

    fn encode_lossless(&self) -> Result<Vec<u8>, OcrError> {
        let format = if self.depth() == 1 { sys::IFF_TIFF_G4 } else { sys::IFF_PNG };
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: on success Leptonica allocates `data`, freed below with lept_free.
        let failed = unsafe { sys::pixWriteMem(&mut data, &mut size, self.ptr(), format as c_int) } != 0;
        if failed || data.is_null() {
            return Err(OcrError::BadImage("cannot re-encode TIFF page".to_string()));
        }
        // SAFETY: `data` holds `size` bytes written by Leptonica; freed exactly once.
        let bytes = unsafe { std::slice::from_raw_parts(data, size) }.to_vec();
        unsafe { sys::lept_free(data.cast()) };
        Ok(bytes)
    }
}

impl Drop for Pix {
    fn drop(&mut self) {
        let mut raw = self.ptr();
        // SAFETY: we own one reference; pixDestroy releases it.
        unsafe { sys::pixDestroy(&mut raw) };
    }
}

/// Owned Tesseract instance.
struct TessApi(NonNull<sys::TessBaseAPI>);

// SAFETY: a TessBaseAPI may be used from any thread as long as one thread uses it at a time,
// which `&mut self` on every use guarantees.
unsafe impl Send for TessApi {}

impl TessApi {
    fn create() -> Result<TessApi, OcrError> {
        // SAFETY: plain constructor.
        let raw = unsafe { sys::TessBaseAPICreate() };
        NonNull::new(raw).map(TessApi).ok_or_else(|| OcrError::Init("TessBaseAPICreate failed".to_string()))
    }

    fn init(&mut self, tessdata: Option<&Path>, languages: &str, mode: sys::TessOcrEngineMode) -> Result<(), OcrError> {
        let datapath = tessdata
            .map(|dir| CString::new(dir.as_os_str().as_encoded_bytes()))
            .transpose()
            .map_err(|_| OcrError::Init("tessdata path contains a NUL byte".to_string()))?;
        let language = CString::new(languages).map_err(|_| OcrError::Init("language contains a NUL byte".to_string()))?;
        let datapath_ptr = datapath.as_ref().map_or(std::ptr::null(), |p| p.as_ptr());
        // SAFETY: the strings outlive the call; Tesseract copies what it keeps.
        let status = unsafe { sys::TessBaseAPIInit2(self.0.as_ptr(), datapath_ptr, language.as_ptr(), mode) };
        if status != 0 {
            return Err(OcrError::Init(format!("cannot load traineddata {languages:?}")));
        }
        self.quiet();
        Ok(())
    }

    /// Send Tesseract's per-page chatter ("Estimating resolution as ...") nowhere; failures
    /// still surface as return values.
    fn quiet(&mut self) {
        if cfg!(unix) {
            self.set_variable(c"debug_file", c"/dev/null");
        }
    }

    fn set_variable(&mut self, name: &CStr, value: &CStr) -> bool {
        // SAFETY: valid handle and NUL-terminated strings.
        unsafe { sys::TessBaseAPISetVariable(self.0.as_ptr(), name.as_ptr(), value.as_ptr()) != 0 }
    }

    fn set_page_seg_mode(&mut self, mode: sys::TessPageSegMode) {
        // SAFETY: valid handle.
        unsafe { sys::TessBaseAPISetPageSegMode(self.0.as_ptr(), mode) };
    }

    /// Hand over the page; the resolution hint applies only when the file states no credible one.
    fn set_image(&mut self, pix: &Pix, dpi_hint: Option<u32>) {
        // SAFETY: Tesseract takes its own reference (or converted copy) of the pix.
        unsafe { sys::TessBaseAPISetImage2(self.0.as_ptr(), pix.ptr()) };
        if let Some(dpi) = dpi_hint.and_then(|dpi| i32::try_from(dpi).ok()) {
            if !CREDIBLE_DPI.contains(&pix.y_resolution()) && CREDIBLE_DPI.contains(&dpi) {
                // SAFETY: valid handle.
                unsafe { sys::TessBaseAPISetSourceResolution(self.0.as_ptr(), dpi) };
            }
        }
    }

    /// Recognise the image set, stopping at `deadline` through Tesseract's progress monitor.
    fn recognize(&mut self, deadline: Option<std::time::Duration>) -> Result<(), OcrError> {
        let Some(deadline) = deadline else {
            // SAFETY: valid handle with an image set; no progress monitor.
            let status = unsafe { sys::TessBaseAPIRecognize(self.0.as_ptr(), std::ptr::null_mut()) };
            return if status == 0 { Ok(()) } else { Err(OcrError::Recognize(format!("Tesseract returned {status}"))) };
        };
        let started = std::time::Instant::now();
        let millis = i32::try_from(deadline.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the monitor lives until after Recognize returns and is deleted once.
        let status = unsafe {
            let monitor = sys::TessMonitorCreate();
            sys::TessMonitorSetDeadlineMSecs(monitor, millis);
            let status = sys::TessBaseAPIRecognize(self.0.as_ptr(), monitor);
            sys::TessMonitorDelete(monitor);
            status
        };
        if started.elapsed() >= deadline {
            return Err(OcrError::Timeout(deadline));
        }
        if status != 0 {
            return Err(OcrError::Recognize(format!("Tesseract returned {status}")));
        }
        Ok(())
    }

    fn utf8_text(&mut self) -> Option<String> {
        // SAFETY: valid handle; the returned string is ours to free.
        take_tess_string(unsafe { sys::TessBaseAPIGetUTF8Text(self.0.as_ptr()) })
    }

    /// Words of the last recognition, boxes clamped to the page.
    fn words(&mut self, page_width: u32, page_height: u32) -> Vec<Word> {
        let level = sys::TessPageIteratorLevel_RIL_WORD;
        let mut words = Vec::new();
        // SAFETY: valid handle after recognition; the iterator is deleted below.
        let iterator = unsafe { sys::TessBaseAPIGetIterator(self.0.as_ptr()) };
        if iterator.is_null() {
            return words;
        }
        loop {
            // SAFETY: the iterator is live until deleted.
            words.extend(unsafe { word_at(iterator, level, page_width, page_height) });
            // SAFETY: as above.
            if unsafe { sys::TessResultIteratorNext(iterator, level) } == 0 {
                break;
            }
        }
        // SAFETY: created above, deleted once.
        unsafe { sys::TessResultIteratorDelete(iterator) };
        words
    }

    fn detect_orientation_script(&mut self) -> Option<Osd> {
        let mut degrees: c_int = 0;
        let mut orientation_confidence: f32 = 0.0;
        let mut script: *const c_char = std::ptr::null();
        let mut script_confidence: f32 = 0.0;
        // SAFETY: valid handle with an image set; out-pointers are live locals.
        let ok = unsafe {
            sys::TessBaseAPIDetectOrientationScript(
                self.0.as_ptr(),
                &mut degrees,
                &mut orientation_confidence,
                &mut script,
                &mut script_confidence,
            )
        } != 0;
        if !ok {
            return None;
        }
        // The script name points into the OSD model's tables (not ours to free), alive with
        // the handle; copy it now.
        let script = if script.is_null() {
            String::new()
        } else {
            // SAFETY: non-null, NUL-terminated.
            unsafe { CStr::from_ptr(script) }.to_string_lossy().into_owned()
        };
        Some(Osd { orientation_degrees: degrees, orientation_confidence, script, script_confidence })
    }

    /// Free the image and results but keep the loaded models.
    fn clear(&mut self) {
        // SAFETY: valid handle.
        unsafe { sys::TessBaseAPIClear(self.0.as_ptr()) };
    }

    /// Drop what Tesseract learns across pages (document dictionary, adapted classes).
    fn forget_document(&mut self) {
        // SAFETY: valid handle.
        unsafe { sys::TessBaseAPIClearAdaptiveClassifier(self.0.as_ptr()) };
    }
}

impl Drop for TessApi {
    fn drop(&mut self) {
        // SAFETY: created by TessBaseAPICreate, deleted once (which also ends it).
        unsafe { sys::TessBaseAPIDelete(self.0.as_ptr()) };
    }
}

/// The word under the iterator, if it has text and a box.
///
/// # Safety
/// `iterator` must be a live result iterator.
unsafe fn word_at(
    iterator: *mut sys::TessResultIterator,
    level: sys::TessPageIteratorLevel,
    page_width: u32,
    page_height: u32,
) -> Option<Word> {
    let text = take_tess_string(sys::TessResultIteratorGetUTF8Text(iterator, level))?;
    let confidence = (sys::TessResultIteratorConfidence(iterator, level) / 100.0).clamp(0.0, 1.0);
    let (mut left, mut top, mut right, mut bottom) = (0, 0, 0, 0);
    let page_iterator = sys::TessResultIteratorGetPageIterator(iterator);
    if sys::TessPageIteratorBoundingBox(page_iterator, level, &mut left, &mut top, &mut right, &mut bottom) == 0 {
        return None;
    }
    let clamp = |v: c_int, max: u32| (v.max(0) as u32).min(max);
    let (x, y) = (clamp(left, page_width), clamp(top, page_height));
    let (x_end, y_end) = (clamp(right, page_width), clamp(bottom, page_height));
    Some(Word { text, confidence, x, y, width: x_end.saturating_sub(x), height: y_end.saturating_sub(y) })
}

/// Copy and free a string allocated by Tesseract.
fn take_tess_string(raw: *mut c_char) -> Option<String> {
    if raw.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated, allocated by Tesseract and freed exactly once here.
    let text = unsafe { CStr::from_ptr(raw) }.to_string_lossy().into_owned();
    unsafe { sys::TessDeleteText(raw) };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cer_collapses_whitespace() {
        assert_eq!(character_error_rate("a  b\nc", "a b c"), 0.0);
        assert!((character_error_rate("abcd", "abxd") - 0.25).abs() < 1e-9);
        assert_eq!(character_error_rate("", ""), 0.0);
    }

    #[test]
    fn size_cap() {
        assert!(check_size(1000, 1000, 1.0).is_ok());
        assert!(matches!(check_size(1001, 1000, 1.0), Err(OcrError::TooLarge { .. })));
    }

    #[test]
    fn osd_rotation_and_thresholds() {
        let osd = |degrees, orientation_confidence, script_confidence| Osd {
            orientation_degrees: degrees,
            orientation_confidence,
            script: "Latin".into(),
            script_confidence,
        };
        let rotation = |osd| Detected::from_osd(osd).map(|d| d.rotation);
        assert_eq!(rotation(osd(270, 9.0, 3.0)), Some(90));
        assert_eq!(rotation(osd(90, 9.0, 3.0)), Some(270));
        assert_eq!(rotation(osd(180, 9.0, 3.0)), Some(180));
        assert_eq!(rotation(osd(90, 0.5, 3.0)), Some(0));
        assert!(Detected::from_osd(osd(90, 0.1, 0.1)).is_none());
        assert!(Detected::from_osd(osd(180, 9.0, 3.0)).is_some_and(|d| d.trusted));
        assert!(Detected::from_osd(osd(180, 2.6, 0.4)).is_some_and(|d| !d.trusted && d.script.is_none()));
    }

    #[test]
    fn tiff_directory_walk_survives_garbage() {
        assert_eq!(tiff_page_count(b"II*\0\x08\0\0\0", 10), 0);
        assert_eq!(tiff_page_count(b"not a tiff", 10), 0);
        // One directory with no entries, linking to itself: counted once.
        let looped = b"II*\0\x08\0\0\0\0\0\x08\0\0\0";
        assert_eq!(tiff_page_count(looped, 10), 1);
        // Big-endian, two empty directories.
        let two = b"MM\0*\0\0\0\x08\0\0\0\0\0\x0e\0\0\0\0\0\0";
        assert_eq!(tiff_page_count(two, 10), 2);
        assert_eq!(tiff_page_count(two, 1), 1);
    }
}
