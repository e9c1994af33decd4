//! Neuron labels from every method: importing the public file formats of other methods
//! (CLIP-Dissect, MILAN, Network Dissection, FALCON, DnD's own CSVs) and storing them.

pub mod export;
pub mod import;
pub mod store;

use crate::methods::Method;
use anyhow::Context;
use import::ImportTarget;
use sqlx::SqlitePool;
use std::collections::{BTreeMap, HashMap};

/// What one import produced, for the command line and the web page.
#[derive(Debug)]
pub struct ImportSummary {
    pub import_id: i64,
    pub format: &'static str,
    pub method: &'static str,
    pub labels: usize,
    pub neurons: usize,
    /// Rows left out per file layer the model lacks (with [`ImportOptions::skip_unknown_layers`]).
    pub skipped_layers: BTreeMap<String, usize>,
}

/// How to read a label file.
#[derive(Default)]
pub struct ImportOptions<'a> {
    /// Default: the one the file's format belongs to.
    pub method: Option<Method>,
    /// Tells several sources of one method apart (e.g. two MILAN checkpoints).
    pub source_name: &'a str,
    /// The model layer, for formats without a layer column.
    pub layer: Option<&'a str>,
    /// File layer name → model layer name.
    pub layer_mapping: BTreeMap<String, String>,
    /// Leave out (and report) rows of layers the model lacks instead of refusing the file.
    pub skip_unknown_layers: bool,
}

/// Parses `bytes` against the model `model_slug` and stores the labels (all or nothing).
pub async fn import_file(
    db: &SqlitePool,
    model_slug: &str,
    file_name: &str,
    bytes: &[u8],
    options: &ImportOptions<'_>,
) -> anyhow::Result<ImportSummary> {
    let model_id: i64 = sqlx::query_scalar("SELECT id FROM models WHERE slug = ?")
        .bind(model_slug)
        .fetch_optional(db)
        .await?
        .with_context(|| format!("no model `{model_slug}` is registered"))?;
    let layers: HashMap<String, usize> =
        sqlx::query_as::<_, (String, i64)>("SELECT name, channels FROM layers WHERE model_id = ?")
            .bind(model_id)
            .fetch_all(db)
            .await?
            .into_iter()
            .map(|(n, c)| (n, c as usize))
            .collect();
    let layer_mapping = &options.layer_mapping;
    let target = ImportTarget {
        layers: &layers,
        layer_mapping,
        layer: options.layer,
        skip_unknown_layers: options.skip_unknown_layers,
    };
    let parsed = import::parse(bytes, &target).with_context(|| format!("{file_name} was not imported"))?;
    let method = options.method.unwrap_or(parsed.format.default_method());
    let source_name = options.source_name;
    let record = store::ImportRecord { model_id, method, source_name, file_name, file_bytes: bytes, layer_mapping };
    let import_id = store::store_import(db, record, &parsed).await?;
    let neurons = parsed.rows.iter().map(|r| (&r.layer, r.unit)).collect::<std::collections::HashSet<_>>().len();
    Ok(ImportSummary {
        import_id,
        format: parsed.format.as_str(),
        method: method.as_str(),
        labels: parsed.rows.len(),
        neurons,
        skipped_layers: parsed.skipped_layers.clone(),
    })
}
