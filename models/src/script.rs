//! Which writing system a character belongs to, for the few scripts the text engines treat
//! differently. One definition, so language identification, the extractive summarizer and the
//! faithfulness check agree on what counts as Han, kana, Hangul or Thai.

/// Han ideographs (Chinese characters, Japanese kanji, Korean hanja): CJK Unified Ideographs
/// (U+4E00..U+9FFF), Extension A (U+3400..U+4DBF), Compatibility Ideographs (U+F900..U+FAFF)
/// and the whole Supplementary Ideographic Plane (U+20000..U+2FFFF: Extensions B to F and the
/// compatibility supplement), where rare characters of names and places live. Radicals, strokes
/// and CJK punctuation are not Han.
pub fn is_han(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xF900..=0xFAFF | 0x20000..=0x2FFFF)
}

/// Japanese kana: Hiragana and Katakana (U+3040..U+30FF), Katakana Phonetic Extensions
/// (U+31F0..U+31FF) and halfwidth Katakana (U+FF66..U+FF9F).
pub fn is_kana(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F)
}

/// Korean Hangul: Jamo (U+1100..U+11FF), Compatibility Jamo (U+3130..U+318F) and precomposed
/// syllables (U+AC00..U+D7AF).
pub fn is_hangul(c: char) -> bool {
    matches!(c as u32, 0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF)
}

/// Thai (U+0E00..U+0E7F).
pub fn is_thai(c: char) -> bool {
    matches!(c as u32, 0x0E00..=0x0E7F)
}

/// Scripts the summarizer reads as character bigrams rather than words: Han, kana and Thai put
/// no spaces between words. Korean does space its words, but glues particles and endings onto
/// them, so bigrams also match one word across its forms.
pub fn is_unspaced(c: char) -> bool {
    is_han(c) || is_kana(c) || is_thai(c) || is_hangul(c)
}

/// The terms of `text`, in order, repeats kept: words folded to lower case, split at anything
/// that is not a letter or digit, and runs of unspaced scripts as overlapping character pairs (a
/// lone character stands alone), so a word is found inside unbroken text. The extractive
/// summarizer compares sentences by these terms and the results store indexes them.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut run: Vec<char> = Vec::new();
    let flush_run = |run: &mut Vec<char>, out: &mut Vec<String>| {
        if run.len() == 1 {
            out.push(run[0].to_string());
        }
        out.extend(run.windows(2).map(|pair| pair.iter().collect::<String>()));
        run.clear();
    };
    for c in text.chars() {
        if is_unspaced(c) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            run.push(c);
        } else if c.is_alphanumeric() {
            flush_run(&mut run, &mut out);
            word.extend(c.to_lowercase());
        } else {
            flush_run(&mut run, &mut out);
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        }
    }
    flush_run(&mut run, &mut out);
    if !word.is_empty() {
        out.push(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_edges() {
        // Han: unified, extension A, compatibility, extension B and its neighbours in plane 2.
        for c in ['一', '鿿', '㐀', '䶿', '豈', '\u{20000}', '\u{2A6DF}', '\u{2A700}', '\u{2FA1D}'] {
            assert!(is_han(c), "{c:?} is Han");
        }
        for c in ['a', '。', '⺀', '\u{31C0}', 'あ', '한'] {
            assert!(!is_han(c), "{c:?} is not Han");
        }
        assert!(['あ', 'ア', 'ㇰ', 'ｱ'].iter().all(|&c| is_kana(c)) && !is_kana('一'));
        assert!(['ᄀ', 'ㄱ', '가', '힣'].iter().all(|&c| is_hangul(c)) && !is_hangul('あ'));
        assert!(is_thai('ก') && !is_thai('a'));
    }

    #[test]
    fn unspaced_scripts() {
        assert!("我们あア가ไทย\u{20BB7}".chars().all(is_unspaced));
        assert!(!"Latin Кириллица العربية ".chars().any(is_unspaced));
    }
}
