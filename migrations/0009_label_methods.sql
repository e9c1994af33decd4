-- no-transaction
-- (sqlx reads that first line: this migration manages its own transaction, because rebuilding a
-- table needs foreign keys off, and SQLite ignores that pragma inside a transaction.)
--
-- 1. The labelling methods become rows of `label_methods` instead of a CHECK list repeated in
--    five tables: every `method` column references it. The rows are kept in step with the Rust
--    definition (studio/src/methods.rs) at every start, so adding a method needs no migration.
-- 2. A DnD run stores, besides its own top-3 labels, the best candidate under each of the four
--    scoring functions as label sources of their own (`is_variant = 1`): the paper's Table 4
--    compares them in a human study, and this makes that study possible on any install. So a
--    run may now write one label per (neuron, source, rank) instead of per (neuron, rank).
--
-- SQLite cannot alter a constraint in place: each table is rebuilt (create the new one, copy,
-- drop, rename, recreate its indexes and triggers), with foreign keys off so that dropping a
-- parent table neither cascades nor is refused, and checked before the commit.

PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE label_methods (
    slug  TEXT PRIMARY KEY CHECK (slug <> '' AND length(slug) <= 40)
) STRICT, WITHOUT ROWID;
INSERT INTO label_methods (slug) VALUES
    ('dnd'), ('clip-dissect'), ('milan'), ('netdissect'), ('falcon'), ('other');

-- dissection_runs ----------------------------------------------------------------------------
CREATE TABLE dissection_runs_new (
    id                   INTEGER PRIMARY KEY,
    -- A method computed here (DnD or native CLIP-Dissect; studio/src/methods.rs says which).
    method               TEXT NOT NULL DEFAULT 'dnd' REFERENCES label_methods(slug),
    model_id             INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    layer_id             INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    probe_set_id         INTEGER NOT NULL REFERENCES probe_sets(id) ON DELETE RESTRICT,
    job_id               INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    activation_cache_id  INTEGER REFERENCES activation_caches(id) ON DELETE SET NULL,
    summary              TEXT NOT NULL DEFAULT 'mean' CHECK (summary IN ('mean', 'max')),
    top_k                INTEGER NOT NULL DEFAULT 10 CHECK (top_k BETWEEN 1 AND 1000),
    scoring              TEXT CHECK (scoring IS NULL OR scoring IN (
                             'mean', 'topk_squared', 'image_products',
                             'topk_squared_image_products')),
    neurons_spec         TEXT NOT NULL CHECK (neurons_spec <> ''),
    neuron_seed          INTEGER,
    settings_json        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings_json)),
    provenance_json      TEXT NOT NULL DEFAULT '{}'
                         CHECK (json_valid(provenance_json) AND json_type(provenance_json) = 'object'),
    uses_substitutes     INTEGER NOT NULL DEFAULT 0 CHECK (uses_substitutes IN (0, 1)),
    status               TEXT NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    error                TEXT,
    created_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    started_at           TEXT,
    finished_at          TEXT,
    CHECK (method <> 'dnd' OR scoring IS NOT NULL)
) STRICT;
INSERT INTO dissection_runs_new SELECT * FROM dissection_runs;
DROP TABLE dissection_runs;
ALTER TABLE dissection_runs_new RENAME TO dissection_runs;
CREATE INDEX dissection_runs_layer ON dissection_runs(layer_id, status, id);
CREATE INDEX dissection_runs_model ON dissection_runs(model_id);
CREATE INDEX dissection_runs_probe_set ON dissection_runs(probe_set_id);
CREATE INDEX dissection_runs_job ON dissection_runs(job_id);
CREATE INDEX dissection_runs_cache ON dissection_runs(activation_cache_id);
CREATE INDEX dissection_runs_method ON dissection_runs(method);
CREATE TRIGGER dissection_runs_gallery_insert AFTER INSERT ON dissection_runs
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER dissection_runs_gallery_update AFTER UPDATE ON dissection_runs
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER dissection_runs_gallery_delete AFTER DELETE ON dissection_runs
BEGIN UPDATE gallery_version SET version = version + 1; END;

-- label_imports ------------------------------------------------------------------------------
CREATE TABLE label_imports_new (
    id                   INTEGER PRIMARY KEY,
    model_id             INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    method               TEXT NOT NULL REFERENCES label_methods(slug),
    source_name          TEXT NOT NULL DEFAULT '',
    format               TEXT NOT NULL CHECK (format IN (
                             'clip-dissect-csv', 'milan-csv', 'netdissect-tally', 'dnd-top3-csv',
                             'dnd-csv', 'json')),
    file_name            TEXT NOT NULL,
    file_sha256          TEXT NOT NULL CHECK (length(file_sha256) = 64),
    layer_mapping_json   TEXT NOT NULL DEFAULT '{}'
                         CHECK (json_valid(layer_mapping_json) AND json_type(layer_mapping_json) = 'object'),
    row_count            INTEGER NOT NULL CHECK (row_count >= 0),
    job_id               INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    imported_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
) STRICT;
INSERT INTO label_imports_new SELECT * FROM label_imports;
DROP TABLE label_imports;
ALTER TABLE label_imports_new RENAME TO label_imports;
CREATE INDEX label_imports_model ON label_imports(model_id, method);
CREATE INDEX label_imports_file ON label_imports(file_sha256);
CREATE INDEX label_imports_job ON label_imports(job_id);
CREATE INDEX label_imports_method ON label_imports(method);
CREATE TRIGGER label_imports_gallery_insert AFTER INSERT ON label_imports
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER label_imports_gallery_update AFTER UPDATE ON label_imports
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER label_imports_gallery_delete AFTER DELETE ON label_imports
BEGIN UPDATE gallery_version SET version = version + 1; END;

-- labels -------------------------------------------------------------------------------------
CREATE TABLE labels_new (
    id           INTEGER PRIMARY KEY,
    neuron_id    INTEGER NOT NULL,
    layer_id     INTEGER NOT NULL,           -- = neurons.layer_id (enforced by the composite FK)
    method       TEXT NOT NULL REFERENCES label_methods(slug),
    source_name  TEXT NOT NULL DEFAULT '',
    rank         INTEGER NOT NULL DEFAULT 1 CHECK (rank BETWEEN 1 AND 3),
    text         TEXT NOT NULL CHECK (text <> ''),
    score        REAL,                       -- the method's own score, where it has one
    run_id       INTEGER REFERENCES dissection_runs(id) ON DELETE CASCADE,
    import_id    INTEGER REFERENCES label_imports(id) ON DELETE CASCADE,
    concept_id   INTEGER REFERENCES candidate_concepts(id) ON DELETE SET NULL,
    extra_json   TEXT CHECK (extra_json IS NULL OR json_valid(extra_json)),  -- e.g. NetDissect category
    is_current   INTEGER NOT NULL DEFAULT 1 CHECK (is_current IN (0, 1)),
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    -- A run's label under one more scoring function (one rank only): on the neuron page, in
    -- exports and studies, not on the layer grid's cards.
    is_variant   INTEGER NOT NULL DEFAULT 0 CHECK (is_variant IN (0, 1)),
    FOREIGN KEY (neuron_id, layer_id) REFERENCES neurons(id, layer_id) ON DELETE CASCADE,
    CHECK ((run_id IS NULL) <> (import_id IS NULL)),
    CHECK (is_variant = 0 OR (run_id IS NOT NULL AND rank = 1 AND source_name <> '')),
    UNIQUE (run_id, neuron_id, source_name, rank),
    UNIQUE (import_id, neuron_id, rank)
) STRICT;
INSERT INTO labels_new (id, neuron_id, layer_id, method, source_name, rank, text, score, run_id,
                        import_id, concept_id, extra_json, is_current, created_at)
    SELECT id, neuron_id, layer_id, method, source_name, rank, text, score, run_id,
           import_id, concept_id, extra_json, is_current, created_at FROM labels;
DROP TABLE labels;
ALTER TABLE labels_new RENAME TO labels;
CREATE UNIQUE INDEX labels_current
    ON labels(neuron_id, method, source_name, rank) WHERE is_current = 1;
CREATE INDEX labels_layer_method
    ON labels(layer_id, method, source_name, rank) WHERE is_current = 1;
CREATE INDEX labels_neuron ON labels(neuron_id, method);
CREATE INDEX labels_concept ON labels(concept_id);
CREATE INDEX labels_import ON labels(import_id);
CREATE INDEX labels_method ON labels(method);
-- The layer grid's filter and its sort by DnD score (0004) read these alone; they leave out the
-- scoring variants, which the grid's cards do not show and whose scores are on other scales.
CREATE INDEX labels_layer_text ON labels(layer_id, neuron_id, text) WHERE is_current = 1 AND is_variant = 0;
CREATE INDEX labels_layer_score ON labels(layer_id, method, rank, neuron_id, score)
    WHERE is_current = 1 AND is_variant = 0;
CREATE TRIGGER labels_gallery_insert AFTER INSERT ON labels
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER labels_gallery_update AFTER UPDATE ON labels
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER labels_gallery_delete AFTER DELETE ON labels
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER labels_text_bounded_insert BEFORE INSERT ON labels
WHEN length(NEW.text) > 500
BEGIN SELECT RAISE(ABORT, 'a label is longer than 500 characters'); END;
CREATE TRIGGER labels_text_bounded_update BEFORE UPDATE OF text ON labels
WHEN length(NEW.text) > 500
BEGIN SELECT RAISE(ABORT, 'a label is longer than 500 characters'); END;

-- evaluations --------------------------------------------------------------------------------
CREATE TABLE evaluations_new (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind <> ''),    -- 'final_layer_cosine', 'ood_auroc', ...
    model_id      INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    layer_id      INTEGER REFERENCES layers(id) ON DELETE CASCADE,
    method        TEXT REFERENCES label_methods(slug),
    source_name   TEXT NOT NULL DEFAULT '',
    run_id        INTEGER REFERENCES dissection_runs(id) ON DELETE SET NULL,
    job_id        INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    settings_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings_json)),
    result_json   TEXT NOT NULL CHECK (json_valid(result_json)),
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
) STRICT;
INSERT INTO evaluations_new SELECT * FROM evaluations;
DROP TABLE evaluations;
ALTER TABLE evaluations_new RENAME TO evaluations;
CREATE INDEX evaluations_model ON evaluations(model_id, kind);
CREATE INDEX evaluations_layer ON evaluations(layer_id);
CREATE INDEX evaluations_run ON evaluations(run_id);
CREATE INDEX evaluations_job ON evaluations(job_id);
CREATE INDEX evaluations_method ON evaluations(method);

-- study_methods ------------------------------------------------------------------------------
CREATE TABLE study_methods_new (
    id           INTEGER PRIMARY KEY,
    study_id     INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    position     INTEGER NOT NULL CHECK (position BETWEEN 0 AND 5),
    method       TEXT NOT NULL REFERENCES label_methods(slug),
    source_name  TEXT NOT NULL DEFAULT '',
    UNIQUE (study_id, position),
    UNIQUE (study_id, method, source_name)
) STRICT;
INSERT INTO study_methods_new SELECT * FROM study_methods;
DROP TABLE study_methods;
ALTER TABLE study_methods_new RENAME TO study_methods;
CREATE INDEX study_methods_method ON study_methods(method);

-- Nothing copied may dangle: a violation fails this insert, and with it the migration (the
-- transaction is never committed).
CREATE TEMP TABLE migration_0009_check (violations INTEGER NOT NULL CHECK (violations = 0));
INSERT INTO migration_0009_check SELECT count(*) FROM pragma_foreign_key_check;
DROP TABLE migration_0009_check;

COMMIT;
PRAGMA foreign_keys = ON;
