-- DnD Studio: initial schema for the whole product (see migrations/README.md for the map).
--
-- Conventions
--   * STRICT tables; `id INTEGER PRIMARY KEY` everywhere (except app_meta).
--   * Timestamps: TEXT, UTC ISO-8601 with milliseconds, e.g. 2025-01-31T12:00:00.000Z.
--   * Booleans: INTEGER 0/1 with a CHECK.  JSON: TEXT with CHECK (json_valid(...)).
--   * Hashes: lowercase hex sha256 (64 chars).
--   * Crop boxes: integer pixels in the *source image's* own frame, x1/y1 exclusive;
--     all four NULL = the whole image.
--   * Enums that are part of the method or of a life cycle carry a CHECK; open-ended kinds
--     (jobs.kind, provider ids, pipeline stage names) do not, because SQLite cannot alter a
--     CHECK without rebuilding the table.
--   * No PRAGMAs here: WAL, foreign_keys and busy_timeout come from the connection options.

-- ============================================================================================
-- Misc
-- ============================================================================================

-- Small key/value facts about this database (e.g. which embedded-asset version was registered).
CREATE TABLE app_meta (
    key         TEXT PRIMARY KEY NOT NULL CHECK (key <> ''),
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
) STRICT;

-- ============================================================================================
-- Models & probing
-- ============================================================================================

CREATE TABLE models (
    id                  INTEGER PRIMARY KEY,
    slug                TEXT NOT NULL UNIQUE
                        CHECK (slug <> '' AND slug NOT GLOB '*[^a-z0-9._-]*'),
    name                TEXT NOT NULL CHECK (name <> ''),
    description         TEXT NOT NULL DEFAULT '',
    source              TEXT NOT NULL CHECK (source IN ('builtin', 'torchscript')),
    builtin_key         TEXT,                         -- e.g. 'efficientnet-lite0' (builtin only)
    weights_path        TEXT NOT NULL,                -- safetensors / TorchScript file
    weights_sha256      TEXT NOT NULL CHECK (length(weights_sha256) = 64),
    manifest_json       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(manifest_json)),
    -- sha256 over weights_sha256 + canonical preprocessing + layer list: what activations depend
    -- on.  Re-registering the same model is a no-op (ON CONFLICT(fingerprint)); activation
    -- caches are keyed by it.
    fingerprint         TEXT NOT NULL UNIQUE CHECK (length(fingerprint) = 64),
    input_height        INTEGER NOT NULL CHECK (input_height > 0),
    input_width         INTEGER NOT NULL CHECK (input_width > 0),
    -- {"input_size":[h,w],"resize_shorter":256,"mean":[r,g,b],"std":[r,g,b]} (0-255 scale)
    preprocessing_json  TEXT NOT NULL CHECK (json_valid(preprocessing_json)),
    dataset             TEXT,                         -- training data, e.g. 'ImageNet-1k'
    num_classes         INTEGER CHECK (num_classes IS NULL OR num_classes > 0),
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    CHECK ((source = 'builtin') = (builtin_key IS NOT NULL))
) STRICT;
CREATE INDEX models_weights_sha256 ON models(weights_sha256);

CREATE TABLE layers (
    id          INTEGER PRIMARY KEY,
    model_id    INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    name        TEXT NOT NULL CHECK (name <> ''),     -- as the model names it: 'layer4', 'fc'
    kind        TEXT NOT NULL CHECK (kind IN ('conv', 'linear', 'classifier')),
    channels    INTEGER NOT NULL CHECK (channels > 0),
    height      INTEGER CHECK (height IS NULL OR height > 0),   -- activation map size at the
    width       INTEGER CHECK (width IS NULL OR width > 0),     -- model's input size
    position    INTEGER NOT NULL CHECK (position >= 0),         -- forward order
    UNIQUE (model_id, name),
    UNIQUE (model_id, position),
    CHECK ((kind = 'conv') = (height IS NOT NULL AND width IS NOT NULL)),
    CHECK ((height IS NULL) = (width IS NULL))
) STRICT;

-- One row per unit; created when the layer is registered so every unit has a gallery page.
CREATE TABLE neurons (
    id          INTEGER PRIMARY KEY,
    layer_id    INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    unit        INTEGER NOT NULL CHECK (unit >= 0),   -- 0-based
    class_name  TEXT,                                 -- ground truth for classifier units
    UNIQUE (layer_id, unit),
    UNIQUE (id, layer_id)                             -- target of composite FKs (labels)
) STRICT;

CREATE TRIGGER neurons_unit_in_range_insert BEFORE INSERT ON neurons
WHEN NEW.unit >= (SELECT channels FROM layers WHERE id = NEW.layer_id)
BEGIN
    SELECT RAISE(ABORT, 'neuron unit is outside its layer (unit >= channels)');
END;
CREATE TRIGGER neurons_unit_in_range_update BEFORE UPDATE OF unit, layer_id ON neurons
WHEN NEW.unit >= (SELECT channels FROM layers WHERE id = NEW.layer_id)
BEGIN
    SELECT RAISE(ABORT, 'neuron unit is outside its layer (unit >= channels)');
END;

CREATE TABLE probe_sets (
    id                  INTEGER PRIMARY KEY,
    slug                TEXT NOT NULL UNIQUE
                        CHECK (slug <> '' AND slug NOT GLOB '*[^a-z0-9._-]*'),
    name                TEXT NOT NULL CHECK (name <> ''),
    description         TEXT NOT NULL DEFAULT '',
    source              TEXT NOT NULL CHECK (source IN ('builtin', 'folder', 'zip')),
    root_path           TEXT NOT NULL,               -- folder scanned (zip: where it was unpacked)
    archive_path        TEXT,                        -- the uploaded zip, when source = 'zip'
    -- sha256 over the sorted list of image sha256s (names do not matter); NULL until registered.
    content_sha256      TEXT CHECK (content_sha256 IS NULL OR length(content_sha256) = 64),
    heldout_fraction    REAL NOT NULL DEFAULT 0.3
                        CHECK (heldout_fraction >= 0.0 AND heldout_fraction < 1.0),
    split_seed          INTEGER NOT NULL DEFAULT 0,
    status              TEXT NOT NULL DEFAULT 'registering'
                        CHECK (status IN ('registering', 'ready', 'failed')),
    error               TEXT,
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    -- Same content with the same split = same set: re-registration is idempotent.
    UNIQUE (content_sha256, heldout_fraction, split_seed),
    CHECK (status <> 'ready' OR content_sha256 IS NOT NULL),
    CHECK ((source = 'zip') = (archive_path IS NOT NULL))
) STRICT;

-- Every distinct image the app has seen, identified by content.  Probing images, generated
-- concept images and built-in composites all live here.
CREATE TABLE images (
    id          INTEGER PRIMARY KEY,
    sha256      TEXT NOT NULL UNIQUE
                CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    width       INTEGER NOT NULL CHECK (width > 0),
    height      INTEGER NOT NULL CHECK (height > 0),
    format      TEXT NOT NULL CHECK (format IN ('png', 'jpeg', 'webp', 'gif', 'bmp', 'tiff')),
    byte_size   INTEGER NOT NULL CHECK (byte_size > 0),
    origin      TEXT NOT NULL DEFAULT 'dataset' CHECK (origin IN ('dataset', 'generated')),
    -- A content-addressed copy under the data dir (zip uploads, built-in composites, generated
    -- images).  NULL when the bytes are read in place from a folder set (root_path/rel_path).
    stored_path TEXT,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
) STRICT;

-- Membership of an image in a probing set.  An image appears at most once per set (byte-identical
-- duplicates are recorded in rejected_files with reason 'duplicate').
CREATE TABLE probe_set_images (
    id            INTEGER PRIMARY KEY,
    probe_set_id  INTEGER NOT NULL REFERENCES probe_sets(id) ON DELETE CASCADE,
    image_id      INTEGER NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    rel_path      TEXT NOT NULL CHECK (rel_path <> ''),
    label         TEXT,                   -- from the sub-folder name
    description   TEXT,                   -- from a sidecar .txt
    split         TEXT NOT NULL CHECK (split IN ('probe', 'heldout')),
    -- Row index of this image in the activation files of this set (deterministic: images sorted
    -- by sha256); assigned when registration completes.
    position      INTEGER CHECK (position IS NULL OR position >= 0),
    UNIQUE (probe_set_id, image_id),
    UNIQUE (probe_set_id, rel_path),
    UNIQUE (probe_set_id, position)
) STRICT;
CREATE INDEX probe_set_images_image ON probe_set_images(image_id);
CREATE INDEX probe_set_images_split ON probe_set_images(probe_set_id, split, position);

-- Files of a probing set that were skipped, with why.
CREATE TABLE rejected_files (
    id            INTEGER PRIMARY KEY,
    probe_set_id  INTEGER NOT NULL REFERENCES probe_sets(id) ON DELETE CASCADE,
    rel_path      TEXT NOT NULL CHECK (rel_path <> ''),
    reason_code   TEXT NOT NULL CHECK (reason_code IN (
                      'empty', 'corrupt', 'truncated', 'not_image', 'unsupported_format',
                      'too_large', 'duplicate', 'io_error', 'other')),
    reason        TEXT NOT NULL,           -- human-readable detail
    byte_size     INTEGER CHECK (byte_size IS NULL OR byte_size >= 0),
    duplicate_of  INTEGER REFERENCES images(id) ON DELETE SET NULL,
    detected_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    UNIQUE (probe_set_id, rel_path)
) STRICT;
CREATE INDEX rejected_files_duplicate_of ON rejected_files(duplicate_of);

-- ============================================================================================
-- Jobs
-- ============================================================================================

CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY,
    -- 'register_model', 'register_probe_set', 'record', 'dissect', 'clip_dissect',
    -- 'import_labels', 'evaluate', ... (open-ended: no CHECK)
    kind              TEXT NOT NULL CHECK (kind <> ''),
    payload_json      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(payload_json)),
    status            TEXT NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    priority          INTEGER NOT NULL DEFAULT 0,     -- higher first
    stage             TEXT,                           -- current stage, e.g. 'activations', 'llm'
    progress_done     INTEGER NOT NULL DEFAULT 0 CHECK (progress_done >= 0),
    progress_total    INTEGER CHECK (progress_total IS NULL OR progress_total >= 0),
    message           TEXT,                           -- last progress line for the UI
    error             TEXT,
    result_json       TEXT CHECK (result_json IS NULL OR json_valid(result_json)),
    cancel_requested  INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    device            TEXT,                           -- 'cpu', 'cuda:0'; set when it starts
    slot              INTEGER NOT NULL DEFAULT 0 CHECK (slot >= 0),  -- concurrency slot on device
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    started_at        TEXT,
    finished_at       TEXT,
    heartbeat_at      TEXT,                           -- a running job with a stale heartbeat
                                                      -- after restart is re-queued (resume)
    CHECK (status <> 'running' OR device IS NOT NULL),
    CHECK (status NOT IN ('done', 'failed', 'cancelled') OR finished_at IS NOT NULL)
) STRICT;
-- At most one running job per (device, slot): "one job at a time per device" by default.
CREATE UNIQUE INDEX jobs_one_running_per_slot ON jobs(device, slot) WHERE status = 'running';
CREATE INDEX jobs_queue ON jobs(status, priority DESC, id);
CREATE INDEX jobs_created ON jobs(created_at);

CREATE TABLE job_events (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    level       TEXT NOT NULL DEFAULT 'info' CHECK (level IN ('debug', 'info', 'warn', 'error')),
    stage       TEXT,
    message     TEXT NOT NULL,
    data_json   TEXT CHECK (data_json IS NULL OR json_valid(data_json))
) STRICT;
CREATE INDEX job_events_job ON job_events(job_id, id);

-- ============================================================================================
-- Caches (rebuildable)
-- ============================================================================================

-- Per-layer summary file: for every image of the set (row = probe_set_images.position) and every
-- unit, the spatial mean and max of its activation map.  Keyed by content, not by ids, so a
-- second run is a hit and a killed run resumes from images_done.
CREATE TABLE activation_caches (
    id                 INTEGER PRIMARY KEY,
    model_id           INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    layer_id           INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    probe_set_id       INTEGER NOT NULL REFERENCES probe_sets(id) ON DELETE CASCADE,
    model_fingerprint  TEXT NOT NULL CHECK (length(model_fingerprint) = 64),
    set_sha256         TEXT NOT NULL CHECK (length(set_sha256) = 64),
    layer_name         TEXT NOT NULL,
    file_path          TEXT NOT NULL,
    format_version     INTEGER NOT NULL DEFAULT 1,
    channels           INTEGER NOT NULL CHECK (channels > 0),
    images_total       INTEGER NOT NULL CHECK (images_total >= 0),
    images_done        INTEGER NOT NULL DEFAULT 0
                       CHECK (images_done >= 0 AND images_done <= images_total),
    status             TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'running', 'complete', 'failed')),
    error              TEXT,
    created_at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    completed_at       TEXT,
    UNIQUE (model_fingerprint, set_sha256, layer_name),
    CHECK (status <> 'complete' OR images_done = images_total)
) STRICT;
CREATE INDEX activation_caches_layer ON activation_caches(layer_id);
CREATE INDEX activation_caches_set ON activation_caches(probe_set_id);
CREATE INDEX activation_caches_model ON activation_caches(model_id);

-- Image / text embeddings of a probing set (held-out retrieval, Image-Products, CLIP-Dissect).
CREATE TABLE embedding_caches (
    id             INTEGER PRIMARY KEY,
    encoder_id     TEXT NOT NULL CHECK (encoder_id <> ''),  -- e.g. 'embedded:lite2-penultimate'
    kind           TEXT NOT NULL CHECK (kind IN ('image', 'text')),
    probe_set_id   INTEGER NOT NULL REFERENCES probe_sets(id) ON DELETE CASCADE,
    set_sha256     TEXT NOT NULL CHECK (length(set_sha256) = 64),
    file_path      TEXT NOT NULL,
    dim            INTEGER NOT NULL CHECK (dim > 0),
    items_total    INTEGER NOT NULL CHECK (items_total >= 0),
    items_done     INTEGER NOT NULL DEFAULT 0 CHECK (items_done >= 0 AND items_done <= items_total),
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'running', 'complete', 'failed')),
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    UNIQUE (encoder_id, kind, set_sha256)
) STRICT;
CREATE INDEX embedding_caches_set ON embedding_caches(probe_set_id);

-- Model-service answers by request hash (captions per image, LLM answers per prompt, images per
-- concept+seed), so re-runs cost nothing.
CREATE TABLE provider_cache (
    id              INTEGER PRIMARY KEY,
    role            TEXT NOT NULL CHECK (role IN (
                        'captioner', 'llm', 'concept_images', 'image_encoder', 'text_encoder')),
    provider_id     TEXT NOT NULL CHECK (provider_id <> ''),   -- endpoint + model, or embedded id
    request_sha256  TEXT NOT NULL CHECK (length(request_sha256) = 64),
    response_text   TEXT,
    image_id        INTEGER REFERENCES images(id) ON DELETE CASCADE,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    UNIQUE (provider_id, request_sha256),
    CHECK (response_text IS NOT NULL OR image_id IS NOT NULL)
) STRICT;
CREATE INDEX provider_cache_image ON provider_cache(image_id);

-- ============================================================================================
-- Dissection
-- ============================================================================================

CREATE TABLE dissection_runs (
    id                   INTEGER PRIMARY KEY,
    method               TEXT NOT NULL DEFAULT 'dnd' CHECK (method IN ('dnd', 'clip-dissect')),
    model_id             INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    layer_id             INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    probe_set_id         INTEGER NOT NULL REFERENCES probe_sets(id) ON DELETE RESTRICT,
    job_id               INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    activation_cache_id  INTEGER REFERENCES activation_caches(id) ON DELETE SET NULL,
    -- Key settings as columns (validated, filterable); everything else (beta, xi, Q, N, crop
    -- thresholds, temperature, CLIP-Dissect parameters...) in settings_json.
    summary              TEXT NOT NULL DEFAULT 'mean' CHECK (summary IN ('mean', 'max')),
    top_k                INTEGER NOT NULL DEFAULT 10 CHECK (top_k BETWEEN 1 AND 1000),
    scoring              TEXT CHECK (scoring IS NULL OR scoring IN (
                             'mean', 'topk_squared', 'image_products',
                             'topk_squared_image_products')),
    neurons_spec         TEXT NOT NULL CHECK (neurons_spec <> ''),   -- '0-49', 'random:50', '3,7,9'
    neuron_seed          INTEGER,                                   -- for random samples
    settings_json        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings_json)),
    -- {"captioner": {"id":..., "model":..., "endpoint":..., "paper_component": false}, "llm": ...,
    --  "concept_images": ..., "image_encoder": ..., "text_encoder": ...}
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
CREATE INDEX dissection_runs_layer ON dissection_runs(layer_id, status, id);
CREATE INDEX dissection_runs_model ON dissection_runs(model_id);
CREATE INDEX dissection_runs_probe_set ON dissection_runs(probe_set_id);
CREATE INDEX dissection_runs_job ON dissection_runs(job_id);
CREATE INDEX dissection_runs_cache ON dissection_runs(activation_cache_id);

-- One row per neuron selected by a run: its status and activation statistics.
CREATE TABLE run_neurons (
    id               INTEGER PRIMARY KEY,
    run_id           INTEGER NOT NULL REFERENCES dissection_runs(id) ON DELETE CASCADE,
    neuron_id        INTEGER NOT NULL REFERENCES neurons(id) ON DELETE CASCADE,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'done', 'failed')),
    -- Last pipeline stage whose results are committed, for resume: 'top_images', 'captions',
    -- 'candidates', 'concept_images', 'scores' (open-ended: no CHECK).
    last_stage       TEXT,
    error            TEXT,                 -- reason when failed
    -- Over the probing set: average and maximum of the spatial-mean summary, and of the
    -- spatial-max summary.
    mean_summary_avg REAL,
    mean_summary_top REAL,
    max_summary_avg  REAL,
    max_summary_top  REAL,
    timings_json     TEXT CHECK (timings_json IS NULL OR json_valid(timings_json)),  -- s per stage
    started_at       TEXT,
    finished_at      TEXT,
    UNIQUE (run_id, neuron_id),
    CHECK (status <> 'failed' OR error IS NOT NULL)
) STRICT;
CREATE INDEX run_neurons_neuron ON run_neurons(neuron_id, run_id);
CREATE INDEX run_neurons_status ON run_neurons(run_id, status);

-- Captions of an image or of a crop of it, per captioner and simplifying LLM.
CREATE TABLE captions (
    id                  INTEGER PRIMARY KEY,
    image_id            INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    crop_x0             INTEGER,
    crop_y0             INTEGER,
    crop_x1             INTEGER,
    crop_y1             INTEGER,
    -- '' for the whole image, else 'x0,y0,x1,y1': makes the region part of the unique key.
    region_key          TEXT NOT NULL GENERATED ALWAYS AS (
                            CASE WHEN crop_x0 IS NULL THEN ''
                                 ELSE crop_x0 || ',' || crop_y0 || ',' || crop_x1 || ',' || crop_y1
                            END) VIRTUAL,
    captioner_id        TEXT NOT NULL CHECK (captioner_id <> ''),
    llm_id              TEXT NOT NULL CHECK (llm_id <> ''),
    raw_caption         TEXT NOT NULL,
    simplified_caption  TEXT,                  -- NULL until the LLM has simplified it
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    UNIQUE (image_id, region_key, captioner_id, llm_id),
    CHECK ((crop_x0 IS NULL AND crop_y0 IS NULL AND crop_x1 IS NULL AND crop_y1 IS NULL)
        OR (crop_x0 IS NOT NULL AND crop_y0 IS NOT NULL AND crop_x1 IS NOT NULL
            AND crop_y1 IS NOT NULL
            AND crop_x0 >= 0 AND crop_y0 >= 0 AND crop_x1 > crop_x0 AND crop_y1 > crop_y0))
) STRICT;

-- D_top: the K images (originals or attention crops) a run keeps for a neuron.
CREATE TABLE top_images (
    id             INTEGER PRIMARY KEY,
    run_neuron_id  INTEGER NOT NULL REFERENCES run_neurons(id) ON DELETE CASCADE,
    rank           INTEGER NOT NULL CHECK (rank >= 1),          -- 1 = highest activation
    image_id       INTEGER NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    is_crop        INTEGER NOT NULL DEFAULT 0 CHECK (is_crop IN (0, 1)),
    crop_x0        INTEGER,
    crop_y0        INTEGER,
    crop_x1        INTEGER,
    crop_y1        INTEGER,
    act_mean       REAL NOT NULL,          -- activation under the spatial-mean summary
    act_max        REAL NOT NULL,          -- ... and under the spatial-max summary
    caption_id     INTEGER REFERENCES captions(id) ON DELETE SET NULL,
    UNIQUE (run_neuron_id, rank),
    CHECK ((is_crop = 0 AND crop_x0 IS NULL AND crop_y0 IS NULL AND crop_x1 IS NULL
                        AND crop_y1 IS NULL)
        OR (is_crop = 1 AND crop_x0 IS NOT NULL AND crop_y0 IS NOT NULL
                        AND crop_x1 IS NOT NULL AND crop_y1 IS NOT NULL
                        AND crop_x0 >= 0 AND crop_y0 >= 0
                        AND crop_x1 > crop_x0 AND crop_y1 > crop_y0))
) STRICT;
CREATE INDEX top_images_image ON top_images(image_id);
CREATE INDEX top_images_caption ON top_images(caption_id);

-- The candidate set T of a neuron, with its score under every scoring function.
CREATE TABLE candidate_concepts (
    id                                 INTEGER PRIMARY KEY,
    run_neuron_id                      INTEGER NOT NULL REFERENCES run_neurons(id) ON DELETE CASCADE,
    text                               TEXT NOT NULL CHECK (text <> ''),
    position                           INTEGER NOT NULL CHECK (position >= 0),  -- order produced
    origin                             TEXT NOT NULL DEFAULT 'llm'
                                       CHECK (origin IN ('llm', 'background_rule', 'fallback')),
    score_mean                         REAL,
    score_topk_squared                 REAL,
    score_image_products               REAL,    -- IP(t); -1 when no image ranks in the top xi
    score_topk_squared_image_products  REAL,
    selected                           INTEGER NOT NULL DEFAULT 0 CHECK (selected IN (0, 1)),
    UNIQUE (run_neuron_id, text),
    UNIQUE (run_neuron_id, position)
) STRICT;
CREATE UNIQUE INDEX candidate_concepts_one_selected
    ON candidate_concepts(run_neuron_id) WHERE selected = 1;

-- D_new: images generated for / retrieved for a candidate, with their activation and rank.
CREATE TABLE concept_images (
    id          INTEGER PRIMARY KEY,
    concept_id  INTEGER NOT NULL REFERENCES candidate_concepts(id) ON DELETE CASCADE,
    source      TEXT NOT NULL CHECK (source IN ('generated', 'retrieved')),
    image_id    INTEGER NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    seed        INTEGER,                   -- generation seed, when the API takes one
    activation  REAL,                      -- g(A_k(x)) under the run's summary; NULL until scored
    rank        INTEGER CHECK (rank IS NULL OR rank >= 1),   -- rank within D_new, 1 = best
    UNIQUE (concept_id, image_id)
) STRICT;
CREATE INDEX concept_images_image ON concept_images(image_id);

-- ============================================================================================
-- Labels & comparison
-- ============================================================================================

CREATE TABLE label_imports (
    id                   INTEGER PRIMARY KEY,
    model_id             INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    method               TEXT NOT NULL
                         CHECK (method IN ('dnd', 'clip-dissect', 'milan', 'netdissect', 'falcon', 'other')),
    source_name          TEXT NOT NULL DEFAULT '',    -- distinguishes sources of one method
    format               TEXT NOT NULL CHECK (format IN (
                             'clip-dissect-csv', 'milan-csv', 'netdissect-tally', 'dnd-top3-csv',
                             'dnd-csv', 'json')),
    file_name            TEXT NOT NULL,
    file_sha256          TEXT NOT NULL CHECK (length(file_sha256) = 64),
    layer_mapping_json   TEXT NOT NULL DEFAULT '{}'   -- {"file layer name": "model layer name"}
                         CHECK (json_valid(layer_mapping_json) AND json_type(layer_mapping_json) = 'object'),
    row_count            INTEGER NOT NULL CHECK (row_count >= 0),
    job_id               INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    imported_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
) STRICT;
CREATE INDEX label_imports_model ON label_imports(model_id, method);
CREATE INDEX label_imports_file ON label_imports(file_sha256);
CREATE INDEX label_imports_job ON label_imports(job_id);

-- Final labels of every method, computed (run_id) or imported (import_id).  Rows are never
-- rewritten; a newer run/import of the same (neuron, method, source_name) flips older rows to
-- is_current = 0 in the same transaction.
CREATE TABLE labels (
    id           INTEGER PRIMARY KEY,
    neuron_id    INTEGER NOT NULL,
    layer_id     INTEGER NOT NULL,           -- = neurons.layer_id (enforced by the composite FK)
    method       TEXT NOT NULL
                 CHECK (method IN ('dnd', 'clip-dissect', 'milan', 'netdissect', 'falcon', 'other')),
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
    FOREIGN KEY (neuron_id, layer_id) REFERENCES neurons(id, layer_id) ON DELETE CASCADE,
    CHECK ((run_id IS NULL) <> (import_id IS NULL)),
    UNIQUE (run_id, neuron_id, rank),
    UNIQUE (import_id, neuron_id, rank)
) STRICT;
CREATE UNIQUE INDEX labels_current
    ON labels(neuron_id, method, source_name, rank) WHERE is_current = 1;
CREATE INDEX labels_layer_method
    ON labels(layer_id, method, source_name, rank) WHERE is_current = 1;
CREATE INDEX labels_neuron ON labels(neuron_id, method);
CREATE INDEX labels_concept ON labels(concept_id);

-- Evaluation results (final-layer cosine vs class names, one-class AUROC use case, ...).
CREATE TABLE evaluations (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind <> ''),    -- 'final_layer_cosine', 'ood_auroc', ...
    model_id      INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    layer_id      INTEGER REFERENCES layers(id) ON DELETE CASCADE,
    method        TEXT CHECK (method IS NULL OR method IN (
                      'dnd', 'clip-dissect', 'milan', 'netdissect', 'falcon', 'other')),
    source_name   TEXT NOT NULL DEFAULT '',
    run_id        INTEGER REFERENCES dissection_runs(id) ON DELETE SET NULL,
    job_id        INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    settings_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings_json)),
    result_json   TEXT NOT NULL CHECK (json_valid(result_json)),
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
) STRICT;
CREATE INDEX evaluations_model ON evaluations(model_id, kind);
CREATE INDEX evaluations_layer ON evaluations(layer_id);
CREATE INDEX evaluations_run ON evaluations(run_id);
CREATE INDEX evaluations_job ON evaluations(job_id);

-- ============================================================================================
-- Rating study
-- ============================================================================================

CREATE TABLE studies (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL CHECK (name <> ''),
    model_id             INTEGER NOT NULL REFERENCES models(id) ON DELETE RESTRICT,
    probe_set_id         INTEGER REFERENCES probe_sets(id) ON DELETE RESTRICT,
    status               TEXT NOT NULL DEFAULT 'draft'
                         CHECK (status IN ('draft', 'open', 'closed')),
    -- Full snapshot of the set-up: layers, neurons per layer or explicit list, seed, methods...
    settings_json        TEXT NOT NULL DEFAULT '{}'
                         CHECK (json_valid(settings_json) AND json_type(settings_json) = 'object'),
    neuron_seed          INTEGER,
    raters_per_item      INTEGER NOT NULL DEFAULT 3 CHECK (raters_per_item BETWEEN 1 AND 100),
    images_per_item      INTEGER NOT NULL DEFAULT 10 CHECK (images_per_item BETWEEN 1 AND 100),
    image_summary        TEXT NOT NULL DEFAULT 'mean' CHECK (image_summary IN ('mean', 'max')),
    instructions         TEXT NOT NULL
                         DEFAULT 'Does the description accurately describe most of the above 10 images?',
    attention_checks     INTEGER NOT NULL DEFAULT 0 CHECK (attention_checks IN (0, 1)),
    -- A decoy rated above this fails the attention check.
    attention_max_rating INTEGER NOT NULL DEFAULT 2 CHECK (attention_max_rating BETWEEN 1 AND 4),
    -- The open link is shown to the admin again, so it is stored as is (it only issues new rater
    -- tokens); per-rater tokens are stored hashed.
    open_link_token      TEXT UNIQUE CHECK (open_link_token IS NULL OR length(open_link_token) >= 16),
    created_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    opened_at            TEXT,
    closed_at            TEXT
) STRICT;
CREATE INDEX studies_model ON studies(model_id);
CREATE INDEX studies_probe_set ON studies(probe_set_id);

-- The 2-6 methods compared (position 0..5 + UNIQUE caps them at 6; the app checks >= 2).
CREATE TABLE study_methods (
    id           INTEGER PRIMARY KEY,
    study_id     INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    position     INTEGER NOT NULL CHECK (position BETWEEN 0 AND 5),
    method       TEXT NOT NULL
                 CHECK (method IN ('dnd', 'clip-dissect', 'milan', 'netdissect', 'falcon', 'other')),
    source_name  TEXT NOT NULL DEFAULT '',
    UNIQUE (study_id, position),
    UNIQUE (study_id, method, source_name)
) STRICT;

-- One task per neuron in the study, plus attention-check tasks.
CREATE TABLE study_items (
    id                  INTEGER PRIMARY KEY,
    study_id            INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    neuron_id           INTEGER NOT NULL REFERENCES neurons(id) ON DELETE RESTRICT,
    position            INTEGER NOT NULL CHECK (position >= 0),
    is_attention_check  INTEGER NOT NULL DEFAULT 0 CHECK (is_attention_check IN (0, 1)),
    UNIQUE (study_id, position),
    UNIQUE (id, study_id)                              -- target of composite FKs
) STRICT;
CREATE UNIQUE INDEX study_items_one_per_neuron
    ON study_items(study_id, neuron_id) WHERE is_attention_check = 0;
CREATE INDEX study_items_neuron ON study_items(neuron_id);

-- Snapshot of the images a task shows (what raters saw stays fixed even if runs change).
CREATE TABLE study_item_images (
    id          INTEGER PRIMARY KEY,
    item_id     INTEGER NOT NULL REFERENCES study_items(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL CHECK (position >= 0),
    image_id    INTEGER NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    crop_x0     INTEGER,
    crop_y0     INTEGER,
    crop_x1     INTEGER,
    crop_y1     INTEGER,
    activation  REAL,
    UNIQUE (item_id, position),
    CHECK ((crop_x0 IS NULL AND crop_y0 IS NULL AND crop_x1 IS NULL AND crop_y1 IS NULL)
        OR (crop_x0 IS NOT NULL AND crop_y0 IS NOT NULL AND crop_x1 IS NOT NULL
            AND crop_y1 IS NOT NULL
            AND crop_x0 >= 0 AND crop_y0 >= 0 AND crop_x1 > crop_x0 AND crop_y1 > crop_y0))
) STRICT;
CREATE INDEX study_item_images_image ON study_item_images(image_id);

-- The descriptions of a task: one per study method (method hidden from raters), plus the
-- known-bad decoy on attention-check tasks.  Insert an item's rows in a random order so that
-- ids do not reveal the method.
CREATE TABLE study_descriptions (
    id               INTEGER PRIMARY KEY,
    item_id          INTEGER NOT NULL REFERENCES study_items(id) ON DELETE CASCADE,
    study_method_id  INTEGER REFERENCES study_methods(id),            -- NULL for the decoy
    label_id         INTEGER REFERENCES labels(id) ON DELETE RESTRICT,
    text             TEXT NOT NULL CHECK (text <> ''),                -- exactly what is shown
    is_decoy         INTEGER NOT NULL DEFAULT 0 CHECK (is_decoy IN (0, 1)),
    UNIQUE (item_id, study_method_id),
    UNIQUE (id, item_id),                                             -- target of composite FKs
    CHECK ((is_decoy = 1 AND study_method_id IS NULL)
        OR (is_decoy = 0 AND study_method_id IS NOT NULL AND label_id IS NOT NULL))
) STRICT;
CREATE UNIQUE INDEX study_descriptions_one_decoy ON study_descriptions(item_id) WHERE is_decoy = 1;
CREATE INDEX study_descriptions_method ON study_descriptions(study_method_id);
CREATE INDEX study_descriptions_label ON study_descriptions(label_id);

CREATE TABLE raters (
    id                INTEGER PRIMARY KEY,
    study_id          INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    token_hash        TEXT NOT NULL UNIQUE CHECK (length(token_hash) = 64),  -- sha256 of the token
    origin            TEXT NOT NULL DEFAULT 'invite' CHECK (origin IN ('invite', 'open_link')),
    note              TEXT NOT NULL DEFAULT '',        -- admin's note, e.g. who got the link
    worker_id         TEXT,                            -- rater-entered, for payment reconciliation
    excluded          INTEGER NOT NULL DEFAULT 0 CHECK (excluded IN (0, 1)),
    excluded_reason   TEXT,
    revoked_at        TEXT,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    last_seen_at      TEXT,
    UNIQUE (id, study_id)                              -- target of composite FKs
) STRICT;
CREATE INDEX raters_study ON raters(study_id);
CREATE INDEX raters_worker ON raters(study_id, worker_id) WHERE worker_id IS NOT NULL;

-- Rater x item.  The composite FKs guarantee rater and item belong to the same study.
CREATE TABLE assignments (
    id                  INTEGER PRIMARY KEY,
    study_id            INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    rater_id            INTEGER NOT NULL,
    item_id             INTEGER NOT NULL,
    position            INTEGER NOT NULL CHECK (position >= 0),   -- "task x of n" for this rater
    display_order_json  TEXT NOT NULL                             -- [description id, ...]
                        CHECK (json_valid(display_order_json)
                               AND json_type(display_order_json) = 'array'),
    assigned_at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    completed_at        TEXT,
    -- Set when an abandoned slot is handed to another rater; no longer counts toward the quota.
    released_at         TEXT,
    FOREIGN KEY (rater_id, study_id) REFERENCES raters(id, study_id) ON DELETE CASCADE,
    FOREIGN KEY (item_id, study_id) REFERENCES study_items(id, study_id) ON DELETE CASCADE,
    UNIQUE (rater_id, item_id),
    UNIQUE (rater_id, position),
    UNIQUE (id, study_id, item_id)                               -- target of composite FKs
) STRICT;
CREATE INDEX assignments_item ON assignments(item_id, completed_at);
CREATE INDEX assignments_study ON assignments(study_id);

-- One submission per assignment (idempotent).  Research data: never deleted.
CREATE TABLE responses (
    id                      INTEGER PRIMARY KEY,
    assignment_id           INTEGER NOT NULL UNIQUE,
    study_id                INTEGER NOT NULL,
    item_id                 INTEGER NOT NULL,
    best_description_id     INTEGER NOT NULL,
    -- Computed at submit: the best pick is among this response's highest-rated descriptions.
    is_valid                INTEGER NOT NULL CHECK (is_valid IN (0, 1)),
    -- NULL on ordinary tasks; 0/1 on attention-check tasks.
    attention_check_failed  INTEGER CHECK (attention_check_failed IS NULL
                                           OR attention_check_failed IN (0, 1)),
    client_time_ms          INTEGER CHECK (client_time_ms IS NULL OR client_time_ms >= 0),
    idempotency_key         TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 8 AND 200),
    submitted_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    FOREIGN KEY (assignment_id, study_id, item_id)
        REFERENCES assignments(id, study_id, item_id) ON DELETE RESTRICT,
    FOREIGN KEY (best_description_id, item_id)
        REFERENCES study_descriptions(id, item_id) ON DELETE RESTRICT,
    UNIQUE (id, item_id)                                          -- target of composite FKs
) STRICT;
CREATE INDEX responses_study ON responses(study_id, submitted_at);
CREATE INDEX responses_item ON responses(item_id);
CREATE INDEX responses_best ON responses(best_description_id);

CREATE TRIGGER responses_never_deleted BEFORE DELETE ON responses
BEGIN
    SELECT RAISE(ABORT, 'responses are research data and are never deleted (exclude the rater instead)');
END;

-- One 1-5 rating per (response, description); the description must belong to the same item.
CREATE TABLE ratings (
    id              INTEGER PRIMARY KEY,
    response_id     INTEGER NOT NULL,
    item_id         INTEGER NOT NULL,
    description_id  INTEGER NOT NULL,
    rating          INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    FOREIGN KEY (response_id, item_id) REFERENCES responses(id, item_id) ON DELETE CASCADE,
    FOREIGN KEY (description_id, item_id)
        REFERENCES study_descriptions(id, item_id) ON DELETE RESTRICT,
    UNIQUE (response_id, description_id)
) STRICT;
CREATE INDEX ratings_description ON ratings(description_id);
CREATE INDEX ratings_item ON ratings(item_id);

CREATE TRIGGER ratings_never_deleted BEFORE DELETE ON ratings
BEGIN
    SELECT RAISE(ABORT, 'ratings are research data and are never deleted');
END;

-- ============================================================================================
-- Admin
-- ============================================================================================

CREATE TABLE admin_sessions (
    id            INTEGER PRIMARY KEY,
    token_hash    TEXT NOT NULL UNIQUE CHECK (length(token_hash) = 64),   -- sha256 of the cookie
    csrf_token    TEXT NOT NULL CHECK (length(csrf_token) >= 16),
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    expires_at    TEXT NOT NULL,
    last_seen_at  TEXT,
    user_agent    TEXT
) STRICT;
CREATE INDEX admin_sessions_expires ON admin_sessions(expires_at);
