//! Structured logs. Fields carry ids, stages and error kinds; document text, secrets and
//! free-text error reasons (which can quote a document) never go here.

use tracing::Level;
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat};

/// Whether an event or span may be logged at all, whatever RUST_LOG asks for: docpipe's own
/// at any level, every other crate at INFO and above. Below INFO, dependencies dump what they
/// carry: lapin logs every AMQP frame at TRACE as decimal bytes (the login frame holds the
/// broker password, job messages hold documents), HTTP and database clients log requests and
/// rows. An allow-list, so a crate added later cannot start leaking.
pub fn allowed(target: &str, level: &Level) -> bool {
    *level <= Level::INFO || target == "docpipe" || target.starts_with("docpipe::") || target.starts_with("docpipe_models")
}

pub fn init(config: &LogConfig) {
    // lapin's I/O thread reports the socket closing at process exit as an error; docpipe logs
    // real connection losses itself, so those lines are only noise unless RUST_LOG asks for them.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},lapin::io_loop=off,lapin::channels=off", config.level)));
    let cap = filter_fn(|meta| allowed(meta.target(), meta.level()));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match config.format {
        LogFormat::Json => layer.json().flatten_event(true).with_current_span(true).boxed(),
        LogFormat::Text => layer.boxed(),
    };
    if tracing_subscriber::registry().with(layer.with_filter(filter.and(cap))).try_init().is_ok() {
        quiet_panics();
    }
}

/// A JSON error as logs may show it: serde's message quotes the offending value, which can be
/// document text, so only its category and position.
pub fn json_error(e: &serde_json::Error) -> String {
    format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column())
}

/// Rust's default panic report prints the panic message, which can quote the text being
/// processed (a slicing panic shows the string). Log where it happened instead. A panic inside a
/// stage also reaches the job's result (the stage pool catches it, message included); one
/// elsewhere is known by its location only.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
        tracing::error!(%location, %thread, "panic (message kept out of the log)");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_are_capped_at_info_and_docpipe_is_not() {
        assert!(!allowed("lapin::channel", &Level::TRACE));
        assert!(!allowed("amq_protocol_types::parsing", &Level::DEBUG));
        assert!(!allowed("tokio_postgres::query", &Level::DEBUG));
        assert!(allowed("lapin::connection", &Level::WARN));
        assert!(allowed("docpipe::amqp::worker", &Level::TRACE));
        assert!(allowed("docpipe_models::llm", &Level::DEBUG));
    }
}
