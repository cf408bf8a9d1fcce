//! `docpipe ocr languages`: what automatic OCR can read here, and what a script would need.

use docpipe_models::ocr;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: OcrCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum OcrCommand {
    /// Installed traineddata, and for every script orientation detection reports, the
    /// traineddata a page in it is read with or the Debian package it needs (pages in a script
    /// without one get `missing_language`).
    Languages,
}

pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    match args.command {
        OcrCommand::Languages => languages(),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn languages() {
    let (dir, installed) = ocr::installed_traineddata(None);
    match &dir {
        Some(dir) => println!("tessdata   {}", dir.display()),
        None => println!("tessdata   none found (TESSDATA_PREFIX or the system directories): OCR is unavailable"),
    }
    let languages: Vec<&str> = installed.iter().map(String::as_str).filter(|code| *code != "osd").collect();
    println!("installed  {}", if languages.is_empty() { "-".to_owned() } else { languages.join(" ") });
    if !installed.iter().any(|code| code == "osd") {
        println!("osd        missing: pages without ocr_languages are read in English, unturned (Debian package tesseract-ocr-osd)");
    }
    println!();
    println!("{:<12} {:<28} install", "script", "read with");
    for (script, coverage) in ocr::script_coverage(&installed) {
        match coverage {
            Ok(languages) => println!("{script:<12} {:<28} -", languages.join("+")),
            Err(language) => println!("{script:<12} {:<28} {}", "(missing_language)", ocr::debian_package(language)),
        }
    }
}
