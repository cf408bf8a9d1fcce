//! Extractive summary stage: the most central sentences, quoted with their offsets and pages.

use docpipe_models::summarize::{summarize, Input, Length, Options};
use serde_json::json;

use super::text::document_sentences;
use super::{EngineInfo, Produced, Stage, StageInput, StageOutput};
use crate::error::StageError;
use crate::schema::{AnnotationBody, KeyTerm, SummaryMethod, SummarySentence};

const MAX_SENTENCES: usize = 50;

pub struct Summarize {
    pub default_sentences: usize,
    /// Share of the sentences, when above 0 (used unless the job names a count).
    pub share: f32,
    pub key_terms: usize,
}

impl Stage for Summarize {
    fn run(&mut self, input: StageInput<'_>) -> Result<StageOutput, StageError> {
        let doc = document_sentences(input.result)?;
        // Capped: a summary is for reading, and selection costs grow with its length.
        let by_share = (self.share > 0.0).then(|| (doc.sentences.len() as f32 * self.share).round() as usize);
        let wanted = match input.job.options.summary_sentences {
            Some(n) => n as usize,
            None => by_share.unwrap_or(self.default_sentences),
        }
        .clamp(1, MAX_SENTENCES);
        let options = Options { length: Length::Sentences(wanted), key_terms: self.key_terms, ..Options::default() };
        let summary = summarize(&Input { sentences: &doc.sentences, pages: &doc.pages }, &options);
        let sentences = summary
            .sentences
            .iter()
            .map(|p| {
                let s = &doc.sentences[p.index];
                SummarySentence { text: s.clean.clone(), start: s.start as u64, end: s.end as u64, page: doc.pages[p.index], score: p.score }
            })
            .collect();
        let key_terms = summary.key_terms.into_iter().map(|(term, score)| KeyTerm { term, score }).collect();
        let mut output = StageOutput::default();
        output.annotations.push(Produced {
            body: AnnotationBody::Summary { method: SummaryMethod::Extractive, source: "original".into(), sentences, key_terms },
            engine: EngineInfo { name: "docpipe-lexrank".into(), version: env!("CARGO_PKG_VERSION").into(), model: None },
            parameters: json!({
                "sentences": wanted,
                "mmr_lambda": options.lambda,
                "similarity": "tf-idf cosine (words; character bigrams for CJK/Thai)",
                "boilerplate": "sentences repeated on two or more pages are excluded",
                "document_sentences": doc.sentences.len(),
                "boilerplate_sentences": summary.boilerplate.len(),
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
            // The sentences are the document's own; their choice is the machine's.
            machine_generated: true,
        });
        Ok(output)
    }
}
