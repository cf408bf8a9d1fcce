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
        (b"BM", "image/bmp"),
        (b"PK\x03\x04", "application/zip"),
        (b"PK\x05\x06", "application/zip"),
        (b"\x1f\x8b", "application/gzip"),
        (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
        (b"Rar!\x1a\x07", "application/vnd.rar"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
        (b"{\\rtf", "application/rtf"),
    ];
    for (magic, media) in MAGIC {
        if bytes.starts_with(magic) {
            return media;
        }
    }
    if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return "image/webp";
    }
    if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        return "application/x-tar";
    }
    match crate::text::detect_encoding(bytes) {
        Some(_) => "text/plain",
        None => "application/octet-stream",
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
    }
}
