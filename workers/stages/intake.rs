//! Plain-text intake: decodes Unicode text exactly and refuses what it cannot read honestly.

use docpipe_models::{sniff, text};

use super::{EngineInfo, Produced, Stage, StageInput, StageOutput};
use crate::error::{ErrorKind, StageError};
use crate::schema::{AnnotationBody, TextSegment};

pub struct Intake;

impl Stage for Intake {
    fn needs_content(&self) -> bool {
        true
    }

    fn run(&mut self, input: StageInput<'_>) -> Result<StageOutput, StageError> {
        let bytes = input.content.ok_or_else(|| StageError::new(ErrorKind::Internal, "intake ran without content"))?;
        let media = sniff::media_type(bytes);
        let mut output = StageOutput::default();
        if media != "text/plain" {
            // Say what it is rather than decode binary as mojibake.
            return Err(match text::decode(bytes) {
                Err(text::TextError::NotUtf8(at)) if media == "application/octet-stream" => StageError::new(
                    ErrorKind::Unsupported,
                    format!("not UTF-8 or UTF-16 text (first undecodable byte at offset {at}); legacy code pages need the extraction stage"),
                ),
                _ => StageError::new(ErrorKind::Unsupported, format!("{media} is not plain text; it needs the extraction stage")),
            });
        }
        let decoded = text::decode(bytes).map_err(|e| StageError::new(ErrorKind::Malformed, e.to_string()))?;
        let chars = decoded.chars as u64;
        output.annotations.push(Produced {
            body: AnnotationBody::Text {
                encoding: decoded.encoding.label().to_owned(),
                lines: decoded.lines as u64,
                chars,
                segments: vec![TextSegment { page: 1, source: "text".into(), start: 0, end: chars, text: decoded.text }],
            },
            engine: EngineInfo {
                name: "docpipe-text".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                model: None,
            },
            parameters: serde_json::Map::new(),
            machine_generated: false,
        });
        Ok(output)
    }
}
