//! The deployment files, checked without Docker (not available here): docker/compose.yaml
//! against the Compose schema and pipeline.toml by scripts/check-compose.py.

use std::path::Path;
use std::process::Command;

fn check(file: &Path) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3").arg(root.join("scripts/check-compose.py")).arg(file).output().expect("python3 runs");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr))
}

#[test]
fn compose_file_matches_the_schema_and_the_pipeline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = root.join("docker/compose.yaml");
    let (ok, report) = check(&compose);
    assert!(ok, "{report}");
    assert!(report.contains("stages served: abstractive, extract, langid, summarize, translate; 0 problems"), "{report}");

    // The check fails on what it should catch: an unknown service key, a misspelt override, a
    // stage nobody serves, a broker address that is not a service.
    let text = std::fs::read_to_string(&compose).unwrap();
    let broken = text
        .replace("stop_grace_period: 40s", "stop_grace_periode: 40s")
        .replace("DOCPIPE_BLOBS__S3__BUCKET", "DOCPIPE_BLOBS__S3__BUCKT")
        .replace("\"translate,abstractive\"", "\"translate\"")
        .replace("rabbitmq3:5672", "rabbitmq4:5672");
    let copy = root.join("docker/.compose-broken.yaml");
    std::fs::write(&copy, broken).unwrap();
    let (ok, report) = check(&copy);
    std::fs::remove_file(&copy).unwrap();
    assert!(!ok, "{report}");
    for expected in ["stop_grace_periode", "no key buckt", "stage abstractive is served by no worker", "rabbitmq4 is not a service"] {
        assert!(report.contains(expected), "{expected}: {report}");
    }
}
