-- no-transaction
-- (sqlx reads that first line: this migration manages its own transaction, because rebuilding a
-- table needs foreign keys off, and SQLite ignores that pragma inside a transaction.)
--
-- Step 2 may offer a grounded candidate: the WordNet concept most of a neuron's captions' ImageNet
-- classes share (docs/method.md, "Step 2"). A candidate only that gave has origin 'wordnet'.
--
-- SQLite cannot alter a CHECK in place: candidate_concepts is rebuilt as 0009 rebuilt its tables
-- (create, copy, drop, rename, recreate its index and triggers) with foreign keys off, so that
-- dropping it neither cascades to concept_images nor clears labels.concept_id, and checked before
-- the commit. studio::db records this migration if the process stops between its commit and
-- sqlx's record of it.

PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE candidate_concepts_new (
    id                                 INTEGER PRIMARY KEY,
    run_neuron_id                      INTEGER NOT NULL REFERENCES run_neurons(id) ON DELETE CASCADE,
    text                               TEXT NOT NULL CHECK (text <> ''),
    position                           INTEGER NOT NULL CHECK (position >= 0),  -- order produced
    origin                             TEXT NOT NULL DEFAULT 'llm'
                                       CHECK (origin IN ('llm', 'background_rule', 'fallback', 'wordnet')),
    score_mean                         REAL,
    score_topk_squared                 REAL,
    score_image_products               REAL,    -- IP(t); -1 when no image ranks in the top xi
    score_topk_squared_image_products  REAL,
    selected                           INTEGER NOT NULL DEFAULT 0 CHECK (selected IN (0, 1)),
    UNIQUE (run_neuron_id, text),
    UNIQUE (run_neuron_id, position)
) STRICT;
INSERT INTO candidate_concepts_new SELECT * FROM candidate_concepts;
DROP TABLE candidate_concepts;
ALTER TABLE candidate_concepts_new RENAME TO candidate_concepts;
CREATE UNIQUE INDEX candidate_concepts_one_selected
    ON candidate_concepts(run_neuron_id) WHERE selected = 1;
CREATE TRIGGER candidate_concepts_gallery_insert AFTER INSERT ON candidate_concepts
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER candidate_concepts_gallery_update AFTER UPDATE ON candidate_concepts
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER candidate_concepts_gallery_delete AFTER DELETE ON candidate_concepts
BEGIN UPDATE gallery_version SET version = version + 1; END;

-- Nothing copied may dangle: a violation fails this insert, and with it the migration.
CREATE TEMP TABLE migration_0010_check (violations INTEGER NOT NULL CHECK (violations = 0));
INSERT INTO migration_0010_check SELECT count(*) FROM pragma_foreign_key_check;
DROP TABLE migration_0010_check;

COMMIT;
PRAGMA foreign_keys = ON;
