//! OCR with Tesseract through its C API (bound by leptess/tesseract-sys). One [`OcrEngine`] per
//! thread, initialised once and reused; the caller sets `OMP_THREAD_LIMIT=1` (measured here:
//! otherwise Tesseract starts 4 OpenMP threads on 2 cores and a page takes about 10x longer).
//!
//! Automatic mode runs orientation and script detection (osd.traineddata) first, turns the page
//! upright, and picks the installed traineddata for the script.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::path::{Path, PathBuf};

use leptess::capi as sys;

#[derive(Debug, Clone, Default)]
pub struct OcrOptions {
    /// Tesseract codes (`eng`, `rus`, `chi_sim`); empty means automatic.
    pub languages: Vec<String>,
    pub max_megapixels: f64,
    /// Resolution to assume when the image does not say.
    pub dpi_hint: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub text: String,
    /// 0 to 1.
    pub confidence: f32,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OcrPage {
    pub text: String,
    /// Mean word confidence, 0 to 1.
    pub confidence: f32,
    /// Clockwise rotation applied to make the page upright.
    pub rotation_degrees: u32,
    pub script: Option<String>,
    pub languages: Vec<String>,
    pub width: u32,
    pub height: u32,
    pub words: Vec<Word>,
}

#[derive(Debug, thiserror::Error)]
pub enum OcrError {
    #[error("Tesseract could not start with languages {0:?} (traineddata installed?)")]
    Init(String),
    #[error("not an image Leptonica can read")]
    BadImage,
    #[error("image is {megapixels:.1} megapixels, over the limit of {limit}")]
    TooLarge { megapixels: f64, limit: f64 },
    #[error("recognition failed")]
    Recognize,
}

/// An owned Leptonica image.
struct Pix(*mut sys::Pix);

impl Pix {
    fn read(bytes: &[u8]) -> Result<Self, OcrError> {
        // SAFETY: Leptonica reads from the slice and returns an owned Pix or NULL.
        let pix = unsafe { sys::pixReadMem(bytes.as_ptr(), bytes.len()) };
        if pix.is_null() {
            Err(OcrError::BadImage)
        } else {
            Ok(Self(pix))
        }
    }

    fn tiff_page(bytes: &[u8], n: usize) -> Option<Self> {
        // SAFETY: as above; NULL past the last page.
        let pix = unsafe { sys::pixReadMemTiff(bytes.as_ptr(), bytes.len(), n as c_int) };
        (!pix.is_null()).then(|| Self(pix))
    }

    fn size(&self) -> (u32, u32) {
        // SAFETY: self.0 is a live Pix.
        unsafe { (sys::pixGetWidth(self.0).max(0) as u32, sys::pixGetHeight(self.0).max(0) as u32) }
    }

    fn resolution(&self) -> u32 {
        // SAFETY: self.0 is a live Pix.
        unsafe { sys::pixGetXRes(self.0).max(0) as u32 }
    }

    /// Rotated by `quads` quarter turns clockwise.
    fn rotated(&self, quads: u32) -> Result<Self, OcrError> {
        // SAFETY: returns a new Pix (or NULL); self is untouched.
        let pix = unsafe { sys::pixRotateOrth(self.0, quads as c_int) };
        if pix.is_null() {
            Err(OcrError::BadImage)
        } else {
            Ok(Self(pix))
        }
    }
}

impl Drop for Pix {
    fn drop(&mut self) {
        // SAFETY: we own the Pix; pixDestroy sets our pointer to NULL.
        unsafe { sys::pixDestroy(&mut self.0) }
    }
}

/// One initialised Tesseract instance.
struct Api(*mut sys::TessBaseAPI);

// SAFETY: a TessBaseAPI may move between threads; it is never shared (no Sync).
unsafe impl Send for Api {}

impl Api {
    fn new(tessdata: Option<&Path>, languages: &str) -> Result<Self, OcrError> {
        let path = tessdata.map(|p| CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default());
        let lang = CString::new(languages).map_err(|_| OcrError::Init(languages.into()))?;
        // SAFETY: create/init/delete per the C API contract; strings outlive the call.
        unsafe {
            let api = sys::TessBaseAPICreate();
            let rc = sys::TessBaseAPIInit3(api, path.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()), lang.as_ptr());
            if rc != 0 {
                sys::TessBaseAPIDelete(api);
                return Err(OcrError::Init(languages.into()));
            }
            // Quiet "Estimating resolution" chatter on stderr; not an error.
            let key = CString::new("debug_file").expect("static");
            let value = CString::new("/dev/null").expect("static");
            sys::TessBaseAPISetVariable(api, key.as_ptr(), value.as_ptr());
            Ok(Self(api))
        }
    }

    fn set_image(&mut self, pix: &Pix, dpi: u32) {
        // SAFETY: Tesseract copies what it needs from the Pix during SetImage2.
        unsafe {
            sys::TessBaseAPISetImage2(self.0, pix.0);
            sys::TessBaseAPISetSourceResolution(self.0, dpi as c_int);
        }
    }

    fn text(ptr: *mut c_char) -> String {
        if ptr.is_null() {
            return String::new();
        }
        // SAFETY: Tesseract returns a NUL-terminated string we must free with TessDeleteText.
        unsafe {
            let text = CStr::from_ptr(ptr).to_string_lossy().into_owned();
            sys::TessDeleteText(ptr);
            text
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        // SAFETY: we own the handle.
        unsafe {
            sys::TessBaseAPIEnd(self.0);
            sys::TessBaseAPIDelete(self.0);
        }
    }
}

pub struct OcrEngine {
    tessdata: Option<PathBuf>,
    installed: Vec<String>,
    osd: Option<Api>,
    /// Recognisers by language string, created on first use and kept.
    engines: HashMap<String, Api>,
}

impl OcrEngine {
    pub fn new(tessdata: Option<&Path>) -> Result<Self, OcrError> {
        let installed = installed_languages(tessdata);
        if installed.is_empty() {
            return Err(OcrError::Init("no traineddata installed".into()));
        }
        Ok(Self { tessdata: tessdata.map(Path::to_path_buf), installed, osd: None, engines: HashMap::new() })
    }

    /// Recognise one encoded page image (PNG, JPEG, TIFF first page, BMP, GIF, WebP, JP2).
    pub fn recognize(&mut self, image: &[u8], options: &OcrOptions) -> Result<OcrPage, OcrError> {
        let pix = Pix::read(image)?;
        self.recognize_pix(pix, options)
    }

    /// Recognise page `n` (0-based) of a TIFF.
    pub fn recognize_tiff_page(&mut self, tiff: &[u8], n: usize, options: &OcrOptions) -> Result<OcrPage, OcrError> {
        let pix = Pix::tiff_page(tiff, n).ok_or(OcrError::BadImage)?;
        self.recognize_pix(pix, options)
    }

    fn recognize_pix(&mut self, pix: Pix, options: &OcrOptions) -> Result<OcrPage, OcrError> {
        let (width, height) = pix.size();
        let megapixels = f64::from(width) * f64::from(height) / 1e6;
        if options.max_megapixels > 0.0 && megapixels > options.max_megapixels {
            return Err(OcrError::TooLarge { megapixels, limit: options.max_megapixels });
        }
        let dpi = match pix.resolution() {
            r if (70..=2400).contains(&r) => r,
            _ => options.dpi_hint.unwrap_or(300),
        };
        let (rotation, script) = if options.languages.is_empty() { self.orientation(&pix, dpi) } else { (0, None) };
        let languages = if options.languages.is_empty() {
            self.languages_for(script.as_deref())
        } else {
            options.languages.iter().filter(|l| self.installed.contains(l)).cloned().collect::<Vec<_>>()
        };
        let languages = if languages.is_empty() { vec!["eng".to_owned()] } else { languages };
        let upright = if rotation == 0 { pix } else { pix.rotated(rotation / 90)? };
        let (uw, uh) = upright.size();

        let key = languages.join("+");
        if !self.engines.contains_key(&key) {
            let api = Api::new(self.tessdata.as_deref(), &key)?;
            self.engines.insert(key.clone(), api);
        }
        let api = self.engines.get_mut(&key).expect("inserted above");
        api.set_image(&upright, dpi);
        // SAFETY: an image is set; NULL monitor means no progress callback.
        if unsafe { sys::TessBaseAPIRecognize(api.0, std::ptr::null_mut()) } != 0 {
            return Err(OcrError::Recognize);
        }
        // SAFETY: recognition ran; these return owned strings or a plain int.
        let text = Api::text(unsafe { sys::TessBaseAPIGetUTF8Text(api.0) });
        let tsv = Api::text(unsafe { sys::TessBaseAPIGetTsvText(api.0, 0) });
        let mean = unsafe { sys::TessBaseAPIMeanTextConf(api.0) };
        Ok(OcrPage {
            text: text.trim_end().to_owned(),
            confidence: (mean.clamp(0, 100) as f32) / 100.0,
            rotation_degrees: rotation,
            script,
            languages,
            width: uw,
            height: uh,
            words: words(&tsv),
        })
    }

    /// Clockwise rotation that makes the page upright, and its script, from OSD.
    fn orientation(&mut self, pix: &Pix, dpi: u32) -> (u32, Option<String>) {
        if !self.installed.iter().any(|l| l == "osd") {
            return (0, None);
        }
        if self.osd.is_none() {
            match Api::new(self.tessdata.as_deref(), "osd") {
                Ok(api) => self.osd = Some(api),
                Err(_) => return (0, None),
            }
        }
        let osd = self.osd.as_mut().expect("created above");
        osd.set_image(pix, dpi);
        let (mut degrees, mut orient_conf, mut script_conf): (c_int, f32, f32) = (0, 0.0, 0.0);
        let mut script: *const c_char = std::ptr::null();
        // SAFETY: out-pointers are valid; the script name is freed with TessDeleteText.
        let ok = unsafe { sys::TessBaseAPIDetectOrientationScript(osd.0, &mut degrees, &mut orient_conf, &mut script, &mut script_conf) };
        let script = (!script.is_null()).then(|| Api::text(script as *mut c_char));
        if ok == 0 {
            return (0, None);
        }
        // Tesseract reports how far the page is turned counter-clockwise; undo it clockwise.
        let rotation = if orient_conf >= 1.5 { (degrees.rem_euclid(360)) as u32 } else { 0 };
        (rotation, script.filter(|_| script_conf > 0.5))
    }

    /// Installed traineddata for an OSD script name.
    fn languages_for(&self, script: Option<&str>) -> Vec<String> {
        let wanted: &[&str] = match script {
            Some("Cyrillic") => &["rus"],
            Some("Han") | Some("HanS") => &["chi_sim"],
            Some("HanT") => &["chi_tra", "chi_sim"],
            Some("Arabic") => &["ara"],
            Some("Hangul") => &["kor"],
            Some("Japanese") | Some("Katakana") | Some("Hiragana") => &["jpn"],
            Some("Greek") => &["ell"],
            Some("Hebrew") => &["heb"],
            Some("Devanagari") => &["hin"],
            Some("Thai") => &["tha"],
            _ => &["eng"],
        };
        wanted.iter().find(|l| self.installed.iter().any(|i| i == *l)).map(|l| vec![l.to_string()]).unwrap_or_default()
    }
}

/// Words from Tesseract's TSV output (level 5 rows).
fn words(tsv: &str) -> Vec<Word> {
    tsv.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 12 || f[0] != "5" {
                return None;
            }
            let n = |i: usize| f[i].parse::<i64>().ok().map(|v| v.max(0) as u32);
            let text = f[11].trim();
            if text.is_empty() {
                return None;
            }
            Some(Word {
                text: text.to_owned(),
                confidence: f[10].parse::<f32>().ok()?.clamp(0.0, 100.0) / 100.0,
                x: n(6)?,
                y: n(7)?,
                width: n(8)?,
                height: n(9)?,
            })
        })
        .collect()
}

/// Pages in a TIFF (Leptonica reads each), capped at `limit`.
pub fn tiff_page_count(bytes: &[u8], limit: usize) -> usize {
    (0..limit).take_while(|&n| Pix::tiff_page(bytes, n).is_some()).count()
}

/// Installed traineddata codes.
pub fn installed_languages(tessdata: Option<&Path>) -> Vec<String> {
    let dirs: Vec<PathBuf> = match tessdata {
        Some(dir) => vec![dir.to_path_buf()],
        None => {
            let mut dirs: Vec<PathBuf> = std::env::var_os("TESSDATA_PREFIX").map(PathBuf::from).into_iter().collect();
            dirs.extend(["/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata", "/usr/share/tessdata"].map(PathBuf::from));
            dirs
        }
    };
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut langs: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".traineddata").map(str::to_owned))
            .collect();
        if !langs.is_empty() {
            langs.sort();
            return langs;
        }
    }
    Vec::new()
}
