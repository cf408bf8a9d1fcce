//! Instruction-tuned language models in GGUF on candle's quantized CPU kernels (Qwen2 family and
//! Llama architecture): tokenizer from the file's metadata, the family's chat template, greedy
//! decoding that stops at the end of the turn. Used for translation and abstractive summaries.

mod attention;
mod batcher;
pub mod decoder;
mod int8;
pub use batcher::Batching;
pub use decoder::{Decoder, KvCache};
/// Whether this CPU runs docpipe's kernel for Q8_0, Q5_0, Q4_K and Q6_K matrices (AVX-512 VNNI or
/// AVX2).
pub use int8::available as int8_kernel_runs;
/// The kernels' path on this CPU (`avx512-vnni`, `avx2`, `candle`), for provenance, and the
/// environment variable that pins a slower one.
pub use int8::{path as kernel_path, PIN as KERNELS_PIN};
pub use int8::Int8Matrix;
pub mod tasks;
mod tokenizer;

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender};

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
    #[error("the model thread has stopped")]
    Stopped,
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
    /// Sequences decoded at once and prompts allowed to wait.
    pub batching: Batching,
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
    /// The generated token ids (end-of-turn excluded).
    pub ids: Vec<u32>,
    /// Per generated token, its logit's lead over the runner-up (near ties are where a different
    /// order of float sums, another runtime or a batched kernel, may choose differently).
    pub margins: Vec<f32>,
    /// Geometric mean of the chosen tokens' probabilities.
    pub confidence: f32,
    /// Generation stopped at `max_new_tokens` rather than at the end of the turn.
    pub truncated: bool,
    /// Time reading the prompt and time generating, for throughput figures (wall time: decoding
    /// steps are shared with the other sequences of the batch).
    pub prompt_secs: f64,
    pub generate_secs: f64,
}

/// A loaded model. The decoder is owned by one thread (see `batcher`); every method here may be
/// called from many threads at once, and their prompts are decoded together.
pub struct Llm {
    pub info: LlmInfo,
    requests: SyncSender<batcher::Request>,
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
        Self::load_with(path, expected_sha256, max_context, DEFAULT_PROMPT_F32_BYTES, Batching::default())
    }

    /// As `load`, keeping at most `prompt_f32_bytes` of f32 weight copies for reading prompts
    /// (0: quantized only, the least memory), decoding as `batching` says.
    pub fn load_with(path: &Path, expected_sha256: Option<&str>, max_context: usize, prompt_f32_bytes: usize, batching: Batching) -> Result<Self, LlmError> {
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
        let info = LlmInfo { path: path.to_owned(), sha256, architecture: architecture.clone(), name: text("general.name"), context: model_context.min(max_context), prompt_f32_bytes: 0, batching };
        if architecture != "qwen2" && architecture != "llama" {
            return Err(LlmError::Architecture(name, architecture));
        }
        let context = info.context;
        // Damaged tensors must become an error, never a dead worker.
        let weights = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Decoder::from_gguf(&content, &mut file, &device, context, prompt_f32_bytes)))
            .map_err(|_| LlmError::Format(name.clone(), "reading the tensors panicked".into()))?
            .map_err(|e| LlmError::Format(name.clone(), e.to_string()))?;
        let info = LlmInfo { prompt_f32_bytes: weights.dense_bytes, ..info };
        let requests = batcher::spawn(weights, stops.clone(), batching).map_err(|e| LlmError::Io(name, e))?;
        Ok(Self { info, requests, tokenizer, text_tokenizer, template, stops })
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
    pub fn prompt_parts(&self, prompt: &Prompt<'_>) -> Result<(Vec<u32>, Vec<u32>), LlmError> {
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
        self.chat_all(&[(*prompt, max_new_tokens)]).pop().expect("one answer")
    }

    /// Several chat turns decoded together (as many at once as the model has slots), answers in
    /// order. Each answer is the one `chat` would give alone, token for token.
    pub fn chat_all(&self, prompts: &[(Prompt<'_>, usize)]) -> Vec<Result<Completion, LlmError>> {
        let pending: Vec<_> = prompts
            .iter()
            .map(|(prompt, max_new_tokens)| {
                let (head, rest) = self.prompt_parts(prompt)?;
                self.send(head, rest, *max_new_tokens)
            })
            .collect();
        pending.into_iter().map(|p| p.and_then(|p| self.receive(p))).collect()
    }

    /// The answer to prompt ids made elsewhere (benchmarks and evaluations comparing prompts),
    /// decoded greedily up to `max_new_tokens` or the end of the turn.
    pub fn complete(&self, ids: &[u32], max_new_tokens: usize) -> Result<Completion, LlmError> {
        let pending = self.send(Vec::new(), ids.to_vec(), max_new_tokens)?;
        self.receive(pending)
    }

    /// Hands one prompt to the model thread (waiting while its queue is full).
    fn send(&self, head: Vec<u32>, rest: Vec<u32>, max_new_tokens: usize) -> Result<Pending, LlmError> {
        let prompt_tokens = head.len() + rest.len();
        if prompt_tokens + max_new_tokens > self.info.context {
            return Err(LlmError::TooLong(prompt_tokens + max_new_tokens, self.info.context));
        }
        if rest.is_empty() {
            return Err(LlmError::EmptyInput);
        }
        let (reply, answer) = mpsc::channel();
        self.requests.send(batcher::Request { head, rest, max_new_tokens, reply }).map_err(|_| LlmError::Stopped)?;
        Ok(Pending { answer, prompt_tokens })
    }

    fn receive(&self, pending: Pending) -> Result<Completion, LlmError> {
        let generated = pending.answer.recv().map_err(|_| LlmError::Stopped)??;
        let text = self.tokenizer.decode(&generated.ids, true).map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        let tokens = generated.ids.len();
        let confidence = if tokens == 0 { 0.0 } else { (generated.log_prob / tokens as f32).exp() };
        Ok(Completion {
            text: text.trim().to_owned(),
            prompt_tokens: pending.prompt_tokens,
            tokens,
            ids: generated.ids,
            margins: generated.margins,
            confidence,
            truncated: generated.truncated,
            prompt_secs: generated.prompt_secs,
            generate_secs: generated.generate_secs,
        })
    }
}

/// A prompt handed to the model thread, answer to come.
struct Pending {
    answer: mpsc::Receiver<Result<batcher::Generated, LlmError>>,
    prompt_tokens: usize,
}
