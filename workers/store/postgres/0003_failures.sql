-- Each document's stage errors as a JSON array of {stage, kind, reason}, so a batch's failures
-- are grouped (and resubmitted) without reading every failed result whole.
ALTER TABLE documents ADD COLUMN errors TEXT NOT NULL DEFAULT '[]';
UPDATE documents d SET errors = coalesce((
    SELECT jsonb_agg(jsonb_build_object('stage', s->'stage', 'kind', s->'error'->'kind', 'reason', s->'error'->'reason') ORDER BY n)::TEXT
    FROM jsonb_array_elements(d.result->'stages') WITH ORDINALITY AS t(s, n)
    WHERE jsonb_typeof(s->'error') = 'object'), '[]')
WHERE status <> 'complete';
CREATE INDEX documents_needing_work ON documents (case_id, batch_id, status_rank);

-- How many documents the submitter said the batch holds, so a batch page can show what is
-- still pending.
ALTER TABLE documents ADD COLUMN batch_total BIGINT;
UPDATE documents SET batch_total = (result->>'batch_total')::BIGINT;
