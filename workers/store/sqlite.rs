//! The embedded results store: one SQLite file, FTS5 over the terms of `terms.rs`. SQLite calls
//! are blocking, so they run on the blocking pool, one connection behind a mutex (SQLite
//! serializes writers anyway; WAL lets readers go on meanwhile).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use super::sql::{self, sqlite as q};
use super::{
    indexed, parse_status, rank, status_str, terms, AuditEntry, BatchSummary, FailedDocument, Counts, DocumentFilter, DocumentRow, Field, Hit,
    Ingested, ResultStore, ReviewState, Search, Session, StoreError, User,
};
use crate::schema::JobResult;

/// Versioned schema changes, applied in order once each; the version is SQLite's `user_version`.
/// Search rows a document may have (one per field, with room to spare).
const ROWS_PER_DOCUMENT: i64 = 8;

/// Page cache per connection, KiB.
const CACHE_KIB: i64 = 256 * 1024;
/// Memory-mapped reads, bytes.
const MMAP_BYTES: i64 = 1 << 30;

const MIGRATIONS: &[&str] = &[
    include_str!("sqlite/0001_results.sql"),
    include_str!("sqlite/0002_review.sql"),
    include_str!("sqlite/0003_failures.sql"),
    include_str!("sqlite/0004_search_detail.sql"),
];

pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.to_owned(), source })?;
        }
        let mut connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        // The search index of a large case runs to gigabytes, against SQLite's default 2 MB page
        // cache. (Set with the other ingest changes; on its own it made no difference at 5,000
        // documents, and was not measured alone at 100,000: README, Results store.)
        connection.pragma_update(None, "cache_size", -CACHE_KIB)?;
        connection.pragma_update(None, "mmap_size", MMAP_BYTES)?;
        // Checkpoint the write-ahead log every 40 MB rather than every 4 MB: index pages written
        // again and again between checkpoints are copied into the database once.
        connection.pragma_update(None, "wal_autocheckpoint", 10_000)?;
        migrate(&mut connection)?;
        Ok(Self { connection: Arc::new(Mutex::new(connection)) })
    }

    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut connection)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let version: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = connection.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl ResultStore for SqliteStore {
    async fn ingest(&self, result: &JobResult) -> Result<Ingested, StoreError> {
        Ok(self.ingest_many(std::slice::from_ref(result)).await?[0])
    }

    async fn ingest_many(&self, results: &[JobResult]) -> Result<Vec<Ingested>, StoreError> {
        let results = results.to_vec();
        self.with(move |connection| {
            let tx = connection.transaction()?;
            let outcomes = results.iter().map(|r| ingest_in(&tx, r)).collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            Ok(outcomes)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<JobResult>, StoreError> {
        let key = key.to_owned();
        self.with(move |connection| {
            let json: Option<String> =
                connection.query_row("SELECT result FROM documents WHERE key = ?1", [&key], |r| r.get(0)).optional()?;
            json.map(|j| serde_json::from_str(&j).map_err(|source| StoreError::Stored { key, source })).transpose()
        })
        .await
    }

    async fn search(&self, search: &Search) -> Result<Vec<Hit>, StoreError> {
        let wanted = terms::query_terms(&search.query);
        if wanted.is_empty() || search.cases.is_empty() {
            return Ok(Vec::new());
        }
        // Each term a quoted FTS5 string (quotes doubled), all required.
        let matching = wanted.iter().map(|t| format!("\"{}\"", t.replace('"', "\"\""))).collect::<Vec<_>>().join(" AND ");
        let search = search.clone();
        self.with(move |connection| {
            let cases = serde_json::to_string(&search.cases).expect("ids serialize");
            let mut statement = connection.prepare_cached(
                // In index order, so a common term stops at the limit instead of sorting every
                // match: the first documents stored come first.
                "SELECT s.rowid, d.id, d.key, d.case_id, d.batch_id, d.filename, d.status
                 FROM search s JOIN documents d ON d.id = s.rowid / 8
                 WHERE search MATCH ?1
                   AND d.case_id IN (SELECT value FROM json_each(?2))
                   AND (?3 IS NULL OR d.batch_id = ?3)
                 ORDER BY s.rowid
                 LIMIT ?4",
            )?;
            let rows = statement.query_map(params![matching, cases, search.batch, search.limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })?;
            let mut hits = Vec::new();
            // The texts of a document whose fields matched, read from its stored result once.
            let mut texts: Option<(i64, Vec<(Field, String)>)> = None;
            for row in rows {
                let (row, id, key, case_id, batch_id, filename, status) = row?;
                let field = Field::ALL[(row % ROWS_PER_DOCUMENT) as usize % Field::ALL.len()];
                if texts.as_ref().is_none_or(|(seen, _)| *seen != id) {
                    let json: String = connection.prepare_cached("SELECT result FROM documents WHERE id = ?1")?.query_row([id], |r| r.get(0))?;
                    let result: crate::schema::JobResult =
                        serde_json::from_str(&json).map_err(|source| StoreError::Stored { key: key.clone(), source })?;
                    texts = Some((id, indexed(&result).texts));
                }
                let text = texts.as_ref().and_then(|(_, t)| t.iter().find(|(f, _)| *f == field)).map_or("", |(_, t)| t.as_str());
                let snippet = terms::snippet(text, &search.query, 60);
                hits.push(Hit { key, case_id, batch_id, filename, status: parse_status(&status), field, snippet });
            }
            hits.sort_by(|a, b| (&a.case_id, &a.batch_id, &a.filename, a.field.number()).cmp(&(&b.case_id, &b.batch_id, &b.filename, b.field.number())));
            Ok(hits)
        })
        .await
    }

    async fn counts(&self, case_id: &str, batch_id: &str) -> Result<Counts, StoreError> {
        let (case_id, batch_id) = (case_id.to_owned(), batch_id.to_owned());
        self.with(move |connection| Ok(connection.query_row(&q(&sql::counts()), [&case_id, &batch_id], |r| counts_at(r, 1))?)).await
    }

    async fn batches(&self, cases: &[String]) -> Result<Vec<BatchSummary>, StoreError> {
        let cases = cases.to_vec();
        self.with(move |connection| {
            let mut out = Vec::new();
            for case_id in &cases {
                let mut statement = connection.prepare(&q(&sql::batches()))?;
                let rows = statement.query_map([case_id], |r| Ok((r.get::<_, String>(0)?, counts_at(r, 1)?, r.get::<_, i64>(6)?)))?;
                for row in rows {
                    let (batch_id, counts, attention) = row?;
                    let mut languages = connection
                        .prepare(&q(sql::BATCH_LANGUAGES))?
                        .query_map([case_id, &batch_id], |r| r.get::<_, String>(0))?
                        .collect::<Result<Vec<_>, _>>()?;
                    languages = split_words(&languages.join(" "));
                    out.push(BatchSummary {
                        case_id: case_id.clone(),
                        batch_id,
                        counts,
                        attention: attention as u64,
                        languages,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn documents(&self, filter: &DocumentFilter) -> Result<(Vec<DocumentRow>, u64), StoreError> {
        let filter = filter.clone();
        self.with(move |connection| {
            let status = filter.status.map(status_str);
            let review = filter.review.map(ReviewState::as_str);
            let bind = params![
                filter.case_id,
                filter.batch_id,
                status,
                filter.language,
                filter.flag,
                review,
                filter.parent_job_id,
            ];
            let total: i64 = connection.query_row(&q(&sql::documents_count()), bind, |r| r.get(0))?;
            let mut statement = connection.prepare(&q(&sql::documents_page()))?;
            let rows = statement
                .query_map(
                    params![
                        filter.case_id,
                        filter.batch_id,
                        status,
                        filter.language,
                        filter.flag,
                        review,
                        filter.parent_job_id,
                        filter.limit as i64,
                        filter.offset as i64,
                    ],
                    document_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((rows, total as u64))
        })
        .await
    }

    async fn document(&self, key: &str) -> Result<Option<DocumentRow>, StoreError> {
        let key = key.to_owned();
        self.with(move |connection| Ok(connection.query_row(&q(&sql::document()), [&key], document_row).optional()?)).await
    }

    async fn put_user(&self, name: &str, password_hash: &str, cases: &[String]) -> Result<(), StoreError> {
        let (name, hash, cases) = (name.to_owned(), password_hash.to_owned(), cases.to_vec());
        self.with(move |connection| {
            let tx = connection.transaction()?;
            tx.execute(&q(sql::UPSERT_USER), params![name, hash, chrono::Utc::now().to_rfc3339()])?;
            tx.execute(&q(sql::CLEAR_GRANTS), [&name])?;
            for case_id in &cases {
                tx.execute(&q(sql::GRANT), [&name, case_id])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let name = name.to_owned();
        self.with(move |connection| {
            let Some(password_hash) = connection.query_row(&q(sql::USER), [&name], |r| r.get::<_, String>(0)).optional()? else {
                return Ok(None);
            };
            let cases = connection
                .prepare(&q(sql::USER_CASES))?
                .query_map([&name], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(User { name, password_hash, cases }))
        })
        .await
    }

    async fn create_session(&self, token_sha256: &str, session: &Session) -> Result<(), StoreError> {
        let (token, session) = (token_sha256.to_owned(), session.clone());
        self.with(move |connection| {
            connection.execute(&q(sql::CREATE_SESSION), params![token, session.user_name, session.csrf, session.expires_at])?;
            Ok(())
        })
        .await
    }

    async fn session(&self, token_sha256: &str) -> Result<Option<Session>, StoreError> {
        let token = token_sha256.to_owned();
        self.with(move |connection| {
            Ok(connection
                .query_row(&q(sql::SESSION), [&token], |r| Ok(Session { user_name: r.get(0)?, csrf: r.get(1)?, expires_at: r.get(2)? }))
                .optional()?)
        })
        .await
    }

    async fn delete_session(&self, token_sha256: &str) -> Result<(), StoreError> {
        let token = token_sha256.to_owned();
        self.with(move |connection| {
            connection.execute(&q(sql::DELETE_SESSION), [&token])?;
            Ok(())
        })
        .await
    }

    async fn review(&self, key: &str, user_name: &str, state: ReviewState, note: &str) -> Result<(), StoreError> {
        let (key, user, note) = (key.to_owned(), user_name.to_owned(), note.to_owned());
        self.with(move |connection| {
            let tx = connection.transaction()?;
            let before: Option<String> = tx
                .query_row(&q(sql::REVIEW), [&key], |r| Ok(sql::review_text(&r.get::<_, String>(0)?, &r.get::<_, String>(1)?)))
                .optional()?;
            let at = chrono::Utc::now().to_rfc3339();
            tx.execute(&q(sql::UPSERT_REVIEW), params![key, state.as_str(), note, user, at])?;
            tx.execute(&q(sql::APPEND_AUDIT), params![key, user, at, "review", before, sql::review_text(state.as_str(), &note)])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn audit(&self, key: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let key = key.to_owned();
        self.with(move |connection| {
            let entries = connection
                .prepare(&q(sql::AUDIT))?
                .query_map([&key], |r| {
                    Ok(AuditEntry { user_name: r.get(0)?, at: r.get(1)?, action: r.get(2)?, before: r.get(3)?, after: r.get(4)? })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(entries)
        })
        .await
    }

    async fn record(&self, key: &str, user_name: &str, action: &str, before: Option<&str>, after: &str) -> Result<(), StoreError> {
        let (key, user, action, before, after) =
            (key.to_owned(), user_name.to_owned(), action.to_owned(), before.map(str::to_owned), after.to_owned());
        self.with(move |connection| {
            connection.execute(&q(sql::APPEND_AUDIT), params![key, user, chrono::Utc::now().to_rfc3339(), action, before, after])?;
            Ok(())
        })
        .await
    }

    async fn failures(&self, case_id: &str, batch_id: &str) -> Result<Vec<FailedDocument>, StoreError> {
        let (case_id, batch_id) = (case_id.to_owned(), batch_id.to_owned());
        self.with(move |connection| {
            let mut statement = connection.prepare(&q(sql::FAILURES))?;
            let rows = statement.query_map([&case_id, &batch_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, filename, status, errors) = row?;
                out.push(FailedDocument::parse(key, filename, &status, &errors)?);
            }
            Ok(out)
        })
        .await
    }
}

/// `Counts` from the five columns of `sql::counts` starting at `at` (sums are NULL over no rows).
fn counts_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Counts> {
    let n = |i: usize| r.get::<_, Option<i64>>(at + i).map(|v| v.unwrap_or(0));
    Ok(Counts::new(n(0)?, n(1)?, n(2)?, r.get::<_, Option<i64>>(at + 3)?, n(4)?))
}

fn document_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DocumentRow> {
    Ok(DocumentRow {
        key: r.get(0)?,
        case_id: r.get(1)?,
        batch_id: r.get(2)?,
        filename: r.get(3)?,
        status: parse_status(&r.get::<_, String>(4)?),
        media_type: r.get(5)?,
        languages: split_words(&r.get::<_, String>(6)?),
        flags: split_words(&r.get::<_, String>(7)?),
        review: ReviewState::parse(&r.get::<_, String>(8)?).unwrap_or(ReviewState::Unreviewed),
        parent_job_id: r.get(9)?,
    })
}

/// Distinct space-separated words, in first-seen order.
pub(super) fn split_words(text: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    text.split_whitespace().filter(|w| seen.insert(*w)).map(str::to_owned).collect()
}

/// One result into an open transaction (see `ingest_many`).
fn ingest_in(tx: &rusqlite::Transaction<'_>, result: &JobResult) -> Result<Ingested, StoreError> {
    let json = serde_json::to_string(result).expect("result serializes");
    let index = indexed(result);
    let stored: Option<(i64, i64)> = tx
        .prepare_cached("SELECT id, status_rank FROM documents WHERE key = ?1")?
        .query_row([&result.idempotency_key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let outcome = match stored {
        Some((_, old)) if old >= rank(result.status) => return Ok(Ingested::Kept),
        Some((id, _)) => {
            tx.execute("DELETE FROM search WHERE rowid BETWEEN ?1 AND ?2", [id * ROWS_PER_DOCUMENT, id * ROWS_PER_DOCUMENT + ROWS_PER_DOCUMENT - 1])?;
            tx.execute("DELETE FROM documents WHERE id = ?1", [id])?;
            Ingested::Replaced
        }
        None => Ingested::Inserted,
    };
    tx.prepare_cached(
        "INSERT INTO documents (key, job_id, case_id, batch_id, parent_job_id, filename, sha256, media_type,
             status, status_rank, languages, flags, completed_at, ingested_at, result, errors, batch_total)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?
    .execute(params![
            result.idempotency_key,
            result.job_id.to_string(),
            result.case_id,
            result.batch_id,
            result.parent.as_ref().map(|p| p.job_id.to_string()),
            result.document.filename,
            result.document.sha256,
            index.media_type,
            status_str(result.status),
            rank(result.status),
            index.languages.join(" "),
            index.flags.join(" "),
            result.completed_at.map(|t| t.to_rfc3339()),
            chrono::Utc::now().to_rfc3339(),
            json,
            index.errors,
            result.batch_total.map(|n| n as i64),
    ])?;
    let id = tx.last_insert_rowid();
    let mut insert = tx.prepare_cached("INSERT INTO search (rowid, terms) VALUES (?1, ?2)")?;
    for (field, text) in &index.texts {
        insert.execute(params![id * ROWS_PER_DOCUMENT + field.number(), terms::joined(text)])?;
    }
    drop(insert);
    Ok(outcome)
}
