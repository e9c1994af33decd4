-- The home page's "Getting started" list reads two tables the gallery cache (0004) did not track:
-- whether any layer has a complete recording, and whether any study exists. Bump the gallery version
-- when either answer can change, and no more often: a recording's progress (images_done) does not
-- flush cached pages, only its status turning to or from 'complete'; a study is created or deleted
-- rarely, and rating it (other tables) still never flushes the gallery.
CREATE TRIGGER activation_caches_gallery_insert AFTER INSERT ON activation_caches
WHEN NEW.status = 'complete'
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER activation_caches_gallery_status AFTER UPDATE OF status ON activation_caches
WHEN (OLD.status = 'complete') <> (NEW.status = 'complete')
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER activation_caches_gallery_delete AFTER DELETE ON activation_caches
WHEN OLD.status = 'complete'
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER studies_gallery_insert AFTER INSERT ON studies
BEGIN UPDATE gallery_version SET version = version + 1; END;
CREATE TRIGGER studies_gallery_delete AFTER DELETE ON studies
BEGIN UPDATE gallery_version SET version = version + 1; END;
