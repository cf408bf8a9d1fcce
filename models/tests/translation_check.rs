//! The translation check on real translations: the FLORES-200 references (professional English
//! translations of each language's sentence) must pass, so a flagged segment means something.

use std::path::PathBuf;

use docpipe_models::translation_check::suspect;

fn flores(lang: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/data/mt/flores200-devtest-1-100.{lang}"));
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn professional_translations_are_not_flagged() {
    let english = flores("eng_Latn");
    let mut flagged = Vec::new();
    let mut checked = 0;
    for lang in ["zho_Hans", "rus_Cyrl", "arb_Arab", "pes_Arab", "spa_Latn", "deu_Latn"] {
        for (source, reference) in flores(lang).iter().zip(&english) {
            checked += 1;
            if let Some(reason) = suspect(source, reference) {
                flagged.push(format!("{lang}: {reason}: {reference}"));
            }
        }
    }
    assert!(flagged.is_empty(), "{} of {checked} references flagged:\n{}", flagged.len(), flagged.join("\n"));
}
