//! Text to ids and back, as the Hugging Face tokenizers of each family do it.
//! Marian: SentencePiece pieces looked up in the joint `vocab.json`, `</s>` appended.
//! T5: `spiece.model` ids (or a `tokenizer.json`), `</s>` appended.

use std::collections::HashMap;
use std::path::Path;

use crate::spm::SentencePiece;

use super::MtError;

// One per loaded model, so the size of the Marian variant (two SentencePiece models) costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Tokenizer {
    Marian { source: SentencePiece, target: SentencePiece, vocab: HashMap<String, u32>, pieces: Vec<String>, unk: u32, eos: u32, pad: u32 },
    SentencePiece { spm: SentencePiece, eos: u32 },
    Json { inner: Box<tokenizers::Tokenizer>, eos: u32 },
}

fn spm(path: &Path) -> Result<SentencePiece, MtError> {
    SentencePiece::load(path).map_err(|e| MtError::Tokenizer(e.to_string()))
}

impl Tokenizer {
    pub fn marian(dir: &Path, eos: u32, pad: u32) -> Result<Self, MtError> {
        let path = dir.join("vocab.json");
        let text = std::fs::read_to_string(&path).map_err(|e| MtError::Io(path.display().to_string(), e))?;
        let vocab: HashMap<String, u32> = serde_json::from_str(&text).map_err(|e| MtError::Tokenizer(format!("{}: {e}", path.display())))?;
        let mut pieces = vec![String::new(); vocab.values().max().map_or(0, |&m| m as usize + 1)];
        for (piece, &id) in &vocab {
            pieces[id as usize] = piece.clone();
        }
        let unk = *vocab.get("<unk>").ok_or_else(|| MtError::Tokenizer(format!("{}: no <unk> entry", path.display())))?;
        Ok(Self::Marian { source: spm(&dir.join("source.spm"))?, target: spm(&dir.join("target.spm"))?, vocab, pieces, unk, eos, pad })
    }

    pub fn t5(dir: &Path, eos: u32) -> Result<Self, MtError> {
        let model = dir.join("spiece.model");
        if model.exists() {
            return Ok(Self::SentencePiece { spm: spm(&model)?, eos });
        }
        let json = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&json).map_err(|e| MtError::Tokenizer(format!("{}: {e}", json.display())))?;
        Ok(Self::Json { inner: Box::new(inner), eos })
    }

    /// Source-side ids, ending with `</s>`. Special-token strings in the text become those
    /// tokens, as the reference tokenizers do.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, MtError> {
        let mut ids: Vec<u32> = match self {
            Self::Marian { source, vocab, unk, eos, pad, .. } => {
                let specials = [("</s>", *eos), ("<unk>", *unk), ("<pad>", *pad)];
                with_specials(text, &specials, |part| source.encode_pieces(part).into_iter().map(|(_, p)| vocab.get(&p).copied().unwrap_or(*unk)).collect())
            }
            Self::SentencePiece { spm, .. } => {
                let specials: Vec<(&str, u32)> = ["</s>", "<unk>", "<pad>"].into_iter().filter_map(|s| spm.piece_id(s).map(|id| (s, id))).collect();
                with_specials(text, &specials, |part| spm.encode(part))
            }
            Self::Json { inner, .. } => {
                // The file's own post-processor adds `</s>`; take the ids without it and add it once.
                let enc = inner.encode(text, false).map_err(|e| MtError::Tokenizer(e.to_string()))?;
                enc.get_ids().to_vec()
            }
        };
        ids.push(self.eos());
        Ok(ids)
    }

    /// Target-side ids of reference text (Marian uses the target SentencePiece model).
    pub fn encode_target(&self, text: &str) -> Result<Vec<u32>, MtError> {
        match self {
            Self::Marian { target, vocab, unk, eos, pad, .. } => {
                let specials = [("</s>", *eos), ("<unk>", *unk), ("<pad>", *pad)];
                let mut ids = with_specials(text, &specials, |part| target.encode_pieces(part).into_iter().map(|(_, p)| vocab.get(&p).copied().unwrap_or(*unk)).collect());
                ids.push(*eos);
                Ok(ids)
            }
            _ => self.encode(text),
        }
    }

    /// Text of generated ids, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, MtError> {
        Ok(match self {
            Self::Marian { target, pieces, unk, eos, pad, .. } => {
                let kept: Vec<&str> = ids.iter().filter(|&&id| id != *eos && id != *pad && id != *unk).filter_map(|&id| pieces.get(id as usize)).map(String::as_str).collect();
                target.decode_pieces(&kept).trim().to_owned()
            }
            Self::SentencePiece { spm, .. } => spm.decode(ids),
            Self::Json { inner, .. } => inner.decode(ids, true).map_err(|e| MtError::Tokenizer(e.to_string()))?,
        })
    }

    fn eos(&self) -> u32 {
        match self {
            Self::Marian { eos, .. } | Self::SentencePiece { eos, .. } | Self::Json { eos, .. } => *eos,
        }
    }
}

/// Encodes the text between special-token strings with `encode`, the specials as their ids.
fn with_specials(text: &str, specials: &[(&str, u32)], mut encode: impl FnMut(&str) -> Vec<u32>) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some((at, (token, id))) = specials.iter().filter_map(|s| rest.find(s.0).map(|at| (at, *s))).min_by_key(|(at, _)| *at) {
        ids.extend(encode(&rest[..at]));
        ids.push(id);
        rest = &rest[at + token.len()..];
    }
    ids.extend(encode(rest));
    ids
}
