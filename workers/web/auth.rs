//! Who is asking: passwords (argon2), sessions (an HttpOnly, SameSite=Strict cookie whose token
//! is stored only as its sha256), CSRF tokens on every form, and a limit on login attempts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};

use super::AppState;
use crate::store::{Session, User};

pub const SESSION_COOKIE: &str = "docpipe_session";
pub const LOGIN_COOKIE: &str = "docpipe_login";
/// Sessions end after a working day.
pub const SESSION_SECONDS: i64 = 12 * 3600;

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    // 122 random bits from the operating system (a v4 UUID), as argon2 asks for at least 64.
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A real argon2 hash of nothing anyone types, made once: an unknown user's password is checked
/// against it so that the answer takes as long as for a known user (a hand-written PHC string
/// that failed to parse would answer at once and tell which names exist).
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_token()).expect("argon2 hashes"))
}

/// 244 random bits (two v4 UUIDs), hex.
pub fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

pub fn token_sha256(token: &str) -> String {
    crate::blob::sha256_hex(token.as_bytes())
}

/// Equal without telling how far they agree (tokens compared this way leak nothing by timing).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

pub fn set_cookie(name: &str, value: &str, max_age: i64) -> String {
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}")
}

/// Failed logins per user name: after `MAX_FAILURES` within `WINDOW`, further attempts are
/// refused until the window has passed, whatever the password.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(15 * 60);

impl LoginLimiter {
    pub fn blocked(&self, name: &str) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.get(name).is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < WINDOW)
    }

    pub fn failed(&self, name: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let entry = failures.entry(name.to_owned()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, name: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
    }
}

/// The signed-in analyst of a request, with the cases granted and the session's CSRF token.
/// A request without a valid session is sent to the login page.
pub struct Analyst {
    pub user: User,
    pub session: Session,
}

impl Analyst {
    pub fn may_see(&self, case_id: &str) -> bool {
        self.user.cases.iter().any(|c| c == case_id)
    }

    /// The form's token is this session's.
    pub fn csrf_ok(&self, token: &str) -> bool {
        same(token, &self.session.csrf)
    }
}

/// The answer to a form whose CSRF token is not its session's.
pub fn csrf_refused() -> Response {
    (axum::http::StatusCode::FORBIDDEN, "the form's CSRF token does not match this session; reload the page").into_response()
}

impl FromRequestParts<AppState> for Analyst {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let to_login = || Redirect::to("/login").into_response();
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(to_login)?;
        let hashed = token_sha256(&token);
        let session = state.store.session(&hashed).await.map_err(super::internal)?.ok_or_else(to_login)?;
        if session.expires_at < chrono::Utc::now().timestamp() {
            let _ = state.store.delete_session(&hashed).await;
            return Err(to_login());
        }
        let user = state.store.user(&session.user_name).await.map_err(super::internal)?.ok_or_else(to_login)?;
        Ok(Analyst { user, session })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct hors", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(decoy_hash().starts_with("$argon2") && !verify_password("", decoy_hash()));
    }

    #[test]
    fn logins_are_limited_per_name() {
        let limiter = LoginLimiter::default();
        for _ in 0..MAX_FAILURES {
            assert!(!limiter.blocked("ana"));
            limiter.failed("ana");
        }
        assert!(limiter.blocked("ana"));
        assert!(!limiter.blocked("bo"));
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "x_docpipe_session=no; docpipe_session=abc; other=1".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
