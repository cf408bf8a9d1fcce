//! Handlers: thin, each checks access, asks the store, fills a template.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;

use super::auth::{self, Analyst};
use super::document::{view, DocumentView};
use super::{internal, AppState};
use crate::store::{status_str, AuditEntry, BatchSummary, Counts, DocumentFilter, ReviewState, Search, Session};

fn page(template: impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => internal(e),
    }
}

pub(super) fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// A path segment or query value, percent-encoded.
pub(super) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub struct Choice {
    pub value: String,
    pub selected: bool,
}

fn choices<'a>(values: impl IntoIterator<Item = &'a str>, current: &str) -> Vec<Choice> {
    values.into_iter().map(|v| Choice { value: v.to_owned(), selected: v == current }).collect()
}

// ---- sign in and out ----

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    message: Option<String>,
    csrf: String,
}

/// The login form carries a token that must equal a cookie set with it (double submit), so
/// another site cannot sign a browser in under its own account.
pub async fn login_page() -> Response {
    login_form(None, StatusCode::OK)
}

fn login_form(message: Option<&str>, status: StatusCode) -> Response {
    let token = auth::random_token();
    let mut response = page(LoginPage { message: message.map(str::to_owned), csrf: token.clone() });
    *response.status_mut() = status;
    if let Ok(value) = auth::set_cookie(auth::LOGIN_COOKIE, &token, 3600).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    csrf: String,
}

pub async fn login(State(state): State<AppState>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let expected = auth::cookie(&headers, auth::LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !auth::same(&expected, &form.csrf) {
        return login_form(Some("The sign-in form expired; please try again."), StatusCode::FORBIDDEN);
    }
    if state.logins.blocked(&form.name) {
        tracing::warn!(user = %form.name, "login refused: too many failures");
        return login_form(Some("Too many failed attempts; try again later."), StatusCode::TOO_MANY_REQUESTS);
    }
    let user = match state.store.user(&form.name).await {
        Ok(user) => user,
        Err(e) => return internal(e),
    };
    // The same answer, and about the same work, whether the user exists or not.
    let known = user.as_ref().is_some_and(|u| auth::verify_password(&form.password, &u.password_hash));
    if user.is_none() {
        let _ = auth::verify_password(&form.password, auth::decoy_hash());
    }
    if !known {
        state.logins.failed(&form.name);
        tracing::warn!(user = %form.name, "login failed");
        return login_form(Some("Unknown user or wrong password."), StatusCode::UNAUTHORIZED);
    }
    state.logins.succeeded(&form.name);
    let token = auth::random_token();
    let session = Session {
        user_name: form.name.clone(),
        csrf: auth::random_token(),
        expires_at: chrono::Utc::now().timestamp() + auth::SESSION_SECONDS,
    };
    if let Err(e) = state.store.create_session(&auth::token_sha256(&token), &session).await {
        return internal(e);
    }
    tracing::info!(user = %form.name, "signed in");
    let mut response = Redirect::to("/").into_response();
    for cookie in [auth::set_cookie(auth::SESSION_COOKIE, &token, auth::SESSION_SECONDS), auth::set_cookie(auth::LOGIN_COOKIE, "", 0)] {
        if let Ok(value) = cookie.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(State(state): State<AppState>, analyst: Analyst, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    if !analyst.csrf_ok(&form.csrf) {
        return auth::csrf_refused();
    }
    if let Some(token) = auth::cookie(&headers, auth::SESSION_COOKIE) {
        let _ = state.store.delete_session(&auth::token_sha256(&token)).await;
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = auth::set_cookie(auth::SESSION_COOKIE, "", 0).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

// ---- cases and batches ----

struct BatchLine {
    case_id: String,
    batch_id: String,
    href: String,
    counts: Counts,
    attention: u64,
    languages: String,
}

#[derive(Template)]
#[template(path = "home.html")]
struct Home {
    user_name: String,
    csrf: String,
    nav_query: String,
    cases: String,
    batches: Vec<BatchLine>,
}

pub async fn home(State(state): State<AppState>, analyst: Analyst) -> Response {
    let batches = match state.store.batches(&analyst.user.cases).await {
        Ok(b) => b,
        Err(e) => return internal(e),
    };
    let batches = batches
        .into_iter()
        .map(|BatchSummary { case_id, batch_id, counts, attention, languages }| BatchLine {
            href: format!("/cases/{}/batches/{}", enc(&case_id), enc(&batch_id)),
            case_id,
            batch_id,
            counts,
            attention,
            languages: languages.join(" "),
        })
        .collect();
    page(Home {
        cases: analyst.user.cases.join(", "),
        user_name: analyst.user.name,
        csrf: analyst.session.csrf,
        nav_query: String::new(),
        batches,
    })
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    language: String,
    #[serde(default)]
    flag: String,
    #[serde(default)]
    review: String,
    #[serde(default)]
    page: u64,
    /// Set after a resubmission: how many documents were sent again, and how many could not be.
    sent: Option<u64>,
    not_sent: Option<u64>,
}

struct DocumentLine {
    href: String,
    filename: String,
    status: &'static str,
    media_type: String,
    languages: String,
    flags: String,
    review: &'static str,
    is_child: bool,
}

struct Failure {
    stage: String,
    kind: String,
    count: u64,
    reason: String,
}

#[derive(Template)]
#[template(path = "batch.html")]
struct BatchPage {
    user_name: String,
    csrf: String,
    nav_query: String,
    case_id: String,
    batch_id: String,
    counts: Counts,
    counts_href: String,
    failures: Vec<Failure>,
    /// The "send again" buttons are shown.
    can_resubmit: bool,
    resubmit_href: String,
    sent: Option<u64>,
    not_sent: u64,
    status_choices: Vec<Choice>,
    flag_choices: Vec<Choice>,
    review_choices: Vec<Choice>,
    language: String,
    documents: Vec<DocumentLine>,
    total: u64,
    first: u64,
    last: u64,
    previous: Option<String>,
    next: Option<String>,
}

const PAGE_SIZE: u64 = 100;

pub async fn batch(
    State(state): State<AppState>,
    analyst: Analyst,
    Path((case_id, batch_id)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> Response {
    if !analyst.may_see(&case_id) {
        return not_found();
    }
    let filter = DocumentFilter {
        case_id: case_id.clone(),
        batch_id: Some(batch_id.clone()),
        status: match query.status.as_str() {
            "" => None,
            s => Some(crate::store::parse_status(s)),
        },
        language: Some(query.language.clone()).filter(|l| !l.is_empty()),
        flag: Some(query.flag.clone()).filter(|f| !f.is_empty()),
        review: ReviewState::parse(&query.review),
        parent_job_id: None,
        offset: query.page * PAGE_SIZE,
        limit: PAGE_SIZE,
    };
    let (rows, total) = match state.store.documents(&filter).await {
        Ok(found) => found,
        Err(e) => return internal(e),
    };
    let counts = match state.store.counts(&case_id, &batch_id).await {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    if total == 0 && counts == Counts::default() {
        return not_found();
    }
    let failures = match failures(&state, &case_id, &batch_id).await {
        Ok(f) => f,
        Err(e) => return internal(e),
    };
    let link = |page: u64| {
        format!(
            "?status={}&language={}&flag={}&review={}&page={page}",
            enc(&query.status),
            enc(&query.language),
            enc(&query.flag),
            enc(&query.review)
        )
    };
    let shown = rows.len() as u64;
    page(BatchPage {
        user_name: analyst.user.name,
        csrf: analyst.session.csrf,
        nav_query: String::new(),
        counts_href: format!("/cases/{}/batches/{}/counts.json", enc(&case_id), enc(&batch_id)),
        counts,
        failures,
        can_resubmit: state.resubmit.is_some(),
        resubmit_href: format!("/cases/{}/batches/{}/resubmit", enc(&case_id), enc(&batch_id)),
        sent: query.sent,
        not_sent: query.not_sent.unwrap_or(0),
        status_choices: choices(["complete", "partial", "failed"], &query.status),
        flag_choices: choices(["stage_error", "unverified_content", "unverified_translation", "low_ocr_confidence", "unsupported"], &query.flag),
        review_choices: choices(ReviewState::ALL.iter().map(|r| r.as_str()), &query.review),
        language: query.language.clone(),
        documents: rows
            .into_iter()
            .map(|d| DocumentLine {
                href: format!("/documents/{}", enc(&d.key)),
                filename: d.filename,
                status: status_str(d.status),
                media_type: d.media_type.unwrap_or_default(),
                languages: d.languages.join(" "),
                flags: d.flags.join(" "),
                review: d.review.as_str(),
                is_child: d.parent_job_id.is_some(),
            })
            .collect(),
        total,
        first: (filter.offset + 1).min(total),
        last: filter.offset + shown,
        previous: (query.page > 0).then(|| link(query.page - 1)),
        next: (filter.offset + shown < total).then(|| link(query.page + 1)),
        case_id,
        batch_id,
    })
}

/// Failed and partial documents grouped by stage and error kind, with the first reason.
async fn failures(state: &AppState, case_id: &str, batch_id: &str) -> Result<Vec<Failure>, crate::store::StoreError> {
    let mut groups: std::collections::BTreeMap<(String, String), (u64, String)> = Default::default();
    for document in state.store.failures(case_id, batch_id).await? {
        for error in document.errors {
            groups.entry((error.stage, error.kind)).or_insert((0, error.reason)).0 += 1;
        }
    }
    Ok(groups.into_iter().map(|((stage, kind), (count, reason))| Failure { stage, kind, count, reason }).collect())
}

pub async fn batch_counts(State(state): State<AppState>, analyst: Analyst, Path((case_id, batch_id)): Path<(String, String)>) -> Response {
    if !analyst.may_see(&case_id) {
        return not_found();
    }
    match state.store.counts(&case_id, &batch_id).await {
        Ok(c) => Json(serde_json::json!({ "complete": c.complete, "partial": c.partial, "failed": c.failed, "pending": c.pending }))
            .into_response(),
        Err(e) => internal(e),
    }
}

// ---- one document ----

#[derive(Template)]
#[template(path = "document.html")]
struct DocumentPage {
    user_name: String,
    csrf: String,
    nav_query: String,
    filename: String,
    case_id: String,
    batch_id: String,
    batch_href: String,
    status: &'static str,
    review: &'static str,
    review_choices: Vec<Choice>,
    note: String,
    review_href: String,
    result_href: String,
    original_href: String,
    pages_href: String,
    parent_href: Option<String>,
    children: Vec<(String, String)>,
    sha256: String,
    size: u64,
    /// Checked against the trusted keys each time the page is shown.
    signature: crate::evidence::SignatureCheck,
    view: DocumentView,
    audit: Vec<AuditEntry>,
}

/// The stored result of `key`, if the analyst may see its case.
pub(super) async fn visible(state: &AppState, analyst: &Analyst, key: &str) -> Result<crate::schema::JobResult, Response> {
    let result = state.store.get(key).await.map_err(internal)?.ok_or_else(not_found)?;
    if !analyst.may_see(&result.case_id) {
        return Err(not_found());
    }
    Ok(result)
}

pub async fn document(State(state): State<AppState>, analyst: Analyst, Path(key): Path<String>) -> Response {
    let result = match visible(&state, &analyst, &key).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let (row, audit) = match (state.store.document(&key).await, state.store.audit(&key).await) {
        (Ok(Some(row)), Ok(audit)) => (row, audit),
        (Err(e), _) | (_, Err(e)) => return internal(e),
        (Ok(None), _) => return not_found(),
    };
    let note = audit
        .iter()
        .rev()
        .find(|a| a.action == "review")
        .and_then(|a| a.after.split_once('\n'))
        .map(|(_, n)| n.to_owned())
        .unwrap_or_default();
    page(DocumentPage {
        user_name: analyst.user.name.clone(),
        csrf: analyst.session.csrf.clone(),
        nav_query: String::new(),
        filename: result.document.filename.clone(),
        batch_href: format!("/cases/{}/batches/{}", enc(&result.case_id), enc(&result.batch_id)),
        case_id: result.case_id.clone(),
        batch_id: result.batch_id.clone(),
        status: status_str(result.status),
        review: row.review.as_str(),
        review_choices: choices(ReviewState::ALL.iter().map(|r| r.as_str()), row.review.as_str()),
        note,
        review_href: format!("/documents/{}/review", enc(&key)),
        result_href: format!("/documents/{}/result.json", enc(&key)),
        original_href: format!("/documents/{}/original", enc(&key)),
        pages_href: format!("/documents/{}/pages", enc(&key)),
        parent_href: result.parent.as_ref().map(|p| format!("/documents/{}", p.job_id)),
        children: result.children.iter().map(|c| (format!("/documents/{}", c.job_id), c.path.clone())).collect(),
        sha256: result.document.sha256.clone(),
        size: result.document.size,
        signature: crate::evidence::check_result(&result, &state.trusted),
        view: view(&result),
        audit,
    })
}

pub async fn result_json(State(state): State<AppState>, analyst: Analyst, Path(key): Path<String>) -> Response {
    match visible(&state, &analyst, &key).await {
        Ok(result) => {
            let body = serde_json::to_vec_pretty(&result).expect("result serializes");
            let disposition = format!("attachment; filename=\"{}.json\"", result.job_id);
            ([(header::CONTENT_TYPE, "application/json".to_owned()), (header::CONTENT_DISPOSITION, disposition)], body).into_response()
        }
        Err(response) => response,
    }
}

/// The original from the blob store, re-hashed on the way out (the store refuses a mismatch).
pub async fn original(State(state): State<AppState>, analyst: Analyst, Path(key): Path<String>) -> Response {
    let result = match visible(&state, &analyst, &key).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let blobs = state.blobs.clone();
    let blob_key = crate::blob::key_for(&result.document.sha256);
    match tokio::task::spawn_blocking(move || blobs.get(&blob_key)).await {
        Ok(Ok(bytes)) => {
            let disposition = format!("attachment; filename=\"{}\"", result.document.sha256);
            ([(header::CONTENT_TYPE, "application/octet-stream".to_owned()), (header::CONTENT_DISPOSITION, disposition)], bytes).into_response()
        }
        Ok(Err(crate::blob::BlobError::NotFound { .. })) => (
            StatusCode::NOT_FOUND,
            "the original is not in the blob store",
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "original failed its check");
            (StatusCode::CONFLICT, "the stored original does not match its sha256: it was not sent").into_response()
        }
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub struct ReviewForm {
    csrf: String,
    state: String,
    #[serde(default)]
    note: String,
}

pub async fn review(State(state): State<AppState>, analyst: Analyst, Path(key): Path<String>, Form(form): Form<ReviewForm>) -> Response {
    if !analyst.csrf_ok(&form.csrf) {
        return auth::csrf_refused();
    }
    if let Err(response) = visible(&state, &analyst, &key).await {
        return response;
    }
    let Some(review) = ReviewState::parse(&form.state) else {
        return (StatusCode::BAD_REQUEST, "unknown review state").into_response();
    };
    let note: String = form.note.chars().take(4000).collect();
    if let Err(e) = state.store.review(&key, &analyst.user.name, review, &note).await {
        return internal(e);
    }
    tracing::info!(user = %analyst.user.name, document = %key, state = review.as_str(), "review recorded");
    Redirect::to(&format!("/documents/{}", enc(&key))).into_response()
}

// ---- search ----

#[derive(Deserialize, Default)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    case: String,
}

struct HitLine {
    href: String,
    filename: String,
    case_id: String,
    batch_id: String,
    field: &'static str,
    before: String,
    hit: String,
    after: String,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    user_name: String,
    csrf: String,
    nav_query: String,
    case_choices: Vec<Choice>,
    hits: Vec<HitLine>,
    limit: usize,
}

const SEARCH_LIMIT: usize = 200;

pub async fn search(State(state): State<AppState>, analyst: Analyst, Query(query): Query<SearchQuery>) -> Response {
    let cases: Vec<String> = if query.case.is_empty() {
        analyst.user.cases.clone()
    } else if analyst.may_see(&query.case) {
        vec![query.case.clone()]
    } else {
        Vec::new()
    };
    let hits = if query.q.trim().is_empty() {
        Vec::new()
    } else {
        match state.store.search(&Search { query: query.q.clone(), cases, batch: None, limit: SEARCH_LIMIT }).await {
            Ok(hits) => hits,
            Err(e) => return internal(e),
        }
    };
    page(SearchPage {
        case_choices: choices(analyst.user.cases.iter().map(String::as_str), &query.case),
        user_name: analyst.user.name,
        csrf: analyst.session.csrf,
        nav_query: query.q,
        hits: hits
            .into_iter()
            .map(|h| HitLine {
                href: format!("/documents/{}", enc(&h.key)),
                filename: h.filename,
                case_id: h.case_id,
                batch_id: h.batch_id,
                field: h.field.as_str(),
                before: h.snippet.before,
                hit: h.snippet.hit,
                after: h.snippet.after,
            })
            .collect(),
        limit: SEARCH_LIMIT,
    })
}
