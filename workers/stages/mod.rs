//! Stages: synchronous steps that own their engines. A stage returns typed output; the runner
//! wraps it with provenance, so no stage can forget to say what produced it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::StageError;
use crate::schema::{AnnotationBody, ChildDocument, Job, JobResult, ModelRef};

pub mod intake;

/// What a stage sees: the job, the result so far, and the document bytes if it asked for them.
pub struct StageInput<'a> {
    pub job: &'a Job,
    pub result: &'a JobResult,
    pub content: Option<&'a [u8]>,
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

#[derive(Debug, Clone, Default)]
pub struct StageOutput {
    pub annotations: Vec<Produced>,
    pub children: Vec<ChildDocument>,
    pub detected_media_type: Option<String>,
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
pub struct Registry {
    factories: HashMap<String, StageFactory>,
}

impl Registry {
    /// Every stage that ships with docpipe.
    pub fn builtin() -> Self {
        let mut registry = Self::default();
        registry.add("intake", || Ok(Box::new(intake::Intake) as Box<dyn Stage>));
        registry
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
