//! Walking the user's files and folders. Anything that cannot be read is reported, never
//! skipped silently.

use std::path::{Path, PathBuf};

/// A regular file found under the given paths.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub size: u64,
}

/// A path we could not take, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unreadable {
    pub path: PathBuf,
    pub reason: String,
}

/// Regular files under `paths`, sorted; symbolic links are reported, not followed. A file
/// reached twice (`docpipe process d d/sub`) is taken once: it is one job.
pub fn walk(paths: &[PathBuf]) -> (Vec<Input>, Vec<Unreadable>) {
    let mut inputs = Vec::new();
    let mut unreadable = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for root in paths {
        for entry in walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name() {
            match entry {
                Ok(entry) if entry.file_type().is_file() && !seen.insert(entry.path().to_path_buf()) => {}
                Ok(entry) if entry.file_type().is_file() => match entry.metadata() {
                    Ok(meta) => inputs.push(Input { path: entry.into_path(), size: meta.len() }),
                    Err(e) => unreadable.push(Unreadable { path: entry.into_path(), reason: e.to_string() }),
                },
                Ok(entry) if entry.file_type().is_symlink() => unreadable.push(Unreadable {
                    path: entry.into_path(),
                    reason: "symbolic link: not followed (submit its target instead)".into(),
                }),
                Ok(entry) if entry.file_type().is_dir() => {}
                Ok(entry) => unreadable
                    .push(Unreadable { path: entry.into_path(), reason: "not a regular file (device, socket or pipe)".into() }),
                Err(e) => unreadable.push(Unreadable {
                    path: e.path().map(Path::to_path_buf).unwrap_or_else(|| root.clone()),
                    reason: e.to_string(),
                }),
            }
        }
    }
    (inputs, unreadable)
}

pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {elapsed} elapsed, eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// A progress bar with lines printed above it: the bar where stderr is a terminal, plain lines
/// where it is not (CI logs, `2> file`), so a long run is never silent.
pub struct Progress {
    pub bar: indicatif::ProgressBar,
}

impl Progress {
    pub fn new(len: u64, what: &str) -> Self {
        let bar = progress(len, what);
        // Redraw while a long stage runs, so elapsed time keeps moving between documents.
        bar.enable_steady_tick(std::time::Duration::from_millis(500));
        Self { bar }
    }

    pub fn line(&self, text: &str) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }
}

/// A name from a user's files or from inside a document, safe to print on a terminal: control
/// characters (escape sequences a hostile file name could carry) become `?`.
pub fn printable(name: &str) -> String {
    name.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_names_carry_no_terminal_controls() {
        assert_eq!(super::printable("a\u{1b}[2Jb\nc.txt"), "a?[2Jb?c.txt");
        assert_eq!(super::printable("文件.pdf"), "文件.pdf");
    }
}
