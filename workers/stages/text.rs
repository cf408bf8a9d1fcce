//! The document text that earlier stages produced, as sentences with document offsets and pages.

use docpipe_models::segment::{sentences, Sentence};

use crate::error::{ErrorKind, StageError};
use crate::schema::{AnnotationBody, JobResult};

/// Sentences of the whole document (offsets into the text annotation's document text).
pub struct DocumentSentences {
    pub sentences: Vec<Sentence>,
    pub pages: Vec<u32>,
}

/// Sentences of the extracted text, page by page.
pub fn document_sentences(result: &JobResult) -> Result<DocumentSentences, StageError> {
    let segments = result
        .annotations
        .iter()
        .find_map(|a| match &a.body {
            AnnotationBody::Text { segments, .. } => Some(segments),
            _ => None,
        })
        .ok_or_else(|| StageError::new(ErrorKind::Empty, "no extracted text to work on"))?;
    let mut out = DocumentSentences { sentences: Vec::new(), pages: Vec::new() };
    for segment in segments {
        for mut s in sentences(&segment.text) {
            s.start += segment.start as usize;
            s.end += segment.start as usize;
            out.sentences.push(s);
            out.pages.push(segment.page);
        }
    }
    if out.sentences.is_empty() {
        return Err(StageError::new(ErrorKind::Empty, "the extracted text is empty"));
    }
    Ok(out)
}
