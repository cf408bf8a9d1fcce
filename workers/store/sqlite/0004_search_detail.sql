-- The search index rebuilt smaller, for ingest speed (measured: README, Results store):
-- * no token positions (`detail=none`): a query asks whether a field holds every term (terms.rs
--   already split and folded them), never where;
-- * the ASCII tokenizer: the terms are already split at spaces and folded;
-- * contentless (`content=''`): a field's text for snippets is read from the stored result of
--   the few documents a search shows, not kept a second time here. Its rowid still says which
--   document and field (document id * 8 + field number).
CREATE VIRTUAL TABLE search_new USING fts5 (
    terms,
    tokenize = "ascii",
    detail = none,
    content = '',
    contentless_delete = 1
);
INSERT INTO search_new (rowid, terms) SELECT rowid, terms FROM search;
DROP TABLE search;
ALTER TABLE search_new RENAME TO search;
