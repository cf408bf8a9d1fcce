-- One row per idempotency key: the result as received, and what the document list filters on.
CREATE TABLE documents (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    key           TEXT NOT NULL UNIQUE,
    job_id        TEXT NOT NULL,
    case_id       TEXT NOT NULL,
    batch_id      TEXT NOT NULL,
    parent_job_id TEXT,
    filename      TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    media_type    TEXT,
    status        TEXT NOT NULL,
    status_rank   INTEGER NOT NULL,
    languages     TEXT NOT NULL,
    flags         TEXT NOT NULL,
    completed_at  TEXT,
    ingested_at   TEXT NOT NULL,
    result        TEXT NOT NULL
);
CREATE INDEX documents_by_batch ON documents (case_id, batch_id, status);
CREATE INDEX documents_by_parent ON documents (parent_job_id);

-- Search terms per document and field (see store/terms.rs); the terms are already split and
-- folded, so FTS5 only has to split at the spaces between them. The rowid is the document's id
-- times 8 plus the field's number, so a document's rows are found (and replaced) by range, and
-- `text` keeps the field's text for snippets.
CREATE VIRTUAL TABLE search USING fts5 (
    field UNINDEXED,
    text UNINDEXED,
    terms,
    tokenize = "unicode61 remove_diacritics 0"
);
