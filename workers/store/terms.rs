//! Search terms, made the same way for indexing and for queries and for both stores: lower-cased
//! words split at anything that is not a letter or digit, and runs of Han, kana, Hangul and Thai
//! as overlapping character pairs, so a Chinese word is found inside unbroken text. A single Han
//! character stands alone.

use super::Snippet;

/// The terms of `text`, in order, repeats kept: the extractive summarizer's terms, stop words
/// included.
pub fn terms(text: &str) -> Vec<String> {
    docpipe_models::script::terms(text)
}

/// The terms of `text` joined by spaces, as the SQLite index takes them.
pub fn joined(text: &str) -> String {
    docpipe_models::script::joined_terms(text)
}

/// The distinct terms of a query; a document matches when it holds every one.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    terms(query).into_iter().filter(|t| seen.insert(t.clone())).collect()
}

/// Up to `width` characters either side of the first place in `text` where the query's words
/// stand (case-insensitively), or the start of `text` when they are spread apart.
pub fn snippet(text: &str, query: &str, width: usize) -> Snippet {
    let chars: Vec<char> = text.chars().collect();
    let lower: Vec<char> = chars.iter().map(|c| c.to_lowercase().next().unwrap_or(*c)).collect();
    // The longest piece of the query that is written as one: a word, or a run of unspaced script.
    let mut pieces: Vec<Vec<char>> = query
        .split(|c: char| !(c.is_alphanumeric()))
        .filter(|p| !p.is_empty())
        .map(|p| p.chars().map(|c| c.to_lowercase().next().unwrap_or(c)).collect())
        .collect();
    pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let found = pieces.iter().find_map(|p| find(&lower, p).map(|at| (at, p.len())));
    let (at, len) = found.unwrap_or((0, 0));
    let from = at.saturating_sub(width);
    let to = (at + len + width).min(chars.len());
    let mut before: String = chars[from..at].iter().collect();
    if from > 0 {
        before.insert(0, '…');
    }
    let mut after: String = chars[at + len..to].iter().collect();
    if to < chars.len() {
        after.push('…');
    }
    Snippet { before, hit: chars[at..at + len].iter().collect(), after }
}

fn find(haystack: &[char], needle: &[char]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    (0..=haystack.len() - needle.len()).find(|&i| haystack[i..i + needle.len()] == *needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin_cyrillic_and_arabic_are_words_folded_to_lower_case() {
        assert_eq!(terms("Account No. 4417-22, Moscow"), ["account", "no", "4417", "22", "moscow"]);
        assert_eq!(terms("Перевод в Банк"), ["перевод", "в", "банк"]);
        assert_eq!(terms("تحويل مصرفي"), ["تحويل", "مصرفي"]);
    }

    #[test]
    fn han_and_kana_runs_become_overlapping_pairs() {
        assert_eq!(terms("北京大学"), ["北京", "京大", "大学"]);
        assert_eq!(terms("在北京，张三"), ["在北", "北京", "张三"]);
        assert_eq!(terms("銀"), ["銀"]);
        assert_eq!(terms("IBAN中国银行DE89"), ["iban", "中国", "国银", "银行", "de89"]);
        // A Chinese word inside a sentence shares all of its pairs with the sentence.
        let sentence = terms("他把钱转到了中国银行的账户");
        assert!(query_terms("中国银行").iter().all(|t| sentence.contains(t)));
    }

    #[test]
    fn snippets_centre_on_the_match_and_keep_original_case() {
        let s = snippet("The transfer to Account 4417 was made on Monday.", "account", 6);
        assert_eq!((s.before.as_str(), s.hit.as_str(), s.after.as_str()), ("…er to ", "Account", " 4417 …"));
        let s = snippet("他把钱转到了中国银行的账户", "中国银行", 2);
        assert_eq!((s.before.as_str(), s.hit.as_str(), s.after.as_str()), ("…到了", "中国银行", "的账…"));
    }
}
