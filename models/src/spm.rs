//! SentencePiece models (`source.spm`, `target.spm`, `spiece.model`) read directly from their
//! protobuf files, encoded and decoded like the reference implementation: the model's own
//! normalization table, whitespace handling and dummy prefix, then unigram Viterbi segmentation
//! per word (the `tokenizers` crate's Unigram model and precompiled normalizer).

use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::precompiled::Precompiled;
use tokenizers::{Model, NormalizedString, Normalizer};

#[derive(Debug, thiserror::Error)]
pub enum SpmError {
    #[error("{0}: not a SentencePiece model ({1})")]
    Format(String, String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: only unigram SentencePiece models are supported (model type {1})")]
    ModelType(String, u64),
}

const SPACE: char = '\u{2581}';

/// Piece types in the model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

pub struct SentencePiece {
    pieces: Vec<(String, PieceType)>,
    model: Unigram,
    normalizer: Option<Precompiled>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    index: std::collections::HashMap<String, u32>,
}

impl SentencePiece {
    pub fn load(path: &std::path::Path) -> Result<Self, SpmError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| SpmError::Io(name.clone(), e))?;
        Self::from_bytes(&bytes, &name)
    }

    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self, SpmError> {
        let bad = |why: &str| SpmError::Format(name.to_owned(), why.to_owned());
        let mut pieces = Vec::new();
        let mut scores = Vec::new();
        let (mut model_type, mut byte_fallback, mut unk_id) = (1u64, false, 0usize);
        let (mut charsmap, mut add_dummy_prefix, mut remove_extra_whitespaces) = (Vec::new(), true, true);
        for field in Fields::new(bytes) {
            let (number, value) = field.map_err(&bad)?;
            match (number, value) {
                (1, Value::Bytes(piece)) => {
                    let (mut text, mut score, mut kind) = (String::new(), 0f32, 1u64);
                    for f in Fields::new(piece) {
                        match f.map_err(&bad)? {
                            (1, Value::Bytes(b)) => text = String::from_utf8(b.to_vec()).map_err(|_| bad("piece is not UTF-8"))?,
                            (2, Value::Fixed32(bits)) => score = f32::from_bits(bits),
                            (3, Value::Varint(v)) => kind = v,
                            _ => {}
                        }
                    }
                    let kind = match kind {
                        2 => PieceType::Unknown,
                        3 => PieceType::Control,
                        4 => PieceType::UserDefined,
                        5 => PieceType::Unused,
                        6 => PieceType::Byte,
                        _ => PieceType::Normal,
                    };
                    if kind == PieceType::Unknown {
                        unk_id = pieces.len();
                    }
                    pieces.push((text, kind));
                    scores.push(score);
                }
                (2, Value::Bytes(trainer)) => {
                    for f in Fields::new(trainer) {
                        match f.map_err(&bad)? {
                            (3, Value::Varint(v)) => model_type = v,
                            (35, Value::Varint(v)) => byte_fallback = v != 0,
                            _ => {}
                        }
                    }
                }
                (3, Value::Bytes(normalizer)) => {
                    for f in Fields::new(normalizer) {
                        match f.map_err(&bad)? {
                            (2, Value::Bytes(b)) => charsmap = b.to_vec(),
                            (3, Value::Varint(v)) => add_dummy_prefix = v != 0,
                            (4, Value::Varint(v)) => remove_extra_whitespaces = v != 0,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if pieces.is_empty() {
            return Err(bad("no pieces"));
        }
        if model_type != 1 {
            return Err(SpmError::ModelType(name.to_owned(), model_type));
        }
        let vocab = pieces
            .iter()
            .zip(&scores)
            // Control and unused pieces never come out of segmentation.
            .map(|((p, kind), s)| (p.clone(), if matches!(kind, PieceType::Control | PieceType::Unused) { -1e9 } else { f64::from(*s) }))
            .collect();
        let model = Unigram::from(vocab, Some(unk_id), byte_fallback).map_err(|e| bad(&e.to_string()))?;
        let normalizer = if charsmap.is_empty() { None } else { Some(Precompiled::from(&charsmap).map_err(|e| bad(&e.to_string()))?) };
        let index = pieces.iter().enumerate().map(|(i, (p, _))| (p.clone(), i as u32)).collect();
        Ok(Self { pieces, model, normalizer, add_dummy_prefix, remove_extra_whitespaces, index })
    }

    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(|(p, _)| p.as_str())
    }

    /// The text as the model sees it: normalized, whitespace tidied, spaces as U+2581.
    pub fn normalize(&self, text: &str) -> String {
        let mut normalized = NormalizedString::from(text);
        if let Some(table) = &self.normalizer {
            // The table covers every character; failure is impossible for valid UTF-8.
            let _ = table.normalize(&mut normalized);
        }
        let mut s = normalized.get().to_owned();
        if self.remove_extra_whitespaces {
            s = s.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
        }
        if s.is_empty() {
            return s;
        }
        let s = s.replace(' ', &SPACE.to_string());
        if self.add_dummy_prefix {
            format!("{SPACE}{s}")
        } else {
            s
        }
    }

    /// Piece ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_pieces(text).into_iter().map(|(id, _)| id).collect()
    }

    /// Piece ids of `text` with their surface strings (an unknown piece keeps its text, which
    /// Marian looks up in its own vocabulary).
    pub fn encode_pieces(&self, text: &str) -> Vec<(u32, String)> {
        let normalized = self.normalize(text);
        let mut ids = Vec::new();
        // Pieces never cross a word boundary: segment each "▁word" on its own.
        let mut start = 0;
        let boundaries = normalized.char_indices().filter(|(i, c)| *c == SPACE && *i > 0).map(|(i, _)| i).chain([normalized.len()]);
        for end in boundaries {
            if end > start {
                if let Ok(tokens) = self.model.tokenize(&normalized[start..end]) {
                    ids.extend(tokens.into_iter().map(|t| (t.id, t.value)));
                }
            }
            start = end;
        }
        ids
    }

    /// Id of the unknown piece.
    pub fn unknown_id(&self) -> Option<u32> {
        self.pieces.iter().position(|(_, k)| *k == PieceType::Unknown).map(|i| i as u32)
    }

    /// Id of a piece string.
    pub fn piece_id(&self, piece: &str) -> Option<u32> {
        self.index.get(piece).copied()
    }

    /// Text of piece strings as SentencePiece's `DecodePieces` makes it: a piece the model does not
    /// know is kept as written (Marian's joint vocabulary holds pieces of both languages).
    pub fn decode_pieces(&self, pieces: &[&str]) -> String {
        let mut bytes = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            match self.index.get(*piece).map(|&id| self.pieces[id as usize].1) {
                Some(PieceType::Control | PieceType::Unused) => {}
                Some(PieceType::Unknown) => bytes.extend(" \u{2047} ".as_bytes()),
                Some(PieceType::Byte) => {
                    if let Some(b) = piece.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        bytes.push(b);
                    }
                }
                _ => {
                    let text = piece.replace(SPACE, " ");
                    let text = if i == 0 && self.add_dummy_prefix { text.strip_prefix(' ').map(str::to_owned).unwrap_or(text) } else { text };
                    bytes.extend(text.as_bytes());
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Text of piece ids: control pieces dropped, byte pieces reassembled, U+2581 as spaces.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some((piece, kind)) = self.pieces.get(id as usize) else { continue };
            match kind {
                PieceType::Control | PieceType::Unused => {}
                PieceType::Unknown => bytes.extend(" \u{2047} ".as_bytes()),
                PieceType::Byte => {
                    if let Some(b) = piece.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        bytes.push(b);
                    }
                }
                _ => bytes.extend(piece.replace(SPACE, " ").as_bytes()),
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if self.add_dummy_prefix { text.strip_prefix(' ').map(str::to_owned).unwrap_or(text) } else { text }
    }
}

enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8]),
}

/// The top-level fields of a protobuf message.
struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.data.split_first().ok_or("truncated varint")?;
            self.data = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.data.len() < n {
            return Err("truncated field");
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        let field = (|| {
            let key = self.varint()?;
            let value = match key & 7 {
                0 => Value::Varint(self.varint()?),
                1 => {
                    self.take(8)?;
                    Value::Fixed64
                }
                2 => {
                    let n = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                    Value::Bytes(self.take(n)?)
                }
                5 => {
                    let b = self.take(4)?;
                    Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                }
                _ => return Err("unsupported wire type"),
            };
            Ok((key >> 3, value))
        })();
        if field.is_err() {
            self.data = &[]; // stop after the first error
        }
        Some(field)
    }
}
