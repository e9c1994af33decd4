-- A crop in D_top has an activation only under the run's summary (mean or max); the other one is
-- not computed for crops.  Make both columns nullable (at least one must be present) and record
-- which summary the run ranked by.  SQLite cannot relax NOT NULL in place: rebuild the table.
CREATE TABLE top_images_new (
    id             INTEGER PRIMARY KEY,
    run_neuron_id  INTEGER NOT NULL REFERENCES run_neurons(id) ON DELETE CASCADE,
    rank           INTEGER NOT NULL CHECK (rank >= 1),
    image_id       INTEGER NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    is_crop        INTEGER NOT NULL DEFAULT 0 CHECK (is_crop IN (0, 1)),
    crop_x0        INTEGER,
    crop_y0        INTEGER,
    crop_x1        INTEGER,
    crop_y1        INTEGER,
    act_mean       REAL,
    act_max        REAL,
    caption_id     INTEGER REFERENCES captions(id) ON DELETE SET NULL,
    UNIQUE (run_neuron_id, rank),
    CHECK (act_mean IS NOT NULL OR act_max IS NOT NULL),
    CHECK ((is_crop = 0 AND crop_x0 IS NULL AND crop_y0 IS NULL AND crop_x1 IS NULL
                        AND crop_y1 IS NULL)
        OR (is_crop = 1 AND crop_x0 IS NOT NULL AND crop_y0 IS NOT NULL
                        AND crop_x1 IS NOT NULL AND crop_y1 IS NOT NULL
                        AND crop_x0 >= 0 AND crop_y0 >= 0
                        AND crop_x1 > crop_x0 AND crop_y1 > crop_y0))
) STRICT;
INSERT INTO top_images_new SELECT * FROM top_images;
DROP TABLE top_images;
ALTER TABLE top_images_new RENAME TO top_images;
CREATE INDEX top_images_image ON top_images(image_id);
CREATE INDEX top_images_caption ON top_images(caption_id);
