//! Results as the pipeline makes them, and a PostgreSQL database per test run, for the store and
//! review workspace tests.

use std::collections::BTreeMap;

use docpipe::error::{ErrorKind, StageError};
use docpipe::schema::{
    Annotation, AnnotationBody, JobResult, Provenance, StageReport, StageStatus, TextSegment, TextSource, TranslationSegment,
    TranslationStatus,
};

pub fn provenance(stage: &str) -> Provenance {
    Provenance {
        stage: stage.into(),
        engine: "test".into(),
        engine_version: "0".into(),
        model: None,
        parameters: Default::default(),
        machine_generated: stage == "translate",
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
        worker_id: "test".into(),
    }
}

/// A result as the pipeline makes it: text (with an email subject), an English translation, and
/// a failed or successful extract report.
pub fn result(case: &str, batch: &str, filename: &str, original: &str, translation: &str, ok: bool) -> JobResult {
    let mut job = super::job(original, &["extract", "translate"], batch);
    job.case_id = case.into();
    job.document.filename = filename.into();
    let mut result = JobResult::start(&job);
    let chars = original.chars().count() as u64;
    result.annotations.push(Annotation {
        provenance: provenance("extract"),
        body: AnnotationBody::Text {
            encoding: None,
            lines: 1,
            chars,
            page_count: None,
            metadata: BTreeMap::from([("subject".to_owned(), format!("Re: {filename}"))]),
            segments: vec![TextSegment {
                page: 1,
                source: TextSource::Text,
                start: 0,
                end: chars,
                text: original.into(),
                confidence: None,
                width: None,
                height: None,
                problem: None,
                ocr: None,
            }],
        },
    });
    result.annotations.push(Annotation {
        provenance: provenance("translate"),
        body: AnnotationBody::Translation {
            target: "en".into(),
            segments: vec![TranslationSegment {
                start: 0,
                end: chars,
                page: 1,
                source_language: "zho".into(),
                status: TranslationStatus::Translated,
                text: Some(translation.into()),
                check: None,
                model: Some("m".into()),
                confidence: Some(0.9),
                parts: None,
            }],
        },
    });
    let error = (!ok).then(|| StageError::new(ErrorKind::Unavailable, "store was down"));
    let status = if ok { StageStatus::Ok } else { StageStatus::Error };
    result.stages.push(StageReport { stage: "extract".into(), status, error, attempts: 1 });
    result.settle();
    result
}

/// A PostgreSQL database for this test run, dropped at the end.
pub struct TestDatabase {
    name: String,
    admin: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin = std::env::var("DOCPIPE_TEST_POSTGRES").unwrap_or_else(|_| "host=127.0.0.1 user=postgres".into());
        let name = format!("docpipe_t_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let (client, driver) = tokio_postgres::connect(&format!("{admin} dbname=postgres"), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (make test starts it)");
        tokio::spawn(driver);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        Self { name, admin }
    }

    pub fn connection(&self) -> String {
        format!("{} dbname={}", self.admin, self.name)
    }

    pub async fn drop(self) {
        if let Ok((client, driver)) = tokio_postgres::connect(&format!("{} dbname=postgres", self.admin), tokio_postgres::NoTls).await {
            tokio::spawn(driver);
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await;
        }
    }
}


/// A document of several sentences, each with its translation, languages per sentence, an
/// extractive summary quoting the last sentence and an abstractive summary with one name the
/// source lacks.
pub fn document(case: &str, batch: &str, filename: &str, sentences: &[(&str, &str)], metadata: &[(&str, &str)]) -> JobResult {
    use docpipe::schema::{Faithfulness, KeyTerm, LanguageSegment, LanguageShare, SummaryMethod, SummarySentence, UnverifiedSpan};
    let original: String = sentences.iter().map(|(o, _)| *o).collect();
    let mut result = self::result(case, batch, filename, &original, "", true);
    let AnnotationBody::Text { metadata: meta, .. } = &mut result.annotations[0].body else { unreachable!() };
    meta.extend(metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut offset = 0u64;
    let mut spans = Vec::new();
    for (o, _) in sentences {
        let n = o.chars().count() as u64;
        spans.push((offset, offset + n));
        offset += n;
    }
    result.annotations[1].body = AnnotationBody::Translation {
        target: "en".into(),
        segments: sentences
            .iter()
            .zip(&spans)
            .map(|((_, t), (start, end))| TranslationSegment {
                start: *start,
                end: *end,
                page: 1,
                source_language: "zho".into(),
                status: TranslationStatus::Translated,
                text: Some(t.to_string()),
                check: None,
                model: Some("m".into()),
                confidence: Some(0.8),
                parts: None,
            })
            .collect(),
    };
    result.annotations.insert(
        1,
        Annotation {
            provenance: provenance("langid"),
            body: AnnotationBody::Languages {
                document: vec![LanguageShare { code: "zho".into(), tag: "zh-Hans".into(), script: "Hans".into(), share: 1.0, confidence: 0.9 }],
                segments: spans
                    .iter()
                    .map(|(start, end)| LanguageSegment { start: *start, end: *end, page: 1, code: "zho".into(), tag: "zh-Hans".into(), script: "Hans".into(), confidence: 0.9 })
                    .collect(),
            },
        },
    );
    let (last_start, last_end) = *spans.last().expect("a sentence");
    result.annotations.push(Annotation {
        provenance: provenance("summarize"),
        body: AnnotationBody::Summary {
            method: SummaryMethod::Extractive,
            source: "original".into(),
            sentences: vec![SummarySentence { text: sentences.last().unwrap().0.to_string(), start: last_start, end: last_end, page: 1, score: 1.0 }],
            key_terms: vec![KeyTerm { term: "中国银行".into(), score: 1.0 }],
        },
    });
    result.annotations.push(Annotation {
        provenance: provenance("abstractive"),
        body: AnnotationBody::AbstractiveSummary {
            source: "en".into(),
            text: format!("{} Wang Wu was paid.", sentences.last().unwrap().1),
            faithfulness: Faithfulness::UnverifiedContent,
            unverified: vec![UnverifiedSpan { kind: docpipe_models::faithful::Kind::Name, text: "Wang Wu".into() }],
            chunks: 1,
        },
    });
    result.stages = vec![
        StageReport { stage: "extract".into(), status: StageStatus::Ok, error: None, attempts: 1 },
        StageReport { stage: "translate".into(), status: StageStatus::Ok, error: None, attempts: 1 },
    ];
    result.settle();
    result
}
