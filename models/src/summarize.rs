//! Extractive summarization: LexRank (PageRank over TF-IDF cosine similarity between sentences)
//! with maximal marginal relevance so near-duplicates are not picked twice, and boilerplate
//! (sentences repeated on several pages: headers, footers, legal notices) left out. Works on any
//! language: words where scripts space them, character bigrams for Chinese, Japanese and Thai.

use std::collections::HashMap;

use crate::segment::Sentence;

/// How long a summary should be.
#[derive(Debug, Clone, Copy)]
pub enum Length {
    Sentences(usize),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub length: Length,
    /// Trade-off between centrality and novelty (1.0: centrality only).
    pub lambda: f32,
    pub key_terms: usize,
    /// Weight of the position prior against centrality (0: LexRank alone).
    pub position_weight: f32,
    /// Sentence index at which the position prior has halved.
    pub position_scale: f32,
}

impl Default for Options {
    fn default() -> Self {
        // A mild position prior: news and reports front-load, but seized documents often do not.
        Self { length: Length::Sentences(5), lambda: 0.7, key_terms: 8, position_weight: 0.3, position_scale: 5.0 }
    }
}

/// A sentence chosen for the summary: its index among the input sentences, and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct Picked {
    pub index: usize,
    pub score: f32,
}

/// An extractive summary: sentences picked from the document (see also
/// [`crate::llm::tasks::AbstractiveSummary`], written by a language model).
#[derive(Debug, Clone, Default)]
pub struct ExtractiveSummary {
    /// In document order.
    pub sentences: Vec<Picked>,
    pub key_terms: Vec<(String, f32)>,
    /// Indices of sentences treated as boilerplate.
    pub boilerplate: Vec<usize>,
}

/// Sentences of a document with the page each one is on.
pub struct Input<'a> {
    pub sentences: &'a [Sentence],
    pub pages: &'a [u32],
}

pub fn summarize(input: &Input<'_>, options: &Options) -> ExtractiveSummary {
    let n = input.sentences.len();
    if n == 0 {
        return ExtractiveSummary::default();
    }
    let tokens: Vec<Vec<String>> = input.sentences.iter().map(|s| tokens(&s.clean)).collect();
    let boilerplate = boilerplate(input);
    let boilerplate_set: std::collections::HashSet<usize> = boilerplate.iter().copied().collect();
    let (vectors, idf) = tfidf(&tokens);

    let Length::Sentences(want) = options.length;
    // Candidates: not boilerplate, not a repeat of an earlier sentence, with some content;
    // fragments (under three content words) only when there are not enough full sentences.
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<usize> = (0..n)
        .filter(|&i| !boilerplate_set.contains(&i) && !tokens[i].is_empty() && seen.insert(normalized(&input.sentences[i].clean)))
        .collect();
    let full: Vec<usize> = unique.iter().copied().filter(|&i| tokens[i].len() >= 3).collect();
    let candidates = if full.len() >= want { full } else { unique };
    let want = want.min(candidates.len());

    // Centrality blended with position: documents put what matters first more often than not.
    let position = |i: usize| 1.0 / (1.0 + i as f32 / options.position_scale.max(1e-3));
    let centrality: Vec<f32> = lexrank(&candidates, &vectors)
        .iter()
        .zip(&candidates)
        .map(|(c, &i)| (1.0 - options.position_weight) * c + options.position_weight * position(i))
        .collect();
    let mut picked: Vec<Picked> = Vec::with_capacity(want);
    let mut chosen: Vec<usize> = Vec::new();
    let mut taken = std::collections::HashSet::new();
    while picked.len() < want {
        let best = candidates
            .iter()
            .enumerate()
            .filter(|(_, i)| !taken.contains(*i))
            .map(|(k, &i)| {
                let redundancy = chosen.iter().map(|&j| cosine(&vectors[i], &vectors[j])).fold(0.0f32, f32::max);
                (i, options.lambda * centrality[k] - (1.0 - options.lambda) * redundancy, centrality[k])
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((i, _, score)) = best else { break };
        chosen.push(i);
        taken.insert(i);
        picked.push(Picked { index: i, score });
    }
    picked.sort_by_key(|p| p.index);

    ExtractiveSummary { sentences: picked, key_terms: key_terms(&tokens, &idf, &boilerplate_set, options.key_terms), boilerplate }
}

/// The LEAD-k baseline: the first k non-boilerplate sentences, by the same segmentation.
pub fn lead(input: &Input<'_>, k: usize) -> Vec<usize> {
    let boilerplate = boilerplate(input);
    (0..input.sentences.len()).filter(|i| !boilerplate.contains(i)).take(k).collect()
}

fn normalized(text: &str) -> String {
    text.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// Sentences whose normalized text occurs on two or more different pages.
fn boilerplate(input: &Input<'_>) -> Vec<usize> {
    let mut pages_of: HashMap<String, std::collections::BTreeSet<u32>> = HashMap::new();
    for (i, s) in input.sentences.iter().enumerate() {
        let page = input.pages.get(i).copied().unwrap_or(1);
        pages_of.entry(normalized(&s.clean)).or_default().insert(page);
    }
    (0..input.sentences.len())
        .filter(|&i| pages_of.get(&normalized(&input.sentences[i].clean)).is_some_and(|p| p.len() >= 2))
        .collect()
}

/// Lower-case words, and character bigrams inside runs of unspaced scripts, less stop words.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = crate::script::terms(text);
    out.retain(|t| !STOPWORDS.contains(&t.as_str()));
    out
}

type Vector = Vec<(u32, f32)>;

/// Sparse, L2-normalised TF-IDF vectors (sentences as documents) and the IDF of each term.
fn tfidf(tokens: &[Vec<String>]) -> (Vec<Vector>, HashMap<String, f32>) {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut df: HashMap<u32, u32> = HashMap::new();
    let counted: Vec<HashMap<u32, f32>> = tokens
        .iter()
        .map(|sentence| {
            let mut tf: HashMap<u32, f32> = HashMap::new();
            for t in sentence {
                let next = ids.len() as u32;
                let id = *ids.entry(t.as_str()).or_insert(next);
                *tf.entry(id).or_default() += 1.0;
            }
            for id in tf.keys() {
                *df.entry(*id).or_default() += 1;
            }
            tf
        })
        .collect();
    let n = tokens.len() as f32;
    let idf_of = |id: u32| (1.0 + n / (1.0 + df[&id] as f32)).ln();
    let vectors = counted
        .into_iter()
        .map(|tf| {
            let mut v: Vector = tf.into_iter().map(|(id, f)| (id, (1.0 + f.ln()) * idf_of(id))).collect();
            let norm = v.iter().map(|(_, x)| x * x).sum::<f32>().sqrt().max(1e-9);
            v.iter_mut().for_each(|(_, x)| *x /= norm);
            v.sort_by_key(|(id, _)| *id);
            v
        })
        .collect();
    let idf = ids.iter().map(|(t, id)| (t.to_string(), idf_of(*id))).collect();
    (vectors, idf)
}

fn cosine(a: &Vector, b: &Vector) -> f32 {
    let (mut i, mut j, mut dot) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                dot += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    dot
}

/// Continuous LexRank: PageRank on the cosine-similarity graph of the candidates.
fn lexrank(candidates: &[usize], vectors: &[Vector]) -> Vec<f32> {
    let m = candidates.len();
    if m == 0 {
        return Vec::new();
    }
    // For very long documents compare each sentence with its neighbourhood only: O(m·w), not O(m²).
    let window = if m > 1500 { 300 } else { m };
    let mut edges: Vec<Vec<(usize, f32)>> = vec![Vec::new(); m];
    for a in 0..m {
        for b in (a + 1)..m.min(a + 1 + window) {
            let w = cosine(&vectors[candidates[a]], &vectors[candidates[b]]);
            if w > 0.05 {
                edges[a].push((b, w));
                edges[b].push((a, w));
            }
        }
    }
    let out_weight: Vec<f32> = edges.iter().map(|e| e.iter().map(|(_, w)| w).sum()).collect();
    let d = 0.85f32;
    let mut rank = vec![1.0 / m as f32; m];
    for _ in 0..50 {
        let mut next = vec![(1.0 - d) / m as f32; m];
        let dangling: f32 = (0..m).filter(|&a| out_weight[a] == 0.0).map(|a| rank[a]).sum::<f32>() * d / m as f32;
        for a in 0..m {
            if out_weight[a] == 0.0 {
                continue;
            }
            for &(b, w) in &edges[a] {
                next[b] += d * rank[a] * w / out_weight[a];
            }
        }
        next.iter_mut().for_each(|x| *x += dangling);
        let delta: f32 = next.iter().zip(&rank).map(|(a, b)| (a - b).abs()).sum();
        rank = next;
        if delta < 1e-6 {
            break;
        }
    }
    let max = rank.iter().cloned().fold(0.0f32, f32::max).max(1e-9);
    rank.iter().map(|r| r / max).collect()
}

/// Terms with the highest summed TF-IDF outside boilerplate; bigrams of unspaced scripts are
/// kept as they are.
fn key_terms(tokens: &[Vec<String>], idf: &HashMap<String, f32>, boilerplate: &std::collections::HashSet<usize>, k: usize) -> Vec<(String, f32)> {
    let mut score: HashMap<&str, f32> = HashMap::new();
    for (i, sentence) in tokens.iter().enumerate() {
        if boilerplate.contains(&i) {
            continue;
        }
        for t in sentence {
            if t.chars().count() < 2 || t.chars().all(|c| c.is_numeric()) {
                continue;
            }
            *score.entry(t.as_str()).or_default() += idf.get(t).copied().unwrap_or(0.0);
        }
    }
    let mut terms: Vec<(String, f32)> = score.into_iter().map(|(t, s)| (t.to_owned(), s)).collect();
    terms.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    terms.truncate(k);
    terms
}

/// Function words of the pipeline's main languages, left out of similarity and key terms.
const STOPWORDS: &[&str] = &[
    "the", "a", "an", "and", "or", "of", "to", "in", "on", "at", "for", "with", "by", "from", "is", "are", "was", "were", "be",
    "been", "it", "its", "this", "that", "these", "those", "as", "he", "she", "they", "we", "you", "i", "his", "her", "their",
    "our", "not", "but", "has", "have", "had", "will", "would", "can", "could", "which", "who", "what", "said", "also", "than",
    "there", "into", "about", "after", "more", "one", "all", "if", "so", "do", "does", "did", "no", "up", "out", "s",
    "der", "die", "das", "und", "ist", "ein", "eine", "zu", "den", "von", "mit", "sich", "des", "auf", "für", "im", "nicht",
    "le", "la", "les", "et", "de", "des", "du", "un", "une", "est", "en", "que", "qui", "dans", "pour", "pas", "au", "sur",
    "el", "los", "las", "y", "es", "del", "por", "con", "para", "una", "lo", "se", "su",
    "и", "в", "не", "на", "что", "с", "по", "как", "это", "он", "она", "они", "к", "у", "за", "из", "от", "о", "а", "же",
    "yang", "dan", "di", "ke", "dari", "itu", "ini", "untuk", "dengan", "bir", "ve", "bu", "da", "de", "için",
    "و", "في", "من", "على", "أن", "إلى", "عن", "ما", "که", "از", "به", "این", "را", "با", "است",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::sentences;

    #[test]
    fn picks_central_sentences_without_duplicates_or_boilerplate() {
        let page1 = "Confidential - do not distribute. The smuggling network moved cash through three shell companies. \
                     The shell companies were registered in Cyprus. Weather was mild that week. \
                     Investigators traced the cash from the shell companies to a bank in Riga.";
        let page2 = "Confidential - do not distribute. The bank in Riga closed the accounts of the shell companies in May. \
                     The smuggling network moved cash through three shell companies.";
        let text = format!("{page1}\n\n{page2}");
        let sents = sentences(&text);
        let split = page1.chars().count();
        let pages: Vec<u32> = sents.iter().map(|s| if s.start < split { 1 } else { 2 }).collect();
        let summary = summarize(&Input { sentences: &sents, pages: &pages }, &Options { length: Length::Sentences(3), ..Default::default() });
        let chosen: Vec<&str> = summary.sentences.iter().map(|p| sents[p.index].clean.as_str()).collect();
        assert_eq!(chosen.len(), 3);
        assert!(!chosen.iter().any(|s| s.starts_with("Confidential")), "{chosen:?}");
        let unique: std::collections::HashSet<_> = chosen.iter().collect();
        assert_eq!(unique.len(), 3, "{chosen:?}");
        assert!(!chosen.contains(&"Weather was mild that week."), "{chosen:?}");
        assert!(summary.key_terms.iter().any(|(t, _)| t == "shell" || t == "companies"), "{:?}", summary.key_terms);
    }

    #[test]
    fn chinese_is_tokenized_by_bigrams() {
        assert_eq!(tokens("我们走了"), ["我们", "们走", "走了"]);
    }
}
