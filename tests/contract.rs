//! The published contract: JSON Schema files match the Rust types, README examples parse.
//!
//! Pattern to copy: what others read (schemas, README examples) is checked against the code in a
//! test, so documentation cannot drift from behaviour unnoticed.

use docpipe::schema::{json_schemas, Job, JobResult};

#[test]
fn schema_files_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    for (name, generated) in json_schemas() {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            committed == generated,
            "schemas/{name} is out of date with the Rust types: run `cargo run -- schema --out schemas`"
        );
    }
}

/// The JSON block that follows `marker` in README.md.
fn readme_example(marker: &str) -> String {
    let readme = include_str!("../README.md");
    let after = &readme[readme.find(marker).unwrap_or_else(|| panic!("README lacks {marker}"))..];
    let start = after.find("```json\n").expect("json block") + "```json\n".len();
    let end = after[start..].find("```").expect("block end");
    after[start..start + end].to_owned()
}

#[test]
fn readme_examples_are_valid_messages() {
    let job: Job = serde_json::from_str(&readme_example("<!-- example: job -->")).expect("README job parses");
    assert_eq!(job.schema_version, docpipe::schema::SCHEMA_VERSION);
    let result: JobResult =
        serde_json::from_str(&readme_example("<!-- example: result -->")).expect("README result parses");
    assert_eq!(result.job_id, job.job_id);
    assert_eq!(result.document.sha256, job.document.sha256);
}

#[test]
fn unknown_fields_and_versions_are_refused() {
    let mut job: serde_json::Value = serde_json::from_str(&readme_example("<!-- example: job -->")).unwrap();
    job["surprise"] = 1.into();
    assert!(serde_json::from_value::<Job>(job.clone()).is_err());
    job.as_object_mut().unwrap().remove("surprise");
    job["schema_version"] = 2.into();
    let err = docpipe::schema::check_version(job.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("schema_version 2"), "{err}");
}
