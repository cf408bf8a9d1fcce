//! What a running worker is doing, for Prometheus (text exposition format 0.0.4) and for health
//! checks: `/metrics`, `/healthz` (the process answers) and `/readyz` (connected to the broker,
//! blob store reachable). Served on `[worker] metrics_bind`, loopback by default in examples.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;

/// Stage latency buckets (seconds): a text file takes milliseconds, a scanned book minutes.
const BUCKETS: [f64; 11] = [0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters by label, the worker's gauges, and what `/readyz` reads.
#[derive(Debug, Default)]
pub struct Metrics {
    deliveries: Mutex<BTreeMap<String, u64>>,
    stage_runs: Mutex<BTreeMap<(String, String), u64>>,
    results: Mutex<BTreeMap<String, u64>>,
    dead_letters: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Pages read by OCR, and sentences by what translation made of them (translated, unverified,
    /// unsupported, ...), from the annotations stages add.
    pages_ocr: AtomicU64,
    segments: Mutex<BTreeMap<String, u64>>,
    /// Characters of source text that came back translated.
    translated_chars: AtomicU64,
    retries: AtomicU64,
    reconnects: AtomicU64,
    in_flight: AtomicI64,
    connected: AtomicBool,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock().expect("metrics lock").entry(key).or_default() += 1;
}

impl Metrics {
    /// A delivery taken from `stage`'s queue; in flight until the guard is dropped.
    pub fn delivery(self: &Arc<Self>, stage: &str) -> InFlight {
        bump(&self.deliveries, stage.to_owned());
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// One stage attempt that ended with `outcome` (`ok` or an error kind) after `took`.
    pub fn stage_run(&self, stage: &str, outcome: &str, took: Duration) {
        bump(&self.stage_runs, (stage.to_owned(), outcome.to_owned()));
        let mut latency = self.latency.lock().expect("metrics lock");
        let histogram = latency.entry(stage.to_owned()).or_default();
        let seconds = took.as_secs_f64();
        for (count, bound) in histogram.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// Count the work in annotations a stage just added: OCR'd pages, translated sentences.
    pub fn annotations(&self, added: &[crate::schema::Annotation]) {
        use crate::schema::{AnnotationBody, TextSource, TranslationStatus};
        for annotation in added {
            match &annotation.body {
                AnnotationBody::Text { segments, .. } => {
                    let ocr = segments.iter().filter(|s| s.source == TextSource::Ocr).map(|s| s.page).collect::<std::collections::BTreeSet<_>>();
                    self.pages_ocr.fetch_add(ocr.len() as u64, Ordering::Relaxed);
                }
                AnnotationBody::Translation { segments, .. } => {
                    let mut counts = self.segments.lock().expect("metrics lock");
                    for segment in segments {
                        *counts.entry(segment.status.as_str().to_owned()).or_default() += 1;
                        if segment.status == TranslationStatus::Translated {
                            self.translated_chars.fetch_add(segment.end.saturating_sub(segment.start), Ordering::Relaxed);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    pub fn result(&self, status: &str) {
        bump(&self.results, status.to_owned());
    }

    pub fn dead_letter(&self, kind: &str) {
        bump(&self.dead_letters, kind.to_owned());
    }

    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of everything above.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, label: &str, map: &BTreeMap<String, u64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (value, n) in map {
                let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(value));
            }
        };
        counter(&mut out, "docpipe_deliveries_total", "Jobs taken from a stage queue.", "stage", &self.deliveries.lock().expect("metrics lock"));
        let _ = writeln!(out, "# HELP docpipe_stage_runs_total Stage attempts by outcome (ok or error kind).\n# TYPE docpipe_stage_runs_total counter");
        for ((stage, outcome), n) in self.stage_runs.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "docpipe_stage_runs_total{{stage=\"{}\",outcome=\"{}\"}} {n}", escape(stage), escape(outcome));
        }
        counter(&mut out, "docpipe_results_total", "Results published, by job status.", "status", &self.results.lock().expect("metrics lock"));
        counter(&mut out, "docpipe_dead_letters_total", "Messages parked in the dead-letter queue, by error kind.", "kind", &self.dead_letters.lock().expect("metrics lock"));
        let _ = writeln!(out, "# HELP docpipe_stage_seconds Time a stage attempt took.\n# TYPE docpipe_stage_seconds histogram");
        for (stage, h) in self.latency.lock().expect("metrics lock").iter() {
            let stage = escape(stage);
            for (count, bound) in h.counts.iter().zip(BUCKETS) {
                let _ = writeln!(out, "docpipe_stage_seconds_bucket{{stage=\"{stage}\",le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "docpipe_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "docpipe_stage_seconds_sum{{stage=\"{stage}\"}} {}", h.sum);
            let _ = writeln!(out, "docpipe_stage_seconds_count{{stage=\"{stage}\"}} {}", h.count);
        }
        counter(&mut out, "docpipe_translation_segments_total", "Sentences through translation, by outcome.", "status", &self.segments.lock().expect("metrics lock"));
        render_loads(&mut out);
        let scalars = [
            ("docpipe_pages_ocr_total", "counter", "Pages read by OCR.", self.pages_ocr.load(Ordering::Relaxed) as i64),
            ("docpipe_translated_chars_total", "counter", "Characters of source text translated.", self.translated_chars.load(Ordering::Relaxed) as i64),
            ("docpipe_retries_total", "counter", "Deliveries sent to a delay queue to be tried again.", self.retries.load(Ordering::Relaxed) as i64),
            ("docpipe_broker_reconnects_total", "counter", "Connections to the broker lost and made again.", self.reconnects.load(Ordering::Relaxed) as i64),
            ("docpipe_in_flight", "gauge", "Deliveries being worked on.", self.in_flight.load(Ordering::Relaxed)),
            ("docpipe_broker_connected", "gauge", "1 while connected to the broker.", i64::from(self.connected())),
        ];
        for (name, kind, help, value) in scalars {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        out
    }
}

/// Loads that happen in stage threads and model pools, which serve `process` as well as workers:
/// kept per process, shown by every worker's `/metrics`.
#[derive(Debug, Default)]
struct Loads {
    /// Per stage: engines built (Tesseract, language id, tokenizers), and seconds spent.
    engines: BTreeMap<String, (u64, f64)>,
    /// Stages whose engines could not be built, with how often.
    engine_failures: BTreeMap<String, u64>,
    /// Per model id: loads and seconds spent (weights read, hashed, prepared).
    models: BTreeMap<String, (u64, f64)>,
    model_failures: BTreeMap<String, u64>,
}

static LOADS: Mutex<Loads> = Mutex::new(Loads { engines: BTreeMap::new(), engine_failures: BTreeMap::new(), models: BTreeMap::new(), model_failures: BTreeMap::new() });

fn loads() -> std::sync::MutexGuard<'static, Loads> {
    LOADS.lock().unwrap_or_else(|e| e.into_inner())
}

/// One load that took `took`: counted with its time when `ok`, as a failure otherwise.
fn record(done: &mut BTreeMap<String, (u64, f64)>, failed: &mut BTreeMap<String, u64>, name: &str, ok: bool, took: Duration) {
    match ok {
        true => {
            let entry = done.entry(name.to_owned()).or_default();
            entry.0 += 1;
            entry.1 += took.as_secs_f64();
        }
        false => *failed.entry(name.to_owned()).or_default() += 1,
    }
}

/// A stage thread built its engines (`ok`) or could not, after `took`.
pub fn engine_built(stage: &str, ok: bool, took: Duration) {
    let loads = &mut *loads();
    record(&mut loads.engines, &mut loads.engine_failures, stage, ok, took);
}

/// A translation or summary model was loaded (`ok`) or refused, after `took`.
pub fn model_loaded(model: &str, ok: bool, took: Duration) {
    let loads = &mut *loads();
    record(&mut loads.models, &mut loads.model_failures, model, ok, took);
}

/// Stages whose engines failed to build in this process (for `/readyz`).
fn failed_engines() -> Vec<String> {
    loads().engine_failures.keys().cloned().collect()
}

fn render_loads(out: &mut String) {
    let loads = loads();
    for (name, help, label, map) in [
        ("docpipe_engine_load_seconds", "Time stage threads spent building their engines.", "stage", &loads.engines),
        ("docpipe_model_load_seconds", "Time spent loading translation and summary models.", "model", &loads.models),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
        for (value, (count, sum)) in map {
            let _ = writeln!(out, "{name}_sum{{{label}=\"{}\"}} {sum}\n{name}_count{{{label}=\"{}\"}} {count}", escape(value), escape(value));
        }
    }
    for (name, help, label, map) in [
        ("docpipe_engine_failures_total", "Stage threads that could not build their engines.", "stage", &loads.engine_failures),
        ("docpipe_model_failures_total", "Models refused (missing, wrong hash, unreadable).", "model", &loads.model_failures),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (value, n) in map {
            let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(value));
        }
    }
}

/// Label values are stage names, statuses and error kinds (docpipe's own words); escaped anyway.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Counts a delivery as in flight until dropped, however its handling ends.
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    blobs: Arc<dyn crate::blob::BlobStore>,
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, blobs: Arc<dyn crate::blob::BlobStore>) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(|State(h): State<Health>| async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.metrics.render()) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Health { metrics, blobs });
    axum::serve(listener, app).await
}

async fn ready(State(h): State<Health>) -> impl IntoResponse {
    let mut missing = Vec::new();
    if !h.metrics.connected() {
        missing.push("broker not connected");
    }
    let failed = failed_engines();
    let failed = failed.iter().map(|stage| format!("stage {stage} cannot build its engines")).collect::<Vec<_>>();
    missing.extend(failed.iter().map(String::as_str));
    let blobs = h.blobs.clone();
    if !tokio::task::spawn_blocking(move || blobs.check()).await.is_ok_and(|checked| checked.is_ok()) {
        missing.push("blob store not reachable");
    }
    match missing.is_empty() {
        true => (StatusCode::OK, "ready\n".to_owned()),
        false => (StatusCode::SERVICE_UNAVAILABLE, missing.join("\n") + "\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every series the shipped Grafana dashboard queries is one the worker exports.
    #[test]
    fn the_dashboard_asks_only_for_exported_metrics() {
        let dashboard: serde_json::Value = serde_json::from_str(include_str!("../docker/grafana/docpipe-dashboard.json")).unwrap();
        let text = Metrics::default().render();
        let exported: std::collections::HashSet<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(panels.len() >= 10);
        for panel in panels {
            let expr = panel["targets"][0]["expr"].as_str().unwrap();
            let names: Vec<&str> = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("docpipe_")).collect();
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
                assert!(exported.contains(base), "dashboard panel {:?} asks for {name}, which no worker exports", panel["title"]);
            }
        }
    }

    #[test]
    fn render_counts_and_buckets() {
        let metrics = Arc::new(Metrics::default());
        {
            let _job = metrics.delivery("extract");
            metrics.stage_run("extract", "ok", Duration::from_millis(30));
            assert!(metrics.render().contains("docpipe_in_flight 1"));
        }
        metrics.result("complete");
        metrics.dead_letter("panic");
        let text = metrics.render();
        assert!(text.contains("docpipe_deliveries_total{stage=\"extract\"} 1"), "{text}");
        assert!(text.contains("docpipe_stage_runs_total{stage=\"extract\",outcome=\"ok\"} 1"), "{text}");
        assert!(text.contains("docpipe_stage_seconds_bucket{stage=\"extract\",le=\"0.025\"} 0"), "{text}");
        assert!(text.contains("docpipe_stage_seconds_bucket{stage=\"extract\",le=\"0.1\"} 1"), "{text}");
        assert!(text.contains("docpipe_results_total{status=\"complete\"} 1"), "{text}");
        assert!(text.contains("docpipe_dead_letters_total{kind=\"panic\"} 1"), "{text}");
        assert!(text.contains("docpipe_in_flight 0"), "{text}");
    }
}
