//! Helpers for tests: this crate's own, and (feature `test-support`) those of crates built on it.

use dissect::model::{LayerInfo, Preprocess, TargetModel};
use sqlx::SqlitePool;

/// A migrated database in a temporary folder (kept alive by the returned guard).
pub async fn temp_db() -> (tempfile::TempDir, SqlitePool) {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::db::open(&dir.path().join("t.db")).await.unwrap();
    (dir, db)
}

/// A stand-in model with given layers and class names: registration only reads metadata.
pub struct FakeModel(pub Vec<LayerInfo>, pub Vec<String>);

impl TargetModel for FakeModel {
    fn name(&self) -> &str {
        "fake"
    }
    fn layers(&self) -> &[LayerInfo] {
        &self.0
    }
    fn preprocessing(&self) -> Preprocess {
        Preprocess::center_crop(32, 0.875, [0.0; 3], [1.0; 3])
    }
    fn class_names(&self) -> Option<&[String]> {
        Some(&self.1)
    }
    fn device(&self) -> tch::Device {
        tch::Device::Cpu
    }
    fn forward_layers(&self, _: &tch::Tensor, _: &[usize]) -> dissect::Result<Vec<tch::Tensor>> {
        unreachable!("registration never runs the model")
    }
}

/// Registers `model` under the slug `m` (weights: a stand-in file in `dir`); answers its id.
pub async fn register_fake_model(db: &SqlitePool, dir: &std::path::Path, model: &FakeModel) -> i64 {
    let weights = dir.join("w.bin");
    std::fs::write(&weights, b"w").unwrap();
    let spec = crate::registry::ModelSpec {
        slug: "m",
        name: "M",
        description: "",
        builtin_key: None,
        weights_path: &weights,
        dataset: None,
        model,
    };
    crate::registry::register_model(db, spec).await.unwrap()
}

/// Imports `csv` (any label file layout) into the model `m` of [`register_fake_model`], as
/// `dnd import-labels` would; `method` and `layer` as its options.
pub async fn import_labels(db: &SqlitePool, csv: &str, method: Option<crate::methods::Method>, layer: Option<&str>) {
    let options = crate::labels::ImportOptions {
        method,
        source_name: "",
        layer,
        layer_mapping: Default::default(),
        skip_unknown_layers: false,
    };
    crate::labels::import_file(db, "m", "labels.csv", csv.as_bytes(), &options).await.unwrap();
}
