//! The batch page's "send again" buttons: the same selection, jobs and audit entries as
//! `docpipe resubmit`. Through the broker when the workspace consumes results from it; otherwise
//! run here, in the background, one resubmission at a time.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::auth::{self, Analyst};
use super::views::{enc, not_found};
use super::{internal, AppState};
use crate::config::Config;
use crate::error::ErrorKind;
use crate::resubmit::{prepare, publish, run, Selection, Via};

pub struct Resubmitter {
    config: Arc<Config>,
    via: Via,
    /// Embedded runs load every stage's models: one at a time.
    running: tokio::sync::Mutex<()>,
}

impl Resubmitter {
    pub fn new(config: Arc<Config>, via: Via) -> Self {
        Self { config, via, running: tokio::sync::Mutex::new(()) }
    }
}

#[derive(Deserialize)]
pub struct ResubmitForm {
    csrf: String,
    /// An `ErrorKind` name; empty for any.
    #[serde(default)]
    kind: String,
    /// `partial` documents too.
    #[serde(default)]
    partial: bool,
}

pub async fn resubmit(
    State(state): State<AppState>,
    analyst: Analyst,
    Path((case_id, batch_id)): Path<(String, String)>,
    Form(form): Form<ResubmitForm>,
) -> Response {
    if !analyst.csrf_ok(&form.csrf) {
        return auth::csrf_refused();
    }
    if !analyst.may_see(&case_id) {
        return not_found();
    }
    let Some(resubmitter) = state.resubmit.clone() else {
        return (StatusCode::CONFLICT, "this workspace cannot send documents again (see `docpipe serve --help`)").into_response();
    };
    let kind = match form.kind.as_str() {
        "" => None,
        name => match name.parse::<ErrorKind>() {
            Ok(kind) => Some(kind),
            Err(_) => return (StatusCode::BAD_REQUEST, "unknown error kind").into_response(),
        },
    };
    let selection = Selection { case_id, batch_id, partial: form.partial, kind };
        let via = resubmitter.via;
    let (jobs, outcome) = match prepare(state.store.as_ref(), state.blobs.as_ref(), &selection, &analyst.user.name, via).await {
        Ok(prepared) => prepared,
        Err(e) => return internal(e),
    };
    let sent = jobs.len();
    if !jobs.is_empty() {
        match via {
            Via::Broker => {
                if let Err(e) = publish(&resubmitter.config, &jobs).await {
                    return internal(e);
                }
            }
            Via::Embedded => {
                let store = state.store.clone();
                tokio::spawn(async move {
                    let _one_at_a_time = resubmitter.running.lock().await;
                    if let Err(e) = run(resubmitter.config.clone(), store.as_ref(), jobs).await {
                        tracing::error!(error = %e, "resubmitted documents could not be run");
                    }
                });
            }
        }
    }
    tracing::info!(user = %analyst.user.name, case_id = %selection.case_id, batch_id = %selection.batch_id, sent, not_sent = outcome.not_sent.len(), via = via.as_str(), "documents sent again");
    Redirect::to(&format!(
        "/cases/{}/batches/{}?sent={sent}&not_sent={}",
        enc(&selection.case_id),
        enc(&selection.batch_id),
        outcome.not_sent.len()
    ))
    .into_response()
}
