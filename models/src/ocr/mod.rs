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
//! 2. Transparency is flattened onto white. A page with almost no dark pixels is blank: it is
//!    reported as such and not read.
//! 3. A page skewed by 1 to 15 degrees is straightened (Tesseract loses whole lines from about 3
//!    degrees on).
//! 4. With no languages given, a page that Leptonica's ascender/descender measure finds surely
//!    upright is read with the Latin traineddata, and that reading is kept when it is good (mean
//!    word confidence 0.8, dictionary rate not poor): OSD costs as much as reading a small page.
//!    Otherwise Tesseract's orientation and script detection (`osd.traineddata`)
//!    runs: the page is turned upright and the traineddata for the detected script is chosen
//!    among the installed ones. When OSD finds too little text, the page is read as it is, in
//!    English. A turned page that reads poorly is read as it was too, and the better reading
//!    kept. A script with no traineddata installed is read in English and, unless that reads
//!    well, refused with the package to install. With languages given, OSD is skipped.
//! 5. Tesseract reads the page with automatic layout analysis (as the CLI does); text, word boxes
//!    and confidences come from the same recognition.
//!
//! Every page is read on its own: nothing learnt from one page carries over to the next.
//!
//! # Layout
//!
//! `mod.rs` holds the engine and its types; `ffi.rs` every call into Tesseract and Leptonica
//! (and all the `unsafe`); `policy.rs` the measured thresholds for turning and straightening
//! pages and the choice of languages per script; `tiff.rs` counts TIFF pages without decoding.
//! Evaluation helpers (character error rate, TIFF splitting) are in `crate::eval`, behind the
//! `eval` feature.

mod ffi;
mod policy;
mod tiff;

use std::os::raw::c_int;
use std::path::{Path, PathBuf};

use leptess::capi as sys;

use ffi::{Pix, TessApi};
use policy::Detected;
pub use policy::script_coverage;
pub use tiff::tiff_page_count;
#[cfg(feature = "eval")]
pub(crate) use ffi::decode_tiff_pages;

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

// Also the word of docpipe's published result (`OcrWord` in its schema), so the engine's word and
// the contract's cannot drift apart.
/// A recognised word with its box in pixels of the upright page (origin top left).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "OcrWord"))]
#[serde(deny_unknown_fields)]
pub struct Word {
    pub text: String,
    /// 0 to 1.
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
    /// Share of the page's words of three letters or more that the recogniser found in its
    /// language's dictionary; `None` when there are too few such words to say.
    pub dictionary_rate: Option<f32>,
    /// The reading is poor by its confidence or its dictionary rate: check it against the image.
    pub low_confidence: bool,
    /// Clockwise rotation applied to make the page upright: 0, 90, 180 or 270.
    pub rotation_degrees: u32,
    /// Skew straightened before reading, in degrees (0 when the page was straight enough).
    pub deskew_degrees: f32,
    /// Script the page was read as (automatic mode only), e.g. "Latin", "Cyrillic", "Han".
    pub script: Option<String>,
    /// How automatic mode settled the orientation and script (`None` when languages were given).
    pub detection: Option<Detection>,
    /// Traineddata used, e.g. `["ara", "fas"]`.
    pub languages: Vec<String>,
    /// Size of the upright (and deskewed) page, in pixels; word boxes are relative to it.
    pub width: u32,
    pub height: u32,
    pub words: Vec<Word>,
    /// Dark pixels per million when the page was found blank and not read (no text, no words).
    pub blank_dark_ppm: Option<u64>,
}

/// How automatic mode settled a page's orientation and script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "OcrDetection"))]
pub enum Detection {
    /// Tesseract's orientation and script detection (`osd.traineddata`) turned the page and
    /// chose the traineddata.
    Osd,
    /// Leptonica's ascender/descender measure found Roman text upright, and the page read well
    /// with the Latin traineddata, so orientation and script detection did not run.
    UprightLatin,
    /// Leptonica's measure found Roman text lying on its side; the page, turned upright, read
    /// well with the Latin traineddata, so orientation and script detection did not run.
    SidewaysLatin,
}

/// The Debian package that installs traineddata `code` (`chi_sim` → `tesseract-ocr-chi-sim`).
/// Script models are named by ISO 15924 codes there (`script/Cyrillic` is in
/// `tesseract-ocr-script-cyrl`), which docpipe does not map: it says which family to look in.
pub fn debian_package(code: &str) -> String {
    match code.strip_prefix("script/") {
        Some(script) => format!("tesseract-ocr-script-* (the one for {script})"),
        None => format!("tesseract-ocr-{}", code.to_ascii_lowercase().replace('_', "-")),
    }
}

#[derive(thiserror::Error, Debug)]
pub enum OcrError {
    #[error("cannot initialise Tesseract: {0}")]
    Init(String),
    #[error("traineddata for language {0:?} is not installed (Debian package {pkg})", pkg = debian_package(.0))]
    MissingLanguage(String),
    #[error("the page is in {script} script and no traineddata for it is installed: reading it as English gave mean word confidence {confidence:.2}, not kept (install {language}: Debian package {pkg})", pkg = debian_package(.language))]
    MissingScript { script: String, language: String, confidence: f32 },
    #[error("cannot decode image: {0}")]
    BadImage(String),
    #[error("image has {megapixels:.1} megapixels, more than the limit of {limit:.1}")]
    TooLarge { megapixels: f64, limit: f64 },
    #[error("recognition failed: {0}")]
    Recognize(String),
    #[error("recognition stopped at the {0:?} page limit")]
    Timeout(std::time::Duration),
}

/// How a page was turned before it was read, as its `OcrPage` records it: enough to show the
/// page as the recogniser saw it, with the word boxes where they belong.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageView {
    /// 0-based page of a TIFF; `None` for other images.
    pub tiff_page: Option<usize>,
    pub rotation_degrees: u32,
    pub deskew_degrees: f32,
    /// Refused above this size, as when it was read.
    pub max_megapixels: f64,
    /// Shrunk to at most this many pixels on its longer side (0: full size).
    pub max_side: u32,
}

/// The page as the recogniser saw it (alpha flattened, straightened by the recorded skew, turned
/// by the recorded rotation: the same calls, so the same pixels), as PNG. Word boxes of its
/// `OcrPage` are in this image's coordinates before `max_side` shrinks it.
pub fn render_page(image: &[u8], view: &PageView) -> Result<Vec<u8>, OcrError> {
    let mut pix = decode_page(image, view.tiff_page, view.max_megapixels)?;
    if view.deskew_degrees != 0.0 {
        pix = pix.rotated(view.deskew_degrees).ok_or_else(|| OcrError::BadImage("cannot straighten the page".to_string()))?;
    }
    if !view.rotation_degrees.is_multiple_of(360) {
        pix = pix.rotate_clockwise(view.rotation_degrees)?;
    }
    pix.shrunk_to(view.max_side)?.encode_png()
}

/// A page as both reading and `render_page` start from: the size checked from the header before
/// decoding (a bomb is refused unread) and again after, transparency flattened onto white.
fn decode_page(image: &[u8], tiff_page: Option<usize>, max_megapixels: f64) -> Result<Pix, OcrError> {
    let pix = match tiff_page {
        Some(index) => {
            let index = c_int::try_from(index).map_err(|_| OcrError::BadImage(format!("no TIFF page {index}")))?;
            check_tiff_page_header_size(image, index, max_megapixels)?;
            Pix::decode_tiff_page(image, index)?
        }
        None => {
            check_header_size(image, max_megapixels)?;
            Pix::decode(image)?
        }
    };
    check_size(pix.width(), pix.height(), max_megapixels)?;
    pix.flatten_alpha()
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
        let pix = decode_page(image, None, options.max_megapixels)?;
        self.recognize_pix(pix, options)
    }

    /// Recognise page `index` (0-based) of a TIFF without re-encoding it.
    pub fn recognize_tiff_page(&mut self, tiff: &[u8], index: usize, options: &OcrOptions) -> Result<OcrPage, OcrError> {
        let pix = decode_page(tiff, Some(index), options.max_megapixels)?;
        self.recognize_pix(pix, options)
    }

    /// Read a page from `decode_page`.
    fn recognize_pix(&mut self, pix: Pix, options: &OcrOptions) -> Result<OcrPage, OcrError> {
        // Tesseract drops whole lines from about 3 degrees of skew on, and OSD misjudges skewed
        // pages (tests/data/docs/testRotated+10.png, 10 degrees, came out "upside down").
        // A blank page is said to be blank, not read: OSD and layout analysis of an empty page
        // were most of the time of a long run of blank scans.
        if let Some(ppm) = policy::blank(&pix) {
            return Ok(OcrPage { blank_dark_ppm: Some(ppm), ..OcrPage::empty(pix.width(), pix.height()) });
        }
        let (pix, skew) = policy::deskew(pix);
        let mut page = if options.languages.is_empty() {
            self.read_automatic(&pix, options)?
        } else {
            let languages = self.check_languages(&options.languages)?;
            self.read_with(&pix, &languages, options)?
        };
        page.deskew_degrees = skew;
        Ok(page)
    }

    /// Read a page whose orientation and script are unknown. A page of Roman text that is surely
    /// upright, or surely lying on its side (turned upright first), is read as Latin first, and
    /// that reading is kept when it is good: OSD costs as much as reading a small page. Any other
    /// page, or one that read poorly, goes through OSD.
    fn read_automatic(&mut self, pix: &Pix, options: &OcrOptions) -> Result<OcrPage, OcrError> {
        let mut upright_reading = None;
        let orientation = pix.text_orientation();
        let latin = policy::languages_for_script(&self.installed, Some(policy::LATIN));
        if orientation.is_some_and(|(up, quarter)| policy::surely_upright(up, quarter)) {
            let page = self.read_with(pix, &latin, options)?;
            if policy::reads_well(&page) {
                return Ok(OcrPage { script: Some(policy::LATIN.to_owned()), detection: Some(Detection::UprightLatin), ..page });
            }
            upright_reading = Some(page);
        } else if let Some(rotation) = orientation.and_then(|(up, quarter)| policy::surely_sideways(up, quarter)) {
            let page = self.read_with(&pix.rotate_clockwise(rotation)?, &latin, options)?;
            if policy::reads_well(&page) {
                let detection = Some(Detection::SidewaysLatin);
                return Ok(OcrPage { script: Some(policy::LATIN.to_owned()), rotation_degrees: rotation, detection, ..page });
            }
        }
        let mut page = self.read_osd(pix, options, upright_reading)?;
        page.detection = Some(Detection::Osd);
        Ok(page)
    }

    /// Turn the page upright and pick languages from OSD, then read it. `upright_reading` is the
    /// page already read as it lies, with the languages in it: not read again when OSD leaves the
    /// page unturned and picks the same ones (a noisy Latin page, a Latin language outside the set).
    fn read_osd(&mut self, pix: &Pix, options: &OcrOptions, upright_reading: Option<OcrPage>) -> Result<OcrPage, OcrError> {
        let detected = self.detect_orientation_script(pix, options.dpi_hint)?;
        let script = detected.as_ref().and_then(|d| d.script.clone());
        let languages = policy::languages_for_script(&self.installed, script.as_deref());
        let (rotation, trusted) = detected.map_or((0, true), |d| (d.rotation, d.trusted));
        let mut page = if rotation == 0 {
            match upright_reading {
                Some(page) if page.languages == languages => page,
                _ => self.read_with(pix, &languages, options)?,
            }
        } else {
            let mut turned = self.read_with(&pix.rotate_clockwise(rotation)?, &languages, options)?;
            turned.rotation_degrees = rotation;
            // A turn on weak advice that reads poorly: read the page as it was too, keep the better.
            if policy::recheck_turn(trusted, turned.confidence) {
                let as_is = self.read_with(pix, &languages, options)?;
                if as_is.confidence > turned.confidence {
                    turned = as_is;
                }
            }
            turned
        };
        // A script OSD is sure of with no traineddata installed: the fallback's reading is
        // kept only when it is good (OSD misjudged a Latin page), else the page says what to install.
        if let Some(language) = script.as_deref().and_then(|s| policy::missing_for_script(&self.installed, s)) {
            if policy::wrong_alphabet(page.confidence) {
                return Err(OcrError::MissingScript { script: script.unwrap_or_default(), language: language.to_owned(), confidence: page.confidence });
            }
        }
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
        let dictionary_rate = policy::dictionary_rate(&words);
        let words: Vec<Word> = words.into_iter().map(|(word, _)| word).collect();
        let confidence = mean_confidence(&words);
        let low_confidence = policy::poor_reading(confidence, dictionary_rate);
        Ok(OcrPage { text, confidence, dictionary_rate, low_confidence, words, ..OcrPage::empty(width, height) })
    }
}

impl OcrPage {
    /// A page of this size with nothing read yet.
    fn empty(width: u32, height: u32) -> Self {
        OcrPage {
            text: String::new(),
            confidence: 0.0,
            dictionary_rate: None,
            low_confidence: false,
            rotation_degrees: 0,
            deskew_degrees: 0.0,
            script: None,
            detection: None,
            languages: Vec::new(),
            width,
            height,
            words: Vec::new(),
            blank_dark_ppm: None,
        }
    }
}

/// Installed traineddata codes in the tessdata directory (given, else found like
/// [`OcrEngine::new`] does), sorted; `osd` is not a language and is left out.
pub fn installed_languages(tessdata_dir: Option<&Path>) -> Vec<String> {
    let mut codes = installed_traineddata(tessdata_dir).1;
    codes.retain(|code| code != "osd");
    codes
}

/// The tessdata directory [`OcrEngine::new`] would use and every traineddata in it, `osd`
/// (orientation and script detection, which automatic mode needs) included.
pub fn installed_traineddata(tessdata_dir: Option<&Path>) -> (Option<PathBuf>, Vec<String>) {
    let dir = resolve_tessdata(tessdata_dir);
    let codes = dir.as_deref().map(list_traineddata).unwrap_or_default();
    (dir, codes)
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
    match ffi::header_size(image) {
        Some((width, height)) => check_size(width, height, limit),
        None => Ok(()),
    }
}

/// Like [`check_header_size`], for page `index` of a TIFF.
fn check_tiff_page_header_size(bytes: &[u8], index: c_int, limit: f64) -> Result<(), OcrError> {
    if !tiff::is_tiff(bytes) {
        return Err(OcrError::BadImage("not a TIFF file".to_string()));
    }
    match ffi::tiff_page_header_size(bytes, index) {
        Some((width, height)) => check_size(width, height, limit),
        None => Ok(()),
    }
}

fn check_size(width: u32, height: u32, limit: f64) -> Result<(), OcrError> {
    let megapixels = f64::from(width) * f64::from(height) / 1e6;
    if megapixels > limit {
        return Err(OcrError::TooLarge { megapixels, limit });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_cap() {
        assert!(check_size(1000, 1000, 1.0).is_ok());
        assert!(matches!(check_size(1001, 1000, 1.0), Err(OcrError::TooLarge { .. })));
    }
}
