//! Shared helpers for tests on the real EfficientNet-Lite weights and real photos.
#![allow(dead_code)]

use dissect::model::{EfficientNetLite, LoadOptions, Variant};
use std::path::PathBuf;

fn missing(what: &str, path: &std::path::Path) -> ! {
    panic!(
        "{what} not found at {}: run `scripts/setup.sh` to fetch and convert the assets \
         (the folder comes from $DND_ASSETS, default ~/.cache/dnd-studio/assets; now {})",
        path.display(),
        dissect::assets::assets_dir().display()
    )
}

/// Loads a built-in network from the assets folder, failing with set-up instructions.
pub fn load(variant: Variant, opts: LoadOptions) -> EfficientNetLite {
    let path = variant.default_weights_path();
    if !path.is_file() {
        missing("weights", &path);
    }
    EfficientNetLite::load(variant, &path, opts).unwrap_or_else(|e| panic!("{e}"))
}

/// A scikit-image sample photo by stem (`coffee`, `chelsea`, `rocket`), whatever its extension.
pub fn skimage_photo(stem: &str) -> PathBuf {
    let dir = dissect::assets::assets_dir().join("probe/builtin/skimage");
    for ext in ["png", "jpg", "jpeg"] {
        let p = dir.join(format!("{stem}.{ext}"));
        if p.is_file() {
            return p;
        }
    }
    missing(&format!("scikit-image photo `{stem}`"), &dir.join(format!("{stem}.png")))
}
