//! Pages per minute of our OCR engine against the `tesseract` command line, on the page images
//! in tests/data/ocr, in one run and on the same traineddata. Prints a markdown table.
//!
//!     bench/ocr.sh [--rounds N] [--copies N] [--tessdata DIR]
//!     cargo bench -p docpipe-models --bench ocr -- [same options]
//!
//! The CLI runs as users run it: one process per page, `-l eng`, `OMP_THREAD_LIMIT=1`. Engines
//! are created and warmed up once per thread before timing, as a worker does at start-up.
//! Every round runs every configuration once over the same job list (each image `copies`
//! times, largest first), so load from elsewhere on the machine hits all of them alike; rates
//! come from each configuration's best round (median alongside), and CPU time per page is
//! given as a check that does not depend on other load.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use docpipe_models::eval::character_error_rate;
use docpipe_models::ocr::{OcrEngine, OcrOptions};

const IMAGES: [&str; 6] = [
    "phototest.tif",
    "eurotext.tif",
    "8087_054.3B.tif",
    "phototest-rotated-180.png",
    "phototest-rotated-L.png",
    "phototest-rotated-R.png",
];

struct Image {
    name: &'static str,
    path: PathBuf,
    bytes: Vec<u8>,
    truth: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Reader {
    Cli,
    EngineEnglish,
    EngineAutomatic,
}

impl Reader {
    fn label(self) -> &'static str {
        match self {
            Reader::Cli => "tesseract CLI `-l eng`",
            Reader::EngineEnglish => "OcrEngine `eng`",
            Reader::EngineAutomatic => "OcrEngine automatic (OSD)",
        }
    }

    fn options(self) -> OcrOptions {
        match self {
            Reader::EngineEnglish => OcrOptions { languages: vec!["eng".into()], ..OcrOptions::default() },
            _ => OcrOptions::default(),
        }
    }
}

/// One row of the table: a reader with a number of threads, and what it measured.
struct Run {
    reader: Reader,
    threads: usize,
    engines: Vec<OcrEngine>,
    /// Wall time of each round.
    rounds: Vec<Duration>,
    /// CPU seconds (ours plus CLI children), all rounds.
    cpu: f64,
    pages: usize,
    /// CER per image (from the first round), in IMAGES order.
    cer: Vec<Option<f64>>,
}

struct Settings {
    rounds: usize,
    copies: usize,
    tessdata: PathBuf,
    load_before: String,
}

fn main() {
    ensure_single_openmp_thread();
    let settings = parse_args();
    let images = load_images();
    let jobs = job_list(&images, settings.copies);

    let mut runs: Vec<Run> = [Reader::Cli, Reader::EngineEnglish, Reader::EngineAutomatic]
        .into_iter()
        .flat_map(|reader| [1, 2].map(|threads| (reader, threads)))
        .map(|(reader, threads)| Run {
            reader,
            threads,
            engines: warmed_engines(reader, threads, &settings, &images),
            rounds: Vec::new(),
            cpu: 0.0,
            pages: 0,
            cer: vec![None; images.len()],
        })
        .collect();

    for round in 0..settings.rounds {
        for run in &mut runs {
            let cpu_before = cpu_seconds();
            let (elapsed, texts) = measure(run, &jobs, &images, &settings);
            run.cpu += cpu_seconds() - cpu_before;
            run.rounds.push(elapsed);
            run.pages += jobs.len();
            for (&index, text) in jobs.iter().zip(&texts) {
                run.cer[index].get_or_insert_with(|| character_error_rate(&images[index].truth, text));
            }
            eprintln!("round {}: {} x{} {:.2}s", round + 1, run.reader.label(), run.threads, elapsed.as_secs_f64());
        }
    }
    print_table(&runs, &images, &settings);
}

/// libgomp reads OMP_THREAD_LIMIT only at start-up, so run ourselves again with it set.
fn ensure_single_openmp_thread() {
    if std::env::var("OMP_THREAD_LIMIT").as_deref() == Ok("1") {
        return;
    }
    let exe = std::env::current_exe().expect("own executable path");
    let status = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OMP_THREAD_LIMIT", "1")
        .status()
        .expect("re-run with OMP_THREAD_LIMIT=1");
    std::process::exit(status.code().unwrap_or(1));
}

fn parse_args() -> Settings {
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let mut settings = Settings { rounds: 3, copies: 2, tessdata: default_tessdata(), load_before };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => settings.rounds = value().parse().expect("--rounds N"),
            "--copies" => settings.copies = value().parse().expect("--copies N"),
            "--tessdata" => settings.tessdata = PathBuf::from(value()),
            _ => {} // cargo bench adds --bench
        }
    }
    settings
}

fn default_tessdata() -> PathBuf {
    std::env::var_os("TESSDATA_PREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/tesseract-ocr/5/tessdata"))
}

fn load_images() -> Vec<Image> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/ocr");
    IMAGES
        .iter()
        .map(|&name| {
            let path = dir.join(name);
            let truth_name = if name.starts_with("phototest") { "phototest" } else { name.trim_end_matches(".tif") };
            let truth = std::fs::read_to_string(dir.join(format!("{truth_name}.txt"))).expect("ground truth");
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Image { name, path, bytes, truth }
        })
        .collect()
}

/// Each image `copies` times, most text first (the work grows with it) so two workers finish
/// close together.
fn job_list(images: &[Image], copies: usize) -> Vec<usize> {
    let mut jobs: Vec<usize> = (0..images.len()).flat_map(|index| std::iter::repeat_n(index, copies)).collect();
    jobs.sort_by_key(|&index| std::cmp::Reverse(images[index].truth.len()));
    jobs
}

/// One engine per thread, each having read one page so models are loaded before timing.
fn warmed_engines(reader: Reader, threads: usize, settings: &Settings, images: &[Image]) -> Vec<OcrEngine> {
    if reader == Reader::Cli {
        return Vec::new();
    }
    (0..threads)
        .map(|_| {
            let mut engine = OcrEngine::new(Some(&settings.tessdata)).expect("engine");
            engine.recognize(&images[0].bytes, &reader.options()).expect("warm-up page");
            engine
        })
        .collect()
}

/// Read every job with `run.threads` workers pulling from one queue; texts in job order.
fn measure(run: &mut Run, jobs: &[usize], images: &[Image], settings: &Settings) -> (Duration, Vec<String>) {
    let next = AtomicUsize::new(0);
    let texts = Mutex::new(vec![String::new(); jobs.len()]);
    let options = run.reader.options();
    let started = Instant::now();
    // One worker per thread: with its own engine, or spawning CLI processes.
    let workers: Vec<Option<&mut OcrEngine>> = if run.engines.is_empty() {
        (0..run.threads).map(|_| None).collect()
    } else {
        run.engines.iter_mut().map(Some).collect()
    };
    std::thread::scope(|scope| {
        for mut engine in workers {
            let (next, texts, options) = (&next, &texts, &options);
            let reader = run.reader;
            scope.spawn(move || loop {
                let job = next.fetch_add(1, Ordering::Relaxed);
                let Some(&index) = jobs.get(job) else { break };
                let image = &images[index];
                let text = match engine.as_deref_mut() {
                    Some(engine) => engine.recognize(&image.bytes, options).map(|page| page.text).unwrap_or_default(),
                    None => {
                        debug_assert!(reader == Reader::Cli);
                        run_cli(&image.path, &settings.tessdata)
                    }
                };
                texts.lock().expect("no poisoned lock")[job] = text;
            });
        }
    });
    (started.elapsed(), texts.into_inner().expect("no poisoned lock"))
}

fn run_cli(image: &Path, tessdata: &Path) -> String {
    let output = Command::new("tesseract")
        .arg(image)
        .arg("stdout")
        .args(["-l", "eng", "--tessdata-dir"])
        .arg(tessdata)
        .env("OMP_THREAD_LIMIT", "1")
        .stderr(Stdio::null())
        .output()
        .expect("tesseract CLI installed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// CPU time of this process and its waited-for children (the CLI runs), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name, which may itself contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14-17, i.e. 11-14 after the name; Linux ticks are 1/100 s.
    let ticks: f64 = (11..=14).filter_map(|i| fields.get(i)?.parse::<f64>().ok()).sum();
    ticks / 100.0
}

/// The fastest round: other load on the machine only ever adds time, so the best round is the
/// closest to what the reader itself can do (the same rule for every row).
fn best_round(run: &Run) -> Duration {
    run.rounds.iter().min().copied().unwrap_or_default()
}

fn pages_per_minute(run: &Run) -> f64 {
    let pages_per_round = run.pages as f64 / run.rounds.len().max(1) as f64;
    pages_per_round * 60.0 / best_round(run).as_secs_f64()
}

fn median_pages_per_minute(run: &Run) -> f64 {
    let mut rounds = run.rounds.clone();
    rounds.sort();
    let median = rounds.get(rounds.len() / 2).copied().unwrap_or_default();
    let pages_per_round = run.pages as f64 / run.rounds.len().max(1) as f64;
    pages_per_round * 60.0 / median.as_secs_f64()
}

fn cpu_per_page(run: &Run) -> f64 {
    run.cpu / run.pages.max(1) as f64
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn print_table(runs: &[Run], images: &[Image], settings: &Settings) {
    let cli = |threads| runs.iter().find(|run| run.reader == Reader::Cli && run.threads == threads).map(pages_per_minute);
    let cli_single = cli(1).unwrap_or(f64::NAN);
    let version = Command::new("tesseract").arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string()).unwrap_or_default();
    println!(
        "\n{} rounds of {} images x {} copies, {version}, tessdata {}, OMP_THREAD_LIMIT=1, {} CPUs, load average before: {}\n",
        settings.rounds,
        images.len(),
        settings.copies,
        settings.tessdata.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        settings.load_before,
    );
    let cli_cpu = runs.iter().find(|run| run.reader == Reader::Cli && run.threads == 1).map_or(f64::NAN, cpu_per_page);
    println!("| reader | threads | best round (s) | pages/min | vs CLI 1 process | vs CLI same parallelism | pages/min (median round) | CPU s/page | CPU vs CLI | mean CER |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        let rate = pages_per_minute(run);
        let same = cli(run.threads).unwrap_or(f64::NAN);
        println!(
            "| {} | {} | {:.2} | {:.1} | {:.2}x | {:.2}x | {:.1} | {:.3} | {:.2}x | {:.2}% |",
            run.reader.label(),
            run.threads,
            best_round(run).as_secs_f64(),
            rate,
            rate / cli_single,
            rate / same,
            median_pages_per_minute(run),
            cpu_per_page(run),
            cli_cpu / cpu_per_page(run),
            100.0 * mean(run.cer.iter().flatten().copied()),
        );
    }
    println!("\n\"CPU vs CLI\" is CLI CPU per page over ours (above 1 = we use less); it holds when other load on the machine skews wall times.");
    println!("\nCER per image (whitespace collapsed):\n");
    let header: Vec<&str> = images.iter().map(|image| image.name).collect();
    println!("| reader | threads | {} |", header.join(" | "));
    println!("|---|---:|{}", "---:|".repeat(images.len()));
    for run in runs {
        let cells: Vec<String> = run.cer.iter().map(|cer| cer.map_or("-".into(), |c| format!("{:.2}%", 100.0 * c))).collect();
        println!("| {} | {} | {} |", run.reader.label(), run.threads, cells.join(" | "));
    }
}
