-- Choosing a rater's next task and showing "task x of n" must not walk the rater's whole history
-- (a rater in a long study has hundreds of tasks, and every submission asks again).  Each rater
-- keeps counters and the set of neurons they have been shown, kept exact by triggers, so those
-- questions become single lookups.

-- The neurons a rater has been given (an ordinary task or an attention check): "no rater sees the
-- same neuron twice" is a lookup per candidate item.
CREATE TABLE rater_neurons (
    rater_id   INTEGER NOT NULL REFERENCES raters(id) ON DELETE CASCADE,
    neuron_id  INTEGER NOT NULL,
    PRIMARY KEY (rater_id, neuron_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX rater_neurons_neuron ON rater_neurons(neuron_id);

INSERT OR IGNORE INTO rater_neurons (rater_id, neuron_id)
SELECT a.rater_id, i.neuron_id FROM assignments a JOIN study_items i ON i.id = a.item_id;

-- tasks_given: assignments ever made (the next one's position); tasks_completed: those answered;
-- seen_open_items: ordinary items of the study that still have a free slot but whose neuron this
-- rater has been shown (what "n" must leave out).
ALTER TABLE raters ADD COLUMN tasks_given INTEGER NOT NULL DEFAULT 0 CHECK (tasks_given >= 0);
ALTER TABLE raters ADD COLUMN tasks_completed INTEGER NOT NULL DEFAULT 0 CHECK (tasks_completed >= 0);
ALTER TABLE raters ADD COLUMN seen_open_items INTEGER NOT NULL DEFAULT 0 CHECK (seen_open_items >= 0);

UPDATE raters SET
    tasks_given = (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = raters.id),
    tasks_completed = (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = raters.id AND a.completed_at IS NOT NULL),
    seen_open_items = (
        SELECT COUNT(*) FROM rater_neurons rn
        JOIN study_items i ON i.neuron_id = rn.neuron_id AND i.study_id = raters.study_id AND i.is_attention_check = 0
        JOIN studies s ON s.id = i.study_id
        WHERE rn.rater_id = raters.id AND i.slots_taken < s.raters_per_item);

CREATE TRIGGER assignments_count_given AFTER INSERT ON assignments
BEGIN
    UPDATE raters SET tasks_given = tasks_given + 1 WHERE id = NEW.rater_id;
    INSERT OR IGNORE INTO rater_neurons (rater_id, neuron_id)
    SELECT NEW.rater_id, neuron_id FROM study_items WHERE id = NEW.item_id;
END;

CREATE TRIGGER assignments_count_completed AFTER UPDATE OF completed_at ON assignments
WHEN OLD.completed_at IS NULL AND NEW.completed_at IS NOT NULL
BEGIN
    UPDATE raters SET tasks_completed = tasks_completed + 1 WHERE id = NEW.rater_id;
END;

-- A neuron newly shown to a rater: its study's ordinary item (if open) becomes one they cannot get.
-- Whether this fires before or after the slot of the same assignment is taken does not matter:
-- the slot trigger below adjusts every rater already in rater_neurons, this one counts the state
-- it finds.
CREATE TRIGGER rater_neurons_count_open AFTER INSERT ON rater_neurons
BEGIN
    UPDATE raters SET seen_open_items = seen_open_items + (
        SELECT COUNT(*) FROM study_items i JOIN studies s ON s.id = i.study_id
        WHERE i.study_id = raters.study_id AND i.neuron_id = NEW.neuron_id AND i.is_attention_check = 0
          AND i.slots_taken < s.raters_per_item)
    WHERE id = NEW.rater_id;
END;

-- An item filling up (or freed again) changes the count of every rater who has seen its neuron.
CREATE TRIGGER study_items_track_seen_open AFTER UPDATE OF slots_taken ON study_items
WHEN NEW.is_attention_check = 0
 AND (NEW.slots_taken < (SELECT raters_per_item FROM studies WHERE id = NEW.study_id))
  <> (OLD.slots_taken < (SELECT raters_per_item FROM studies WHERE id = NEW.study_id))
BEGIN
    UPDATE raters
    SET seen_open_items = seen_open_items
        + (NEW.slots_taken < (SELECT raters_per_item FROM studies WHERE id = NEW.study_id))
        - (OLD.slots_taken < (SELECT raters_per_item FROM studies WHERE id = NEW.study_id))
    WHERE study_id = NEW.study_id AND id IN (SELECT rater_id FROM rater_neurons WHERE neuron_id = NEW.neuron_id);
END;
