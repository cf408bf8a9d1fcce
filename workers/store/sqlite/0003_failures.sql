-- Each document's stage errors as a JSON array of {stage, kind, reason}, so a batch's failures
-- are grouped (and resubmitted) without reading every failed result whole.
ALTER TABLE documents ADD COLUMN errors TEXT NOT NULL DEFAULT '[]';
UPDATE documents SET errors = coalesce((
    SELECT json_group_array(json_object(
        'stage', json_extract(s.value, '$.stage'),
        'kind', json_extract(s.value, '$.error.kind'),
        'reason', json_extract(s.value, '$.error.reason')))
    FROM json_each(documents.result, '$.stages') s
    WHERE json_extract(s.value, '$.error') IS NOT NULL), '[]')
WHERE status <> 'complete';
CREATE INDEX documents_needing_work ON documents (case_id, batch_id, status_rank);

-- How many documents the submitter said the batch holds, so a batch page can show what is
-- still pending.
ALTER TABLE documents ADD COLUMN batch_total INTEGER;
UPDATE documents SET batch_total = json_extract(result, '$.batch_total');
