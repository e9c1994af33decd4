-- Task assignment must not scan every item of a study per request (a study has thousands of
-- items and raters ask for tasks concurrently).  Each item keeps the number of slots taken: its
-- assignments that are completed or still held (not released).  Triggers keep it exact, so the
-- next item is an index range read ordered by coverage.
ALTER TABLE study_items ADD COLUMN slots_taken INTEGER NOT NULL DEFAULT 0 CHECK (slots_taken >= 0);

UPDATE study_items SET slots_taken = (
    SELECT COUNT(*) FROM assignments a
    WHERE a.item_id = study_items.id AND (a.completed_at IS NOT NULL OR a.released_at IS NULL));

CREATE INDEX study_items_open ON study_items(study_id, is_attention_check, slots_taken, position);

-- And each study the number of its ordinary items with a free slot, for a rater's "task x of n"
-- without counting items on every page.
ALTER TABLE studies ADD COLUMN open_items INTEGER NOT NULL DEFAULT 0 CHECK (open_items >= 0);

UPDATE studies SET open_items = (
    SELECT COUNT(*) FROM study_items i
    WHERE i.study_id = studies.id AND i.is_attention_check = 0 AND i.slots_taken < studies.raters_per_item);

CREATE TRIGGER study_items_count_open AFTER INSERT ON study_items WHEN NEW.is_attention_check = 0
BEGIN
    UPDATE studies SET open_items = open_items + (NEW.slots_taken < raters_per_item) WHERE id = NEW.study_id;
END;

CREATE TRIGGER study_items_track_open AFTER UPDATE OF slots_taken ON study_items WHEN NEW.is_attention_check = 0
BEGIN
    UPDATE studies
    SET open_items = open_items + (NEW.slots_taken < raters_per_item) - (OLD.slots_taken < raters_per_item)
    WHERE id = NEW.study_id;
END;

CREATE TRIGGER assignments_take_slot AFTER INSERT ON assignments
BEGIN
    UPDATE study_items SET slots_taken = slots_taken + 1 WHERE id = NEW.item_id;
    UPDATE raters SET last_seen_at = NEW.assigned_at WHERE id = NEW.rater_id;
END;

-- An unfinished assignment handed back frees its slot ...
CREATE TRIGGER assignments_release_slot AFTER UPDATE OF released_at ON assignments
WHEN OLD.released_at IS NULL AND NEW.released_at IS NOT NULL AND NEW.completed_at IS NULL
BEGIN
    UPDATE study_items SET slots_taken = slots_taken - 1 WHERE id = NEW.item_id;
END;

-- ... and takes it again if its rater answers after all (the answer is kept: research data).
CREATE TRIGGER assignments_late_completion AFTER UPDATE OF completed_at ON assignments
WHEN OLD.completed_at IS NULL AND NEW.completed_at IS NOT NULL AND NEW.released_at IS NOT NULL
BEGIN
    UPDATE study_items SET slots_taken = slots_taken + 1 WHERE id = NEW.item_id;
END;

-- A stored response completes its assignment (and marks its rater as seen) in the same
-- statement, so the two never disagree.
CREATE TRIGGER responses_complete_assignment AFTER INSERT ON responses
BEGIN
    UPDATE assignments SET completed_at = NEW.submitted_at WHERE id = NEW.assignment_id AND completed_at IS NULL;
    UPDATE raters SET last_seen_at = NEW.submitted_at
    WHERE id = (SELECT rater_id FROM assignments WHERE id = NEW.assignment_id);
END;

-- Finding a rater's unfinished task and what they have seen.
CREATE INDEX assignments_rater_open ON assignments(rater_id, completed_at, released_at, position);
