//! The page image behind a scanned page's word boxes: rendered from the original in the blob
//! store (re-hashed on the way in) exactly as OCR saw it, at the recorded rotation and skew.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::Analyst;
use super::views::{not_found, visible};
use super::{internal, AppState};
use crate::schema::AnnotationBody;

/// Longer side of a page image in pixels: sharp on a large screen, a few hundred KB.
const MAX_SIDE: u32 = 1800;

pub async fn page_image(State(state): State<AppState>, analyst: Analyst, Path((key, page)): Path<(String, u32)>) -> Response {
    let result = match visible(&state, &analyst, &key).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let read = result.annotations.iter().find_map(|a| match &a.body {
        AnnotationBody::Text { segments, .. } => {
            segments.iter().find(|s| s.page == page).and_then(|s| s.ocr.as_ref()).map(|o| (o.rotation_degrees, o.deskew_degrees))
        }
        _ => None,
    });
    let Some((rotation, deskew)) = read else { return not_found() };
    // Rendering costs a pdftoppm run and a full-page rotation: a few at a time.
    let Ok(_permit) = state.renders.clone().acquire_owned().await else { return internal("render limiter closed") };
    let (blobs, limits) = (state.blobs.clone(), Arc::clone(&state.page_limits));
    let blob_key = crate::blob::key_for(&result.document.sha256);
    let rendered = tokio::task::spawn_blocking(move || {
        let bytes = blobs.get(&blob_key)?;
        Ok::<_, anyhow::Error>(docpipe_models::extract::page_image(&bytes, page, &limits, rotation, deskew, MAX_SIDE)?)
    })
    .await;
    match rendered {
        Ok(Ok(png)) => (
            [(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "private, max-age=86400")],
            png,
        )
            .into_response(),
        Ok(Err(e)) if matches!(e.downcast_ref(), Some(crate::blob::BlobError::NotFound { .. })) => {
            (StatusCode::NOT_FOUND, "the original is not in the blob store").into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "page image not rendered");
            (StatusCode::UNPROCESSABLE_ENTITY, "the page image could not be rendered from the original").into_response()
        }
        Err(e) => internal(e),
    }
}
