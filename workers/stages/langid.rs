//! Language identification stage: every sentence, and the document as shares of its letters.

use std::collections::BTreeMap;
use std::path::PathBuf;

use docpipe_models::langid::LanguageId;
use serde_json::json;

use super::text::document_sentences;
use super::{EngineInfo, Produced, Stage, StageInput, StageOutput};
use crate::config::Config;
use crate::error::{ErrorKind, StageError};
use crate::schema::{AnnotationBody, LanguageSegment, LanguageShare, ModelRef};

/// Languages below this share of the letters are not reported at document level.
const MIN_SHARE: f32 = 0.05;

pub struct LangId {
    model: LanguageId,
    sha256: String,
}

impl LangId {
    pub fn load(config: &Config) -> Result<Self, StageError> {
        let path: PathBuf = config.langid.model.clone();
        let model = LanguageId::load(&path, Some(&config.langid.sha256)).map_err(|e| {
            StageError::new(ErrorKind::Model, format!("{e} (install it with scripts/install-models.sh)"))
        })?;
        Ok(Self { model, sha256: config.langid.sha256.clone() })
    }
}

impl Stage for LangId {
    fn run(&mut self, input: StageInput<'_>) -> Result<StageOutput, StageError> {
        let doc = document_sentences(input.result)?;
        let mut segments = Vec::with_capacity(doc.sentences.len());
        // letters and summed confidence per language
        let mut totals: BTreeMap<(String, String, String), (usize, f32, usize)> = BTreeMap::new();
        let mut letters_all = 0usize;
        for (sentence, page) in doc.sentences.iter().zip(&doc.pages) {
            let guess = self.model.detect(&sentence.clean);
            let letters = sentence.clean.chars().filter(|c| c.is_alphabetic()).count();
            letters_all += letters;
            if guess.code != "und" {
                let e = totals.entry((guess.code.clone(), guess.tag.clone(), guess.script.clone())).or_default();
                e.0 += letters;
                e.1 += guess.confidence;
                e.2 += 1;
            }
            segments.push(LanguageSegment {
                start: sentence.start as u64,
                end: sentence.end as u64,
                page: *page,
                code: guess.code,
                tag: guess.tag,
                script: guess.script,
                confidence: guess.confidence,
            });
        }
        let mut document: Vec<LanguageShare> = totals
            .into_iter()
            .map(|((code, tag, script), (letters, conf, n))| LanguageShare {
                code,
                tag,
                script,
                share: letters as f32 / letters_all.max(1) as f32,
                confidence: conf / n as f32,
            })
            .filter(|l| l.share >= MIN_SHARE)
            .collect();
        document.sort_by(|a, b| b.share.total_cmp(&a.share));
        if document.is_empty() {
            document.push(LanguageShare { code: "und".into(), tag: "und".into(), script: "Zyyy".into(), share: 1.0, confidence: 0.0 });
        }
        let mut output = StageOutput::default();
        output.annotations.push(Produced {
            body: AnnotationBody::Languages { document, segments },
            engine: EngineInfo {
                name: "docpipe-langid (fastText lid.176 + script rules)".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                model: Some(ModelRef { id: "fasttext/lid.176.ftz".into(), weights_sha256: self.sha256.clone() }),
            },
            parameters: json!({
                "min_letters": self.model.min_letters,
                "min_confidence": self.model.min_confidence,
                "min_document_share": MIN_SHARE,
                "unit": "sentence",
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
            machine_generated: true,
        });
        Ok(output)
    }
}
