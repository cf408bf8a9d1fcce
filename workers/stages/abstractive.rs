//! Abstractive summary stage: a GGUF instruction model writes the summary (of the translation
//! when there is one), then every number and name in it is checked against the source.

use std::path::PathBuf;
use std::sync::Arc;

use docpipe_models::faithful;
use docpipe_models::llm::tasks;
use serde_json::json;

use super::text::document_sentences;
use super::translate::ModelPool;
use super::{EngineInfo, Produced, Stage, StageInput, StageOutput};
use crate::config::{AbstractiveConfig, Config};
use crate::error::{ErrorKind, StageError};
use crate::schema::{AnnotationBody, Faithfulness, ModelRef, TranslationStatus, UnverifiedSpan};

pub struct Abstractive {
    config: AbstractiveConfig,
    path: PathBuf,
    pool: Arc<ModelPool>,
}

impl Abstractive {
    pub fn new(config: &Config, pool: Arc<ModelPool>) -> Self {
        let c = config.abstractive.clone();
        let path = if c.model.is_absolute() { c.model.clone() } else { config.models.dir.join(&c.model) };
        Self { config: c, path, pool }
    }
}

impl Stage for Abstractive {
    fn run(&mut self, input: StageInput<'_>) -> Result<StageOutput, StageError> {
        let doc = document_sentences(input.result)?;
        let original: Vec<&str> = doc.sentences.iter().map(|s| s.clean.as_str()).collect();
        // The translation where one was made: translated sentences, the others as written.
        let translation = input.result.annotations.iter().find_map(|a| match &a.body {
            AnnotationBody::Translation { target, segments } if segments.iter().any(|s| s.status == TranslationStatus::Translated) => Some((target, segments)),
            _ => None,
        });
        let (source, text): (String, Vec<&str>) = match translation {
            Some((target, segments)) => (
                target.clone(),
                segments.iter().zip(&original).map(|(seg, orig)| seg.text.as_deref().filter(|_| seg.status == TranslationStatus::Translated).unwrap_or(orig)).collect(),
            ),
            None => ("original".into(), original.clone()),
        };
        let c = &self.config;
        let llm = self.pool.llm(&c.id, &self.path, &c.sha256).map_err(|e| StageError::new(ErrorKind::Model, e))?;
        let wanted = input.job.options.summary_sentences.map_or(c.sentences, |n| n as usize).clamp(1, 20);
        let target = tasks::target_name(&input.job.options.target_language).to_owned();
        let summary = tasks::summarize(&llm, &text, &target, wanted, c.max_new_tokens).map_err(|e| {
            // Nothing to summarize is the document's condition, not the model's fault.
            let kind = if matches!(e, docpipe_models::llm::LlmError::EmptyInput) { ErrorKind::Empty } else { ErrorKind::Model };
            StageError::new(kind, format!("{}: {e}", c.id))
        })?;
        let joined_source = text.join(" ");
        let joined_original = original.join(" ");
        let unverified: Vec<UnverifiedSpan> = faithful::check(&summary.completion.text, &[&joined_source, &joined_original])
            .into_iter()
            .map(|u| UnverifiedSpan { kind: u.kind, text: u.text })
            .collect();
        let faithfulness = if unverified.is_empty() { Faithfulness::Verified } else { Faithfulness::UnverifiedContent };
        let mut output = StageOutput::default();
        output.annotations.push(Produced {
            body: AnnotationBody::AbstractiveSummary { source, text: summary.completion.text.clone(), faithfulness, unverified, chunks: summary.chunks as u32 },
            engine: EngineInfo {
                name: format!("docpipe-llm (candle quantized {})", llm.info.architecture),
                version: env!("CARGO_PKG_VERSION").into(),
                model: Some(ModelRef { id: c.id.clone(), weights_sha256: llm.info.sha256.clone() }),
            },
            parameters: json!({
                "prompt": tasks::SUMMARIZE_PROMPT,
                "sentences": wanted,
                "decoding": "greedy",
                "max_new_tokens": c.max_new_tokens,
                "context": llm.info.context,
                "prompt_f32_mib": llm.info.prompt_f32_bytes >> 20,
                "slots": llm.info.batching.slots,
                "kernels": docpipe_models::llm::kernel_path(),
                "chunks": summary.chunks,
                "reduce_rounds": summary.rounds,
                "output_tokens": summary.completion.tokens,
                "stopped_at_max_new_tokens": summary.completion.truncated,
                "confidence": summary.completion.confidence,
                "faithfulness_check": "numbers and capitalized or CJK names must occur in the source",
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
            machine_generated: true,
        });
        Ok(output)
    }
}
