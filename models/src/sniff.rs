//! Media type from the leading bytes. Extensions lie; magic numbers rarely do.

/// Media type of `bytes`, judged from magic numbers, else from whether the bytes are text.
pub fn media_type(bytes: &[u8]) -> &'static str {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"%PDF-", "application/pdf"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"II*\0", "image/tiff"),
        (b"MM\0*", "image/tiff"),
        (b"PK\x03\x04", "application/zip"),
        (b"PK\x05\x06", "application/zip"),
        (b"\x1f\x8b", "application/gzip"),
        (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
        (b"Rar!\x1a\x07", "application/vnd.rar"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
        (b"!BDN", "application/vnd.ms-outlook-pst"),
        (b"{\\rtf", "application/rtf"),
        (b"\0\0\0\x0cjP  \r\n\x87\n", "image/jp2"),
        (b"-----BEGIN PGP MESSAGE-----", "application/pgp-encrypted"),
    ];
    for (magic, media) in MAGIC {
        if bytes.starts_with(magic) {
            return media;
        }
    }
    // "BM" alone is too weak (text can start with it): the reserved bytes must be zero and the
    // DIB header size one of the defined ones.
    if bytes.len() > 18 && bytes.starts_with(b"BM") && bytes[6..10] == [0, 0, 0, 0] && matches!(u32::from_le_bytes([bytes[14], bytes[15], bytes[16], bytes[17]]), 12 | 40 | 52 | 56 | 64 | 108 | 124) {
        return "image/bmp";
    }
    if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return "image/webp";
    }
    if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        return "application/x-tar";
    }
    if crate::text::detect_encoding(bytes).is_none() && !looks_like_text(bytes) {
        return "application/octet-stream";
    }
    text_kind(bytes)
}

/// Media type of `bytes`, the file name's extension breaking the one tie bytes leave open: text
/// whose shape says plain, named as mail (`.eml` with a header on its first line), a mailbox
/// (`.mbox` starting with an envelope line) or a web page (`.htm`, `.html`). The extension never
/// overrides what the bytes show.
pub fn media_type_named(bytes: &[u8], name: Option<&str>) -> &'static str {
    let sniffed = media_type(bytes);
    let extension = name.and_then(|n| n.rsplit_once('.')).map(|(_, e)| e.to_ascii_lowercase());
    if sniffed != "text/plain" || extension.is_none() {
        return sniffed;
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned();
    let head = head.trim_start_matches('\u{feff}');
    match extension.as_deref() {
        Some("eml") if head.lines().next().is_some_and(|l| l.contains(':') && is_header_line(l)) => "message/rfc822",
        Some("mbox") if head.starts_with("From ") => "application/mbox",
        Some("htm" | "html") => "text/html",
        _ => sniffed,
    }
}

/// Text in a legacy encoding: no NUL bytes and almost no C0 control characters.
fn looks_like_text(bytes: &[u8]) -> bool {
    let sample = &bytes[..bytes.len().min(64 * 1024)];
    if sample.is_empty() || sample.contains(&0) {
        return false;
    }
    let controls = sample.iter().filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b)).count();
    controls * 100 < sample.len()
}

/// Which kind of text: a mailbox, an email, HTML, XML or plain.
fn text_kind(bytes: &[u8]) -> &'static str {
    let sample = &bytes[..bytes.len().min(4096)];
    let head = match crate::text::decode(sample) {
        Ok(decoded) => decoded.text,
        // A cut multi-byte character or a legacy code page: ASCII structure still shows.
        Err(_) => String::from_utf8_lossy(sample).into_owned(),
    };
    let head = head.trim_start_matches(['\u{feff}', '\u{fffd}']);
    let lower = head.to_ascii_lowercase();
    if head.starts_with("From ") && head.lines().nth(1).is_some_and(is_header_line) {
        return "application/mbox";
    }
    let headers = head.lines().take_while(|l| !l.trim().is_empty()).filter(|l| is_header_line(l)).count();
    let mail_fields = ["from:", "to:", "subject:", "date:", "received:", "message-id:", "mime-version:", "delivered-to:", "return-path:"];
    let known = lower.lines().take_while(|l| !l.trim().is_empty()).filter(|l| mail_fields.iter().any(|f| l.starts_with(f))).count();
    if headers >= 3 && known >= 2 {
        return "message/rfc822";
    }
    let start = lower.trim_start();
    if start.starts_with("<!doctype html") || start.starts_with("<html") || lower.chars().take(1024).collect::<String>().contains("<html")
        || (start.starts_with('<') && (lower.contains("<body") || lower.contains("<script") || lower.contains("<p>")))
    {
        return "text/html";
    }
    let upper = start.to_ascii_uppercase();
    if upper.starts_with("BEGIN:VCALENDAR") {
        return "text/calendar";
    }
    if upper.starts_with("BEGIN:VCARD") {
        return "text/vcard";
    }
    if start.starts_with("<?xml") {
        return "application/xml";
    }
    "text/plain"
}

fn is_header_line(line: &str) -> bool {
    match line.split_once(':') {
        Some((name, _)) => !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        None => line.starts_with(' ') || line.starts_with('\t'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_beats_text() {
        assert_eq!(media_type(b"%PDF-1.7\n%..."), "application/pdf");
        assert_eq!(media_type(b"PK\x03\x04rest"), "application/zip");
        assert_eq!(media_type("plain words\n".as_bytes()), "text/plain");
        assert_eq!(media_type(&[0u8, 159, 146, 150, 0, 1]), "application/octet-stream");
        assert_eq!(media_type(b"From: a@b.c\nTo: d@e.f\nSubject: hi\n\nbody"), "message/rfc822");
        assert_eq!(media_type(b"<!DOCTYPE html><html><body>x</body></html>"), "text/html");
        assert_eq!(media_type(b"caf\xe9 cr\xe8me\n"), "text/plain");
        assert_eq!(media_type(b"BMW annual report 2026\n"), "text/plain");
        // The extension breaks the plain-text tie only.
        assert_eq!(media_type_named(b"Subject: hi\n\nbody", Some("note.eml")), "message/rfc822");
        assert_eq!(media_type_named(b"Subject: hi\n\nbody", Some("note.txt")), "text/plain");
        assert_eq!(media_type_named(b"just words", Some("a.eml")), "text/plain");
        assert_eq!(media_type_named(b"%PDF-1.7", Some("a.eml")), "application/pdf");
        assert_eq!(media_type_named(b"<b>bold</b> words", Some("page.HTML")), "text/html");
        assert_eq!(media_type(b"!BDN\x00\x00\x00\x00SM"), "application/vnd.ms-outlook-pst");
        assert_eq!(media_type(b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"), "text/calendar");
        assert_eq!(media_type(b"begin:vcard\nfn:A\nend:vcard\n"), "text/vcard");
    }
}
