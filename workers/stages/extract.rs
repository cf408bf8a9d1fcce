//! Extraction stage: any file to text per page, OCR where needed, children for what is inside.

use docpipe_models::extract::{self, Extracted, Extractor, Limits, Request};
use serde_json::json;

use super::{ChildPayload, EngineInfo, Produced, Stage, StageInput, StageOutput};
use crate::error::{ErrorKind, StageError};
use crate::schema::{AnnotationBody, OcrDetails, TextSegment};

/// Owns an [`Extractor`] (and so one Tesseract engine) per engine thread.
pub struct Extract {
    extractor: Extractor,
}

impl Extract {
    pub fn new(limits: Limits) -> Self {
        Self { extractor: Extractor::new(limits) }
    }
}

pub fn kind(kind: extract::ExtractErrorKind) -> ErrorKind {
    match kind {
        extract::ExtractErrorKind::Encrypted => ErrorKind::Encrypted,
        extract::ExtractErrorKind::Corrupt => ErrorKind::Corrupt,
        extract::ExtractErrorKind::Unsupported => ErrorKind::Unsupported,
        extract::ExtractErrorKind::TooLarge => ErrorKind::TooLarge,
        extract::ExtractErrorKind::Timeout => ErrorKind::Timeout,
        extract::ExtractErrorKind::Empty => ErrorKind::Empty,
        extract::ExtractErrorKind::MissingLanguage => ErrorKind::MissingLanguage,
    }
}

fn stage_error(e: extract::ExtractError) -> StageError {
    StageError::new(kind(e.kind), e.reason)
}

impl Stage for Extract {
    fn needs_content(&self) -> bool {
        true
    }

    fn run(&mut self, input: StageInput<'_>) -> Result<StageOutput, StageError> {
        let content = input.content.ok_or_else(|| StageError::new(ErrorKind::Internal, "extract ran without content"))?;
        let request = Request {
            ocr_languages: input.job.options.ocr_languages.clone(),
            name: Some(input.job.document.filename.clone()),
            depth: input.job.parent.as_ref().map_or(0, |p| p.depth),
            budget: input.job.parent.as_ref().and_then(|p| p.budget).map(|b| extract::Budget { bytes: b.bytes, members: b.members }),
            cancel: Some(input.cancel.clone()),
        };
        let extracted = self.extractor.extract_input(content, &request).map_err(stage_error)?;
        Ok(output(extracted, &request, self.extractor.limits()))
    }
}

fn output(extracted: Extracted, request: &Request, limits: &Limits) -> StageOutput {
    let used_ocr = extracted.pages.iter().any(|p| p.source == extract::Source::Ocr && p.ocr.is_some());
    let mut segments = Vec::with_capacity(extracted.pages.len());
    let mut offset = 0u64;
    let mut lines = 0u64;
    for page in extracted.pages {
        if !segments.is_empty() {
            offset += 2; // pages are joined with a blank line
        }
        let chars = page.text.chars().count() as u64;
        lines += page.text.lines().count() as u64;
        segments.push(TextSegment {
            page: page.number,
            source: page.source.into(),
            start: offset,
            end: offset + chars,
            confidence: page.confidence,
            width: page.width,
            height: page.height,
            problem: page.problem.map(stage_error),
            ocr: page.ocr.map(|o| OcrDetails {
                rotation_degrees: o.rotation_degrees,
                deskew_degrees: o.deskew_degrees,
                script: o.script,
                detection: o.detection,
                languages: o.languages,
                dictionary_rate: o.dictionary_rate,
                low_confidence: o.low_confidence,
                words: o.words,
            }),
            text: page.text,
        });
        offset += chars;
    }
    let mut parameters = serde_json::Map::new();
    parameters.insert("max_pages".into(), json!(limits.max_pages));
    if used_ocr {
        parameters.insert("ocr_engine".into(), json!(format!("tesseract {}", docpipe_models::extract::tesseract_version())));
        parameters.insert("ocr_languages_requested".into(), json!(request.ocr_languages));
        parameters.insert("ocr_dpi".into(), json!(limits.ocr_dpi));
    }
    let mut output = StageOutput {
        detected_media_type: Some(extracted.media_type),
        condition: extracted.condition.map(stage_error),
        children: extracted.children.into_iter().map(|c| ChildPayload { path: c.path, bytes: c.bytes }).collect(),
        ..Default::default()
    };
    output.annotations.push(Produced {
        body: AnnotationBody::Text {
            encoding: extracted.encoding,
            lines,
            chars: offset,
            page_count: extracted.page_count,
            metadata: extracted.metadata,
            segments,
        },
        engine: EngineInfo { name: "docpipe-extract".into(), version: env!("CARGO_PKG_VERSION").into(), model: None },
        parameters,
        // OCR text is a model's reading of the page, not the document's own text layer.
        machine_generated: used_ocr,
    });
    output
}
