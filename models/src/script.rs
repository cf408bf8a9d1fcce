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
    for_each_term(text, |term| out.push(term.to_owned()));
    out
}

/// The terms of `text` joined by single spaces: what a full-text index is given, made without a
/// string per term (indexing a large case spends much of its time here).
pub fn joined_terms(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for_each_term(text, |term| {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(term);
    });
    out
}

/// What a term needs to know of a character below U+3000 (the alphabets: Latin, Greek, Cyrillic,
/// Armenian, Hebrew, Arabic, Indic, Thai, ...): a table filled once instead of Unicode lookups per
/// character (they were a tenth of the time of indexing a case).
#[derive(Clone, Copy)]
enum Class {
    /// Not a letter or digit.
    Separator,
    /// A letter or digit whose lower case is this one character.
    Lower(char),
    /// A letter or digit whose lower case is several characters (e.g. 'İ'): ask Unicode.
    Special,
}

const TABLE_END: u32 = 0x3000;

fn class(c: char) -> Class {
    static TABLE: std::sync::OnceLock<Vec<Class>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..TABLE_END)
            .map(|n| match char::from_u32(n) {
                Some(c) if c.is_alphanumeric() => {
                    let mut lower = c.to_lowercase();
                    match (lower.next(), lower.next()) {
                        (Some(l), None) => Class::Lower(l),
                        _ => Class::Special,
                    }
                }
                _ => Class::Separator,
            })
            .collect()
    });
    match table.get(c as usize) {
        Some(class) => *class,
        None if c.is_alphanumeric() => Class::Special,
        None => Class::Separator,
    }
}

/// Calls `emit` with each term of `text` (see [`terms`]), reusing two buffers.
pub fn for_each_term(text: &str, mut emit: impl FnMut(&str)) {
    let mut word = String::new();
    let mut pair = String::new();
    // The current run of unspaced characters: its last character and its length.
    let mut last: Option<char> = None;
    let mut run = 0usize;
    let end_run = |last: &mut Option<char>, run: &mut usize, emit: &mut dyn FnMut(&str)| {
        if *run == 1 {
            if let Some(c) = *last {
                emit(c.encode_utf8(&mut [0; 4]));
            }
        }
        *last = None;
        *run = 0;
    };
    for c in text.chars() {
        if is_unspaced(c) {
            if !word.is_empty() {
                emit(&word);
                word.clear();
            }
            if let Some(previous) = last {
                pair.clear();
                pair.push(previous);
                pair.push(c);
                emit(&pair);
            }
            last = Some(c);
            run += 1;
            continue;
        }
        end_run(&mut last, &mut run, &mut emit);
        match class(c) {
            Class::Lower(lower) => word.push(lower),
            Class::Special => word.extend(c.to_lowercase()),
            Class::Separator => {
                if !word.is_empty() {
                    emit(&word);
                    word.clear();
                }
            }
        }
    }
    end_run(&mut last, &mut run, &mut emit);
    if !word.is_empty() {
        emit(&word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_character_table_agrees_with_unicode() {
        for c in (0..0x3200).filter_map(char::from_u32) {
            let mut expected = String::new();
            if c.is_alphanumeric() {
                expected.extend(c.to_lowercase());
            }
            let got = match class(c) {
                Class::Separator => String::new(),
                Class::Lower(l) => l.to_string(),
                Class::Special => c.to_lowercase().collect(),
            };
            assert_eq!(got, expected, "{c:?}");
        }
    }

    #[test]
    fn terms_of_mixed_scripts_in_order() {
        assert_eq!(terms("IBAN中国银行DE89, Straße 5 北"), ["iban", "中国", "国银", "银行", "de89", "straße", "5", "北"]);
        assert_eq!(terms("Ärger в Москве: 東京タワー"), ["ärger", "в", "москве", "東京", "京タ", "タワ", "ワー"]);
        assert_eq!(joined_terms("Account No. 4417 銀"), "account no 4417 銀");
        assert!(terms(" ,. ").is_empty() && joined_terms("").is_empty());
    }

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
