//! The results store on PostgreSQL, for several hosts and large cases: the same tables as the
//! SQLite store, the terms in a GIN-indexed array (the same terms, so the same documents match).

use tokio_postgres::{Client, NoTls};

use super::sql;
use super::sqlite::split_words;
use super::{
    indexed, parse_status, rank, status_str, terms, AuditEntry, BatchSummary, FailedDocument, Counts, DocumentFilter, DocumentRow, Field, Hit,
    Ingested, ResultStore, ReviewState, Search, Session, StoreError, User,
};
use crate::schema::JobResult;

/// Versioned schema changes, applied in order once each, recorded in `docpipe_migrations`.
const MIGRATIONS: &[&str] = &[include_str!("postgres/0001_results.sql"), include_str!("postgres/0002_review.sql"), include_str!("postgres/0003_failures.sql")];

pub struct PostgresStore {
    client: tokio::sync::Mutex<Client>,
}

impl PostgresStore {
    /// Connect (libpq-style connection string) and run pending migrations.
    pub async fn connect(connection: &str) -> Result<Self, StoreError> {
        let (mut client, driver) = tokio_postgres::connect(connection, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::error!(error = %e, "PostgreSQL connection ended");
            }
        });
        migrate(&mut client).await?;
        Ok(Self { client: tokio::sync::Mutex::new(client) })
    }

    async fn ingest_once(&self, results: &[JobResult]) -> Result<Vec<Ingested>, StoreError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await?;
        let mut outcomes = Vec::with_capacity(results.len());
        for result in results {
            outcomes.push(ingest_in(&tx, result).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS docpipe_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        .await?;
    // One migrator at a time, across processes.
    let tx = client.transaction().await?;
    tx.batch_execute("LOCK TABLE docpipe_migrations IN EXCLUSIVE MODE").await?;
    let done: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM docpipe_migrations", &[]).await?.get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO docpipe_migrations (version) VALUES ($1)", &[&(i as i32 + 1)]).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[async_trait::async_trait]
impl ResultStore for PostgresStore {
    async fn ingest(&self, result: &JobResult) -> Result<Ingested, StoreError> {
        Ok(self.ingest_many(std::slice::from_ref(result)).await?[0])
    }

    async fn ingest_many(&self, results: &[JobResult]) -> Result<Vec<Ingested>, StoreError> {
        // Two consumers inserting the first result of one job at once: the loser of the unique
        // key finds the winner's row on its second try and ranks against it.
        match self.ingest_once(results).await {
            Err(StoreError::Postgres(e)) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                self.ingest_once(results).await
            }
            other => other,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<JobResult>, StoreError> {
        let client = self.client.lock().await;
        let row = client.query_opt("SELECT result FROM documents WHERE key = $1", &[&key]).await?;
        row.map(|r| serde_json::from_value(r.get(0)).map_err(|source| StoreError::Stored { key: key.to_owned(), source })).transpose()
    }

    async fn search(&self, search: &Search) -> Result<Vec<Hit>, StoreError> {
        let wanted = terms::query_terms(&search.query);
        if wanted.is_empty() || search.cases.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client.lock().await;
        let rows = client
            .query(
                // Which rows, first (keys only, so the long texts of rows that will not be
                // shown are never read); then their texts.
                "WITH hits AS (
                     SELECT s.key, s.field FROM search s JOIN documents d ON d.key = s.key
                     WHERE s.terms @> $1 AND d.case_id = ANY($2) AND ($3::TEXT IS NULL OR d.batch_id = $3)
                     -- No order here: a common term stops at the limit instead of sorting
                     -- every match; the rows shown are ordered below.
                     LIMIT $4)
                 SELECT d.key, d.case_id, d.batch_id, d.filename, d.status, s.field, s.text
                 FROM hits h JOIN search s ON s.key = h.key AND s.field = h.field JOIN documents d ON d.key = h.key
                 ORDER BY d.case_id, d.batch_id, d.filename, s.field",
                &[&wanted, &search.cases, &search.batch, &(search.limit as i64)],
            )
            .await?;
        let mut hits = Vec::with_capacity(rows.len());
        for row in rows {
            let key: String = row.get(0);
            let field = Field::parse(row.get(5)).unwrap_or(Field::Original);
            let snippet = terms::snippet(row.get(6), &search.query, 60);
            hits.push(Hit {
                key,
                case_id: row.get(1),
                batch_id: row.get(2),
                filename: row.get(3),
                status: parse_status(row.get(4)),
                field,
                snippet,
            });
        }
        Ok(hits)
    }

    async fn counts(&self, case_id: &str, batch_id: &str) -> Result<Counts, StoreError> {
        let client = self.client.lock().await;
        let row = client.query_one(&sql::counts(), &[&case_id, &batch_id]).await?;
        Ok(counts_at(&row, 1))
    }

    async fn batches(&self, cases: &[String]) -> Result<Vec<BatchSummary>, StoreError> {
        let client = self.client.lock().await;
        let mut out = Vec::new();
        for case_id in cases {
            for row in client.query(&sql::batches(), &[case_id]).await? {
                let batch_id: String = row.get(0);
                let languages: Vec<String> =
                    client.query(sql::BATCH_LANGUAGES, &[case_id, &batch_id]).await?.iter().map(|r| r.get(0)).collect();
                out.push(BatchSummary {
                    case_id: case_id.clone(),
                    counts: counts_at(&row, 1),
                    attention: row.get::<_, i64>(6) as u64,
                    languages: split_words(&languages.join(" ")),
                    batch_id,
                });
            }
        }
        Ok(out)
    }

    async fn documents(&self, filter: &DocumentFilter) -> Result<(Vec<DocumentRow>, u64), StoreError> {
        let status = filter.status.map(status_str);
        let review = filter.review.map(ReviewState::as_str);
        let (limit, offset) = (filter.limit as i64, filter.offset as i64);
        let client = self.client.lock().await;
        let bind: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
            [&filter.case_id, &filter.batch_id, &status, &filter.language, &filter.flag, &review, &filter.parent_job_id];
        let total: i64 = client.query_one(&sql::documents_count(), &bind).await?.get(0);
        let mut page = bind.to_vec();
        page.push(&limit);
        page.push(&offset);
        let rows = client.query(&sql::documents_page(), &page).await?;
        Ok((rows.iter().map(document_row).collect(), total as u64))
    }

    async fn document(&self, key: &str) -> Result<Option<DocumentRow>, StoreError> {
        let client = self.client.lock().await;
        Ok(client.query_opt(&sql::document(), &[&key]).await?.as_ref().map(document_row))
    }

    async fn put_user(&self, name: &str, password_hash: &str, cases: &[String]) -> Result<(), StoreError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await?;
        tx.execute(sql::UPSERT_USER, &[&name, &password_hash, &chrono::Utc::now().to_rfc3339()]).await?;
        tx.execute(sql::CLEAR_GRANTS, &[&name]).await?;
        for case_id in cases {
            tx.execute(sql::GRANT, &[&name, case_id]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let client = self.client.lock().await;
        let Some(row) = client.query_opt(sql::USER, &[&name]).await? else { return Ok(None) };
        let cases = client.query(sql::USER_CASES, &[&name]).await?.iter().map(|r| r.get(0)).collect();
        Ok(Some(User { name: name.to_owned(), password_hash: row.get(0), cases }))
    }

    async fn create_session(&self, token_sha256: &str, session: &Session) -> Result<(), StoreError> {
        let client = self.client.lock().await;
        client.execute(sql::CREATE_SESSION, &[&token_sha256, &session.user_name, &session.csrf, &session.expires_at]).await?;
        Ok(())
    }

    async fn session(&self, token_sha256: &str) -> Result<Option<Session>, StoreError> {
        let client = self.client.lock().await;
        let row = client.query_opt(sql::SESSION, &[&token_sha256]).await?;
        Ok(row.map(|r| Session { user_name: r.get(0), csrf: r.get(1), expires_at: r.get(2) }))
    }

    async fn delete_session(&self, token_sha256: &str) -> Result<(), StoreError> {
        let client = self.client.lock().await;
        client.execute(sql::DELETE_SESSION, &[&token_sha256]).await?;
        Ok(())
    }

    async fn review(&self, key: &str, user_name: &str, state: ReviewState, note: &str) -> Result<(), StoreError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await?;
        let before = tx
            .query_opt(&format!("{} FOR UPDATE", sql::REVIEW), &[&key])
            .await?
            .map(|r| sql::review_text(r.get(0), r.get(1)));
        let at = chrono::Utc::now().to_rfc3339();
        tx.execute(sql::UPSERT_REVIEW, &[&key, &state.as_str(), &note, &user_name, &at]).await?;
        tx.execute(sql::APPEND_AUDIT, &[&key, &user_name, &at, &"review", &before, &sql::review_text(state.as_str(), note)]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit(&self, key: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let client = self.client.lock().await;
        let rows = client.query(sql::AUDIT, &[&key]).await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry { user_name: r.get(0), at: r.get(1), action: r.get(2), before: r.get(3), after: r.get(4) })
            .collect())
    }

    async fn record(&self, key: &str, user_name: &str, action: &str, before: Option<&str>, after: &str) -> Result<(), StoreError> {
        let client = self.client.lock().await;
        let at = chrono::Utc::now().to_rfc3339();
        client.execute(sql::APPEND_AUDIT, &[&key, &user_name, &at, &action, &before, &after]).await?;
        Ok(())
    }

    async fn failures(&self, case_id: &str, batch_id: &str) -> Result<Vec<FailedDocument>, StoreError> {
        let client = self.client.lock().await;
        let rows = client.query(sql::FAILURES, &[&case_id, &batch_id]).await?;
        rows.iter().map(|r| FailedDocument::parse(r.get(0), r.get(1), r.get(2), r.get(3))).collect()
    }
}

/// `Counts` from the five columns of `sql::counts` starting at `at` (sums are NULL over no rows).
fn counts_at(row: &tokio_postgres::Row, at: usize) -> Counts {
    let n = |i: usize| row.get::<_, Option<i64>>(at + i).unwrap_or(0);
    Counts::new(n(0), n(1), n(2), row.get::<_, Option<i64>>(at + 3), n(4))
}

fn document_row(r: &tokio_postgres::Row) -> DocumentRow {
    DocumentRow {
        key: r.get(0),
        case_id: r.get(1),
        batch_id: r.get(2),
        filename: r.get(3),
        status: parse_status(r.get(4)),
        media_type: r.get(5),
        languages: split_words(r.get(6)),
        flags: split_words(r.get(7)),
        review: ReviewState::parse(r.get(8)).unwrap_or(ReviewState::Unreviewed),
        parent_job_id: r.get(9),
    }
}

/// One result into an open transaction (see `ingest_many`).
async fn ingest_in(tx: &tokio_postgres::Transaction<'_>, result: &JobResult) -> Result<Ingested, StoreError> {
    let json = serde_json::to_value(result).expect("result serializes");
    let index = indexed(result);
    let stored = tx
        .query_opt("SELECT status_rank FROM documents WHERE key = $1 FOR UPDATE", &[&result.idempotency_key])
        .await?
        .map(|row| row.get::<_, i32>(0));
    let outcome = match stored {
        Some(old) if i64::from(old) >= rank(result.status) => return Ok(Ingested::Kept),
        Some(_) => Ingested::Replaced,
        None => Ingested::Inserted,
    };
    tx.execute("DELETE FROM documents WHERE key = $1", &[&result.idempotency_key]).await?;
    tx.execute(
        "INSERT INTO documents (key, job_id, case_id, batch_id, parent_job_id, filename, sha256, media_type,
             status, status_rank, languages, flags, completed_at, ingested_at, result, errors, batch_total)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::TEXT::TIMESTAMPTZ, now(), $14, $15, $16)",
        &[
            &result.idempotency_key,
            &result.job_id.to_string(),
            &result.case_id,
            &result.batch_id,
            &result.parent.as_ref().map(|p| p.job_id.to_string()),
            &result.document.filename,
            &result.document.sha256,
            &index.media_type,
            &status_str(result.status),
            &(rank(result.status) as i32),
            &index.languages.join(" "),
            &index.flags.join(" "),
            &result.completed_at.map(|t| t.to_rfc3339()),
            &json,
            &index.errors,
            &result.batch_total.map(|n| n as i64),
        ],
    )
    .await?;
    for (field, text) in &index.texts {
        let mut distinct = terms::terms(text);
        distinct.sort_unstable();
        distinct.dedup();
        tx.execute("INSERT INTO search (key, field, text, terms) VALUES ($1, $2, $3, $4)", &[&result.idempotency_key, &field.as_str(), text, &distinct])
            .await?;
    }
    Ok(outcome)
}
