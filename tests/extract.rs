//! Every file of the real-world corpus (tests/data/docs) gives either text containing what a
//! person sees in it, or a specific status with a reason. Also: children, limits, zip bombs.

use std::io::Write;
use std::path::Path;

use docpipe_models::extract::{Budget, ExtractErrorKind, Extracted, Extractor, Limits, Request};

fn docs() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/docs"))
}

fn extract(name: &str) -> Result<Extracted, docpipe_models::extract::ExtractError> {
    let bytes = std::fs::read(docs().join(name)).unwrap();
    Extractor::new(Limits::default()).extract(&bytes, &Request::default())
}

fn all_text(e: &Extracted) -> String {
    let mut text: Vec<&str> = e.pages.iter().map(|p| p.text.as_str()).collect();
    text.extend(e.metadata.values().map(String::as_str));
    text.join("\n")
}

/// What a person sees in each file, or the status it must get.
enum Expect {
    Text(&'static [&'static str]),
    Children(&'static [&'static str]),
    Status(ExtractErrorKind),
    /// Output kept, with a document-level condition (PGP mail keeps its armoured body).
    TextWith(ExtractErrorKind, &'static str),
}

#[test]
fn every_corpus_file_gets_text_or_a_specific_status() {
    use Expect::*;
    let table: &[(&str, Expect)] = &[
        ("Non-text-searchable.pdf", Text(&["non-text-searchable PDF"])),
        ("alert.html", Text(&["HAHAHAHAH", "some more text here"])),
        ("attachments-have-octet-stream-content-type.eml", Children(&[])),
        ("box.zip", Children(&["box/treasure.txt"])),
        ("broken-subject.eml", Text(&["Hello"])),
        ("broken.pdf", Status(ExtractErrorKind::Corrupt)),
        ("easychair.docx", Text(&["EasyChair"])),
        ("easychair.odt", Text(&["EasyChair"])),
        ("easychair.txt", Text(&["THIS IS A SAMPLE .txt FILE", "EasyChair EPiC Series"])),
        ("encrypted-machine-learning-comes.eml", TextWith(ExtractErrorKind::Encrypted, "BEGIN PGP MESSAGE")),
        ("english.cp500.txt", Text(&["IntelliStation POWER", "Hardware"])),
        ("jerry.zip", Children(&["jerry/etc/jerry.7z", "jerry/package.json"])),
        ("meta_encoding_latin1.html", Text(&["bär"])),
        ("russian.cp866.txt", Text(&["Однажды, в студеную зимнюю пору"])),
        ("scansmpl.pdf", Text(&["SLEREXE COMPANY"])),
        ("stanley.ec02.pdf", Text(&["MIT Press"])),
        ("sv600_g_normal.pdf", Text(&["customer"])),
        ("targz-with-pdf-doc-docx.tar.gz", Children(&["Sample_BulletsAndNumberings.docx", "cap33.pdf", "sample (1).doc"])),
        ("testEmailWithPNGAtt.eml", Children(&["testPNG.png"])),
        ("testHTML_charset_utf16le.html", Text(&["This is a sample text"])),
        ("testMSG.msg", Text(&["making the type detection code more\nmodular"])),
        ("testMSG_chinese.msg", Text(&["MSG \u{683c}\u{5f0f}\u{6e2c}\u{8a66}"])),
        ("testMSG_att_msg.msg", Children(&[])),
        ("testMSG_att_doc.msg", Children(&[])),
        ("testPST_variousBodyTypes.pst", Children(&[])),
        ("testWORD.doc", Text(&["Sample Word Document", "Keith Bennett"])),
        ("flores-zho.doc", Text(&["\u{6211}\u{4eec}\u{73b0}\u{5728}\u{6709} 4 \u{4e2a}\u{6708}\u{5927}\u{6ca1}\u{6709}\u{7cd6}\u{5c3f}\u{75c5}\u{7684}\u{8001}\u{9f20}"])),
        ("testEXCEL.xls", Text(&["Sample Excel Worksheet", "Keith Bennett"])),
        ("testPPT.ppt", Text(&["Sample Powerpoint Slide", "Keith Bennett"])),
        ("test-documents.7z", Children(&["test-documents/testEXCEL.xls", "test-documents/testPDF.pdf"])),
        ("test-documents.rar", Children(&["test-documents/testEXCEL.xls", "test-documents/testPDF.pdf"])),
        ("test-documents-enc.rar", Status(ExtractErrorKind::Encrypted)),
        ("test7Z_protected_passTika.7z", Status(ExtractErrorKind::Encrypted)),
        ("testJPEG_GEO.jpg", Status(ExtractErrorKind::Empty)),
        ("testICalendar.ics", Text(&["Event: Susi Hyldgaard - Festival International de Jazz de Montr\u{e9}al", "Starts: 20010701T213000Z"])),
        ("testOCR.jpg", Text(&["Apache Tika", "OCR Testing"])),
        ("testOCR.pdf", Text(&["Happy New Year 2003"])),
        ("testRFC822_multipart_attachments.eml", Children(&[])),
        ("testRotated+10.png", Text(&["Its had resolving otherwise"])),
        ("testTIFF_multipage.tif", Text(&["Page 1", "Page 2"])),
        ("testTXT_win-1252.txt", Text(&["\u{201c}windows\u{201d} encoding"])),
        ("with-bom.eml", Text(&["Hello"])),
        ("xml_declaration_latin1.html", Text(&["bär"])),
        ("zip-with-docx-and-doc.zip", Children(&["AppBody-Sample-English.docx", "sample.doc"])),
        ("zip-with-password.zip", Status(ExtractErrorKind::Encrypted)),
        ("zip-with-some-smashed-bytes.zip", Status(ExtractErrorKind::Corrupt)),
    ];
    let names: Vec<String> = std::fs::read_dir(docs()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), table.len(), "every corpus file is in the table");
    let mut failures = Vec::new();
    for (name, expect) in table {
        let got = extract(name);
        let ok = match (expect, &got) {
            (Text(phrases), Ok(e)) => e.condition.is_none() && phrases.iter().all(|p| all_text(e).contains(p)),
            (Children(paths), Ok(e)) => {
                !e.children.is_empty() && paths.iter().all(|p| e.children.iter().any(|c| &c.path == p))
            }
            (Status(kind), Err(err)) => err.kind == *kind && !err.reason.is_empty(),
            (Status(kind), Ok(e)) => e.condition.as_ref().is_some_and(|c| c.kind == *kind),
            (TextWith(kind, phrase), Ok(e)) => e.condition.as_ref().is_some_and(|c| c.kind == *kind) && all_text(e).contains(phrase),
            _ => false,
        };
        if !ok {
            let summary = match &got {
                Ok(e) => format!("{:?} children={:?} text={:?}", e.condition, e.children.iter().map(|c| &c.path).collect::<Vec<_>>(), all_text(e).chars().take(120).collect::<String>()),
                Err(err) => format!("{:?}: {}", err.kind, err.reason),
            };
            failures.push(format!("{name}: {summary}"));
        }
    }
    assert!(failures.is_empty(), "unexpected outcomes:\n{}", failures.join("\n"));
}

#[test]
fn email_headers_become_metadata_and_attachments_children() {
    let e = extract("testRFC822_multipart_attachments.eml").unwrap();
    assert!(e.metadata.contains_key("from") && e.metadata.contains_key("subject"), "{:?}", e.metadata);
    assert!(e.children.len() >= 2);
}

#[test]
fn outlook_messages_give_body_people_dates_route_and_attachments() {
    let e = extract("testMSG_chinese.msg").unwrap();
    for key in ["from", "to", "subject", "date"] {
        assert!(e.metadata.contains_key(key), "{key} missing: {:?}", e.metadata);
    }
    // An attached message becomes a child MSG that reads on its own.
    let e = extract("testMSG_att_msg.msg").unwrap();
    let inner = e.children.iter().find(|c| c.path.ends_with(".msg")).expect("attached message as a .msg child");
    let read = Extractor::new(Limits::default()).extract(&inner.bytes.read().unwrap(), &Request::default()).unwrap();
    assert_eq!(read.media_type, "application/vnd.ms-outlook");
    assert!(read.metadata.contains_key("subject"), "{:?}", read.metadata);
    // An attached Word file is a child and is read as one.
    let e = extract("testMSG_att_doc.msg").unwrap();
    let doc = e.children.iter().find(|c| c.path.ends_with(".doc")).expect("attached .doc");
    let read = Extractor::new(Limits::default()).extract(&doc.bytes.read().unwrap(), &Request::default()).unwrap();
    assert_eq!(read.media_type, "application/msword");
    assert!(!read.pages[0].text.trim().is_empty());
}

#[test]
fn a_pst_mailbox_gives_one_child_message_per_item_under_its_folder() {
    let e = extract("testPST_variousBodyTypes.pst").unwrap();
    assert_eq!(e.media_type, "application/vnd.ms-outlook-pst");
    assert!(e.children.len() >= 4, "{:?}", e.children.iter().map(|c| &c.path).collect::<Vec<_>>());
    assert!(e.children.iter().all(|c| c.path.contains("Inbox/") && c.path.ends_with(".eml")));
    let message = Extractor::new(Limits::default()).extract(&e.children[0].bytes.read().unwrap(), &Request::default()).unwrap();
    assert_eq!(message.media_type, "message/rfc822");
    assert!(message.metadata["from"].contains("tallison@mitre.org"), "{:?}", message.metadata);
    // The tree budget stops a mailbox like any archive, keeping what was read.
    let small = Request { budget: Some(Budget { bytes: 1 << 30, members: 2 }), ..Request::default() };
    let bytes = std::fs::read(docs().join("testPST_variousBodyTypes.pst")).unwrap();
    let e = Extractor::new(Limits::default()).extract(&bytes, &small).unwrap();
    assert_eq!((e.children.len(), e.condition.unwrap().kind), (2, ExtractErrorKind::TooLarge));
}

#[test]
fn metadata_investigators_use() {
    let photo = extract("testJPEG_GEO.jpg").unwrap();
    assert_eq!(photo.metadata.get("camera_model").map(String::as_str), Some("Canon EOS 40D"));
    let lat: f64 = photo.metadata["gps_latitude"].parse().unwrap();
    let lon: f64 = photo.metadata["gps_longitude"].parse().unwrap();
    assert!(lat.abs() > 1.0 && lon.abs() > 1.0, "{lat} {lon}");
    let doc = extract("testWORD.doc").unwrap();
    assert_eq!(doc.metadata.get("last_modified_by").map(String::as_str), Some("Nick Burch"));
    assert_eq!(doc.metadata.get("revision").map(String::as_str), Some("2"));
    assert_eq!(doc.metadata.get("created").map(String::as_str), Some("2010-11-12T16:22:00Z"));
    let scan = extract("sv600_g_normal.pdf").unwrap();
    assert_eq!(scan.metadata.get("xmp_document_id").map(String::as_str), Some("uuid:384a5d1b-17cb-4368-82f2-2d1754f5fc01"));
    assert_eq!(scan.metadata.get("creator_tool").map(String::as_str), Some("PFU ScanSnap Manager 6.2.10 #SV600"));
    let docx = extract("easychair.docx").unwrap();
    assert!(docx.metadata.contains_key("application"), "{:?}", docx.metadata);
    let mail = extract("attachments-have-octet-stream-content-type.eml").unwrap();
    assert!(mail.metadata.contains_key("message_id"), "{:?}", mail.metadata);
    assert_eq!(mail.metadata.get("received_hops").map(String::as_str), Some("5"));
    assert_eq!(mail.metadata["received"].lines().count(), 5);
}

#[test]
fn a_nested_bomb_stops_at_the_tree_budget() {
    // Five levels of ten copies of the level below: 10^4 leaves if nothing stopped it.
    let mut level = zip_of(&[("leaf.txt", vec![b'a'; 1024])]);
    for depth in 0..4 {
        let members: Vec<(String, Vec<u8>)> = (0..10).map(|i| (format!("d{depth}-{i}.zip"), level.clone())).collect();
        level = zip_of(&members.iter().map(|(n, b)| (n.as_str(), b.clone())).collect::<Vec<_>>());
    }
    // Walk the tree the way the runner does: each child gets its share of what its parent left.
    let limits = Limits { tree_max_members: 500, ..Limits::default() };
    let mut extractor = Extractor::new(limits.clone());
    let mut queue = vec![(level, 0u32, Budget::of_tree(&limits))];
    let (mut documents, mut stopped) = (0u64, 0u32);
    while let Some((bytes, depth, budget)) = queue.pop() {
        documents += 1;
        let request = Request { depth, budget: Some(budget), ..Request::default() };
        let Ok(out) = extractor.extract(&bytes, &request) else {
            stopped += 1;
            continue;
        };
        if out.condition.as_ref().is_some_and(|c| c.kind == ExtractErrorKind::TooLarge) {
            stopped += 1;
        }
        let shares = budget.split(&out.children.iter().map(|c| c.bytes.len()).collect::<Vec<_>>());
        queue.extend(out.children.into_iter().zip(shares).map(|(c, share)| (c.bytes.read().unwrap().into_owned(), depth + 1, share)));
    }
    assert!(documents <= 501, "{documents} documents read");
    assert!(stopped > 0);
}

#[test]
fn text_layer_pdf_is_not_rasterized() {
    let e = extract("stanley.ec02.pdf").unwrap();
    assert_eq!(e.page_count, Some(30));
    assert!(e.pages.iter().all(|p| p.source == docpipe_models::extract::Source::TextLayer && p.ocr.is_none()));
}

#[test]
fn page_limit_reports_the_pages_it_skips() {
    let bytes = std::fs::read(docs().join("stanley.ec02.pdf")).unwrap();
    let limits = Limits { max_pages: 3, ..Limits::default() };
    let e = Extractor::new(limits).extract(&bytes, &Request::default()).unwrap();
    assert_eq!(e.page_count, Some(30));
    assert_eq!(e.pages.len(), 4, "three pages read, one entry for the rest");
    assert!(e.pages[..3].iter().all(|p| p.problem.is_none() && !p.text.is_empty()));
    let rest = e.pages[3].problem.as_ref().unwrap();
    assert_eq!(rest.kind, ExtractErrorKind::TooLarge);
    assert!(rest.reason.contains("pages 4-30"), "{}", rest.reason);
}

fn zip_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    for (name, data) in members {
        zip.start_file(*name, zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated)).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}

#[test]
fn a_generated_zip_bomb_is_stopped_by_the_limits() {
    // 200 MB of zeros compresses to about 200 KB: a ratio near 1000. Reading stops there and
    // keeps the members read before it.
    let bomb = zip_of(&[("first.txt", b"kept".to_vec()), ("zeros.bin", vec![0u8; 200 << 20])]);
    let out = Extractor::new(Limits::default()).extract(&bomb, &Request::default()).unwrap();
    let stop = out.condition.expect("a too_large condition");
    assert_eq!(stop.kind, ExtractErrorKind::TooLarge, "{}", stop.reason);
    assert!(stop.reason.contains("archive_max_ratio"), "{}", stop.reason);
    assert_eq!(out.children.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["first.txt"]);

    // Modest ratio, but more than the tree's budget.
    let text: Vec<u8> = (0..(3 << 20)).map(|i| b"abcdefghij"[(i * 7 + i / 13) % 10]).collect();
    let big = zip_of(&[("a.txt", text.clone()), ("b.txt", text)]);
    let limits = Limits { tree_max_total_bytes: 4 << 20, archive_max_ratio: 1e6, ..Limits::default() };
    let out = Extractor::new(limits).extract(&big, &Request::default()).unwrap();
    let stop = out.condition.unwrap();
    assert_eq!(stop.kind, ExtractErrorKind::TooLarge);
    assert!(stop.reason.contains("tree_max_total_bytes"), "{}", stop.reason);
    assert_eq!(out.children.len(), 1);

    // Too many members, and too deep.
    let many = zip_of(&(0..20).map(|i| (Box::leak(format!("m{i}.txt").into_boxed_str()) as &str, b"x".to_vec())).collect::<Vec<_>>());
    let limits = Limits { tree_max_members: 10, ..Limits::default() };
    let out = Extractor::new(limits).extract(&many, &Request::default()).unwrap();
    assert_eq!((out.children.len(), out.condition.unwrap().kind), (10, ExtractErrorKind::TooLarge));
    let deep = Request { depth: 5, ..Request::default() };
    assert_eq!(Extractor::new(Limits::default()).extract(&many, &deep).unwrap_err().kind, ExtractErrorKind::TooLarge);
    // A share of a tree already spent: the archive's members stop at the share.
    let spent = Request { budget: Some(Budget { bytes: 1 << 20, members: 3 }), ..Request::default() };
    let out = Extractor::new(Limits::default()).extract(&many, &spent).unwrap();
    assert_eq!((out.children.len(), out.condition.unwrap().kind), (3, ExtractErrorKind::TooLarge));
}

#[test]
fn garbage_and_truncated_inputs_fail_cleanly() {
    let pdf = std::fs::read(docs().join("stanley.ec02.pdf")).unwrap();
    for cut in [10usize, 1000, pdf.len() / 2] {
        let r = Extractor::new(Limits::default()).extract(&pdf[..cut], &Request::default());
        // A truncated PDF may still yield its first pages; if not, it must say why.
        if let Err(e) = r {
            assert!(matches!(e.kind, ExtractErrorKind::Corrupt), "{e:?}");
        }
    }
    let png = std::fs::read(docs().join("testOCR.jpg")).unwrap();
    let r = Extractor::new(Limits::default()).extract(&png[..png.len() / 3], &Request::default());
    if let Ok(e) = r {
        assert!(e.pages.iter().all(|p| !p.text.is_empty() || p.problem.is_some()), "no silent empty page");
    }
}

#[test]
fn ocr_page_time_limit_stops_the_page_not_the_document() {
    let bytes = std::fs::read(docs().join("testTIFF_multipage.tif")).unwrap();
    let limits = Limits { ocr_page_timeout: std::time::Duration::from_millis(1), ..Limits::default() };
    let started = std::time::Instant::now();
    let e = Extractor::new(limits).extract(&bytes, &Request { ocr_languages: vec!["eng".into()], ..Request::default() }).unwrap();
    assert_eq!(e.pages.len(), 2, "every page is listed");
    for page in &e.pages {
        assert_eq!(page.problem.as_ref().map(|p| p.kind), Some(ExtractErrorKind::Timeout), "page {}", page.number);
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// Size of a PNG from its header.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[1..4], b"PNG", "a PNG");
    let word = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

/// The review page draws OCR word boxes over a page image rendered later from the original: it
/// must be the image OCR read (same resolution, straightening and turn), or the boxes land beside
/// the words. Checked on a scanned PDF page, a page turned on its side and a skewed page.
#[test]
fn page_images_are_rendered_as_ocr_saw_them() {
    for name in ["scansmpl.pdf", "testRotated+10.png", "../ocr/phototest-rotated-R.png"] {
        let bytes = std::fs::read(docs().join(name)).unwrap();
        let limits = Limits::default();
        let extracted = Extractor::new(limits.clone()).extract(&bytes, &Request::default()).unwrap();
        let page = &extracted.pages[0];
        let ocr = page.ocr.as_ref().unwrap_or_else(|| panic!("{name} was read by OCR"));
        let png = docpipe_models::extract::page_image(&bytes, page.number, &limits, ocr.rotation_degrees, ocr.deskew_degrees, 0).unwrap();
        assert_eq!(png_size(&png), (ocr.width, ocr.height), "{name}: rotation {}, deskew {}", ocr.rotation_degrees, ocr.deskew_degrees);
        for word in &ocr.words {
            assert!(word.x + word.width <= ocr.width && word.y + word.height <= ocr.height, "{name}: {word:?} inside the page");
        }
        // Shrunk for the screen, the page keeps its shape.
        let (w, h) = png_size(&docpipe_models::extract::page_image(&bytes, page.number, &limits, ocr.rotation_degrees, ocr.deskew_degrees, 500).unwrap());
        assert_eq!(w.max(h), 500, "{name}");
        let (ratio, expected) = (w as f64 / h as f64, ocr.width as f64 / ocr.height as f64);
        assert!((ratio - expected).abs() < 0.01, "{name}: {ratio} vs {expected}");
    }
    // A turn or skew that was not recorded does not give the same image.
    let bytes = std::fs::read(docs().join("../ocr/phototest-rotated-R.png")).unwrap();
    let upright = docpipe_models::extract::page_image(&bytes, 1, &Limits::default(), 270, 0.0, 0).unwrap();
    let as_stored = docpipe_models::extract::page_image(&bytes, 1, &Limits::default(), 0, 0.0, 0).unwrap();
    assert_eq!((png_size(&upright), png_size(&as_stored)), ((640, 480), (480, 640)));
    assert!(docpipe_models::extract::page_image(&bytes, 2, &Limits::default(), 0, 0.0, 0).is_err(), "an image has one page");
}

/// A PDF of `pages` empty A4 pages: no text layer, so every page goes to OCR.
fn blank_pdf(pages: usize) -> Vec<u8> {
    let mut objects = vec!["<< /Type /Catalog /Pages 2 0 R >>".to_owned()];
    let kids: Vec<String> = (0..pages).map(|i| format!("{} 0 R", 3 + i)).collect();
    objects.push(format!("<< /Type /Pages /Kids [{}] /Count {pages} >>", kids.join(" ")));
    objects.extend((0..pages).map(|_| "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << >> >>".to_owned()));
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{body}\nendobj\n", i + 1).bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
    for offset in offsets {
        out.extend(format!("{offset:010} 00000 n \n").bytes());
    }
    out.extend(format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).bytes());
    out
}

#[test]
fn scanned_pages_are_spread_over_engines_in_page_order_and_blank_ones_skipped() {
    // A scan, a blank page, 30 text-layer pages, a scan: pdfunite (poppler) joins them.
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.pdf");
    std::fs::write(&blank, blank_pdf(1)).unwrap();
    let joined = dir.path().join("joined.pdf");
    let status = std::process::Command::new("pdfunite")
        .arg(docs().join("testOCR.pdf"))
        .arg(&blank)
        .arg(docs().join("stanley.ec02.pdf"))
        .arg(docs().join("Non-text-searchable.pdf"))
        .arg(&joined)
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&joined).unwrap();
    let read = |threads: usize| Extractor::new(Limits { ocr_page_threads: threads, ..Limits::default() }).extract(&bytes, &Request::default()).unwrap();
    let (one, two) = (read(1), read(2));
    let numbers: Vec<u32> = two.pages.iter().map(|p| p.number).collect();
    assert_eq!(numbers, (1..=numbers.len() as u32).collect::<Vec<_>>(), "every page once, in order");
    assert_eq!(numbers.len(), 33);
    assert!(two.pages[0].text.contains("Happy New Year 2003"), "{}", two.pages[0].text);
    let blank = &two.pages[1];
    assert!(blank.text.is_empty() && blank.ocr.is_none());
    let problem = blank.problem.as_ref().expect("the blank page says why it has no text");
    assert_eq!(problem.kind, ExtractErrorKind::Empty);
    assert!(problem.reason.starts_with("blank page (0 dark pixels per million)"), "{}", problem.reason);
    assert_eq!(two.pages[2].source, docpipe_models::extract::Source::TextLayer);
    assert!(two.pages.last().unwrap().text.contains("non-text-searchable PDF"));
    // Spreading pages changes nothing a page says.
    let texts = |e: &Extracted| e.pages.iter().map(|p| (p.number, p.text.clone(), p.problem.as_ref().map(|e| e.reason.clone()))).collect::<Vec<_>>();
    assert_eq!(texts(&one), texts(&two));
}

/// Read from its file (as a worker hands over a document larger than it may hold), every format
/// that can be read that way gives what its bytes give: the same text, children, metadata and
/// condition.
#[test]
fn a_document_read_from_its_file_gives_what_its_bytes_give() {
    use docpipe_models::extract::Input;
    let files = [
        "box.zip", "zip-with-some-smashed-bytes.zip", "zip-with-password.zip", "targz-with-pdf-doc-docx.tar.gz", "test-documents.7z",
        "test-documents.rar", "test7Z_protected_passTika.7z", "testPST_variousBodyTypes.pst", "stanley.ec02.pdf", "easychair.txt",
        "russian.cp866.txt", "easychair.docx", "testWORD.doc", "testRFC822_multipart_attachments.eml",
    ];
    let summary = |e: Result<Extracted, docpipe_models::extract::ExtractError>| match e {
        Ok(e) => {
            let children: Vec<(String, Vec<u8>)> = e.children.iter().map(|c| (c.path.clone(), c.bytes.read().unwrap().into_owned())).collect();
            let pages: Vec<String> = e.pages.iter().map(|p| p.text.clone()).collect();
            format!("{} {:?} {:?} {:?} {:?} {children:?}", e.media_type, e.encoding, pages, e.metadata, e.condition.map(|c| (c.kind, c.reason)))
        }
        Err(e) => format!("error {:?}: {}", e.kind, e.reason),
    };
    for name in files {
        let path = docs().join(name);
        let bytes = std::fs::read(&path).unwrap();
        let request = Request { name: Some(name.to_owned()), ..Request::default() };
        let from_bytes = summary(Extractor::new(Limits::default()).extract(&bytes, &request));
        // A bound under every file's size: each is read from its file, none whole.
        let limits = Limits { max_in_memory_bytes: 100, ..Limits::default() };
        let from_file = summary(Extractor::new(limits).extract_input(Input::file(&path).unwrap(), &request));
        if name.ends_with(".docx") || name.ends_with(".doc") || name.ends_with(".eml") {
            assert!(from_file.contains("TooLarge"), "{name} over the bound: {from_file}");
        } else {
            assert_eq!(from_file, from_bytes, "{name}");
        }
    }
}

/// Over `max_text_bytes`, plain text is read up to the bound (to the last line end in it) and
/// says how much was left, from a file or from memory; over `max_in_memory_bytes`, formats parsed
/// whole are refused, not loaded.
#[test]
fn over_the_memory_bound_text_is_cut_at_a_line_and_whole_formats_are_refused() {
    use docpipe_models::extract::Input;
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("long.txt");
    let lines: String = (0..200).map(|i| format!("line {i:03} of a long statement\n")).collect();
    std::fs::write(&text, &lines).unwrap();
    let limits = Limits { max_in_memory_bytes: 1000, max_text_bytes: 1000, ..Limits::default() };
    let from_file = Extractor::new(limits.clone()).extract_input(Input::file(&text).unwrap(), &Request::default()).unwrap();
    let from_memory = Extractor::new(limits.clone()).extract(lines.as_bytes(), &Request::default()).unwrap();
    for read in [from_file, from_memory] {
        let kept = &read.pages[0].text;
        assert!(kept.len() <= 1000 && kept.ends_with("long statement\n") && lines.starts_with(kept.as_str()), "{kept:?}");
        let condition = read.condition.expect("the rest is said to be unread");
        assert_eq!(condition.kind, ExtractErrorKind::TooLarge);
        assert!(condition.reason.contains(&format!("of {} bytes", lines.len())), "{}", condition.reason);
    }
    let image = docs().join("testOCR.jpg");
    let refused = Extractor::new(limits).extract_input(Input::file(&image).unwrap(), &Request::default()).unwrap_err();
    assert_eq!(refused.kind, ExtractErrorKind::TooLarge, "{}", refused.reason);
    assert!(refused.reason.contains("max_in_memory_bytes"), "{}", refused.reason);
}

/// mbox is split as it streams, and splits as mail_parser's reader (the reference) does: "From "
/// envelopes dropped, one '>' taken from quoted From lines, a line longer than the read piece
/// kept whole.
#[test]
fn an_mbox_streams_into_the_messages_the_reference_reader_finds() {
    let long_line = "x".repeat(200_000);
    let mbox = format!(
        "From a@example.org Mon Jan  1 00:00:00 2024\nFrom: a@example.org\nSubject: one\n\nFirst body.\n>From here, quoted.\n>>From twice quoted.\n\n\
         From b@example.org Tue Jan  2 00:00:00 2024\nFrom: b@example.org\nSubject: two\n\n{long_line}\nend\n\n\
         From c@example.org Wed Jan  3 00:00:00 2024\nFrom: c@example.org\nSubject: three\n\nThird body.\n"
    );
    let reference: Vec<Vec<u8>> = mail_parser::mailbox::mbox::MessageIterator::new(std::io::Cursor::new(mbox.as_bytes())).map(|m| m.unwrap().contents().to_vec()).collect();
    assert_eq!(reference.len(), 3);
    let extracted = Extractor::new(Limits::default()).extract(mbox.as_bytes(), &Request { name: Some("box.mbox".into()), ..Request::default() }).unwrap();
    assert_eq!(extracted.media_type, "application/mbox");
    let ours: Vec<Vec<u8>> = extracted.children.iter().map(|c| c.bytes.read().unwrap().into_owned()).collect();
    assert_eq!(ours, reference);
    assert!(String::from_utf8_lossy(&ours[0]).contains("\nFrom here, quoted.\n>From twice quoted.\n"));
}

/// A mailbox of many tiny messages stops at the tree's member budget as it streams, keeping the
/// messages read, instead of making a child of every message first.
#[test]
fn an_mbox_stops_at_the_tree_budget_as_it_streams() {
    let mbox: String = (0..500).map(|i| format!("From x@example.org Mon Jan  1 00:00:00 2024\nSubject: {i}\n\nbody {i}\n\n")).collect();
    let limits = Limits { tree_max_members: 20, ..Limits::default() };
    let request = Request { name: Some("many.mbox".into()), ..Request::default() };
    let extracted = Extractor::new(limits).extract(mbox.as_bytes(), &request).unwrap();
    assert_eq!(extracted.children.len(), 20);
    let condition = extracted.condition.expect("the budget stop is reported");
    assert_eq!(condition.kind, ExtractErrorKind::TooLarge, "{}", condition.reason);
    assert!(String::from_utf8_lossy(&extracted.children[19].bytes.read().unwrap()).contains("body 19"));
}
