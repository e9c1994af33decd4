-- Blinding (studio/src/gallery/blinding.rs): while a study is open, visitors without an admin
-- session see no label of the layers it rates. Cached gallery pages (0004) must follow when a
-- study opens, closes or reopens, so its status change bumps the gallery version. Only the status
-- column: rating a study (other tables, and its counters) still never flushes the gallery.
CREATE TRIGGER studies_gallery_status AFTER UPDATE OF status ON studies
WHEN OLD.status <> NEW.status
BEGIN UPDATE gallery_version SET version = version + 1; END;

-- Every writer's labels are bounded (the importer and the engine check first, with clearer errors;
-- this catches any other writer, e.g. another process or a hand-written query): a label of
-- millions of characters would bloat every page that shows it. 500 = MAX_LABEL_CHARS in
-- studio/src/labels/import.rs. Rows stored before stay as they are.
CREATE TRIGGER labels_text_bounded_insert BEFORE INSERT ON labels
WHEN length(NEW.text) > 500
BEGIN SELECT RAISE(ABORT, 'a label is longer than 500 characters'); END;
CREATE TRIGGER labels_text_bounded_update BEFORE UPDATE OF text ON labels
WHEN length(NEW.text) > 500
BEGIN SELECT RAISE(ABORT, 'a label is longer than 500 characters'); END;
