//! Sentence segmentation shared by summarization and translation. Offsets are in characters
//! (Unicode scalar values) of the text given, so `text[start..end]` is always the sentence as it
//! stands in the document; `clean` is the same sentence with OCR line breaks and hyphenation
//! joined, for models to read.

/// A sentence of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentence {
    /// Character offsets into the text.
    pub start: usize,
    pub end: usize,
    /// Line breaks inside the sentence joined, end-of-line hyphenation removed.
    pub clean: String,
}

/// Abbreviations after which a full stop does not end a sentence (lower case, without the dot).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "cf", "fig", "no", "nos", "vol", "p",
    "pp", "inc", "ltd", "co", "corp", "dept", "gen", "col", "lt", "sgt", "capt", "gov", "rep", "sen", "jan", "feb", "mar",
    "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "approx", "art", "para", "ca", "al", "bzw", "usw", "z.b",
    "d.h", "nr", "ggf", "vgl", "hr", "fr", "mme", "mlle", "sra", "sr", "dra", "ул", "г", "т.е", "т.д", "др", "им", "стр", "тел",
];

fn is_closing(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '»' | '”' | '’' | '」' | '』' | '）' | '】' | '〉' | '》')
}

/// Terminators that end a sentence wherever they stand (CJK and Arabic-script marks).
fn is_hard_stop(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '؟' | '۔' | '।' | '॥' | '｡')
}

/// Sentences of `text`, in order, covering every non-blank stretch of it.
pub fn sentences(text: &str) -> Vec<Sentence> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut i = 0usize;
    while i < chars.len() {
        let c = chars[i];
        let mut cut = None;
        if is_hard_stop(c) || c == '…' || c == '!' || c == '?' || (c == '.' && full_stop(&chars, i)) {
            let mut j = i + 1;
            while j < chars.len() && (is_closing(chars[j]) || chars[j] == '.' || chars[j] == '!' || chars[j] == '?' || is_hard_stop(chars[j])) {
                j += 1;
            }
            // Latin-script stops need a following space (or the end); CJK/Arabic stops do not.
            let next_is_space = j >= chars.len() || chars[j].is_whitespace();
            if is_hard_stop(c) || next_is_space {
                cut = Some(j);
            }
        } else if c == '\n' && paragraph_break(&chars, i) {
            cut = Some(i);
        }
        if let Some(end) = cut {
            push(&chars, start, end, &mut out);
            start = end;
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    push(&chars, start, chars.len(), &mut out);
    out
}

/// A blank line (or a line break followed by a list bullet) ends a sentence.
fn paragraph_break(chars: &[char], i: usize) -> bool {
    let mut j = i + 1;
    while j < chars.len() && chars[j] != '\n' && chars[j].is_whitespace() {
        j += 1;
    }
    j < chars.len() && chars[j] == '\n' || j < chars.len() && matches!(chars[j], '•' | '▪' | '●' | '◦')
}

/// Whether the '.' at `i` ends a sentence: not a decimal point, an initial, an abbreviation, or
/// an ellipsis in the middle of a sentence followed by lower case.
fn full_stop(chars: &[char], i: usize) -> bool {
    let prev = if i > 0 { chars[i - 1] } else { ' ' };
    let next = chars.get(i + 1).copied().unwrap_or(' ');
    if prev.is_ascii_digit() && next.is_ascii_digit() {
        return false;
    }
    // The word before the dot.
    // Look back at most 32 characters: abbreviations are short, and a megabyte without spaces
    // (minified code) must not make splitting quadratic.
    let mut k = i;
    while k > 0 && i - k < 32 && !chars[k - 1].is_whitespace() && !matches!(chars[k - 1], '(' | '"' | '«' | '“') {
        k -= 1;
    }
    let word: String = chars[k..i].iter().collect::<String>().to_lowercase();
    if word.chars().count() == 1 && word.chars().all(char::is_alphabetic) && prev.is_uppercase() {
        return false; // an initial: "J. Smith"
    }
    if ABBREVIATIONS.contains(&word.trim_matches(|c: char| !c.is_alphanumeric() && c != '.')) {
        return false;
    }
    // The next word starting in lower case (Latin, Cyrillic, Greek) means the sentence goes on.
    let mut j = i + 1;
    while j < chars.len() && (chars[j].is_whitespace() || is_closing(chars[j])) {
        j += 1;
    }
    !chars.get(j).is_some_and(|c| c.is_lowercase())
}

fn push(chars: &[char], start: usize, end: usize, out: &mut Vec<Sentence>) {
    let (mut s, mut e) = (start, end);
    while s < e && chars[s].is_whitespace() {
        s += 1;
    }
    while e > s && chars[e - 1].is_whitespace() {
        e -= 1;
    }
    if s < e {
        out.push(Sentence { start: s, end: e, clean: clean(&chars[s..e]) });
    }
}

/// Join OCR line breaks: "infor-\nmation" becomes "information", other breaks a space.
fn clean(chars: &[char]) -> String {
    let mut out = String::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' || c == '\r' {
            let hyphenated = out.ends_with('-') && out.chars().rev().nth(1).is_some_and(char::is_alphabetic);
            let next_lower = chars[i + 1..].iter().find(|c| !c.is_whitespace()).is_some_and(|c| c.is_lowercase());
            if hyphenated && next_lower {
                out.pop();
            } else if !out.ends_with(' ') {
                out.push(' ');
            }
            while i + 1 < chars.len() && chars[i + 1].is_whitespace() {
                i += 1;
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

/// The characters `start..end` of `text`.
pub fn slice(text: &str, start: usize, end: usize) -> String {
    text.chars().skip(start).take(end.saturating_sub(start)).collect()
}

/// `text` cut in two for a model that cannot take it whole: at the whitespace nearest the middle
/// character (the earlier one on a tie), else, in text without spaces such as Chinese, at the
/// middle character. Both halves are trimmed, not empty, and shorter than `text`, so cutting
/// again and again ends; `None` when there is nothing to cut (under two non-blank characters).
pub fn halve(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    if n < 2 {
        return None;
    }
    let mid = n / 2;
    // Not at 0, so neither half is empty: the trimmed text starts and ends with a non-blank.
    let cut = (0..mid).find_map(|d| [mid - d, mid + d].into_iter().find(|&i| i > 0 && i < n && chars[i].1.is_whitespace())).unwrap_or(mid);
    let at = chars[cut].0;
    Some((text[..at].trim(), text[at..].trim()))
}

/// `text` in parts, in order, each of which `fits` (a model's token budget), cut with [`halve`];
/// a part that cannot be cut further is kept as it is and left to the model's own limit.
pub fn fit<E>(text: &str, fits: &mut impl FnMut(&str) -> Result<bool, E>) -> Result<Vec<String>, E> {
    if fits(text)? {
        return Ok(vec![text.to_owned()]);
    }
    let Some((a, b)) = halve(text) else {
        return Ok(vec![text.to_owned()]);
    };
    let mut parts = fit(a, fits)?;
    parts.extend(fit(b, fits)?);
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_until_every_part_fits_and_keeps_the_order() {
        let parts = fit("one two three four five six seven eight", &mut |t: &str| Ok::<_, ()>(t.split(' ').count() <= 2)).unwrap();
        assert_eq!(parts, ["one two", "three four", "five six", "seven eight"]);
        let uncuttable = fit("x", &mut |_: &str| Ok::<_, ()>(false)).unwrap();
        assert_eq!(uncuttable, ["x"]);
        assert_eq!(fit("a b", &mut |_: &str| Err::<bool, _>("tokenizer failed")), Err("tokenizer failed"));
    }

    #[test]
    fn halves_at_the_whitespace_nearest_the_middle_else_the_middle() {
        assert_eq!(halve("one two three four"), Some(("one two", "three four")));
        assert_eq!(halve("ab cd ef"), Some(("ab cd", "ef")));
        assert_eq!(halve("αβγ\u{3000}δεζ"), Some(("αβγ", "δεζ")), "any whitespace, cut at a char boundary");
        assert_eq!(halve("我们走了你呢"), Some(("我们走", "了你呢")));
        assert_eq!(halve("ab"), Some(("a", "b")));
        assert_eq!(halve(" ab"), Some(("a", "b")), "never an empty first half from a leading space");
        for nothing_to_cut in ["a", "", "     ", " a   "] {
            assert_eq!(halve(nothing_to_cut), None, "{nothing_to_cut:?}");
        }
        for text in ["x y", "x  \n  y", "long-unbroken-token-without-any-space", "a b c d e f g"] {
            let (a, b) = halve(text).unwrap();
            assert!(!a.is_empty() && !b.is_empty(), "{text:?}");
            assert!(a.len() < text.len() && b.len() < text.len(), "{text:?}");
        }
    }

    fn texts(text: &str) -> Vec<String> {
        sentences(text).iter().map(|s| slice(text, s.start, s.end)).collect()
    }

    #[test]
    fn latin_abbreviations_numbers_and_initials() {
        let t = "Dr. Smith paid $3.50 to J. Doe on Jan. 5. Then he left! Did he? Yes.";
        assert_eq!(texts(t), ["Dr. Smith paid $3.50 to J. Doe on Jan. 5.", "Then he left!", "Did he?", "Yes."]);
    }

    #[test]
    fn cjk_and_arabic_stops() {
        assert_eq!(texts("我们走了。你呢？好！"), ["我们走了。", "你呢？", "好！"]);
        assert_eq!(texts("هل أنت بخير؟ نعم."), ["هل أنت بخير؟", "نعم."]);
        assert_eq!(texts("他说：“走吧。”然后离开。"), ["他说：“走吧。”", "然后离开。"]);
    }

    #[test]
    fn ocr_line_breaks_are_joined_in_clean_text_only() {
        let t = "The infor-\nmation was\nclear. Next one.\n\nHeading\nBody text.";
        let s = sentences(t);
        assert_eq!(s[0].clean, "The information was clear.");
        assert_eq!(slice(t, s[0].start, s[0].end), "The infor-\nmation was\nclear.");
        assert_eq!(texts(t), ["The infor-\nmation was\nclear.", "Next one.", "Heading\nBody text."]);
    }
}
