//! The one thread that owns a loaded decoder. Callers send prompts through a bounded channel and
//! wait for their answer; the thread decodes every sequence it holds in one step per token
//! (continuous batching: a finished sequence's slot goes to the next waiting prompt at once), and
//! keeps the keys and values of recent prompt heads so a segment starts after its language pair's
//! system turn and instruction instead of reading them again.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::time::Instant;

use super::decoder::{Decoder, KvCache};
use super::LlmError;

/// Prompt heads whose keys and values are kept (a head is a language pair's system turn and
/// instruction, a few MiB at most).
const KEPT_HEADS: usize = 8;

/// How many sequences one model decodes at once, and how many prompts may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Sequences decoded together (1: one at a time).
    pub slots: usize,
    /// Prompts waiting for a slot before senders block.
    pub queue: usize,
}

impl Default for Batching {
    /// Measured on two cores with the 0.5B model (README, GGUF models): 8 slots give most of
    /// the gain of 16 at half the cache memory.
    fn default() -> Self {
        Self { slots: 8, queue: 64 }
    }
}

/// One prompt: `head` (the part shared by many prompts, may be empty) then `rest`.
pub(super) struct Request {
    pub head: Vec<u32>,
    pub rest: Vec<u32>,
    pub max_new_tokens: usize,
    pub reply: mpsc::Sender<Result<Generated, LlmError>>,
}

/// What the model thread sends back for one prompt.
#[derive(Debug)]
pub(super) struct Generated {
    pub ids: Vec<u32>,
    pub margins: Vec<f32>,
    pub log_prob: f32,
    pub truncated: bool,
    pub prompt_secs: f64,
    pub generate_secs: f64,
}

/// A prompt being decoded.
struct Active {
    cache: KvCache,
    /// The token chosen last, read at the next step.
    next: u32,
    ids: Vec<u32>,
    margins: Vec<f32>,
    log_prob: f32,
    max_new_tokens: usize,
    started: Instant,
    prompt_secs: f64,
    reply: mpsc::Sender<Result<Generated, LlmError>>,
}

/// Starts the thread owning `decoder`; it ends when every sender is dropped and nothing is left
/// to decode.
pub(super) fn spawn(decoder: Decoder, stops: Vec<u32>, batching: Batching) -> std::io::Result<SyncSender<Request>> {
    let (sender, receiver) = mpsc::sync_channel(batching.queue.max(1));
    std::thread::Builder::new().name("docpipe-llm".into()).spawn(move || Owner { decoder, stops, slots: batching.slots.max(1), heads: VecDeque::new() }.run(receiver))?;
    Ok(sender)
}

struct Owner {
    decoder: Decoder,
    stops: Vec<u32>,
    slots: usize,
    /// Most recently used first.
    heads: VecDeque<(Vec<u32>, KvCache)>,
}

impl Owner {
    fn run(mut self, requests: Receiver<Request>) {
        let mut active: Vec<Active> = Vec::new();
        let mut open = true;
        loop {
            if active.is_empty() {
                match requests.recv() {
                    Ok(r) => self.admit(r, &mut active),
                    Err(_) => return,
                }
            }
            while open && active.len() < self.slots {
                match requests.try_recv() {
                    Ok(r) => self.admit(r, &mut active),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            if active.is_empty() {
                if open {
                    continue;
                }
                return;
            }
            self.step(&mut active);
        }
    }

    /// Reads the prompt and chooses its first token; a prompt that fails is answered at once.
    fn admit(&mut self, request: Request, active: &mut Vec<Active>) {
        let started = Instant::now();
        let read = catch(|| self.read_prompt(&request.head, &request.rest));
        let (cache, logits) = match read {
            Ok(v) => v,
            Err(e) => {
                let _ = request.reply.send(Err(e));
                return;
            }
        };
        let choice = choose(&logits);
        let mut seq = Active {
            cache,
            next: choice.token,
            ids: Vec::new(),
            margins: Vec::new(),
            log_prob: 0.0,
            max_new_tokens: request.max_new_tokens,
            started,
            prompt_secs: started.elapsed().as_secs_f64(),
            reply: request.reply,
        };
        if self.accept(&mut seq, choice) {
            active.push(seq);
        }
    }

    fn read_prompt(&mut self, head: &[u32], rest: &[u32]) -> Result<(KvCache, Vec<f32>), LlmError> {
        let mut cache = if head.is_empty() {
            KvCache::default()
        } else if let Some(i) = self.heads.iter().position(|(ids, _)| ids == head) {
            let kept = self.heads.remove(i).expect("found");
            let cache = kept.1.clone();
            self.heads.push_front(kept);
            cache
        } else {
            let mut cache = KvCache::default();
            self.decoder.forward(&mut cache, head)?;
            self.heads.push_front((head.to_vec(), cache.clone()));
            self.heads.truncate(KEPT_HEADS);
            cache
        };
        let logits = self.decoder.forward(&mut cache, rest)?.to_vec1::<f32>()?;
        Ok((cache, logits))
    }

    /// Takes the chosen token for `seq`; false when the sequence is finished (and answered).
    fn accept(&self, seq: &mut Active, choice: Choice) -> bool {
        let stopped = self.stops.contains(&choice.token);
        if !stopped {
            seq.ids.push(choice.token);
            seq.margins.push(choice.margin);
            seq.log_prob += choice.log_prob;
            seq.next = choice.token;
        }
        if stopped || seq.ids.len() >= seq.max_new_tokens {
            let generated = Generated {
                ids: std::mem::take(&mut seq.ids),
                margins: std::mem::take(&mut seq.margins),
                log_prob: seq.log_prob,
                truncated: !stopped,
                prompt_secs: seq.prompt_secs,
                generate_secs: seq.started.elapsed().as_secs_f64() - seq.prompt_secs,
            };
            // A caller that stopped waiting (cancelled stage) is no error here.
            let _ = seq.reply.send(Ok(generated));
            return false;
        }
        true
    }

    /// One token for every active sequence; a failure answers all of them with it.
    fn step(&mut self, active: &mut Vec<Active>) {
        let tokens: Vec<u32> = active.iter().map(|s| s.next).collect();
        let decoder = &self.decoder;
        let logits = catch(|| {
            let mut caches: Vec<&mut KvCache> = active.iter_mut().map(|s| &mut s.cache).collect();
            Ok(decoder.step(&mut caches, &tokens)?.to_vec2::<f32>()?)
        });
        match logits {
            Ok(rows) => {
                let mut kept = Vec::with_capacity(active.len());
                for (mut seq, row) in active.drain(..).zip(rows) {
                    if self.accept(&mut seq, choose(&row)) {
                        kept.push(seq);
                    }
                }
                *active = kept;
            }
            Err(e) => {
                for seq in active.drain(..) {
                    let _ = seq.reply.send(Err(LlmError::Inference(candle_core::Error::Msg(e.to_string()))));
                }
            }
        }
    }
}

/// A panic in the decoder (a damaged model) becomes an error for the prompts it concerns; the
/// thread goes on serving.
fn catch<T>(f: impl FnOnce() -> Result<T, LlmError>) -> Result<T, LlmError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| Err(LlmError::Inference(candle_core::Error::Msg("the decoder panicked".into()))))
}

/// A greedy choice.
#[derive(Debug, Clone, Copy)]
struct Choice {
    /// The most probable token (the first on a tie).
    token: u32,
    log_prob: f32,
    /// Logit gap to the runner-up: where it is tiny, float reordering may flip the choice.
    margin: f32,
}

fn choose(logits: &[f32]) -> Choice {
    let (mut best, mut top, mut second) = (0usize, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for (i, &v) in logits.iter().enumerate() {
        if v > top {
            second = top;
            (best, top) = (i, v);
        } else if v > second {
            second = v;
        }
    }
    let sum: f32 = logits.iter().map(|&v| (v - top).exp()).sum();
    Choice { token: best as u32, log_prob: -sum.ln(), margin: top - second }
}

#[cfg(test)]
mod tests {
    use super::choose;

    #[test]
    fn greedy_choice_takes_the_first_best_and_its_log_probability() {
        let c = choose(&[0.0, 2.0, 2.0, -1.0]);
        assert_eq!((c.token, c.margin), (1, 0.0));
        let expected = (2f32.exp() / (1.0 + 2.0 * 2f32.exp() + (-1f32).exp())).ln();
        assert!((c.log_prob - expected).abs() < 1e-6, "{} {expected}", c.log_prob);
        assert_eq!(choose(&[3.0, 0.5, 1.0]).margin, 2.0);
    }
}
