//! Exporting a layer's current labels of one method in the public formats the importer reads
//! (so an export re-imports to the same labels), or as JSON with provenance.

use super::import::Format;
use crate::methods::Method;
use serde::Serialize;
use sqlx::SqlitePool;

/// One stored label, as exported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportedLabel {
    pub layer: String,
    pub unit: i64,
    pub method: String,
    pub source: String,
    pub rank: i64,
    pub text: String,
    pub score: Option<f64>,
    /// Method-specific extras (e.g. NetDissect's category).
    pub extra: Option<serde_json::Value>,
    /// Where the label came from: `import #N (file)` or `run #N`.
    pub origin: String,
    /// For DnD runs: which components were the paper's and which were substitutes.
    pub provenance: Option<serde_json::Value>,
}

/// The sources `method` has current labels from in one layer (what `source=` may name).
pub async fn sources(db: &SqlitePool, model_slug: &str, layer: &str, method: Method) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT lb.source_name FROM labels lb
         JOIN layers l ON l.id = lb.layer_id JOIN models m ON m.id = l.model_id
         WHERE m.slug = ? AND l.name = ? AND lb.method = ? AND lb.is_current = 1
         ORDER BY lb.source_name",
    )
    .bind(model_slug)
    .bind(layer)
    .bind(method.as_str())
    .fetch_all(db)
    .await?)
}

/// Current labels of `method` (and `source`) for one layer, ordered by unit then rank.
pub async fn load(
    db: &SqlitePool,
    model_slug: &str,
    layer: &str,
    method: Method,
    source: &str,
) -> anyhow::Result<Vec<ExportedLabel>> {
    let rows: Vec<(
        String,
        i64,
        String,
        String,
        i64,
        String,
        Option<f64>,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<i64>,
        Option<String>,
    )> = sqlx::query_as(
        "SELECT l.name, n.unit, lb.method, lb.source_name, lb.rank, lb.text, lb.score, lb.extra_json,
                    lb.import_id, li.file_name, lb.run_id, r.provenance_json
             FROM labels lb
             JOIN neurons n ON n.id = lb.neuron_id
             JOIN layers l ON l.id = lb.layer_id
             JOIN models m ON m.id = l.model_id
             LEFT JOIN label_imports li ON li.id = lb.import_id
             LEFT JOIN dissection_runs r ON r.id = lb.run_id
             WHERE m.slug = ? AND l.name = ? AND lb.method = ? AND lb.source_name = ? AND lb.is_current = 1
             ORDER BY n.unit, lb.rank",
    )
    .bind(model_slug)
    .bind(layer)
    .bind(method.as_str())
    .bind(source)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(layer, unit, method, source, rank, text, score, extra, import_id, file, run_id, provenance)| {
            let origin = match (import_id, run_id) {
                (Some(id), _) => format!("import #{id} ({})", file.unwrap_or_default()),
                (_, Some(id)) => format!("run #{id}"),
                _ => String::new(),
            };
            ExportedLabel {
                layer,
                unit,
                method,
                source,
                rank,
                text,
                score,
                extra: extra.and_then(|e| serde_json::from_str(&e).ok()),
                origin,
                provenance: provenance.and_then(|p| serde_json::from_str(&p).ok()),
            }
        })
        .collect())
}

/// Writes `labels` as a CSV file in `format`. Labels must come ordered by unit then rank.
pub fn to_csv(labels: &[ExportedLabel], format: Format) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let best = || labels.iter().filter(|l| l.rank == 1);
    match format {
        Format::ClipDissect => {
            w.write_record(["layer", "unit", "description", "similarity"])?;
            for l in best() {
                let score = l.score.map(|s| s.to_string()).unwrap_or_default();
                w.write_record([l.layer.as_str(), &l.unit.to_string(), &l.text, &score])?;
            }
        }
        Format::Milan => {
            w.write_record(["layer", "unit", "description"])?;
            for l in best() {
                w.write_record([l.layer.as_str(), &l.unit.to_string(), &l.text])?;
            }
        }
        Format::NetDissectTally => {
            w.write_record(["unit", "category", "label", "score"])?;
            for l in best() {
                let category = l.extra.as_ref().and_then(|e| e.get("category")).and_then(|c| c.as_str()).unwrap_or("");
                let score = l.score.map(|s| s.to_string()).unwrap_or_default();
                // NetDissect-Lite numbers units from 1.
                w.write_record([&(l.unit + 1).to_string(), category, &l.text, &score])?;
            }
        }
        Format::DndTop3 => {
            w.write_record(["Neuron ID", "Label 1", "Label 2", "Label 3"])?;
            let mut i = 0;
            while i < labels.len() {
                let unit = labels[i].unit;
                let mut texts = [""; 3];
                while i < labels.len() && labels[i].unit == unit {
                    if let Some(slot) = texts.get_mut((labels[i].rank - 1) as usize) {
                        *slot = &labels[i].text;
                    }
                    i += 1;
                }
                w.write_record([&unit.to_string(), texts[0], texts[1], texts[2]])?;
            }
        }
        Format::Dnd => {
            w.write_record(["Neuron ID", "label"])?;
            for l in best() {
                w.write_record([&l.unit.to_string(), l.text.as_str()])?;
            }
        }
    }
    Ok(w.into_inner()?)
}

/// An export ready to send: its file name, media type and bytes, and (CSV of labels from runs
/// with offline substitutes) a line naming the substituted roles for a response header.
pub struct ExportFile {
    pub file_name: String,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
    pub substitutes: Option<String>,
}

/// Why an export was not made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("export failed: {0:#}")]
    Failed(#[from] anyhow::Error),
}

/// One method's (and source's) current labels of a layer as a file: `json` (the default, with
/// provenance) or a CSV layout ([`format_from_name`]). A layer without such labels names the
/// sources the method does have there.
pub async fn layer_file(
    db: &SqlitePool,
    model: &str,
    layer: &str,
    method: &str,
    source: &str,
    format: Option<&str>,
) -> Result<ExportFile, ExportError> {
    let method = Method::parse(method).ok_or_else(|| {
        let known: Vec<&str> = Method::all().iter().map(|m| m.as_str()).collect();
        ExportError::BadRequest(format!(
            "unknown method `{}` ({})",
            dissect::error::excerpt(method, 60),
            known.join(", ")
        ))
    })?;
    let labels = load(db, model, layer, method, source).await?;
    if labels.is_empty() {
        let from = if source.is_empty() { String::new() } else { format!(" from source `{source}`") };
        let mut msg = format!("no current `{method}` labels{from} for {model}/{layer}");
        // Labels of another source are one parameter away: name them.
        let others = sources(db, model, layer, method).await?;
        if !others.is_empty() {
            let named: Vec<String> =
                others.iter().map(|s| if s.is_empty() { "(none)".into() } else { format!("`{s}`") }).collect();
            msg += &format!("; its `{method}` labels come from source {} (ask with &source=…)", named.join(", "));
        }
        return Err(ExportError::NotFound(msg));
    }
    // One file name per label source, so a layer's exports never overwrite each other.
    let mut stem = format!("{model}_{layer}_{method}");
    if !source.is_empty() {
        stem.push('_');
        stem.extend(source.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }));
    }
    match format.unwrap_or("json") {
        "json" => {
            let body = serde_json::json!({ "model": model, "layer": layer, "method": method, "labels": labels });
            Ok(ExportFile {
                file_name: format!("{stem}.json"),
                content_type: "application/json",
                bytes: serde_json::to_vec(&body).map_err(anyhow::Error::from)?,
                substitutes: None,
            })
        }
        name => {
            let format = format_from_name(name).ok_or_else(|| {
                ExportError::BadRequest(format!(
                    "unknown export format `{name}` (json, clip-dissect, milan, netdissect-tally, dnd-top3, dnd)"
                ))
            })?;
            // The CSV layouts have no room for provenance without breaking other tools' parsers,
            // so labels from runs with offline substitutes say so in the file name and in a
            // header naming the substituted roles (the JSON export has the full record).
            let substituted = substituted_roles(&labels);
            let (file_name, substitutes) = if substituted.is_empty() {
                (format!("{stem}.csv"), None)
            } else {
                (
                    format!("{stem}_embedded-substitutes.csv"),
                    Some(format!("substitutes for the paper's components: {}", substituted.join(", "))),
                )
            };
            Ok(ExportFile {
                file_name,
                content_type: "text/csv; charset=utf-8",
                bytes: to_csv(&labels, format)?,
                substitutes,
            })
        }
    }
}

/// The provenance roles some of `labels` had an offline substitute for, sorted.
fn substituted_roles(labels: &[ExportedLabel]) -> Vec<String> {
    let mut roles: Vec<String> = labels
        .iter()
        .filter_map(|l| l.provenance.as_ref()?.as_object().cloned())
        .flat_map(|p| {
            p.into_iter()
                .filter(|(_, c)| c.get("paper_equivalent").and_then(|v| v.as_bool()) == Some(false))
                .map(|(role, _)| role)
                .collect::<Vec<_>>()
        })
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

/// Parses the `format` query value of the export route.
pub fn format_from_name(name: &str) -> Option<Format> {
    [Format::ClipDissect, Format::Milan, Format::NetDissectTally, Format::DndTop3, Format::Dnd]
        .into_iter()
        .find(|f| f.as_str() == name || f.as_str().trim_end_matches("-csv") == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::import::{parse, ImportTarget};
    use std::collections::{BTreeMap, HashMap};

    fn label(unit: i64, rank: i64, text: &str, score: Option<f64>) -> ExportedLabel {
        ExportedLabel {
            layer: "layer4".into(),
            unit,
            method: "dnd".into(),
            source: String::new(),
            rank,
            text: text.into(),
            score,
            extra: Some(serde_json::json!({ "category": "object" })),
            origin: String::new(),
            provenance: None,
        }
    }

    /// Every CSV format re-imports to the labels it was written from.
    #[test]
    fn exports_round_trip_through_the_importer() {
        let labels = vec![
            label(0, 1, "dogs, on grass", Some(0.5)),
            label(0, 2, "pets", None),
            label(7, 1, "a \"quoted\" word", Some(0.25)),
        ];
        let layers: HashMap<String, usize> = [("layer4".to_string(), 8)].into();
        let mapping = BTreeMap::new();
        let target = ImportTarget {
            layers: &layers,
            layer_mapping: &mapping,
            layer: Some("layer4"),
            skip_unknown_layers: false,
        };
        for format in [Format::ClipDissect, Format::Milan, Format::NetDissectTally, Format::DndTop3, Format::Dnd] {
            let bytes = to_csv(&labels, format).unwrap();
            let parsed = parse(&bytes, &target).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(parsed.format, format);
            let got: Vec<(u32, u8, String)> = parsed.rows.iter().map(|r| (r.unit, r.rank, r.text.clone())).collect();
            let mut want = vec![(0, 1, "dogs, on grass".to_string()), (7, 1, "a \"quoted\" word".to_string())];
            if format == Format::DndTop3 {
                want.insert(1, (0, 2, "pets".to_string()));
            }
            assert_eq!(got, want, "{format:?}");
            if matches!(format, Format::ClipDissect | Format::NetDissectTally) {
                assert_eq!(parsed.rows[0].score, Some(0.5));
            }
        }
    }

    #[test]
    fn format_names_accept_short_forms() {
        assert_eq!(format_from_name("milan"), Some(Format::Milan));
        assert_eq!(format_from_name("dnd-top3-csv"), Some(Format::DndTop3));
        assert_eq!(format_from_name("netdissect-tally"), Some(Format::NetDissectTally));
        assert_eq!(format_from_name("xml"), None);
    }
}
