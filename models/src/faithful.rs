//! Faithfulness check for machine-written text: numbers (dates and amounts included) and names
//! in a summary that the source does not contain. It cannot prove a summary right; it shows the
//! analyst what the model may have invented.

use std::collections::HashSet;

use crate::script::is_han;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Number,
    Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Unsupported {
    pub kind: Kind,
    pub text: String,
}

/// ASCII value of a decimal digit in any common script (Arabic-Indic, Persian, full-width, ...).
fn digit(c: char) -> Option<char> {
    if c.is_ascii_digit() {
        return Some(c);
    }
    let base = match c as u32 {
        0x0660..=0x0669 => 0x0660,
        0x06F0..=0x06F9 => 0x06F0,
        0x0966..=0x096F => 0x0966,
        0xFF10..=0xFF19 => 0xFF10,
        _ => return None,
    };
    char::from_digit(c as u32 - base, 10)
}

/// Number tokens: digits with inner separators (`1,200`, `3.5`, `12/03/2024`, `10:30`), as
/// (as written, digit groups).
fn numbers(text: &str) -> Vec<(String, Vec<String>)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if digit(chars[i]).is_none() {
            i += 1;
            continue;
        }
        let start = i;
        let mut groups = vec![String::new()];
        while i < chars.len() {
            if let Some(d) = digit(chars[i]) {
                groups.last_mut().expect("one group").push(d);
                i += 1;
            } else if matches!(chars[i], ',' | '.' | '/' | ':' | '-' | '\u{066B}' | '\u{066C}') && i + 1 < chars.len() && digit(chars[i + 1]).is_some() {
                groups.push(String::new());
                i += 1;
            } else {
                break;
            }
        }
        out.push((chars[start..i].iter().collect(), groups));
    }
    out
}

/// Capitalized word spans (`Jean Dupont`, `UNHCR`); a single capitalized word that opens a
/// sentence is not a name by itself.
fn names(text: &str) -> Vec<Vec<String>> {
    let mut spans = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut sentence_start = true;
    let mut current_opens_sentence = false;
    let flush = |current: &mut Vec<String>, opens: bool, spans: &mut Vec<Vec<String>>| {
        if !(current.is_empty() || (opens && current.len() == 1)) {
            spans.push(std::mem::take(current));
        }
        current.clear();
    };
    for raw in text.split_whitespace() {
        let word: String = raw.trim_matches(|c: char| !c.is_alphanumeric()).to_owned();
        let capitalized = word.chars().next().is_some_and(|c| c.is_uppercase()) && word.chars().any(|c| c.is_alphabetic());
        if capitalized && word != "I" {
            if current.is_empty() {
                current_opens_sentence = sentence_start;
            }
            current.push(word);
        } else {
            flush(&mut current, current_opens_sentence, &mut spans);
        }
        sentence_start = raw.ends_with(['.', '!', '?', ':', '"', '\u{201D}']);
        if sentence_start {
            flush(&mut current, current_opens_sentence, &mut spans);
        }
    }
    flush(&mut current, current_opens_sentence, &mut spans);
    spans
}

/// What in `summary` the `sources` (original text, its translation) do not back up.
pub fn check(summary: &str, sources: &[&str]) -> Vec<Unsupported> {
    let mut known_numbers: HashSet<String> = HashSet::new();
    let mut known_words: HashSet<String> = HashSet::new();
    for source in sources {
        for (_, groups) in numbers(source) {
            known_numbers.insert(groups.concat());
            known_numbers.extend(groups);
        }
        known_words.extend(source.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase));
    }
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |kind: Kind, text: String, found: &mut Vec<Unsupported>| {
        if seen.insert((kind, text.clone())) {
            found.push(Unsupported { kind, text });
        }
    };
    for (written, groups) in numbers(summary) {
        let whole = known_numbers.contains(&groups.concat());
        let parts = groups.len() > 1 && groups.iter().all(|g| known_numbers.contains(g));
        if !(whole || parts) {
            push(Kind::Number, written, &mut found);
        }
    }
    for span in names(summary) {
        // "Canada's" is backed by "Canada": drop the possessive, compare the alphanumeric parts.
        let known = |w: &String| {
            let stem = w.trim_end_matches("'s").trim_end_matches("\u{2019}s");
            stem.split(|c: char| !c.is_alphanumeric()).filter(|p| !p.is_empty()).all(|p| known_words.contains(&p.to_lowercase()))
        };
        if !span.iter().all(known) {
            push(Kind::Name, span.join(" "), &mut found);
        }
    }
    // CJK has no capitals or spaces: characters of a run that no source bigram covers, two or
    // more in a row, are what the source does not say (a name, most often).
    let chars: Vec<char> = summary.chars().collect();
    let covered: Vec<bool> = (0..chars.len())
        .map(|i| {
            let bigram = |a: usize| chars.get(a..a + 2).is_some_and(|b| b.iter().all(|c| is_han(*c)) && sources.iter().any(|s| s.contains(&b.iter().collect::<String>())));
            !is_han(chars[i]) || bigram(i) || (i > 0 && bigram(i - 1))
        })
        .collect();
    let mut i = 0;
    while i < chars.len() {
        if covered[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !covered[i] {
            i += 1;
        }
        if i - start >= 2 {
            push(Kind::Name, chars[start..i].iter().collect(), &mut found);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "On 12 March 2024 the Hamburg police seized 1,200 kg of cocaine from the vessel MSC Aurora. \
                          Captain Jan Kowalski was arrested; the cargo was worth €3.5 million.";

    #[test]
    fn a_restatement_passes() {
        let summary = "Hamburg police seized 1,200 kg of cocaine from the MSC Aurora on 12 March 2024 and arrested the Aurora's Captain Jan Kowalski.";
        assert_eq!(check(summary, &[SOURCE]), vec![]);
    }

    #[test]
    fn invented_numbers_and_names_are_listed() {
        let summary = "Police seized 1,500 kg of cocaine on 14 March 2024. Officer Maria Schmidt led the raid; the cargo was worth €3.5 million.";
        let found = check(summary, &[SOURCE]);
        assert!(found.contains(&Unsupported { kind: Kind::Number, text: "1,500".into() }), "{found:?}");
        assert!(found.contains(&Unsupported { kind: Kind::Number, text: "14".into() }), "{found:?}");
        assert!(found.contains(&Unsupported { kind: Kind::Name, text: "Officer Maria Schmidt".into() }), "{found:?}");
        assert!(!found.iter().any(|u| u.text == "2024" || u.text == "3.5" || u.text == "March"), "{found:?}");
    }

    #[test]
    fn digits_in_other_scripts_and_cjk_names() {
        assert_eq!(check("The ship carried 1200 tonnes.", &["حملت السفينة ١٢٠٠ طن"]), vec![]);
        assert_eq!(check("王芳在北京被捕。", &["昨天，王芳在北京被捕。"]), vec![]);
        assert_eq!(check("张伟在北京被捕。", &["王芳在北京被捕。"]), vec![Unsupported { kind: Kind::Name, text: "张伟".into() }]);
    }
}
