-- The search index without token positions (`detail=none`) and with the ASCII tokenizer: queries
-- only ask whether a field holds every term (terms.rs already split and folded them), never
-- where, and the positions were most of the index and of the ingest time. Measured on the
-- bench's case: see README (Results store).
CREATE VIRTUAL TABLE search_new USING fts5 (
    field UNINDEXED,
    text UNINDEXED,
    terms,
    tokenize = "ascii",
    detail = none
);
INSERT INTO search_new (rowid, field, text, terms) SELECT rowid, field, text, terms FROM search;
DROP TABLE search;
ALTER TABLE search_new RENAME TO search;
