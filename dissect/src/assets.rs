//! Where the embedded-default assets (weights, built-in probing images) live on disk.
//!
//! Mirrors `scripts/env.sh`: `$DND_ASSETS`, else `$DND_STUDIO_CACHE/assets`, else
//! `~/.cache/dnd-studio/assets`. The set-up script (`scripts/setup.sh`) fills it.

use std::path::PathBuf;

/// Root of the asset cache.
pub fn assets_dir() -> PathBuf {
    if let Some(dir) = non_empty_env("DND_ASSETS") {
        return PathBuf::from(dir);
    }
    let cache = non_empty_env("DND_STUDIO_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let home = non_empty_env("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".cache").join("dnd-studio")
    });
    cache.join("assets")
}

/// Folder holding converted model weights (`*.safetensors`).
pub fn models_dir() -> PathBuf {
    assets_dir().join("models")
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
