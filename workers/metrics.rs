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
        let scalars = [
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
    blobs: std::path::PathBuf,
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, blobs: std::path::PathBuf) -> std::io::Result<()> {
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
    if !tokio::fs::metadata(&h.blobs).await.is_ok_and(|m| m.is_dir()) {
        missing.push("blob store directory not reachable");
    }
    match missing.is_empty() {
        true => (StatusCode::OK, "ready\n".to_owned()),
        false => (StatusCode::SERVICE_UNAVAILABLE, missing.join("\n") + "\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
