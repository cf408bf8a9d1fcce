//! Queries both stores run as written: PostgreSQL numbers parameters `$1`, SQLite `?1`
//! (`sqlite()` swaps them), and `CAST($n AS TEXT) IS NULL` lets either tell an absent filter.

pub fn sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}

/// Filters of `DocumentFilter`, in parameter order $1..$7.
const DOCUMENT_FILTER: &str = "
    FROM documents d LEFT JOIN reviews r ON r.key = d.key
    WHERE d.case_id = $1
      AND (CAST($2 AS TEXT) IS NULL OR d.batch_id = $2)
      AND (CAST($3 AS TEXT) IS NULL OR d.status = $3)
      AND (CAST($4 AS TEXT) IS NULL OR (' ' || d.languages || ' ') LIKE ('% ' || $4 || ' %'))
      AND (CAST($5 AS TEXT) IS NULL OR (' ' || d.flags || ' ') LIKE ('% ' || $5 || ' %'))
      AND (CAST($6 AS TEXT) IS NULL OR coalesce(r.state, 'unreviewed') = $6)
      AND (CAST($7 AS TEXT) IS NULL OR d.parent_job_id = $7)";

pub const DOCUMENT_COLUMNS: &str = "SELECT d.key, d.case_id, d.batch_id, d.filename, d.status, d.media_type, d.languages, d.flags,
    coalesce(r.state, 'unreviewed'), d.parent_job_id";

pub fn documents_page() -> String {
    format!("{DOCUMENT_COLUMNS} {DOCUMENT_FILTER} ORDER BY d.filename, d.key LIMIT $8 OFFSET $9")
}

pub fn documents_count() -> String {
    format!("SELECT count(*) {DOCUMENT_FILTER}")
}

pub fn document() -> String {
    format!("{DOCUMENT_COLUMNS} FROM documents d LEFT JOIN reviews r ON r.key = d.key WHERE d.key = $1")
}

/// Columns 1-5 are the arguments of `Counts::new`.
const COUNT_COLUMNS: &str = "
        sum(CASE WHEN status = 'complete' THEN 1 ELSE 0 END),
        sum(CASE WHEN status = 'partial' THEN 1 ELSE 0 END),
        sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),
        max(batch_total),
        sum(CASE WHEN parent_job_id IS NULL THEN 1 ELSE 0 END)";

pub fn batches() -> String {
    format!(
        "SELECT batch_id, {COUNT_COLUMNS}, sum(CASE WHEN flags <> '' THEN 1 ELSE 0 END)
         FROM documents WHERE case_id = $1 GROUP BY batch_id ORDER BY batch_id"
    )
}

pub fn counts() -> String {
    format!("SELECT 'batch', {COUNT_COLUMNS} FROM documents WHERE case_id = $1 AND batch_id = $2")
}

pub const BATCH_LANGUAGES: &str = "SELECT DISTINCT languages FROM documents WHERE case_id = $1 AND batch_id = $2";

pub const USER: &str = "SELECT password_hash FROM users WHERE name = $1";
pub const USER_CASES: &str = "SELECT case_id FROM grants WHERE user_name = $1 ORDER BY case_id";
pub const UPSERT_USER: &str = "INSERT INTO users (name, password_hash, created_at) VALUES ($1, $2, $3)
    ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash";
pub const CLEAR_GRANTS: &str = "DELETE FROM grants WHERE user_name = $1";
pub const GRANT: &str = "INSERT INTO grants (user_name, case_id) VALUES ($1, $2)";

pub const CREATE_SESSION: &str = "INSERT INTO sessions (token_sha256, user_name, csrf, expires_at) VALUES ($1, $2, $3, $4)";
pub const SESSION: &str = "SELECT user_name, csrf, expires_at FROM sessions WHERE token_sha256 = $1";
pub const DELETE_SESSION: &str = "DELETE FROM sessions WHERE token_sha256 = $1";

pub const REVIEW: &str = "SELECT state, note, user_name, at FROM reviews WHERE key = $1";
pub const UPSERT_REVIEW: &str = "INSERT INTO reviews (key, state, note, user_name, at) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (key) DO UPDATE SET state = excluded.state, note = excluded.note, user_name = excluded.user_name, at = excluded.at";
pub const APPEND_AUDIT: &str =
    "INSERT INTO audit (key, user_name, at, action, before, after) VALUES ($1, $2, $3, $4, $5, $6)";
pub const FAILURES: &str = "SELECT key, filename, status, errors FROM documents
    WHERE case_id = $1 AND batch_id = $2 AND status_rank < 2 ORDER BY filename, key";

pub const AUDIT: &str = "SELECT user_name, at, action, before, after FROM audit WHERE key = $1 ORDER BY id";

/// A review as the audit trail records it: state, then the note on the next line.
pub fn review_text(state: &str, note: &str) -> String {
    if note.is_empty() {
        state.to_owned()
    } else {
        format!("{state}\n{note}")
    }
}
