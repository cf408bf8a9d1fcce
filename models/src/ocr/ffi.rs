//! The C side of OCR: owned Leptonica images ([`Pix`]) and Tesseract instances ([`TessApi`])
//! over the raw bindings `leptess` re-exports. Every `unsafe` block of the OCR engine is here,
//! each with its reason; what to do with a page (rotate it, straighten it, which languages) is
//! decided in `policy.rs` and `mod.rs`.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::path::Path;
use std::ptr::NonNull;

use leptess::capi as sys;

use super::{OcrError, Word};

/// Resolutions Tesseract believes (its `kMinCredibleResolution`..=`kMaxCredibleResolution`).
const CREDIBLE_DPI: std::ops::RangeInclusive<i32> = 70..=2400;

/// Width and height from an encoded image's header, without decoding it; `None` when Leptonica
/// cannot read the header.
pub(super) fn header_size(image: &[u8]) -> Option<(u32, u32)> {
    let (mut format, mut w, mut h, mut bps, mut spp, mut cmap) = (0, 0, 0, 0, 0, 0);
    // SAFETY: out-pointers are live locals; Leptonica only reads `image`.
    let ok = unsafe {
        sys::pixReadHeaderMem(image.as_ptr(), image.len(), &mut format, &mut w, &mut h, &mut bps, &mut spp, &mut cmap)
    } == 0;
    (ok && w > 0 && h > 0).then_some((w as u32, h as u32))
}

/// Like [`header_size`], for page `index` of a TIFF.
pub(super) fn tiff_page_header_size(tiff: &[u8], index: c_int) -> Option<(u32, u32)> {
    let (mut w, mut h, mut bps, mut spp, mut res, mut cmap, mut format) = (0, 0, 0, 0, 0, 0, 0);
    // SAFETY: out-pointers are live locals; Leptonica only reads `tiff`.
    let ok = unsafe {
        sys::readHeaderMemTiff(tiff.as_ptr(), tiff.len(), index, &mut w, &mut h, &mut bps, &mut spp, &mut res, &mut cmap, &mut format)
    } == 0;
    (ok && w > 0 && h > 0).then_some((w as u32, h as u32))
}

/// Every page of a (multi-page) TIFF, decoded in order.
#[cfg(feature = "eval")]
pub(crate) fn decode_tiff_pages(bytes: &[u8]) -> Result<Vec<Pix>, OcrError> {
    if !super::tiff::is_tiff(bytes) {
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
        pages.push(pix);
        if offset == 0 {
            break;
        }
    }
    Ok(pages)
}

/// Raw result of `TessBaseAPIDetectOrientationScript`.
pub(super) struct Osd {
    pub(super) orientation_degrees: i32,
    pub(super) orientation_confidence: f32,
    pub(super) script: String,
    pub(super) script_confidence: f32,
}

/// Owned Leptonica image.
pub(crate) struct Pix(NonNull<sys::PIX>);

// SAFETY: a Pix has one owner at a time; Leptonica images have no thread affinity.
unsafe impl Send for Pix {}

impl Pix {
    fn from_raw(raw: *mut sys::PIX) -> Option<Pix> {
        NonNull::new(raw).map(Pix)
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Pix, OcrError> {
        // SAFETY: Leptonica only reads the buffer; null means it could not decode it.
        let raw = unsafe { sys::pixReadMem(bytes.as_ptr(), bytes.len()) };
        Pix::from_raw(raw)
            .ok_or_else(|| OcrError::BadImage("unknown or corrupt image format".to_string()))?
            .non_empty()
    }

    pub(super) fn decode_tiff_page(bytes: &[u8], index: c_int) -> Result<Pix, OcrError> {
        if !super::tiff::is_tiff(bytes) {
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

    pub(super) fn width(&self) -> u32 {
        // SAFETY: valid pix for the lifetime of self.
        unsafe { sys::pixGetWidth(self.ptr()) }.max(0) as u32
    }

    pub(super) fn height(&self) -> u32 {
        // SAFETY: as above.
        unsafe { sys::pixGetHeight(self.ptr()) }.max(0) as u32
    }

    pub(super) fn depth(&self) -> i32 {
        // SAFETY: as above.
        unsafe { sys::pixGetDepth(self.ptr()) }
    }

    pub(super) fn y_resolution(&self) -> i32 {
        // SAFETY: as above.
        unsafe { sys::pixGetYRes(self.ptr()) }
    }

    /// Transparent pixels over white: Tesseract ignores alpha, and transparent areas are often
    /// stored as black, which would hide dark text.
    pub(super) fn flatten_alpha(self) -> Result<Pix, OcrError> {
        // SAFETY: valid pix.
        let has_alpha = self.depth() == 32 && unsafe { sys::pixGetSpp(self.ptr()) } == 4;
        if !has_alpha {
            return Ok(self);
        }
        // SAFETY: returns a new pix (or null) and leaves ours alone.
        let raw = unsafe { sys::pixAlphaBlendUniform(self.ptr(), 0xffff_ff00) };
        Pix::from_raw(raw).ok_or_else(|| OcrError::BadImage("cannot remove the alpha channel".to_string()))
    }

    /// The page in black and white for the searches below: itself when it is 1 bpp already,
    /// else pixels darker than `threshold` (0-255 grey) become foreground.
    fn with_bilevel<T>(&self, threshold: i32, search: impl FnOnce(&Pix) -> Option<T>) -> Option<T> {
        if self.depth() == 1 {
            return search(self);
        }
        // SAFETY: returns a new pix (or null) and leaves ours alone.
        let binary = Pix::from_raw(unsafe { sys::pixConvertTo1(self.ptr(), threshold) })?;
        search(&binary)
    }

    /// Leptonica's skew search on the page (binarized first when it is not 1 bpp): the angle in
    /// degrees that [`Pix::rotated`] undoes, and its confidence. Searches up to `max_degrees`
    /// either way; Leptonica's default reductions and steps (sweep at 1/4 size in 1 degree steps,
    /// refine at 1/2 size).
    pub(super) fn find_skew(&self, max_degrees: f32) -> Option<(f32, f32)> {
        self.with_bilevel(130, |bilevel| {
            let (mut angle, mut confidence) = (0f32, 0f32);
            // SAFETY: valid 1 bpp pix and live out-pointers.
            let failed = unsafe {
                sys::pixFindSkewSweepAndSearch(bilevel.ptr(), &mut angle, &mut confidence, 4, 2, max_degrees, 1.0, 0.01)
            } != 0;
            (!failed).then_some((angle, confidence))
        })
    }

    /// Leptonica's text orientation measure (ascenders and descenders of Roman text, on the page
    /// in black and white): how surely the text is upright (> 0) rather than upside down (< 0),
    /// and how surely it is turned a quarter (either sign) rather than not.
    pub(super) fn text_orientation(&self) -> Option<(f32, f32)> {
        self.with_bilevel(130, |bilevel| {
            let (mut up, mut left) = (0f32, 0f32);
            // SAFETY: valid 1 bpp pix and live out-pointers; 0 asks for Leptonica's default count.
            let failed = unsafe { sys::pixOrientDetect(bilevel.ptr(), &mut up, &mut left, 0, 0) } != 0;
            (!failed).then_some((up, left))
        })
    }

    /// How many pixels are darker than `threshold` (0-255 grey; foreground of a 1 bpp page).
    pub(super) fn dark_pixels(&self, threshold: i32) -> Option<u64> {
        self.with_bilevel(threshold, |bilevel| {
            let mut count = 0;
            // SAFETY: valid 1 bpp pix, a live out-pointer; a null table makes Leptonica build its own.
            let failed = unsafe { sys::pixCountPixels(bilevel.ptr(), &mut count, std::ptr::null_mut()) } != 0;
            (!failed).then_some(count.max(0) as u64)
        })
    }

    /// The page rotated by `degrees` (as [`Pix::find_skew`] measures them), white brought in at
    /// the edges; `None` when Leptonica fails.
    pub(super) fn rotated(&self, degrees: f32) -> Option<Pix> {
        // Shearing keeps bilevel pages bilevel; area mapping smooths grey and colour ones.
        let method = if self.depth() == 1 { sys::L_ROTATE_SHEAR } else { sys::L_ROTATE_AREA_MAP };
        // SAFETY: returns a new pix (or null) and leaves ours alone.
        let raw = unsafe {
            sys::pixRotate(self.ptr(), degrees.to_radians(), method as c_int, sys::L_BRING_IN_WHITE as c_int, 0, 0)
        };
        Pix::from_raw(raw)
    }

    pub(super) fn rotate_clockwise(&self, degrees: u32) -> Result<Pix, OcrError> {
        // SAFETY: returns a new pix (or null) and leaves ours alone.
        let raw = unsafe { sys::pixRotateOrth(self.ptr(), (degrees / 90 % 4) as c_int) };
        Pix::from_raw(raw).ok_or_else(|| OcrError::Recognize(format!("cannot rotate the page by {degrees} degrees")))
    }

    /// At most `max_side` pixels on its longer side (greyscale when shrunk, so a bilevel scan
    /// stays readable); unchanged when already small enough.
    pub(super) fn shrunk_to(self, max_side: u32) -> Result<Pix, OcrError> {
        let longer = self.width().max(self.height());
        if longer <= max_side || max_side == 0 {
            return Ok(self);
        }
        let factor = max_side as f32 / longer as f32;
        // SAFETY: both return a new pix (or null) and leave the source alone.
        let raw = unsafe {
            if self.depth() == 1 {
                sys::pixScaleToGray(self.ptr(), factor)
            } else {
                sys::pixScale(self.ptr(), factor, factor)
            }
        };
        Pix::from_raw(raw).ok_or_else(|| OcrError::BadImage("cannot scale the page".to_string()))
    }

    /// PNG, for showing the page.
    pub(super) fn encode_png(&self) -> Result<Vec<u8>, OcrError> {
        self.write_mem(sys::IFF_PNG as c_int)
    }

    fn write_mem(&self, format: c_int) -> Result<Vec<u8>, OcrError> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: on success Leptonica allocates `data`, freed below with lept_free.
        let failed = unsafe { sys::pixWriteMem(&mut data, &mut size, self.ptr(), format) } != 0;
        if failed || data.is_null() {
            return Err(OcrError::BadImage("cannot encode the page".to_string()));
        }
        // SAFETY: `data` holds `size` bytes written by Leptonica; freed exactly once.
        let bytes = unsafe { std::slice::from_raw_parts(data, size) }.to_vec();
        unsafe { sys::lept_free(data.cast()) };
        Ok(bytes)
    }

    /// Losslessly encoded: bilevel pages as G4 TIFF (small, keeps the resolution), others as PNG.
    #[cfg(feature = "eval")]
    pub(crate) fn encode_lossless(&self) -> Result<Vec<u8>, OcrError> {
        let format = if self.depth() == 1 { sys::IFF_TIFF_G4 } else { sys::IFF_PNG };
        self.write_mem(format as c_int)
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
pub(super) struct TessApi(NonNull<sys::TessBaseAPI>);

// SAFETY: a TessBaseAPI may be used from any thread as long as one thread uses it at a time,
// which `&mut self` on every use guarantees.
unsafe impl Send for TessApi {}

impl TessApi {
    pub(super) fn create() -> Result<TessApi, OcrError> {
        // SAFETY: plain constructor.
        let raw = unsafe { sys::TessBaseAPICreate() };
        NonNull::new(raw).map(TessApi).ok_or_else(|| OcrError::Init("TessBaseAPICreate failed".to_string()))
    }

    pub(super) fn init(&mut self, tessdata: Option<&Path>, languages: &str, mode: sys::TessOcrEngineMode) -> Result<(), OcrError> {
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

    pub(super) fn set_page_seg_mode(&mut self, mode: sys::TessPageSegMode) {
        // SAFETY: valid handle.
        unsafe { sys::TessBaseAPISetPageSegMode(self.0.as_ptr(), mode) };
    }

    /// Hand over the page; the resolution hint applies only when the file states no credible one.
    pub(super) fn set_image(&mut self, pix: &Pix, dpi_hint: Option<u32>) {
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
    pub(super) fn recognize(&mut self, deadline: Option<std::time::Duration>) -> Result<(), OcrError> {
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

    pub(super) fn utf8_text(&mut self) -> Option<String> {
        // SAFETY: valid handle; the returned string is ours to free.
        take_tess_string(unsafe { sys::TessBaseAPIGetUTF8Text(self.0.as_ptr()) })
    }

    /// Words of the last recognition, boxes clamped to the page.
    /// Recognised words, each with whether the recogniser found it in its language's dictionary.
    pub(super) fn words(&mut self, page_width: u32, page_height: u32) -> Vec<(Word, bool)> {
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

    pub(super) fn detect_orientation_script(&mut self) -> Option<Osd> {
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
    pub(super) fn clear(&mut self) {
        // SAFETY: valid handle.
        unsafe { sys::TessBaseAPIClear(self.0.as_ptr()) };
    }

    /// Drop what Tesseract learns across pages (document dictionary, adapted classes).
    pub(super) fn forget_document(&mut self) {
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
) -> Option<(Word, bool)> {
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
    let in_dictionary = TessResultIteratorWordIsFromDictionary(iterator) != 0;
    Some((Word { text, confidence, x, y, width: x_end.saturating_sub(x), height: y_end.saturating_sub(y) }, in_dictionary))
}

// In Tesseract's C API (capi.h) since 3.02, but not in the bindings leptess re-exports.
extern "C" {
    fn TessResultIteratorWordIsFromDictionary(handle: *const sys::TessResultIterator) -> c_int;
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
