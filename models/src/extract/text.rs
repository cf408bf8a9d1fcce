//! Text formats: plain text in any common encoding, HTML and XML. Encoding is decided from the
//! byte-order mark, then UTF-8 validity, then (HTML/XML) the declared charset, then EBCDIC
//! evidence, then statistical detection (chardetng).

use super::input::Input;
use super::{ExtractError, ExtractErrorKind, Extracted, Page, Source};

/// Decode bytes that are text in some encoding; returns the text and the encoding's name.
pub fn decode(bytes: &[u8], declared: Option<&str>) -> (String, String) {
    if let Ok(decoded) = crate::text::decode(bytes) {
        return (decoded.text, decoded.encoding.label().to_owned());
    }
    if let Some(encoding) = declared.and_then(|label| encoding_rs::Encoding::for_label(label.trim().as_bytes())) {
        let (text, _, _) = encoding.decode(bytes);
        return (text.into_owned(), encoding.name().to_ascii_lowercase());
    }
    if looks_like_ebcdic(bytes) {
        return (bytes.iter().map(|&b| CP500[b as usize]).collect(), "ibm500 (ebcdic)".to_owned());
    }
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(bytes, true);
    let encoding = detector.guess(None, true);
    let (text, _, _) = encoding.decode(bytes);
    (text.into_owned(), format!("{} (detected)", encoding.name().to_ascii_lowercase()))
}

/// The encoding of a Windows code page number (RTF's `\ansicpg`, a MAPI message's code page).
pub fn encoding_for_codepage(codepage: u32) -> Option<&'static encoding_rs::Encoding> {
    match codepage {
        932 => Some(encoding_rs::SHIFT_JIS),
        936 => Some(encoding_rs::GBK),
        949 => Some(encoding_rs::EUC_KR),
        950 => Some(encoding_rs::BIG5),
        20866 => Some(encoding_rs::KOI8_R),
        21866 => Some(encoding_rs::KOI8_U),
        28591..=28606 => encoding_rs::Encoding::for_label(format!("iso-8859-{}", codepage - 28590).as_bytes()),
        50220..=50222 => Some(encoding_rs::ISO_2022_JP),
        51932 => Some(encoding_rs::EUC_JP),
        54936 | 20936 => Some(encoding_rs::GB18030),
        65001 => Some(encoding_rs::UTF_8),
        1200 => Some(encoding_rs::UTF_16LE),
        _ => encoding_rs::Encoding::for_label(format!("windows-{codepage}").as_bytes()),
    }
}

/// EBCDIC text has its space at 0x40 and lower-case letters at 0x81-0xA9; ASCII-family text
/// has spaces at 0x20.
fn looks_like_ebcdic(bytes: &[u8]) -> bool {
    let n = bytes.len().max(1) as f64;
    let count = |f: &dyn Fn(u8) -> bool| bytes.iter().filter(|&&b| f(b)).count() as f64 / n;
    count(&|b| b == 0x40) > 0.08 && count(&|b| b == 0x20) < 0.01 && count(&|b| (0x81..=0xa9).contains(&b)) > 0.2
}

/// Plain text or XML from bytes or a file, up to `limit` bytes: past it, the first `limit` (to
/// the last line end in them, else to a character boundary) are read and the rest is reported as
/// not read. The text of one document is held in memory several times over, and a text file is
/// the one format that is all text.
pub fn plain_from(input: Input<'_>, limit: u64) -> Result<Extracted, ExtractError> {
    if input.len() <= limit {
        return plain(&input.whole(u64::MAX, "text")?);
    }
    let head = input.head(limit as usize)?;
    let cut = cut_point(&head);
    let mut extracted = plain(&head[..cut])?;
    extracted.condition = Some(ExtractError::new(
        ExtractErrorKind::TooLarge,
        format!("only the first {cut} of {} bytes were read as text (extract.max_text_bytes); the rest is not in this result", input.len()),
    ));
    Ok(extracted)
}

/// Where to cut the head of a long text: after its last line end, else at the last character
/// boundary (UTF-8 continuation bytes are not cut from their character), and at an even length
/// in UTF-16 (BOM FF FE or FE FF) so no code unit is split.
fn cut_point(head: &[u8]) -> usize {
    let utf16 = head.starts_with(b"\xff\xfe") || head.starts_with(b"\xfe\xff");
    if utf16 {
        // Line end: 0A 00 (little-endian) or 00 0A (big-endian), both ending at an even offset.
        let little = head.starts_with(b"\xff\xfe");
        let end = head.chunks_exact(2).rposition(|unit| if little { unit == [0x0a, 0] } else { unit == [0, 0x0a] });
        return end.map_or(head.len() & !1, |i| 2 * i + 2);
    }
    if let Some(end) = head.iter().rposition(|&b| b == b'\n') {
        return end + 1;
    }
    // The lead byte of the last character, and whether all of that character's bytes are here.
    let mut start = head.len();
    while start > 0 && head.len() - start < 4 && head[start - 1] & 0xc0 == 0x80 {
        start -= 1;
    }
    let Some(&lead) = start.checked_sub(1).and_then(|i| head.get(i)) else { return head.len() };
    let needs = match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    };
    if head.len() - (start - 1) >= needs { head.len() } else { start - 1 }
}

pub fn plain(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let declared = xml_declared_charset(bytes);
    let (text, encoding) = decode(bytes, declared.as_deref());
    let text = if bytes.starts_with(b"<?xml") { markup_to_text(&text) } else { text };
    Ok(Extracted {
        encoding: Some(encoding),
        pages: vec![Page::text(1, text, Source::Text)],
        page_count: Some(1),
        ..Default::default()
    })
}

pub fn html(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let declared = html_declared_charset(bytes).or_else(|| xml_declared_charset(bytes));
    let (markup, encoding) = decode(bytes, declared.as_deref());
    let mut extracted = Extracted {
        media_type: "text/html".into(),
        encoding: Some(encoding),
        page_count: Some(1),
        ..Default::default()
    };
    if let Some(title) = element_text(&markup, "title") {
        extracted.metadata.insert("title".into(), title);
    }
    extracted.pages.push(Page::text(1, markup_to_text(&markup), Source::Text));
    Ok(extracted)
}

/// `<meta charset=...>` or `<meta http-equiv=... content="...; charset=...">` in the first 4 KiB.
fn html_declared_charset(bytes: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).to_ascii_lowercase();
    let at = head.find("charset=")? + "charset=".len();
    let value: String = head[at..]
        .trim_start_matches(['"', '\''])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        .collect();
    (!value.is_empty()).then_some(value)
}

fn xml_declared_charset(bytes: &[u8]) -> Option<String> {
    if !bytes.starts_with(b"<?xml") {
        return None;
    }
    let decl = String::from_utf8_lossy(&bytes[..bytes.iter().position(|&b| b == b'>').unwrap_or(0)]).to_ascii_lowercase();
    let at = decl.find("encoding=")? + "encoding=".len();
    let value: String = decl[at..].trim_start_matches(['"', '\'']).chars().take_while(|c| !matches!(c, '"' | '\'')).collect();
    (!value.is_empty()).then_some(value)
}

fn element_text(markup: &str, tag: &str) -> Option<String> {
    let lower = markup.to_ascii_lowercase();
    let start = lower.find(&format!("<{tag}"))?;
    let open_end = start + lower[start..].find('>')? + 1;
    let close = open_end + lower[open_end..].find(&format!("</{tag}"))?;
    let text = decode_entities(markup[open_end..close].trim());
    (!text.is_empty()).then_some(text)
}

/// Visible text of HTML or XML: scripts, styles and comments dropped, block elements on their
/// own lines, entities decoded.
pub fn markup_to_text(markup: &str) -> String {
    const BLOCKS: &[&str] = &[
        "p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "section", "article",
        "header", "footer", "blockquote", "pre", "title", "td", "th",
    ];
    let lower = markup.to_ascii_lowercase();
    let mut out = String::with_capacity(markup.len() / 2);
    let mut i = 0;
    while i < markup.len() {
        let rest = &lower[i..];
        if rest.starts_with("<!--") {
            i += rest.find("-->").map_or(rest.len(), |e| e + 3);
        } else if let Some(skip) = ["script", "style", "head>"].iter().find(|t| rest.starts_with(&format!("<{t}"))) {
            let name = skip.trim_end_matches('>');
            // <head> holds no visible text except the title, reported as metadata.
            let end = rest.find(&format!("</{name}")).map(|e| e + rest[e..].find('>').unwrap_or(0) + 1);
            i += end.unwrap_or(rest.len());
        } else if rest.starts_with('<') {
            let end = rest.find('>').map_or(rest.len(), |e| e + 1);
            let name: String = rest[1..end].trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            if BLOCKS.contains(&name.as_str()) && !out.ends_with('\n') {
                out.push('\n');
            } else if name == "td" || name == "th" {
                out.push('\t');
            }
            i += end;
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            out.push_str(&decode_entities(&markup[i..i + end]));
            i += end;
        }
    }
    collapse_blank_lines(&out)
}

fn collapse_blank_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_owned()
}

pub fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let window = rest.char_indices().nth(12).map_or(rest.len(), |(i, _)| i);
        let end = rest[..window].find(';');
        let decoded = end.and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ if name.starts_with("#x") || name.starts_with("#X") => u32::from_str_radix(&name[2..], 16).ok().and_then(char::from_u32),
                _ if name.starts_with('#') => name[1..].parse().ok().and_then(char::from_u32),
                _ => None,
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}


const CP500: [char; 256] = ['\u{0}', '\u{1}', '\u{2}', '\u{3}', '\u{9c}', '\u{9}', '\u{86}', '\u{7f}', '\u{97}', '\u{8d}', '\u{8e}', '\u{b}', '\u{c}', '\u{d}', '\u{e}', '\u{f}', '\u{10}', '\u{11}', '\u{12}', '\u{13}', '\u{9d}', '\u{85}', '\u{8}', '\u{87}', '\u{18}', '\u{19}', '\u{92}', '\u{8f}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{1f}', '\u{80}', '\u{81}', '\u{82}', '\u{83}', '\u{84}', '\u{a}', '\u{17}', '\u{1b}', '\u{88}', '\u{89}', '\u{8a}', '\u{8b}', '\u{8c}', '\u{5}', '\u{6}', '\u{7}', '\u{90}', '\u{91}', '\u{16}', '\u{93}', '\u{94}', '\u{95}', '\u{96}', '\u{4}', '\u{98}', '\u{99}', '\u{9a}', '\u{9b}', '\u{14}', '\u{15}', '\u{9e}', '\u{1a}', '\u{20}', '\u{a0}', '\u{e2}', '\u{e4}', '\u{e0}', '\u{e1}', '\u{e3}', '\u{e5}', '\u{e7}', '\u{f1}', '\u{5b}', '\u{2e}', '\u{3c}', '\u{28}', '\u{2b}', '\u{21}', '\u{26}', '\u{e9}', '\u{ea}', '\u{eb}', '\u{e8}', '\u{ed}', '\u{ee}', '\u{ef}', '\u{ec}', '\u{df}', '\u{5d}', '\u{24}', '\u{2a}', '\u{29}', '\u{3b}', '\u{5e}', '\u{2d}', '\u{2f}', '\u{c2}', '\u{c4}', '\u{c0}', '\u{c1}', '\u{c3}', '\u{c5}', '\u{c7}', '\u{d1}', '\u{a6}', '\u{2c}', '\u{25}', '\u{5f}', '\u{3e}', '\u{3f}', '\u{f8}', '\u{c9}', '\u{ca}', '\u{cb}', '\u{c8}', '\u{cd}', '\u{ce}', '\u{cf}', '\u{cc}', '\u{60}', '\u{3a}', '\u{23}', '\u{40}', '\u{27}', '\u{3d}', '\u{22}', '\u{d8}', '\u{61}', '\u{62}', '\u{63}', '\u{64}', '\u{65}', '\u{66}', '\u{67}', '\u{68}', '\u{69}', '\u{ab}', '\u{bb}', '\u{f0}', '\u{fd}', '\u{fe}', '\u{b1}', '\u{b0}', '\u{6a}', '\u{6b}', '\u{6c}', '\u{6d}', '\u{6e}', '\u{6f}', '\u{70}', '\u{71}', '\u{72}', '\u{aa}', '\u{ba}', '\u{e6}', '\u{b8}', '\u{c6}', '\u{a4}', '\u{b5}', '\u{7e}', '\u{73}', '\u{74}', '\u{75}', '\u{76}', '\u{77}', '\u{78}', '\u{79}', '\u{7a}', '\u{a1}', '\u{bf}', '\u{d0}', '\u{dd}', '\u{de}', '\u{ae}', '\u{a2}', '\u{a3}', '\u{a5}', '\u{b7}', '\u{a9}', '\u{a7}', '\u{b6}', '\u{bc}', '\u{bd}', '\u{be}', '\u{ac}', '\u{7c}', '\u{af}', '\u{a8}', '\u{b4}', '\u{d7}', '\u{7b}', '\u{41}', '\u{42}', '\u{43}', '\u{44}', '\u{45}', '\u{46}', '\u{47}', '\u{48}', '\u{49}', '\u{ad}', '\u{f4}', '\u{f6}', '\u{f2}', '\u{f3}', '\u{f5}', '\u{7d}', '\u{4a}', '\u{4b}', '\u{4c}', '\u{4d}', '\u{4e}', '\u{4f}', '\u{50}', '\u{51}', '\u{52}', '\u{b9}', '\u{fb}', '\u{fc}', '\u{f9}', '\u{fa}', '\u{ff}', '\u{5c}', '\u{f7}', '\u{53}', '\u{54}', '\u{55}', '\u{56}', '\u{57}', '\u{58}', '\u{59}', '\u{5a}', '\u{b2}', '\u{d4}', '\u{d6}', '\u{d2}', '\u{d3}', '\u{d5}', '\u{30}', '\u{31}', '\u{32}', '\u{33}', '\u{34}', '\u{35}', '\u{36}', '\u{37}', '\u{38}', '\u{39}', '\u{b3}', '\u{db}', '\u{dc}', '\u{d9}', '\u{da}', '\u{9f}'];

#[cfg(test)]
mod tests {
    use super::cut_point;

    #[test]
    fn long_text_is_cut_at_a_line_end_or_a_whole_character() {
        assert_eq!(cut_point(b"one\ntwo\nthr"), 8);
        let word = "жжж".as_bytes(); // 6 bytes, no line end
        assert_eq!(cut_point(&word[..5]), 4, "the half character goes");
        assert_eq!(cut_point(&word[..6]), 6, "a whole last character stays");
        assert_eq!(cut_point(b"abc"), 3);
        let utf16: Vec<u8> = [0xff, 0xfe].into_iter().chain("a\nb".encode_utf16().flat_map(u16::to_le_bytes)).collect();
        assert_eq!(cut_point(&utf16[..7]), 6, "after the UTF-16 line end");
        let no_line: Vec<u8> = [0xff, 0xfe].into_iter().chain("abc".encode_utf16().flat_map(u16::to_le_bytes)).collect();
        assert_eq!(cut_point(&no_line[..7]), 6, "an even length");
    }
}
