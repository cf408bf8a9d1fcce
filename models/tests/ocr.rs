//! OCR against real Tesseract and the images in tests/data.
//!
//! Run with `OMP_THREAD_LIMIT=1` in the environment for speed (see the `ocr` module docs);
//! results do not depend on it.

use std::path::{Path, PathBuf};

use docpipe_models::eval::{character_error_rate, tiff_pages};
use docpipe_models::ocr::{debian_package, installed_languages, installed_traineddata, tiff_page_count, OcrEngine, OcrError, OcrOptions, OcrPage};

fn data(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data").join(relative)
}

fn read(relative: &str) -> Vec<u8> {
    let path = data(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn truth(name: &str) -> String {
    String::from_utf8(read(&format!("ocr/{name}.txt"))).expect("ground truth is UTF-8")
}

fn engine() -> OcrEngine {
    OcrEngine::new(None).expect("Tesseract and traineddata are installed")
}

fn english() -> OcrOptions {
    OcrOptions { languages: vec!["eng".to_string()], ..OcrOptions::default() }
}

fn automatic() -> OcrOptions {
    OcrOptions::default()
}

fn ocr(engine: &mut OcrEngine, image: &str, options: &OcrOptions) -> OcrPage {
    engine.recognize(&read(image), options).unwrap_or_else(|e| panic!("{image}: {e}"))
}

/// CER of `image` against `ocr/<truth_name>.txt`, printed for the record.
fn cer(engine: &mut OcrEngine, image: &str, truth_name: &str, options: &OcrOptions) -> f64 {
    let page = ocr(engine, image, options);
    let rate = character_error_rate(&truth(truth_name), &page.text);
    eprintln!(
        "{image} languages={:?} script={:?} rotation={} confidence={:.2}: CER {:.2}%",
        page.languages,
        page.script,
        page.rotation_degrees,
        page.confidence,
        rate * 100.0
    );
    rate
}

fn assert_cer(image: &str, truth_name: &str, limit: f64) {
    let mut engine = engine();
    for (mode, options) in [("eng", english()), ("automatic", automatic())] {
        let rate = cer(&mut engine, image, truth_name, &options);
        assert!(rate <= limit, "{image} ({mode}): CER {:.2}% above {:.2}%", rate * 100.0, limit * 100.0);
    }
}

#[test]
fn phototest_cer() {
    assert_cer("ocr/phototest.tif", "phototest", 0.01);
}

#[test]
fn eurotext_cer() {
    assert_cer("ocr/eurotext.tif", "eurotext", 0.025);
}

#[test]
fn newspaper_cer() {
    assert_cer("ocr/8087_054.3B.tif", "8087_054.3B", 0.078);
}

#[test]
fn rotated_pages_read_like_upright() {
    let mut engine = engine();
    let upright = cer(&mut engine, "ocr/phototest.tif", "phototest", &automatic());
    for (image, rotation) in [
        ("ocr/phototest-rotated-180.png", 180),
        ("ocr/phototest-rotated-L.png", 90),
        ("ocr/phototest-rotated-R.png", 270),
    ] {
        let page = ocr(&mut engine, image, &automatic());
        assert_eq!(page.rotation_degrees, rotation, "{image}");
        assert_eq!((page.width, page.height), (640, 480), "{image}: upright size");
        let rate = character_error_rate(&truth("phototest"), &page.text);
        eprintln!("{image}: rotated {rotation}, CER {:.2}%", rate * 100.0);
        assert!(rate <= upright + 0.01, "{image}: CER {:.2}% vs upright {:.2}%", rate * 100.0, upright * 100.0);
    }
}

#[test]
fn skewed_page_is_straightened() {
    let mut engine = engine();
    for options in [automatic(), english()] {
        let page = ocr(&mut engine, "docs/testRotated+10.png", &options);
        let text = page.text.split_whitespace().collect::<Vec<_>>().join(" ");
        eprintln!("testRotated+10.png {:?}: deskew {:.1}, rotation {}: {text}", options.languages, page.deskew_degrees, page.rotation_degrees);
        assert!((page.deskew_degrees.abs() - 10.0).abs() < 1.0, "deskew {}", page.deskew_degrees);
        assert_eq!(page.rotation_degrees, 0);
        assert!(text.contains("Its had resolving otherwise she contented therefore"), "{text}");
    }
}

#[test]
fn slightly_skewed_pages_are_left_alone() {
    let mut engine = engine();
    // eurotext is skewed by less than a degree, which Tesseract handles better unresampled.
    assert_eq!(ocr(&mut engine, "ocr/eurotext.tif", &english()).deskew_degrees, 0.0);
}

#[test]
fn automatic_mode_reports_script_and_languages() {
    let mut engine = engine();
    let page = ocr(&mut engine, "ocr/phototest.tif", &automatic());
    assert_eq!(page.script.as_deref(), Some("Latin"));
    assert_eq!(page.languages.first().map(String::as_str), Some("eng"), "English leads for Latin script");
    assert!(page.languages.len() > 1, "other Latin-script languages help accented words: {:?}", page.languages);
    let page = ocr(&mut engine, "ocr/phototest.tif", &english());
    assert_eq!(page.script, None, "no OSD when languages are given");
}

#[test]
fn multipage_tiff_splits_and_reads() {
    let pages = tiff_pages(&read("docs/testTIFF_multipage.tif")).expect("split");
    assert!(pages.len() > 1, "{} pages", pages.len());
    let mut engine = engine();
    for (number, page) in pages.iter().enumerate() {
        let page = engine.recognize(page, &english()).expect("page reads");
        let text = page.text.split_whitespace().collect::<Vec<_>>().join(" ");
        eprintln!("page {}: {text}", number + 1);
        assert!(text.contains(&format!("Page {}", number + 1)), "page {}: {text:?}", number + 1);
    }
}

#[test]
fn tiff_pages_read_in_place() {
    let tiff = read("docs/testTIFF_multipage.tif");
    let count = tiff_page_count(&tiff, 100);
    assert_eq!(count, tiff_pages(&tiff).expect("split").len());
    assert_eq!(tiff_page_count(&tiff, 1), 1, "the limit caps the count");
    let mut engine = engine();
    for index in 0..count {
        let page = engine.recognize_tiff_page(&tiff, index, &english()).expect("page reads");
        assert!(page.text.contains(&format!("Page {}", index + 1)), "page {}: {:?}", index + 1, page.text);
    }
    assert!(matches!(engine.recognize_tiff_page(&tiff, count, &english()), Err(OcrError::BadImage(_))));
    assert!(matches!(engine.recognize_tiff_page(&tiff, usize::MAX, &english()), Err(OcrError::BadImage(_))));
    let tiny = OcrOptions { max_megapixels: 0.01, ..english() };
    assert!(matches!(engine.recognize_tiff_page(&tiff, 1, &tiny), Err(OcrError::TooLarge { .. })));
    assert!(matches!(engine.recognize_tiff_page(&read("docs/testOCR.jpg"), 0, &english()), Err(OcrError::BadImage(_))));
}

#[test]
fn pages_read_the_same_whatever_came_before() {
    let mut engine = engine();
    let first = ocr(&mut engine, "ocr/eurotext.tif", &english()).text;
    for image in ["ocr/8087_054.3B.tif", "ocr/phototest.tif"] {
        ocr(&mut engine, image, &english());
    }
    assert_eq!(ocr(&mut engine, "ocr/eurotext.tif", &english()).text, first);
}

#[test]
fn tiff_pages_of_a_single_page_tiff() {
    let pages = tiff_pages(&read("ocr/phototest.tif")).expect("split");
    assert_eq!(pages.len(), 1);
}

#[test]
fn small_jpeg_reads_its_phrase() {
    let mut engine = engine();
    for options in [english(), automatic()] {
        let page = ocr(&mut engine, "docs/testOCR.jpg", &options);
        assert!(page.text.contains("Apache Tika"), "{:?}", page.text);
        assert!(page.text.contains("OCR Testing"), "{:?}", page.text);
    }
}

#[test]
fn words_have_boxes_inside_the_page_and_confidences() {
    let mut engine = engine();
    for image in ["ocr/phototest.tif", "ocr/phototest-rotated-L.png", "ocr/8087_054.3B.tif"] {
        let page = ocr(&mut engine, image, &automatic());
        assert!(page.words.len() > 20, "{image}: {} words", page.words.len());
        for word in &page.words {
            assert!(!word.text.is_empty());
            assert!((0.0..=1.0).contains(&word.confidence), "{word:?}");
            assert!(word.width > 0 && word.height > 0, "{word:?}");
            assert!(word.x + word.width <= page.width && word.y + word.height <= page.height, "{image}: {word:?}");
        }
        assert!(page.confidence > 0.5 && page.confidence <= 1.0, "{image}: {}", page.confidence);
    }
    let page = ocr(&mut engine, "ocr/phototest.tif", &english());
    let quick = page.words.iter().find(|w| w.text == "quick").expect("a word 'quick'");
    assert!(quick.confidence > 0.8, "{quick:?}");
}

#[test]
fn corrupt_input_is_an_error_not_a_panic() {
    let png = read("ocr/phototest-rotated-L.png");
    let jpeg = read("docs/testOCR.jpg");
    let tiff = read("ocr/eurotext.tif");
    let mut garbage_after_header = png[..16].to_vec();
    garbage_after_header.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let mut tiff_with_bad_offsets = tiff[..8].to_vec();
    tiff_with_bad_offsets.extend(std::iter::repeat_n(0xff, 64));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"this is not an image at all, just words".to_vec()),
        ("zeros", vec![0; 4096]),
        ("png header + garbage", garbage_after_header),
        ("truncated png", png[..png.len() / 3].to_vec()),
        ("png header only", png[..40].to_vec()),
        ("jpeg header only", jpeg[..200].to_vec()),
        ("tiff with bad offsets", tiff_with_bad_offsets),
        ("truncated tiff", tiff[..tiff.len() / 2].to_vec()),
    ];
    let mut engine = engine();
    for (name, bytes) in &cases {
        match engine.recognize(bytes, &english()) {
            Err(OcrError::BadImage(reason)) => eprintln!("{name}: {reason}"),
            // Some decoders return what they could read of a truncated file; that is fine too.
            Ok(page) => eprintln!("{name}: decoded partially, {} chars", page.text.len()),
            Err(other) => panic!("{name}: unexpected error {other}"),
        }
        assert!(tiff_pages(bytes).is_err() || name.contains("tiff"), "{name}: tiff_pages accepted it");
    }
    // The engine still works after all that.
    assert!(ocr(&mut engine, "ocr/phototest.tif", &english()).text.contains("quick brown dog"));
}

/// A valid 1x1 RGBA PNG.
const ONE_PIXEL_PNG: [u8; 70] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x64, 0xf8, 0xcf, 0x50, 0x0f, 0x00, 0x03, 0x86, 0x01, 0x80, 0x5a, 0x34, 0x7d,
    0x6b, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

#[test]
fn a_one_pixel_image_reads_as_nothing() {
    let mut engine = engine();
    for options in [english(), automatic()] {
        let page = engine.recognize(&ONE_PIXEL_PNG, &options).expect("a valid image");
        assert_eq!((page.width, page.height), (1, 1));
        assert!(page.text.trim().is_empty() && page.words.is_empty(), "{page:?}");
        assert_eq!(page.confidence, 0.0);
    }
}

#[test]
fn megapixel_cap_refuses_before_recognition() {
    let mut engine = engine();
    let options = OcrOptions { max_megapixels: 0.1, ..english() };
    match engine.recognize(&read("ocr/phototest.tif"), &options) {
        Err(OcrError::TooLarge { megapixels, limit }) => {
            assert!((megapixels - 0.3072).abs() < 1e-6, "{megapixels}");
            assert_eq!(limit, 0.1);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let options = OcrOptions { max_megapixels: 0.31, ..english() };
    assert!(engine.recognize(&read("ocr/phototest.tif"), &options).is_ok());
}

#[test]
fn missing_language_is_reported() {
    let mut engine = engine();
    let options = OcrOptions { languages: vec!["xx_notalanguage".to_string()], ..OcrOptions::default() };
    match engine.recognize(&read("ocr/phototest.tif"), &options) {
        Err(OcrError::MissingLanguage(code)) => assert_eq!(code, "xx_notalanguage"),
        other => panic!("expected MissingLanguage, got {other:?}"),
    }
}

#[test]
fn installed_languages_lists_traineddata() {
    let languages = installed_languages(None);
    assert!(languages.iter().any(|l| l == "eng"), "{languages:?}");
    assert!(!languages.iter().any(|l| l == "osd"), "osd is not a language");
    assert!(installed_languages(Some(Path::new("/nonexistent/tessdata"))).is_empty());
    assert!(matches!(OcrEngine::new(Some(Path::new("/nonexistent/tessdata"))), Err(OcrError::Init(_))));
}

#[test]
fn engine_moves_to_worker_threads() {
    let mut engine = engine();
    let image = read("ocr/phototest.tif");
    let text = std::thread::spawn(move || engine.recognize(&image, &english()).map(|page| page.text))
        .join()
        .expect("no panic")
        .expect("recognised");
    assert!(text.contains("lazy fox"));
}

#[test]
fn blank_pages_are_found_blank_without_being_read() {
    let mut engine = engine();
    for options in [english(), automatic()] {
        let blank = ocr(&mut engine, "ocr/blank.png", &options);
        assert_eq!(blank.blank_dark_ppm, Some(0), "{blank:?}");
        assert!(blank.text.is_empty() && blank.words.is_empty() && blank.languages.is_empty());
        // The same page with only a page number on it (71 dark pixels per million) is read, and
        // so is a faint one (light grey, no pixel below mid-grey).
        for image in ["ocr/page-number.png", "ocr/faint-page-number.png"] {
            let numbered = ocr(&mut engine, image, &options);
            assert_eq!(numbered.blank_dark_ppm, None, "{image}");
            assert_eq!(numbered.text.trim(), "12", "{image}");
        }
    }
}

/// An engine over a tessdata directory with only English and orientation detection, as a
/// machine with Debian's default packages has.
fn english_and_osd_only() -> (tempfile::TempDir, OcrEngine) {
    let (Some(system), _) = installed_traineddata(None) else { panic!("traineddata installed") };
    let dir = tempfile::tempdir().unwrap();
    for code in ["eng", "osd"] {
        std::os::unix::fs::symlink(system.join(format!("{code}.traineddata")), dir.path().join(format!("{code}.traineddata"))).unwrap();
    }
    let engine = OcrEngine::new(Some(dir.path())).unwrap();
    (dir, engine)
}

#[test]
fn a_script_without_traineddata_names_its_package_instead_of_guessing() {
    let (_dir, mut engine) = english_and_osd_only();
    for (image, script, package) in [("ocr/greek.png", "Greek", "tesseract-ocr-ell"), ("ocr/hebrew.png", "Hebrew", "tesseract-ocr-heb")] {
        match engine.recognize(&read(image), &automatic()) {
            Err(e @ OcrError::MissingScript { .. }) => {
                let OcrError::MissingScript { script: detected, language, confidence } = &e else { unreachable!() };
                assert_eq!(detected, script);
                assert_eq!(debian_package(language), package);
                assert!(*confidence < 0.6, "{image}: English read it at {confidence}");
                assert!(e.to_string().contains(package), "{e}");
            }
            other => panic!("{image}: expected MissingScript, got {other:?}"),
        }
    }
    // A Latin page in the same engine reads as before.
    let page = ocr(&mut engine, "ocr/phototest.tif", &automatic());
    assert_eq!(page.script.as_deref(), Some("Latin"));
    assert!(character_error_rate(&truth("phototest"), &page.text) < 0.02, "{}", page.text);
    assert_eq!(debian_package("chi_sim"), "tesseract-ocr-chi-sim");
}

/// A page is flagged `low_confidence` when its reading is poor by mean word confidence or by its
/// dictionary rate. The rate catches what confidence misses: an English page read with Chinese
/// traineddata scores 0.88 confidence with 2 % of its words in the dictionary.
#[test]
fn poor_readings_are_flagged_and_good_ones_are_not() {
    let mut engine = engine();
    let with = |code: &str| OcrOptions { languages: vec![code.to_string()], ..OcrOptions::default() };
    let good = [
        ("ocr/phototest.tif", english()),
        ("ocr/eurotext.tif", automatic()),
        ("ocr/8087_054.3B.tif", automatic()),
        ("ocr/phototest-rotated-180.png", automatic()),
        ("ocr/russian.png", automatic()),
        ("ocr/chinese.png", automatic()),
    ];
    for (image, options) in good {
        let page = ocr(&mut engine, image, &options);
        assert!(!page.low_confidence, "{image} {:?}: confidence {:.2}, dictionary {:?}", page.languages, page.confidence, page.dictionary_rate);
    }
    let poor = [
        ("ocr/phototest.tif", with("chi_sim")),
        ("ocr/phototest.tif", with("rus")),
        ("ocr/russian.png", english()),
        ("ocr/phototest-rotated-180.png", english()),
    ];
    for (image, options) in poor {
        let page = ocr(&mut engine, image, &options);
        assert!(page.low_confidence, "{image} {:?}: confidence {:.2}, dictionary {:?}", page.languages, page.confidence, page.dictionary_rate);
    }
    let confident_garbage = ocr(&mut engine, "ocr/phototest.tif", &with("chi_sim"));
    assert!(confident_garbage.confidence >= 0.6 && confident_garbage.dictionary_rate.is_some_and(|rate| rate < 0.1), "{confident_garbage:?}");
}

/// Automatic mode reads a surely upright Roman page as Latin without OSD, and one surely lying on
/// its side turned upright, and sends upside-down pages and other scripts through OSD; either way
/// the page reads as it did when every page went through OSD (the character error rates above, and
/// the turns in `rotated_pages_read_like_upright`, hold in automatic mode).
#[test]
fn osd_runs_only_where_the_page_is_not_surely_upright_latin() {
    use docpipe_models::ocr::Detection;
    let mut engine = engine();
    let expected = [
        ("ocr/phototest.tif", Detection::UprightLatin, "Latin"),
        ("ocr/eurotext.tif", Detection::UprightLatin, "Latin"),
        ("ocr/8087_054.3B.tif", Detection::UprightLatin, "Latin"),
        ("ocr/phototest-rotated-L.png", Detection::SidewaysLatin, "Latin"),
        ("ocr/phototest-rotated-R.png", Detection::SidewaysLatin, "Latin"),
        ("ocr/phototest-rotated-180.png", Detection::Osd, "Latin"),
        ("ocr/russian.png", Detection::Osd, "Cyrillic"),
        ("ocr/chinese.png", Detection::Osd, "Han"),
    ];
    for (image, detection, script) in expected {
        let page = ocr(&mut engine, image, &automatic());
        assert_eq!((page.detection, page.script.as_deref()), (Some(detection), Some(script)), "{image}");
    }
    assert_eq!(ocr(&mut engine, "ocr/phototest.tif", &english()).detection, None, "languages given: no detection");
}
