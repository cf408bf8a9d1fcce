//! A `tokenizers` tokenizer built from a GGUF file's own metadata (byte-level BPE vocabulary,
//! merges, token types), so no `tokenizer.json` has to travel with the model.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::json;

use super::LlmError;

/// Pre-tokenizer split patterns of the BPE families, as their reference tokenizers define them.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types.
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

fn strings(content: &Content, key: &str) -> Result<Vec<String>, LlmError> {
    let value = content.metadata.get(key).ok_or_else(|| LlmError::Tokenizer(format!("metadata has no {key}")))?;
    let items = value.to_vec().map_err(|e| LlmError::Tokenizer(format!("{key}: {e}")))?;
    items.iter().map(|v| v.to_string().cloned().map_err(|e| LlmError::Tokenizer(format!("{key}: {e}")))).collect()
}

fn int(value: &Value) -> Option<i64> {
    value.to_i32().map(i64::from).or_else(|_| value.to_u32().map(i64::from)).or_else(|_| value.to_i64()).or_else(|_| value.to_u64().map(|v| v as i64)).ok()
}

/// The file's byte-level BPE tokenizer. With `all_special`, every added token is marked special
/// (so `set_encode_special_tokens(true)` reads all of them as plain text, user-defined ones too).
pub fn from_gguf(content: &Content, all_special: bool) -> Result<tokenizers::Tokenizer, LlmError> {
    let model = content.metadata.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    if model != "gpt2" {
        return Err(LlmError::Tokenizer(format!("tokenizer model {model:?} is not supported (byte-level BPE, \"gpt2\", is)")));
    }
    let pre = content.metadata.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    let tokens = strings(content, "tokenizer.ggml.tokens")?;
    let merges = strings(content, "tokenizer.ggml.merges")?;
    let types: Vec<i64> = match content.metadata.get("tokenizer.ggml.token_type").map(|v| v.to_vec()) {
        Some(Ok(values)) => values.iter().map(|v| int(v).unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    let vocab: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == i64::from(CONTROL) || ty == i64::from(USER_DEFINED))
        .map(|(id, (t, &ty))| json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": all_special || ty == i64::from(CONTROL)}))
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    let pattern = match pre.as_str() {
        "qwen2" => Some(QWEN2),
        "llama-bpe" | "llama3" | "smaug-bpe" => Some(LLAMA3),
        _ => None,
    };
    let pre_tokenizer = match pattern {
        Some(p) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": false},
            byte_level,
        ]}),
        // GPT-2's own pattern is built into the byte-level pre-tokenizer.
        None => json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true}),
    };
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": if pre == "qwen2" { json!({"type": "NFC"}) } else { json!(null) },
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": pre != "qwen2" && pattern.is_some(),
            "vocab": vocab, "merges": merges,
        },
    });
    let text = serde_json::to_string(&spec).map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    text.parse::<tokenizers::Tokenizer>().map_err(|e| LlmError::Tokenizer(e.to_string()))
}
