-- One row per idempotency key: the result as received, and what the document list filters on.
CREATE TABLE documents (
    key           TEXT PRIMARY KEY,
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
    completed_at  TIMESTAMPTZ,
    ingested_at   TIMESTAMPTZ NOT NULL,
    result        JSONB NOT NULL
);
CREATE INDEX documents_by_batch ON documents (case_id, batch_id, status);
CREATE INDEX documents_by_parent ON documents (parent_job_id);

-- Search terms per document and field (see store/terms.rs), already split and folded: a
-- document matches when its field holds every term of the query (GIN containment).
CREATE TABLE search (
    key   TEXT NOT NULL REFERENCES documents (key) ON DELETE CASCADE,
    field TEXT NOT NULL,
    text  TEXT NOT NULL,
    terms TEXT[] NOT NULL,
    PRIMARY KEY (key, field)
);
CREATE INDEX search_terms ON search USING GIN (terms);
