//! Instruction-tuned language models in GGUF on candle's quantized CPU kernels (Qwen2 family and
//! Llama architecture): tokenizer from the file's metadata, the family's chat template, greedy
//! decoding that stops at the end of the turn. Used for translation and abstractive summaries.

pub mod decoder;
pub use decoder::Decoder;
pub mod tasks;
mod tokenizer;

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::gguf_file;

/// Default bound of the f32 weight copies kept for prompt reading (a 1.5B model fits).
pub const DEFAULT_PROMPT_F32_BYTES: usize = 8 << 30;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: sha256 is {1}, the configuration expects {2}")]
    WrongHash(String, String, String),
    #[error("{0}: not a readable GGUF model: {1}")]
    Format(String, String),
    #[error("{0}: architecture {1:?} is not supported (qwen2, llama)")]
    Architecture(String, String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("nothing to work on: the text is empty or only whitespace")]
    EmptyInput,
    #[error("prompt of {0} tokens does not fit the {1}-token context")]
    TooLong(usize, usize),
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
}

/// Chat formats of the supported families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Template {
    ChatMl,
    Llama3,
}

impl Template {
    /// The turn up to where the user's message ends (`head`, ending with the user's text) and the
    /// rest (`tail`, up to where the assistant's answer starts).
    fn around(self, system: &str, user: &str) -> (String, &'static str) {
        match self {
            Self::ChatMl => (format!("<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}"), "<|im_end|>\n<|im_start|>assistant\n"),
            Self::Llama3 => (
                format!("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{user}"),
                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            ),
        }
    }

    fn stops(self) -> &'static [&'static str] {
        match self {
            Self::ChatMl => &["<|im_end|>", "<|endoftext|>"],
            Self::Llama3 => &["<|eot_id|>", "<|end_of_text|>"],
        }
    }
}

/// What a loaded model is, for provenance.
#[derive(Debug, Clone)]
pub struct LlmInfo {
    pub path: PathBuf,
    pub sha256: String,
    pub architecture: String,
    /// `general.name` from the file, when present.
    pub name: Option<String>,
    /// Tokens of context docpipe uses (the smaller of the model's and the configured limit).
    pub context: usize,
    /// f32 weight copies kept for reading prompts (bytes); the rest runs on the quantized weights.
    pub prompt_f32_bytes: usize,
}

/// The decoder and the prompt head it last read, kept so the next prompt with the same head (the
/// system turn and instruction of a language pair: every segment of a document) starts after it.
struct Weights {
    decoder: Decoder,
    head: Option<(Vec<u32>, decoder::KvSnapshot)>,
}

/// One chat turn: docpipe's system turn and instruction, and the document text it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prompt<'a> {
    pub system: &'a str,
    /// docpipe's own words in the user turn (before the document).
    pub instruction: &'a str,
    /// Text from a document (or model output about one): never read as control tokens.
    pub document: &'a str,
}

impl<'a> Prompt<'a> {
    /// A turn of docpipe's own words only.
    pub fn plain(system: &'a str, instruction: &'a str) -> Self {
        Self { system, instruction, document: "" }
    }
}

/// One model answer.
#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    pub prompt_tokens: usize,
    pub tokens: usize,
    /// Geometric mean of the chosen tokens' probabilities.
    pub confidence: f32,
    /// Generation stopped at `max_new_tokens` rather than at the end of the turn.
    pub truncated: bool,
    /// Time reading the prompt and time generating, for throughput figures.
    pub prompt_secs: f64,
    pub generate_secs: f64,
}

pub struct Llm {
    pub info: LlmInfo,
    weights: Mutex<Weights>,
    /// For docpipe's own template and instructions: control tokens are recognised.
    tokenizer: tokenizers::Tokenizer,
    /// For document text: every added token (`<|im_start|>`, `<|eot_id|>`, ...) is read as the
    /// characters it is written with, so a document can never open or close a turn.
    text_tokenizer: tokenizers::Tokenizer,
    template: Template,
    stops: Vec<u32>,
}

impl Llm {
    /// Loads a GGUF file; a wrong `expected_sha256` is refused before the weights are read.
    pub fn load(path: &Path, expected_sha256: Option<&str>, max_context: usize) -> Result<Self, LlmError> {
        Self::load_with(path, expected_sha256, max_context, DEFAULT_PROMPT_F32_BYTES)
    }

    /// As `load`, keeping at most `prompt_f32_bytes` of f32 weight copies for reading prompts
    /// (0: quantized only, the least memory).
    pub fn load_with(path: &Path, expected_sha256: Option<&str>, max_context: usize, prompt_f32_bytes: usize) -> Result<Self, LlmError> {
        let name = path.display().to_string();
        let sha256 = crate::sha256_file(path).map_err(|e| LlmError::Io(name.clone(), e))?;
        if let Some(expected) = expected_sha256 {
            if !expected.eq_ignore_ascii_case(&sha256) {
                return Err(LlmError::WrongHash(name, sha256, expected.to_owned()));
            }
        }
        let mut file = std::fs::File::open(path).map_err(|e| LlmError::Io(name.clone(), e))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| LlmError::Format(name.clone(), e.to_string()))?;
        let text = |key: &str| content.metadata.get(key).and_then(|v| v.to_string().ok()).cloned();
        let architecture = text("general.architecture").unwrap_or_default();
        let model_context = content.metadata.get(&format!("{architecture}.context_length")).and_then(|v| v.to_u32().ok()).unwrap_or(2048) as usize;
        let tokenizer = tokenizer::from_gguf(&content, false)?;
        let mut text_tokenizer = tokenizer::from_gguf(&content, true)?;
        text_tokenizer.set_encode_special_tokens(true);
        let template = if tokenizer.token_to_id("<|im_start|>").is_some() { Template::ChatMl } else { Template::Llama3 };
        let stops: Vec<u32> = template.stops().iter().filter_map(|s| tokenizer.token_to_id(s)).collect();
        if stops.is_empty() {
            return Err(LlmError::Tokenizer(format!("{name}: no end-of-turn token for the chat template")));
        }
        let device = crate::mt::device();
        file.seek(SeekFrom::Start(0)).map_err(|e| LlmError::Io(name.clone(), e))?;
        let info = LlmInfo { path: path.to_owned(), sha256, architecture: architecture.clone(), name: text("general.name"), context: model_context.min(max_context), prompt_f32_bytes: 0 };
        if architecture != "qwen2" && architecture != "llama" {
            return Err(LlmError::Architecture(name, architecture));
        }
        let context = info.context;
        // Damaged tensors must become an error, never a dead worker.
        let weights = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Decoder::from_gguf(&content, &mut file, &device, context, prompt_f32_bytes)))
            .map_err(|_| LlmError::Format(name.clone(), "reading the tensors panicked".into()))?
            .map_err(|e| LlmError::Format(name.clone(), e.to_string()))?;
        let info = LlmInfo { prompt_f32_bytes: weights.dense_bytes, ..info };
        Ok(Self { info, weights: Mutex::new(Weights { decoder: weights, head: None }), tokenizer, text_tokenizer, template, stops })
    }

    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    /// Tokens of document text (read as text: see `text_tokenizer`).
    pub fn count_tokens(&self, text: &str) -> Result<usize, LlmError> {
        Ok(self.text_ids(text)?.len())
    }

    fn text_ids(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        Ok(self.text_tokenizer.encode(text, false).map_err(|e| LlmError::Tokenizer(e.to_string()))?.get_ids().to_vec())
    }

    fn template_ids(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        Ok(self.tokenizer.encode(text, false).map_err(|e| LlmError::Tokenizer(e.to_string()))?.get_ids().to_vec())
    }

    /// Tokens the chat template adds around `system` and an empty user turn.
    pub fn overhead(&self, system: &str) -> Result<usize, LlmError> {
        Ok(self.prompt_ids(&Prompt::plain(system, ""))?.len())
    }

    /// Token ids of one chat turn in the family's template, ready for the assistant's answer. The
    /// template, system turn and instruction are tokenized with control tokens recognised; the
    /// document text on its own, with none recognised, and the ids joined: whatever a document
    /// holds, the only turns are docpipe's.
    pub fn prompt_ids(&self, prompt: &Prompt<'_>) -> Result<Vec<u32>, LlmError> {
        let (mut head, rest) = self.prompt_parts(prompt)?;
        head.extend(rest);
        Ok(head)
    }

    /// The prompt's ids in two parts: the head (template, system turn, instruction: the same for
    /// every segment of a language pair) and the rest (document, end of turn).
    fn prompt_parts(&self, prompt: &Prompt<'_>) -> Result<(Vec<u32>, Vec<u32>), LlmError> {
        let before = if prompt.instruction.is_empty() || prompt.document.is_empty() { "" } else { "\n\n" };
        let (head, tail) = self.template.around(prompt.system, &format!("{}{before}", prompt.instruction));
        let head = self.template_ids(&head)?;
        let mut rest = self.text_ids(prompt.document)?;
        rest.extend(self.template_ids(tail)?);
        Ok((head, rest))
    }

    /// Ids of every token the vocabulary treats as added (control and user-defined): none of them
    /// may come from a document.
    pub fn added_token_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.tokenizer.get_added_tokens_decoder().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Token ids that end the assistant's turn.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stops
    }

    /// One chat turn, decoded greedily (deterministic) up to `max_new_tokens`.
    /// The head of the prompt is read once per distinct head: the next prompt with the same head
    /// starts from its keys and values (measured: README, GGUF models).
    pub fn chat(&self, prompt: &Prompt<'_>, max_new_tokens: usize) -> Result<Completion, LlmError> {
        let (head, rest) = self.prompt_parts(prompt)?;
        self.generate(&head, &rest, max_new_tokens)
    }

    /// The answer to prompt ids made elsewhere (benchmarks and evaluations comparing prompts),
    /// decoded greedily up to `max_new_tokens` or the end of the turn.
    pub fn complete(&self, ids: &[u32], max_new_tokens: usize) -> Result<Completion, LlmError> {
        self.generate(&[], ids, max_new_tokens)
    }

    /// Greedy decoding after `head` (reused from the last call when it is the same) and `rest`.
    fn generate(&self, head: &[u32], rest: &[u32], max_new_tokens: usize) -> Result<Completion, LlmError> {
        let prompt_tokens = head.len() + rest.len();
        if prompt_tokens + max_new_tokens > self.info.context {
            return Err(LlmError::TooLong(prompt_tokens + max_new_tokens, self.info.context));
        }
        if rest.is_empty() {
            return Err(LlmError::EmptyInput);
        }
        let mut state = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        let Weights { decoder: weights, head: kept } = &mut *state;
        let started = std::time::Instant::now();
        match kept {
            Some((ids, snapshot)) if !head.is_empty() && ids == head => weights.restore(snapshot),
            _ if head.is_empty() => {}
            _ => {
            // Position 0 starts a fresh cache in the decoder.
                weights.forward(head, 0)?;
                *kept = Some((head.to_vec(), weights.snapshot()));
            }
        }
        // (A whole prompt read from position 0 leaves the kept head's snapshot as it was.)
        let mut logits = weights.forward(rest, head.len())?;
        let prompt_secs = started.elapsed().as_secs_f64();
        let mut out = Vec::new();
        let mut log_prob = 0f32;
        let mut truncated = true;
        for step in 0..max_new_tokens {
            let row = candle_nn::ops::log_softmax(&logits, 0)?.to_vec1::<f32>()?;
            let (token, lp) = row.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best });
            if self.stops.contains(&(token as u32)) {
                truncated = false;
                break;
            }
            out.push(token as u32);
            log_prob += lp;
            logits = weights.forward(&[token as u32], prompt_tokens + step)?;
        }
        let text = self.tokenizer.decode(&out, true).map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        let confidence = if out.is_empty() { 0.0 } else { (log_prob / out.len() as f32).exp() };
        let generate_secs = started.elapsed().as_secs_f64() - prompt_secs;
        Ok(Completion { text: text.trim().to_owned(), prompt_tokens, tokens: out.len(), confidence, truncated, prompt_secs, generate_secs })
    }
}
