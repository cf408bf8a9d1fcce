//! Stages: synchronous steps that own their engines. A stage returns typed output; the runner
//! wraps it with provenance, so no stage can forget to say what produced it.

use docpipe_models::extract::ChildBytes;
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::error::StageError;
use crate::schema::{AnnotationBody, Job, JobResult, ModelRef};

pub mod abstractive;
pub mod extract;
pub mod langid;
pub mod summarize;
mod text;
pub mod translate;

/// What a stage sees: the job, the result so far, and the document bytes if it asked for them.
pub struct StageInput<'a> {
    pub job: &'a Job,
    pub result: &'a JobResult,
    pub content: Option<docpipe_models::extract::Input<'a>>,
    /// Raised when the runner gave up (time limit): long stages check it between pages.
    pub cancel: &'a Arc<std::sync::atomic::AtomicBool>,
}

/// The engine behind an annotation, for provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    pub name: String,
    pub version: String,
    pub model: Option<ModelRef>,
}

/// One annotation as a stage produced it; the runner adds stage, times and worker id.
#[derive(Debug, Clone)]
pub struct Produced {
    pub body: AnnotationBody,
    pub engine: EngineInfo,
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub machine_generated: bool,
}

/// A document found inside the input; the runner hashes it and makes it a job of its own. Its
/// bytes are in memory when small, else in a temporary file (`ChildBytes`).
#[derive(Debug)]
pub struct ChildPayload {
    pub path: String,
    pub bytes: ChildBytes,
}

#[derive(Debug, Default)]
pub struct StageOutput {
    pub annotations: Vec<Produced>,
    pub children: Vec<ChildPayload>,
    pub detected_media_type: Option<String>,
    /// A document-level condition that did not stop the stage (e.g. PGP-encrypted mail whose
    /// headers were read): recorded as the stage's error next to its output.
    pub condition: Option<StageError>,
}

pub trait Stage: Send {
    /// Whether the runner must load the document bytes for this stage.
    fn needs_content(&self) -> bool {
        false
    }

    fn run(&mut self, input: StageInput<'_>) -> Result<StageOutput, StageError>;
}

/// Builds a stage on the engine thread that will own it.
pub type StageFactory = Arc<dyn Fn() -> Result<Box<dyn Stage>, StageError> + Send + Sync>;

/// The stages a process can run, by name.
#[derive(Clone, Default)]
pub struct StageCatalog {
    factories: HashMap<String, StageFactory>,
}

impl StageCatalog {
    /// Every stage that ships with docpipe, configured from `config`.
    pub fn builtin(config: &Config) -> Self {
        let mut catalog = Self::default();
        let limits = config.extract.clone();
        catalog.add("extract", move || Ok(Box::new(extract::Extract::new(limits.clone())) as Box<dyn Stage>));
        let langid_config = config.clone();
        catalog.add("langid", move || Ok(Box::new(langid::LangId::load(&langid_config)?) as Box<dyn Stage>));
        let (sentences, share, key_terms) = (config.summarize.sentences, config.summarize.share, config.summarize.key_terms);
        catalog.add("summarize", move || Ok(Box::new(summarize::Summarize { default_sentences: sentences, share, key_terms }) as Box<dyn Stage>));
        let translate_config = config.clone();
        let pool = Arc::new(translate::ModelPool::new(config.llm.context, config.llm.prompt_f32_mib << 20, docpipe_models::llm::Batching { slots: config.llm.slots, queue: config.llm.queue }));
        let translate_pool = pool.clone();
        catalog.add("translate", move || Ok(Box::new(translate::Translate::new(&translate_config, translate_pool.clone())) as Box<dyn Stage>));
        let abstractive_config = config.clone();
        catalog.add("abstractive", move || Ok(Box::new(abstractive::Abstractive::new(&abstractive_config, pool.clone())) as Box<dyn Stage>));
        catalog
    }

    pub fn add<F>(&mut self, name: &str, factory: F)
    where
        F: Fn() -> Result<Box<dyn Stage>, StageError> + Send + Sync + 'static,
    {
        self.factories.insert(name.to_owned(), Arc::new(factory));
    }

    pub fn get(&self, name: &str) -> Option<StageFactory> {
        self.factories.get(name).cloned()
    }
}
