//! Batched greedy and beam search with the semantics of Hugging Face `generate` (transformers 5):
//! the same candidate count, length normalisation, early-stop rule and logit processors, so a
//! checkpoint decodes to the same tokens here as in the reference implementation.

use std::collections::HashMap;

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::layers::Cache;

/// Decoding parameters; recorded in every translation's provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Decoding {
    /// 1 = greedy.
    pub beams: usize,
    /// Exponent of the length that divides a finished beam's log-probability.
    pub length_penalty: f32,
    pub max_new_tokens: usize,
    /// End-of-sequence is forbidden before this many tokens (benchmarks fix the output length).
    pub min_new_tokens: usize,
    /// 0 = off; otherwise no n-gram of this size appears twice.
    pub no_repeat_ngram: usize,
    /// Stop a beam search as soon as `beams` hypotheses are finished.
    pub early_stopping: bool,
}

impl Default for Decoding {
    fn default() -> Self {
        Self { beams: 4, length_penalty: 1.0, max_new_tokens: 256, min_new_tokens: 0, no_repeat_ngram: 0, early_stopping: false }
    }
}

/// Token ids generation needs from the model's configuration.
#[derive(Debug, Clone)]
pub struct Special {
    pub start: u32,
    pub eos: u32,
    pub pad: u32,
    /// Never generated (Marian forbids its pad token).
    pub banned: Vec<u32>,
    /// Force end-of-sequence at the last allowed position (OPUS-MT configs ask for it).
    pub forced_eos: bool,
}

/// One output sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Generated tokens, without the start token, with the end token when the model produced it.
    pub tokens: Vec<u32>,
    /// Sum of the token log-probabilities (after the logit processors).
    pub log_prob: f32,
}

impl Hypothesis {
    /// Geometric mean of the token probabilities: the confidence shown to analysts.
    pub fn confidence(&self) -> f32 {
        if self.tokens.is_empty() {
            return 0.0;
        }
        (self.log_prob / self.tokens.len() as f32).exp()
    }
}

/// The model side of generation: feed one token per row, get each row's next-token logits.
pub trait Step {
    fn step(&self, tokens: &[u32], cache: &mut Cache) -> Result<Vec<Vec<f32>>>;
    fn device(&self) -> &candle_core::Device;
}

/// log(sum(exp(row))), computed stably.
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + row.iter().map(|&v| (v - max).exp()).sum::<f32>().ln()
}

const NEG: f32 = -1.0e9;

/// Rows after the logit processors (on log-probabilities when `log_softmax`, as beam search has them).
fn processed(mut rows: Vec<Vec<f32>>, sequences: &[&[u32]], d: &Decoding, sp: &Special, new_len: usize, log_softmax: bool) -> Vec<Vec<f32>> {
    if log_softmax {
        for row in &mut rows {
            let lse = log_sum_exp(row);
            row.iter_mut().for_each(|v| *v -= lse);
        }
    }
    let max_len = d.max_new_tokens + 1;
    for (row, seq) in rows.iter_mut().zip(sequences) {
        if new_len < d.min_new_tokens {
            row[sp.eos as usize] = f32::NEG_INFINITY;
        }
        if d.no_repeat_ngram > 0 {
            for t in banned_ngrams(seq, d.no_repeat_ngram) {
                row[t as usize] = f32::NEG_INFINITY;
            }
        }
        for &t in &sp.banned {
            row[t as usize] = f32::NEG_INFINITY;
        }
        if sp.forced_eos && seq.len() == max_len - 1 {
            row.fill(f32::NEG_INFINITY);
            row[sp.eos as usize] = 0.0;
        }
    }
    rows
}

/// Tokens that would repeat an n-gram already in `seq` (start token included, as the reference).
fn banned_ngrams(seq: &[u32], n: usize) -> Vec<u32> {
    if seq.len() + 1 < n {
        return Vec::new();
    }
    let prefix = &seq[seq.len() + 1 - n..];
    let mut seen: HashMap<&[u32], Vec<u32>> = HashMap::new();
    for w in seq.windows(n) {
        seen.entry(&w[..n - 1]).or_default().push(w[n - 1]);
    }
    seen.remove(prefix).unwrap_or_default()
}

pub fn generate(model: &impl Step, cache: Cache, batch: usize, d: &Decoding, sp: &Special) -> Result<Vec<Hypothesis>> {
    if d.beams <= 1 {
        greedy(model, cache, batch, d, sp)
    } else {
        beam_search(model, cache, batch, d, sp)
    }
}

fn greedy(model: &impl Step, mut cache: Cache, batch: usize, d: &Decoding, sp: &Special) -> Result<Vec<Hypothesis>> {
    let mut seqs: Vec<Vec<u32>> = vec![vec![sp.start]; batch];
    let mut log_probs = vec![0f32; batch];
    let mut done = vec![false; batch];
    for step in 0..d.max_new_tokens {
        let last: Vec<u32> = seqs.iter().map(|s| *s.last().expect("start token")).collect();
        let logits = model.step(&last, &mut cache)?;
        let views: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let lse: Vec<f32> = logits.iter().map(|r| log_sum_exp(r)).collect();
        let raw: Vec<Vec<f32>> = logits.iter().map(|r| r.to_vec()).collect();
        let scores = processed(logits, &views, d, sp, step, false);
        for (i, row) in scores.iter().enumerate() {
            if done[i] {
                seqs[i].push(sp.pad);
                continue;
            }
            let token = argmax(row);
            log_probs[i] += raw[i][token as usize] - lse[i];
            seqs[i].push(token);
            done[i] = token == sp.eos;
        }
        if done.iter().all(|&x| x) {
            break;
        }
    }
    Ok(seqs
        .into_iter()
        .zip(log_probs)
        .map(|(s, log_prob)| {
            let end = s.iter().skip(1).position(|&t| t == sp.eos).map_or(s.len(), |p| p + 2);
            Hypothesis { tokens: s[1..end].to_vec(), log_prob }
        })
        .collect())
}

/// First index of the largest value (torch's argmax picks the first on ties).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

struct Beams {
    running: Vec<Vec<u32>>,
    running_scores: Vec<f32>,
    /// Best finished hypotheses so far: (tokens with start, normalised score, really finished).
    finished: Vec<(Vec<u32>, f32, bool)>,
    /// Sum of raw log-probs of the finished hypotheses, for confidence.
    finished_raw: Vec<f32>,
    improvable: bool,
}

fn beam_search(model: &impl Step, mut cache: Cache, batch: usize, d: &Decoding, sp: &Special) -> Result<Vec<Hypothesis>> {
    let k = d.beams;
    let keep = 2 * k;
    let max_len = d.max_new_tokens + 1;
    let mut state: Vec<Beams> = (0..batch)
        .map(|_| Beams {
            running: vec![vec![sp.start]; k],
            running_scores: (0..k).map(|j| if j == 0 { 0.0 } else { NEG }).collect(),
            finished: vec![(vec![sp.start], NEG, false); k],
            finished_raw: vec![0.0; k],
            improvable: true,
        })
        .collect();
    let mut cur_len = 1;
    loop {
        let last: Vec<u32> = state.iter().flat_map(|b| b.running.iter().map(|s| *s.last().expect("start token"))).collect();
        let logits = model.step(&last, &mut cache)?;
        let views: Vec<&[u32]> = state.iter().flat_map(|b| b.running.iter().map(Vec::as_slice)).collect();
        let scores = processed(logits, &views, d, sp, cur_len - 1, true);
        let mut parents = Vec::with_capacity(batch * k);
        let mut all_hit = true;
        for (bi, beams) in state.iter_mut().enumerate() {
            // Top 2k continuations over all beams of this input.
            let mut cand: Vec<(f32, usize, u32)> = Vec::with_capacity(keep + 1);
            for (j, row) in scores[bi * k..(bi + 1) * k].iter().enumerate() {
                let base = beams.running_scores[j];
                for (t, &lp) in row.iter().enumerate() {
                    let s = lp + base;
                    if cand.len() < keep || s > cand[keep - 1].0 {
                        let at = cand.partition_point(|c| c.0 >= s);
                        cand.insert(at, (s, j, t as u32));
                        cand.truncate(keep);
                    }
                }
            }
            let hits: Vec<bool> = cand.iter().map(|&(_, _, t)| t == sp.eos || cur_len + 1 >= max_len).collect();
            all_hit &= hits.iter().all(|&h| h);
            // Next running beams: best k that did not stop.
            let mut next: Vec<(f32, usize)> = cand.iter().zip(&hits).enumerate().map(|(i, (c, &h))| (if h { c.0 + NEG } else { c.0 }, i)).collect();
            stable_sort_desc(&mut next);
            let new_running: Vec<Vec<u32>> = next[..k]
                .iter()
                .map(|&(_, i)| {
                    let (_, j, t) = cand[i];
                    let mut s = beams.running[j].clone();
                    s.push(t);
                    s
                })
                .collect();
            // Finished: merge the old list with new ones among the top k candidates.
            let full = d.early_stopping && beams.finished.iter().all(|f| f.2);
            let norm = ((cur_len + 1 - 1) as f32).powf(d.length_penalty);
            let mut merged: Vec<(f32, Vec<u32>, bool, f32)> = beams.finished.iter().zip(&beams.finished_raw).map(|(f, &raw)| (f.1, f.0.clone(), f.2, raw)).collect();
            for (i, &(s, j, t)) in cand.iter().enumerate() {
                let eligible = hits[i] && i < k;
                let mut score = s / norm;
                if full {
                    score += NEG;
                }
                if !beams.improvable {
                    score += NEG;
                }
                if !eligible {
                    score += NEG;
                }
                let mut seq = beams.running[j].clone();
                seq.push(t);
                merged.push((score, seq, eligible, s));
            }
            let mut order: Vec<(f32, usize)> = merged.iter().enumerate().map(|(i, m)| (m.0, i)).collect();
            stable_sort_desc(&mut order);
            beams.finished = order[..k].iter().map(|&(_, i)| (merged[i].1.clone(), merged[i].0, merged[i].2)).collect();
            beams.finished_raw = order[..k].iter().map(|&(_, i)| merged[i].3).collect();
            beams.running_scores = next[..k].iter().map(|&(s, _)| s).collect();
            for &(_, i) in &next[..k] {
                parents.push((bi * k + cand[i].1) as u32);
            }
            beams.running = new_running;
        }
        cur_len += 1;
        for beams in &mut state {
            if !beams.improvable {
                continue;
            }
            let best = beams.running_scores[0] / ((cur_len - 1) as f32).powf(d.length_penalty);
            let worst = if beams.finished.iter().all(|f| f.2) { beams.finished.iter().map(|f| f.1).fold(f32::INFINITY, f32::min) } else { NEG };
            beams.improvable = best > worst;
        }
        let improvable = state.iter().any(|b| b.improvable);
        let open = !(d.early_stopping && state.iter().all(|b| b.finished.iter().all(|f| f.2)));
        if !(improvable && open && !all_hit) {
            break;
        }
        cache.reorder(&Tensor::new(parents.as_slice(), model.device())?)?;
    }
    Ok(state
        .into_iter()
        .map(|b| {
            let (seq, _, _) = &b.finished[0];
            let end = seq.iter().skip(1).position(|&t| t == sp.eos).map_or(seq.len(), |p| p + 2);
            Hypothesis { tokens: seq[1..end].to_vec(), log_prob: b.finished_raw[0] }
        })
        .collect())
}

/// Descending by score, earlier index first on ties.
fn stable_sort_desc(v: &mut [(f32, usize)]) {
    v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
}

#[cfg(test)]
mod tests {
    use super::banned_ngrams;

    #[test]
    fn ngram_ban_looks_at_the_last_n_minus_one_tokens() {
        // 5 7 5 ... : the bigram (5, 7) exists, so after a 5 the 7 is banned.
        assert_eq!(banned_ngrams(&[5, 7, 5], 2), vec![7]);
        assert_eq!(banned_ngrams(&[5, 7, 9], 2), Vec::<u32>::new());
        assert_eq!(banned_ngrams(&[1, 2, 3, 1, 2], 3), vec![3]);
    }
}
