//! ROUGE-1, ROUGE-2 and ROUGE-L (F1), tokenized like Google's rouge-score package without
//! stemming: lower case, anything not a letter or digit is a separator.

fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
}

fn f1(overlap: usize, candidate: usize, reference: usize) -> f64 {
    if overlap == 0 || candidate == 0 || reference == 0 {
        return 0.0;
    }
    let p = overlap as f64 / candidate as f64;
    let r = overlap as f64 / reference as f64;
    2.0 * p * r / (p + r)
}

fn ngrams(tokens: &[String], n: usize) -> std::collections::HashMap<&[String], usize> {
    let mut counts = std::collections::HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

/// ROUGE-N F1.
pub fn rouge_n(candidate: &str, reference: &str, n: usize) -> f64 {
    let (c, r) = (tokens(candidate), tokens(reference));
    let (cn, rn) = (ngrams(&c, n), ngrams(&r, n));
    let overlap: usize = cn.iter().map(|(g, k)| (*k).min(rn.get(g).copied().unwrap_or(0))).sum();
    f1(overlap, c.len().saturating_sub(n - 1), r.len().saturating_sub(n - 1))
}

/// ROUGE-L F1 (longest common subsequence of the whole texts).
pub fn rouge_l(candidate: &str, reference: &str) -> f64 {
    let (c, r) = (tokens(candidate), tokens(reference));
    let mut prev = vec![0usize; r.len() + 1];
    for a in &c {
        let mut row = vec![0usize; r.len() + 1];
        for (j, b) in r.iter().enumerate() {
            row[j + 1] = if a == b { prev[j] + 1 } else { row[j].max(prev[j + 1]) };
        }
        prev = row;
    }
    f1(prev[r.len()], c.len(), r.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_values() {
        // rouge-score: R1 F = 2*(5/6*5/6)/(5/6+5/6) for one substituted word of six.
        let (c, r) = ("the cat sat on the mat", "the cat sat on a mat");
        assert!((rouge_n(c, r, 1) - 5.0 / 6.0).abs() < 1e-9);
        assert!((rouge_n(c, r, 2) - 3.0 / 5.0).abs() < 1e-9);
        assert!((rouge_l(c, r) - 5.0 / 6.0).abs() < 1e-9);
        assert_eq!(rouge_n("", r, 1), 0.0);
    }
}
