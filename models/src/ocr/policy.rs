//! What the engine decides about a page, apart from the C calls that carry it out: when to turn
//! it (OSD confidence thresholds), when to straighten it (skew thresholds), and which
//! traineddata to read it with (script to languages). The thresholds were measured on the test
//! pages named beside them; change them only with new measurements.

use super::ffi::{Osd, Pix};

/// The script of the Roman alphabet, as OSD names it.
pub(super) const LATIN: &str = "Latin";

/// Leptonica's upright measure from which a page of Roman text is surely upright (its own default
/// for deciding, `DefaultMinUpDownConf`). Measured: upright Latin test pages 9.1 to 48; turned
/// ones -11.6 to 0.6; a Russian page -9.1, a Chinese one 7.5, Greek and Hebrew under 1.
const MIN_UPRIGHT: f32 = 8.0;

/// ...and by how much it must exceed the quarter-turn measure (Leptonica's `DefaultMinUpDownRatio`).
const MIN_UPRIGHT_RATIO: f32 = 2.5;

/// The same two bounds for the quarter-turn measure: a page of Roman text lying on its side.
/// Measured: the sideways test pages ±11.6 (up measure ±0.65); upright pages of every script
/// -7.6 to 1.5 (the newspaper page -7.6, with an up measure of 48). Upside-down pages are left to
/// OSD: a Russian page's up measure (-9.1) is as low as an upside-down Latin page's (-11.6).
const MIN_SIDEWAYS: f32 = MIN_UPRIGHT;

/// Mean word confidence from which a reading taken without OSD is kept. Upright Latin pages
/// read at 0.94 to 0.96; a turned page read as it lies 0.40 to 0.67, a Russian page read as
/// English 0.46, Greek 0.50.
const GOOD_READING: f32 = 0.8;

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

/// Traineddata to load for an OSD script, main language first; only installed ones are used,
/// at most [`MAX_AUTO_LANGUAGES`]. Latin takes the big Western European languages as well as
/// English: Tesseract tries them only on words the main language reads poorly, which fixes
/// accented words (eurotext: 2.2% CER with eng alone, 1.2% with eng+deu+fra+spa) at no loss on
/// English pages, for about 20% more recognition time on a noisy English page (8087_054.3B:
/// 1.6 s with eng, 1.9 s with the four).
const SCRIPT_LANGUAGES: &[(&str, &[&str])] = &[
    (LATIN, &["eng", "deu", "fra", "spa", "ita", "por"]),
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

/// Dark pixels per million below which a page is blank and is not read at all. On 300 dpi pages
/// a lone page number ("12", 12 pt) is 64 per million below mid-grey, one line of signature 480,
/// the text pages of tests/data/ocr 95,000 to 184,000, a white page 0: under this a page holds at
/// most a character or a few specks, which OCR reads as nothing or as noise, after its costliest
/// work (orientation and layout analysis of an empty page).
const BLANK_DARK_PPM: u64 = 50;

/// Grey level below which a pixel counts as dark for [`BLANK_DARK_PPM`]: well above mid-grey, so
/// that faint writing (pencil, a faded fax, light print), which Tesseract's own adaptive
/// thresholding can still read, keeps a page from being called blank. Doubt goes to OCR.
const BLANK_DARK_BELOW: i32 = 200;

/// Cap on traineddata loaded together: every extra model costs memory and time on uncertain
/// words, and a wrong one can swap a right word for a wrong one.
const MAX_AUTO_LANGUAGES: usize = 4;

/// OSD verdict after the confidence thresholds.
#[derive(Debug)]
pub(super) struct Detected {
    /// Clockwise degrees that make the page upright.
    pub(super) rotation: u32,
    /// Confident enough to turn the page without checking the reading.
    pub(super) trusted: bool,
    pub(super) script: Option<String>,
}

impl Detected {
    /// `None` when OSD is confident of neither the orientation nor the script.
    pub(super) fn from_osd(osd: Osd) -> Option<Detected> {
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

/// Words of at least this many letters count towards a page's dictionary rate: shorter ones are
/// in every dictionary or none.
const DICTIONARY_MIN_LETTERS: usize = 3;

/// Fewer counted words than this and a page has no dictionary rate.
const DICTIONARY_MIN_WORDS: usize = 10;

/// Dictionary rate under which a reading is poor whatever its confidence. Measured: good readings
/// 0.88 to 1.0 (eurotext, which mixes four languages, 0.45); an English page read with chi_sim
/// 0.02 at confidence 0.88, with rus 0.21, a Russian page read as English 0.0, an upside-down page
/// 0.31. Chinese read with chi_sim has too few words of three letters to have a rate.
const POOR_DICTIONARY_RATE: f32 = 0.3;

/// Share of the words of [`DICTIONARY_MIN_LETTERS`] letters or more that the recogniser found
/// in its dictionary, or `None` when there are fewer than [`DICTIONARY_MIN_WORDS`] of them.
pub(super) fn dictionary_rate(words: &[(super::Word, bool)]) -> Option<f32> {
    let counted: Vec<bool> = words
        .iter()
        .filter(|(word, _)| word.text.chars().filter(|c| c.is_alphabetic()).count() >= DICTIONARY_MIN_LETTERS)
        .map(|(_, in_dictionary)| *in_dictionary)
        .collect();
    (counted.len() >= DICTIONARY_MIN_WORDS).then(|| counted.iter().filter(|&&d| d).count() as f32 / counted.len() as f32)
}

/// Whether Leptonica's measures say the text is upright Roman text (see [`MIN_UPRIGHT`]).
pub(super) fn surely_upright(up: f32, quarter: f32) -> bool {
    up >= MIN_UPRIGHT && up >= MIN_UPRIGHT_RATIO * quarter.abs()
}

/// The clockwise turn (90 or 270) that makes a page of Roman text lying on its side upright, when
/// Leptonica's measures are sure of it (see [`MIN_SIDEWAYS`]): a positive quarter-turn measure
/// is text turned a quarter anticlockwise.
pub(super) fn surely_sideways(up: f32, quarter: f32) -> Option<u32> {
    (quarter.abs() >= MIN_SIDEWAYS && quarter.abs() >= MIN_UPRIGHT_RATIO * up.abs()).then_some(if quarter > 0.0 { 90 } else { 270 })
}

/// Whether a reading taken without orientation and script detection is good enough to keep.
pub(super) fn reads_well(page: &super::OcrPage) -> bool {
    page.confidence >= GOOD_READING && !page.low_confidence
}

/// Whether a page's reading is poor enough that a person should check it against the image.
pub(super) fn poor_reading(confidence: f32, dictionary_rate: Option<f32>) -> bool {
    confidence < POOR_PAGE_CONFIDENCE || dictionary_rate.is_some_and(|rate| rate < POOR_DICTIONARY_RATE)
}

/// Whether a page turned on OSD advice should also be read as it was, the better reading kept.
/// OSD misjudges some pages (monospaced text came out "180" with confidence 2.6): a turn on weak
/// advice that reads poorly is checked. Costs a second recognition only on pages that read
/// poorly anyway.
pub(super) fn recheck_turn(trusted: bool, turned_confidence: f32) -> bool {
    !trusted && turned_confidence < POOR_PAGE_CONFIDENCE
}

/// Dark pixels per million when the page is blank by [`BLANK_DARK_PPM`], else `None`.
pub(super) fn blank(pix: &Pix) -> Option<u64> {
    let area = u64::from(pix.width()) * u64::from(pix.height());
    let dark = pix.dark_pixels(BLANK_DARK_BELOW)?;
    let ppm = dark.saturating_mul(1_000_000) / area.max(1);
    (ppm < BLANK_DARK_PPM).then_some(ppm)
}

/// The language whose traineddata a page in `script` needs, when the script is one docpipe
/// knows and nothing installed covers it (no language of it, no `script/` model).
pub(super) fn missing_for_script(installed: &[String], script: &str) -> Option<&'static str> {
    let (_, candidates) = SCRIPT_LANGUAGES.iter().find(|(name, _)| *name == script)?;
    installed_for_script(installed, script).is_empty().then(|| candidates[0])
}

/// Whether a page read with the fallback language, for want of its script's traineddata, read
/// so poorly that the text is the wrong alphabet's guesses (Greek read as English: 0.50, Hebrew
/// 0.36) rather than a page OSD misjudged (which reads well in English).
pub(super) fn wrong_alphabet(confidence: f32) -> bool {
    confidence < POOR_PAGE_CONFIDENCE
}

/// For every script docpipe maps, the traineddata automatic OCR reads it with among
/// `installed`, or (as the error) the language to install for it.
pub fn script_coverage(installed: &[String]) -> Vec<(&'static str, Result<Vec<String>, &'static str>)> {
    SCRIPT_LANGUAGES
        .iter()
        .map(|(script, _)| match missing_for_script(installed, script) {
            Some(language) => (*script, Err(language)),
            None => (*script, Ok(installed_for_script(installed, script))),
        })
        .collect()
}

/// Installed traineddata for a script; English when the script is unknown or not covered.
pub(super) fn languages_for_script(installed: &[String], script: Option<&str>) -> Vec<String> {
    let mut languages = script.map(|script| installed_for_script(installed, script)).unwrap_or_default();
    if languages.is_empty() {
        languages.push(FALLBACK_LANGUAGE.to_string());
    }
    languages
}

/// The installed traineddata that read `script`: its languages (at most
/// [`MAX_AUTO_LANGUAGES`]), else its `script/` model; empty when nothing installed covers it.
fn installed_for_script(installed: &[String], script: &str) -> Vec<String> {
    let is_installed = |code: &str| installed.iter().any(|installed| installed == code);
    let mut languages: Vec<String> = Vec::new();
    if let Some((_, candidates)) = SCRIPT_LANGUAGES.iter().find(|(name, _)| *name == script) {
        languages.extend(candidates.iter().filter(|code| is_installed(code)).take(MAX_AUTO_LANGUAGES).map(|code| code.to_string()));
    }
    // tessdata_fast/best also ship one model per script, e.g. "script/Cyrillic".
    let script_model = format!("script/{script}");
    if languages.is_empty() && is_installed(&script_model) {
        languages.push(script_model);
    }
    languages
}

/// The page straightened when it is clearly skewed by 1 to 15 degrees, and the angle (0 when
/// it was left as it is).
pub(super) fn deskew(pix: Pix) -> (Pix, f32) {
    let Some(angle) = skew_degrees(&pix).filter(|angle| angle.abs() >= MIN_DESKEW_DEGREES) else {
        return (pix, 0.0);
    };
    match pix.rotated(angle) {
        Some(straight) => (straight, angle),
        None => (pix, 0.0),
    }
}

/// Skew in degrees as Leptonica measures it (the angle the rotation undoes), when confident.
fn skew_degrees(pix: &Pix) -> Option<f32> {
    if pix.width().min(pix.height()) < MIN_SKEW_SEARCH_SIDE {
        return None;
    }
    let (angle, confidence) = pix.find_skew(MAX_SKEW_DEGREES)?;
    (confidence >= MIN_SKEW_CONFIDENCE).then_some(angle)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn only_weak_turns_that_read_poorly_are_rechecked() {
        assert!(recheck_turn(false, 0.3));
        assert!(!recheck_turn(false, 0.9));
        assert!(!recheck_turn(true, 0.3));
    }

    #[test]
    fn languages_follow_the_script_among_installed_ones() {
        let installed: Vec<String> = ["deu", "eng", "fra", "ita", "osd", "por", "rus", "script/Greek", "spa"].map(String::from).to_vec();
        assert_eq!(languages_for_script(&installed, Some("Latin")), ["eng", "deu", "fra", "spa"], "at most four");
        assert_eq!(languages_for_script(&installed, Some("Cyrillic")), ["rus"]);
        assert_eq!(languages_for_script(&installed, Some("Greek")), ["script/Greek"], "the script model when no language is installed");
        assert_eq!(languages_for_script(&installed, Some("Arabic")), ["eng"]);
        assert_eq!(languages_for_script(&installed, None), ["eng"]);
        assert_eq!(missing_for_script(&installed, "Hebrew"), Some("heb"));
        assert_eq!(missing_for_script(&installed, "Cyrillic"), None);
        assert_eq!(missing_for_script(&installed, "Greek"), None, "the script model covers it");
        assert_eq!(missing_for_script(&installed, "Klingon"), None, "not a script docpipe knows");
    }
}
