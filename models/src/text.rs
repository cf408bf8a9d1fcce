//! Plain-text intake: Unicode encodings recognised by byte-order mark or by validity.
//! Legacy single-byte code pages need statistical detection and come with extraction.

use thiserror::Error;

/// Encodings this module decodes without guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Utf8Bom,
    Utf16Le,
    Utf16Be,
}

impl Encoding {
    pub fn label(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Utf8Bom => "utf-8 (bom)",
            Encoding::Utf16Le => "utf-16le (bom)",
            Encoding::Utf16Be => "utf-16be (bom)",
        }
    }

    fn bom_len(self) -> usize {
        match self {
            Encoding::Utf8 => 0,
            Encoding::Utf8Bom => 3,
            Encoding::Utf16Le | Encoding::Utf16Be => 2,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TextError {
    #[error("contains NUL bytes at offset {0}: binary content, not text")]
    Binary(usize),
    #[error("not valid UTF-8 (first bad byte at offset {0}) and no byte-order mark")]
    NotUtf8(usize),
    #[error("UTF-16 content with an odd number of bytes or an unpaired surrogate")]
    BadUtf16,
}

/// Decoded text and what was learnt on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub text: String,
    pub encoding: Encoding,
    /// Lines, counting a last line without a terminator.
    pub lines: usize,
    /// Unicode scalar values.
    pub chars: usize,
}

/// Encoding when the bytes are Unicode text we can decode exactly, else `None`.
pub fn detect_encoding(bytes: &[u8]) -> Option<Encoding> {
    if bytes.starts_with(b"\xef\xbb\xbf") {
        return Some(Encoding::Utf8Bom);
    }
    if bytes.starts_with(b"\xff\xfe") {
        return Some(Encoding::Utf16Le);
    }
    if bytes.starts_with(b"\xfe\xff") {
        return Some(Encoding::Utf16Be);
    }
    if bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok().map(|_| Encoding::Utf8)
}

/// Decode `bytes` into text. The byte-order mark is removed; nothing else is changed,
/// so offsets into the returned text map back to the original characters.
pub fn decode(bytes: &[u8]) -> Result<Decoded, TextError> {
    let encoding = match detect_encoding(bytes) {
        Some(encoding) => encoding,
        None => {
            if let Some(nul) = bytes.iter().position(|&b| b == 0) {
                return Err(TextError::Binary(nul));
            }
            let valid = std::str::from_utf8(bytes).map_err(|e| e.valid_up_to()).unwrap_err();
            return Err(TextError::NotUtf8(valid));
        }
    };
    let body = &bytes[encoding.bom_len()..];
    let text = match encoding {
        Encoding::Utf8 | Encoding::Utf8Bom => {
            std::str::from_utf8(body).map_err(|e| TextError::NotUtf8(e.valid_up_to() + encoding.bom_len()))?.to_owned()
        }
        Encoding::Utf16Le => utf16(body, u16::from_le_bytes)?,
        Encoding::Utf16Be => utf16(body, u16::from_be_bytes)?,
    };
    Ok(Decoded { lines: count_lines(&text), chars: text.chars().count(), text, encoding })
}

fn utf16(body: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, TextError> {
    if !body.len().is_multiple_of(2) {
        return Err(TextError::BadUtf16);
    }
    let units = body.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    char::decode_utf16(units).collect::<Result<String, _>>().map_err(|_| TextError::BadUtf16)
}

fn count_lines(text: &str) -> usize {
    let breaks = text.matches('\n').count();
    if text.is_empty() || text.ends_with('\n') {
        breaks
    } else {
        breaks + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_with_and_without_bom() {
        let plain = decode("Привет\nмир".as_bytes()).unwrap();
        assert_eq!(plain.encoding, Encoding::Utf8);
        assert_eq!((plain.lines, plain.chars), (2, 10));

        let bom = decode(b"\xef\xbb\xbfabc\n").unwrap();
        assert_eq!(bom.encoding, Encoding::Utf8Bom);
        assert_eq!(bom.text, "abc\n");
        assert_eq!((bom.lines, bom.chars), (1, 4));
    }

    #[test]
    fn utf16_both_orders() {
        let mut le = vec![0xff, 0xfe];
        let mut be = vec![0xfe, 0xff];
        for unit in "中文 ok".encode_utf16() {
            le.extend(unit.to_le_bytes());
            be.extend(unit.to_be_bytes());
        }
        assert_eq!(decode(&le).unwrap().text, "中文 ok");
        assert_eq!(decode(&be).unwrap().text, "中文 ok");
        assert_eq!(decode(&le[..le.len() - 1]), Err(TextError::BadUtf16));
    }

    #[test]
    fn binary_and_latin1_are_refused_with_offsets() {
        assert_eq!(decode(b"ab\0cd"), Err(TextError::Binary(2)));
        assert_eq!(decode(b"caf\xe9"), Err(TextError::NotUtf8(3)));
    }

    #[test]
    fn empty_text_has_no_lines() {
        let empty = decode(b"").unwrap();
        assert_eq!((empty.lines, empty.chars), (0, 0));
    }
}
