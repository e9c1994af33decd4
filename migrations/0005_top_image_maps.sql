-- The unit's activation map on each D_top image, for the neuron page's heatmap overlay.
--   map_h, map_w      the map's grid (e.g. 7×7 for EfficientNet-Lite0 stage6);
--   map_f32           map_h·map_w raw activations (not normalised: the overlay scales each map
--                     to its own min–max when drawn), f32 little-endian, row-major;
--   map_x0..map_y1    the region of the whole source image the map covers: the centre crop the
--                     model saw (source pixels, x1/y1 exclusive), not the crop of a crop row;
--   map_sha256        content key of the map and its placement on its image (the overlay's URL).
-- A crop row carries its source image's map. All NULL: no map (a layer without spatial maps, or a
-- run stored before this migration). Columns on top_images are covered by its gallery triggers.
ALTER TABLE top_images ADD COLUMN map_h INTEGER CHECK (map_h IS NULL OR map_h > 0);
ALTER TABLE top_images ADD COLUMN map_w INTEGER CHECK (map_w IS NULL OR map_w > 0);
ALTER TABLE top_images ADD COLUMN map_f32 BLOB
    CHECK ((map_f32 IS NULL AND map_h IS NULL AND map_w IS NULL)
        OR (map_h IS NOT NULL AND map_w IS NOT NULL AND length(map_f32) = 4 * map_h * map_w));
ALTER TABLE top_images ADD COLUMN map_x0 INTEGER;
ALTER TABLE top_images ADD COLUMN map_y0 INTEGER;
ALTER TABLE top_images ADD COLUMN map_x1 INTEGER;
ALTER TABLE top_images ADD COLUMN map_y1 INTEGER
    CHECK ((map_f32 IS NULL AND map_x0 IS NULL AND map_y0 IS NULL AND map_x1 IS NULL AND map_y1 IS NULL)
        OR (map_f32 IS NOT NULL AND map_x0 >= 0 AND map_y0 >= 0 AND map_x1 > map_x0 AND map_y1 > map_y0));
ALTER TABLE top_images ADD COLUMN map_sha256 TEXT
    CHECK ((map_f32 IS NULL) = (map_sha256 IS NULL)
       AND (map_sha256 IS NULL OR (length(map_sha256) = 64 AND map_sha256 NOT GLOB '*[^0-9a-f]*')));
CREATE INDEX top_images_map ON top_images(map_sha256) WHERE map_sha256 IS NOT NULL;
