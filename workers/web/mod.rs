//! `docpipe serve`: the analysts' review workspace. Server-rendered pages (askama templates
//! compiled into the binary, escaped by default), assets served by docpipe itself, bound to
//! 127.0.0.1 unless told otherwise. Every request is checked against the signed-in analyst's
//! cases: a document of another case is `404`, exactly like one that does not exist.

pub mod auth;
pub mod document;
pub mod resubmit;
mod scan;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::blob::BlobStore;
use crate::store::ResultStore;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn ResultStore>,
    /// Where originals are read from for download and page images (checked against their
    /// sha256 on every read).
    pub blobs: Arc<dyn BlobStore>,
    pub logins: Arc<auth::LoginLimiter>,
    /// How the batch page's "send again" buttons send; `None` shows no buttons.
    pub resubmit: Option<Arc<resubmit::Resubmitter>>,
    /// The extraction limits pages were read with (resolution, size caps), to render a page image
    /// as OCR saw it.
    pub page_limits: Arc<docpipe_models::extract::Limits>,
    /// Page images rendered at once.
    pub renders: Arc<tokio::sync::Semaphore>,
    /// Public keys whose signatures the document page reports as valid.
    pub trusted: Arc<crate::evidence::TrustedKeys>,
}

impl AppState {
    /// Over `store` and `blobs`, with default extraction limits and no "send again" buttons.
    pub fn new(store: Arc<dyn ResultStore>, blobs: Arc<dyn BlobStore>) -> Self {
        Self {
            store,
            blobs,
            logins: Arc::default(),
            resubmit: None,
            page_limits: Arc::default(),
            renders: Arc::new(tokio::sync::Semaphore::new(2)),
            trusted: Arc::default(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(views::home))
        .route("/login", get(views::login_page).post(views::login))
        .route("/logout", post(views::logout))
        .route("/search", get(views::search))
        .route("/cases/{case}/batches/{batch}", get(views::batch))
        .route("/cases/{case}/batches/{batch}/counts.json", get(views::batch_counts))
        .route("/cases/{case}/batches/{batch}/resubmit", post(resubmit::resubmit))
        .route("/documents/{key}", get(views::document))
        .route("/documents/{key}/result.json", get(views::result_json))
        .route("/documents/{key}/original", get(views::original))
        .route("/documents/{key}/pages/{page}/image", get(scan::page_image))
        .route("/documents/{key}/review", post(views::review))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", include_str!("assets/app.css")) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", include_str!("assets/app.js")) }))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
}

/// Even if some document text escaped escaping, the browser would run no script it carries: only
/// docpipe's own script file, no inline code, no other origin, no framing.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// A store or template failure: logged with its detail, answered without it.
pub fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "request failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the server log").into_response()
}

/// Serve on `bind` until `shutdown` resolves.
pub async fn serve(state: AppState, bind: SocketAddr, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    serve_on(tokio::net::TcpListener::bind(bind).await?, state, shutdown).await
}

/// Serve on a listener already bound (tests bind port 0 and read the port back).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "review workspace listening");
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
