-- Analysts, the cases each may see, their sessions, and what they recorded about documents.
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE TABLE grants (
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    case_id   TEXT NOT NULL,
    PRIMARY KEY (user_name, case_id)
);
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf         TEXT NOT NULL,
    expires_at   BIGINT NOT NULL
);
-- The current review state of a document; every change also goes to `audit`, which is only
-- ever appended to.
CREATE TABLE reviews (
    key       TEXT PRIMARY KEY,
    state     TEXT NOT NULL,
    note      TEXT NOT NULL,
    user_name TEXT NOT NULL,
    at        TEXT NOT NULL
);
CREATE TABLE audit (
    id        BIGSERIAL PRIMARY KEY,
    key       TEXT NOT NULL,
    user_name TEXT NOT NULL,
    at        TEXT NOT NULL,
    action    TEXT NOT NULL,
    before    TEXT,
    after     TEXT NOT NULL
);
CREATE INDEX audit_by_key ON audit (key, id);
CREATE FUNCTION docpipe_audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit is append-only';
END $$;
CREATE TRIGGER audit_is_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION docpipe_audit_is_append_only();
