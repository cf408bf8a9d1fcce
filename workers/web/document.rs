//! A result arranged for the document view: the original and its translation side by side,
//! segment by segment; summary sentences pointing at the segment they quote; the abstractive
//! summary cut into plain and unverified parts; provenance rows. Pure: no store, no HTML (the
//! templates escape every piece of it).

use std::collections::BTreeMap;

use crate::schema::{AnnotationBody, Faithfulness, JobResult};

/// One row of the side-by-side view.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Anchor id: `seg-<n>`.
    pub id: String,
    pub page: u32,
    pub start: u64,
    pub end: u64,
    pub original: String,
    /// ISO 639-3 of the sentence, as language identification found it.
    pub language: String,
    pub translation: Option<String>,
    /// Why there is no translation (`source_is_target`, `unsupported`, ...), or `translated`.
    pub status: String,
    pub confidence: Option<String>,
    /// Why the model's output is not taken for a translation (`unverified`).
    pub check: Option<String>,
}

/// A summary sentence and the row holding the sentence it quotes.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryLine {
    pub text: String,
    pub target: Option<String>,
    pub score: String,
}

/// A piece of the abstractive summary; `unverified` pieces name something the source lacks.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub text: String,
    pub unverified: bool,
}

/// A page read by OCR: its size in the recogniser's pixels (the page image is drawn in them) and
/// the words with their boxes.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    pub page: u32,
    pub width: u32,
    pub height: u32,
    /// Mean word confidence, percent.
    pub confidence: u32,
    /// Share of words found in the recogniser's dictionary, percent, when it could be told.
    pub dictionary: Option<u32>,
    /// The OCR engine found the reading poor: the page says to check it against the image.
    pub low_confidence: bool,
    pub rotation_degrees: u32,
    pub script: String,
    /// How the script was settled, in words ("" when the job named the languages).
    pub detection: &'static str,
    pub languages: String,
    pub words: Vec<WordBox>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WordBox {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub text: String,
    /// Percent.
    pub confidence: u32,
    /// Under the confidence a reader should distrust (drawn differently).
    pub doubtful: bool,
}

/// Words recognised with less confidence than this are marked on the page image.
const DOUBTFUL_WORD: f32 = 0.6;

#[derive(Debug, Clone, PartialEq)]
pub struct ProvenanceRow {
    pub stage: String,
    pub engine: String,
    pub model: String,
    pub weights_sha256: String,
    pub machine_generated: bool,
    pub parameters: String,
    pub started_at: String,
    pub finished_at: String,
    pub worker_id: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DocumentView {
    pub rows: Vec<Row>,
    pub translation_target: Option<String>,
    pub summary: Vec<SummaryLine>,
    pub key_terms: Vec<String>,
    pub abstractive: Option<Vec<Piece>>,
    pub abstractive_faithfulness: String,
    pub metadata: Vec<(String, String)>,
    pub provenance: Vec<ProvenanceRow>,
    pub stage_errors: Vec<(String, String, String)>,
    pub scans: Vec<Scan>,
}

/// The document's text: its text segments joined with a blank line, as offsets count it.
fn document_text(result: &JobResult) -> Option<String> {
    result.annotations.iter().find_map(|a| match &a.body {
        AnnotationBody::Text { segments, .. } => Some(segments.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join("\n\n")),
        _ => None,
    })
}

pub fn view(result: &JobResult) -> DocumentView {
    let mut view = DocumentView::default();
    let text = document_text(result).unwrap_or_default();
    let chars: Vec<char> = text.chars().collect();
    // Offsets come from the result, which may have been edited: clamp, never index past the text.
    let slice = |start: u64, end: u64| {
        let end = (end as usize).min(chars.len());
        let start = (start as usize).min(end);
        chars[start..end].iter().collect::<String>()
    };
    let mut languages: BTreeMap<u64, String> = BTreeMap::new();
    for annotation in &result.annotations {
        match &annotation.body {
            AnnotationBody::Languages { segments, .. } => {
                languages.extend(segments.iter().map(|s| (s.start, s.code.clone())));
            }
            AnnotationBody::Text { metadata, segments, .. } => {
                view.metadata.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
                view.scans.extend(segments.iter().filter_map(|s| {
                    let (ocr, width, height) = (s.ocr.as_ref()?, s.width?, s.height?);
                    Some(Scan {
                        page: s.page,
                        width,
                        height,
                        confidence: (s.confidence.unwrap_or(0.0) * 100.0).round() as u32,
                        dictionary: ocr.dictionary_rate.map(|rate| (rate * 100.0).round() as u32),
                        low_confidence: ocr.low_confidence,
                        rotation_degrees: ocr.rotation_degrees,
                        script: ocr.script.clone().unwrap_or_default(),
                        detection: match ocr.detection {
                            Some(docpipe_models::ocr::Detection::Osd) => "detected by OSD",
                            Some(docpipe_models::ocr::Detection::UprightLatin) => "upright Roman text read well as Latin; OSD not run",
                            Some(docpipe_models::ocr::Detection::SidewaysLatin) => "Roman text on its side, turned and read well as Latin; OSD not run",
                            None => "",
                        },
                        languages: ocr.languages.join("+"),
                        words: ocr
                            .words
                            .iter()
                            .map(|w| WordBox {
                                x: w.x,
                                y: w.y,
                                width: w.width,
                                height: w.height,
                                text: w.text.clone(),
                                confidence: (w.confidence * 100.0).round() as u32,
                                doubtful: w.confidence < DOUBTFUL_WORD,
                            })
                            .collect(),
                    })
                }));
            }
            _ => {}
        }
    }
    // Rows: the translation's segments when there is a translation (every sentence has one),
    // else the sentences language identification found.
    let translation = result.annotations.iter().find_map(|a| match &a.body {
        AnnotationBody::Translation { target, segments } => Some((target, segments)),
        _ => None,
    });
    match translation {
        Some((target, segments)) => {
            view.translation_target = Some(target.clone());
            for (n, s) in segments.iter().enumerate() {
                view.rows.push(Row {
                    id: format!("seg-{n}"),
                    page: s.page,
                    start: s.start,
                    end: s.end,
                    original: slice(s.start, s.end),
                    language: s.source_language.clone(),
                    translation: s.text.clone(),
                    status: s.status.as_str().to_owned(),
                    confidence: s.confidence.map(|c| format!("{c:.2}")),
                    check: s.check.clone(),
                });
            }
        }
        None => {
            let sentences = result.annotations.iter().find_map(|a| match &a.body {
                AnnotationBody::Languages { segments, .. } => Some(segments),
                _ => None,
            });
            for (n, s) in sentences.into_iter().flatten().enumerate() {
                view.rows.push(Row {
                    id: format!("seg-{n}"),
                    page: s.page,
                    start: s.start,
                    end: s.end,
                    original: slice(s.start, s.end),
                    language: s.code.clone(),
                    translation: None,
                    status: String::new(),
                    confidence: None,
                    check: None,
                });
            }
            if view.rows.is_empty() && !text.is_empty() {
                view.rows.push(Row {
                    id: "seg-0".into(),
                    page: 1,
                    start: 0,
                    end: text.chars().count() as u64,
                    original: text.clone(),
                    language: String::new(),
                    translation: None,
                    status: String::new(),
                    confidence: None,
                    check: None,
                });
            }
        }
    }
    for annotation in &result.annotations {
        match &annotation.body {
            AnnotationBody::Summary { sentences, key_terms, .. } => {
                for s in sentences {
                    // The row whose span holds the quoted sentence's start.
                    let target = view.rows.iter().find(|r| r.start <= s.start && s.start < r.end.max(r.start + 1)).map(|r| r.id.clone());
                    view.summary.push(SummaryLine { text: s.text.clone(), target, score: format!("{:.2}", s.score) });
                }
                view.key_terms.extend(key_terms.iter().map(|k| k.term.clone()));
            }
            AnnotationBody::AbstractiveSummary { text, faithfulness, unverified, .. } => {
                let spans: Vec<&str> = unverified.iter().map(|u| u.text.as_str()).collect();
                view.abstractive = Some(pieces(text, &spans));
                view.abstractive_faithfulness = match faithfulness {
                    Faithfulness::Verified => "every number and name was found in the source".into(),
                    Faithfulness::UnverifiedContent => "contains numbers or names the source does not (marked)".into(),
                };
            }
            _ => {}
        }
        let p = &annotation.provenance;
        view.provenance.push(ProvenanceRow {
            stage: p.stage.clone(),
            engine: format!("{} {}", p.engine, p.engine_version),
            model: p.model.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
            weights_sha256: p.model.as_ref().map(|m| m.weights_sha256.clone()).unwrap_or_default(),
            machine_generated: p.machine_generated,
            parameters: serde_json::to_string(&p.parameters).unwrap_or_default(),
            started_at: p.started_at.to_rfc3339(),
            finished_at: p.finished_at.to_rfc3339(),
            worker_id: p.worker_id.clone(),
        });
    }
    view.stage_errors = result
        .stages
        .iter()
        .filter_map(|s| s.error.as_ref().map(|e| (s.stage.clone(), e.kind.as_str().to_owned(), e.reason.clone())))
        .collect();
    view
}

/// `text` cut so that every occurrence of a span is a piece of its own, marked unverified.
pub fn pieces(text: &str, spans: &[&str]) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let next = spans.iter().filter(|s| !s.is_empty()).filter_map(|s| rest.find(s).map(|at| (at, s.len()))).min();
        match next {
            Some((at, len)) => {
                if at > 0 {
                    out.push(Piece { text: rest[..at].to_owned(), unverified: false });
                }
                out.push(Piece { text: rest[at..at + len].to_owned(), unverified: true });
                rest = &rest[at + len..];
            }
            None => {
                if !rest.is_empty() {
                    out.push(Piece { text: rest.to_owned(), unverified: false });
                }
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unverified_spans_become_their_own_pieces() {
        let p = pieces("Paid 500 to Li Wei on 3 May.", &["500", "Li Wei"]);
        let marked: Vec<_> = p.iter().filter(|p| p.unverified).map(|p| p.text.as_str()).collect();
        assert_eq!(marked, ["500", "Li Wei"]);
        assert_eq!(p.iter().map(|p| p.text.as_str()).collect::<String>(), "Paid 500 to Li Wei on 3 May.");
        assert_eq!(pieces("plain", &[]), [Piece { text: "plain".into(), unverified: false }]);
    }
}
