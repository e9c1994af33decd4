-- The gallery pages (`/`, `/models`, `/m/{model}[/{layer}[/{unit}]]`) are cached as rendered HTML by
-- the server (server/src/page_cache.rs). An entry is served only while `gallery_version` still holds
-- the number it was rendered under; every write to a table those pages read bumps it, from any
-- process (the `dnd` CLI writes runs and imports into the same file while the server runs), in the
-- writer's own transaction. The rating study's tables (studies, raters, assignments, responses,
-- ratings, ...) and the caches and jobs are not tracked: a busy study never flushes the gallery.
CREATE TABLE gallery_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL
) STRICT;
INSERT INTO gallery_version (id, version) VALUES (1, 1);

-- Every row change of the tables the gallery reads.
CREATE TRIGGER models_gallery_insert AFTER INSERT ON models
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER models_gallery_update AFTER UPDATE ON models
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER models_gallery_delete AFTER DELETE ON models
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER layers_gallery_insert AFTER INSERT ON layers
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER layers_gallery_update AFTER UPDATE ON layers
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER layers_gallery_delete AFTER DELETE ON layers
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER neurons_gallery_insert AFTER INSERT ON neurons
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER neurons_gallery_update AFTER UPDATE ON neurons
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER neurons_gallery_delete AFTER DELETE ON neurons
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER probe_sets_gallery_insert AFTER INSERT ON probe_sets
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER probe_sets_gallery_update AFTER UPDATE ON probe_sets
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER probe_sets_gallery_delete AFTER DELETE ON probe_sets
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER probe_set_images_gallery_insert AFTER INSERT ON probe_set_images
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER probe_set_images_gallery_update AFTER UPDATE ON probe_set_images
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER probe_set_images_gallery_delete AFTER DELETE ON probe_set_images
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER rejected_files_gallery_insert AFTER INSERT ON rejected_files
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER rejected_files_gallery_update AFTER UPDATE ON rejected_files
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER rejected_files_gallery_delete AFTER DELETE ON rejected_files
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER dissection_runs_gallery_insert AFTER INSERT ON dissection_runs
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER dissection_runs_gallery_update AFTER UPDATE ON dissection_runs
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER dissection_runs_gallery_delete AFTER DELETE ON dissection_runs
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER run_neurons_gallery_insert AFTER INSERT ON run_neurons
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER run_neurons_gallery_update AFTER UPDATE ON run_neurons
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER run_neurons_gallery_delete AFTER DELETE ON run_neurons
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER top_images_gallery_insert AFTER INSERT ON top_images
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER top_images_gallery_update AFTER UPDATE ON top_images
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER top_images_gallery_delete AFTER DELETE ON top_images
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER candidate_concepts_gallery_insert AFTER INSERT ON candidate_concepts
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER candidate_concepts_gallery_update AFTER UPDATE ON candidate_concepts
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER candidate_concepts_gallery_delete AFTER DELETE ON candidate_concepts
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER concept_images_gallery_insert AFTER INSERT ON concept_images
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER concept_images_gallery_update AFTER UPDATE ON concept_images
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER concept_images_gallery_delete AFTER DELETE ON concept_images
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER label_imports_gallery_insert AFTER INSERT ON label_imports
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER label_imports_gallery_update AFTER UPDATE ON label_imports
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER label_imports_gallery_delete AFTER DELETE ON label_imports
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER labels_gallery_insert AFTER INSERT ON labels
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER labels_gallery_update AFTER UPDATE ON labels
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER labels_gallery_delete AFTER DELETE ON labels
BEGIN UPDATE gallery_version SET version = version + 1; END;

-- Images and captions are shared by content: a new row shows nowhere until a tracked row (top_images,
-- concept_images, probe_set_images) refers to it, which bumps the version itself.
CREATE TRIGGER images_gallery_update AFTER UPDATE ON images
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER images_gallery_delete AFTER DELETE ON images
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER captions_gallery_update AFTER UPDATE ON captions
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER captions_gallery_delete AFTER DELETE ON captions
BEGIN UPDATE gallery_version SET version = version + 1; END;

-- The layer grid's filter (any current label's text, per layer) and its sort by DnD score read
-- these indexes alone, without visiting the table rows.
CREATE INDEX labels_layer_text ON labels(layer_id, neuron_id, text) WHERE is_current = 1;
CREATE INDEX labels_layer_score ON labels(layer_id, method, rank, neuron_id, score) WHERE is_current = 1;
