//! Parsing label files in the formats the methods publish. All-or-nothing: the first problem
//! rejects the whole file with its line number and the reason, so nothing half-imported is
//! stored. Units are 0-based inside DnD Studio; NetDissect-Lite's tally numbers them from 1.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::methods::Method;

/// The file layouts understood, recognised from the header row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `layer,unit,description,similarity` (0-based units).
    ClipDissect,
    /// `layer,unit,description` (0-based units).
    Milan,
    /// NetDissect-Lite tally: `unit,category,label,score,…` (1-based units, no layer column).
    NetDissectTally,
    /// `Neuron ID,Label 1,Label 2,Label 3` (0-based, no layer column): DnD's top-3 labels.
    DndTop3,
    /// `Neuron ID,label` (0-based, no layer column): DnD's best label.
    Dnd,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::ClipDissect => "clip-dissect-csv",
            Format::Milan => "milan-csv",
            Format::NetDissectTally => "netdissect-tally",
            Format::DndTop3 => "dnd-top3-csv",
            Format::Dnd => "dnd-csv",
        }
    }

    /// The method a file of this format normally comes from (MILAN's layout is also used for
    /// FALCON and other sources; the importer may be told otherwise).
    pub fn default_method(self) -> Method {
        match self {
            Format::ClipDissect => Method::CLIP_DISSECT,
            Format::Milan => Method::MILAN,
            Format::NetDissectTally => Method::NET_DISSECT,
            Format::DndTop3 | Format::Dnd => Method::DND,
        }
    }

    fn has_layer_column(self) -> bool {
        matches!(self, Format::ClipDissect | Format::Milan)
    }

    fn detect(header: &[String]) -> Option<Format> {
        let h: Vec<String> = header.iter().map(|c| c.trim().to_lowercase()).collect();
        let starts = |cols: &[&str]| h.len() >= cols.len() && h.iter().zip(cols).all(|(a, b)| a == b);
        if starts(&["layer", "unit", "description", "similarity"]) {
            Some(Format::ClipDissect)
        } else if starts(&["layer", "unit", "description"]) {
            Some(Format::Milan)
        } else if starts(&["unit", "category", "label", "score"]) {
            Some(Format::NetDissectTally)
        } else if starts(&["neuron id", "label 1", "label 2", "label 3"]) {
            Some(Format::DndTop3)
        } else if h.len() == 2 && starts(&["neuron id", "label"]) {
            Some(Format::Dnd)
        } else {
            None
        }
    }
}

/// One label of one neuron, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelRow {
    /// The model's layer name (after mapping).
    pub layer: String,
    /// 0-based unit.
    pub unit: u32,
    /// 1 = the method's best label; DnD's top-3 files also give ranks 2 and 3.
    pub rank: u8,
    pub text: String,
    pub score: Option<f64>,
    /// Method-specific extras kept for display (e.g. NetDissect's category).
    pub extra: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFile {
    pub format: Format,
    pub rows: Vec<LabelRow>,
    /// Rows left out per file layer that is not a layer of the model (only with
    /// [`ImportTarget::skip_unknown_layers`]; reported, never silent).
    pub skipped_layers: BTreeMap<String, usize>,
}

/// What the importer needs to know about the model the labels are for.
pub struct ImportTarget<'a> {
    /// Model layer name → number of units.
    pub layers: &'a HashMap<String, usize>,
    /// File layer name → model layer name, for files whose names differ from the model's.
    pub layer_mapping: &'a BTreeMap<String, String>,
    /// The model layer for formats without a layer column (NetDissect tally, DnD CSVs).
    pub layer: Option<&'a str>,
    /// Leave out the rows of file layers the model does not have (and are not mapped), instead
    /// of refusing the file: e.g. the public ResNet-50 files' `conv1` for an exported model
    /// without it.
    pub skip_unknown_layers: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImportError {
    #[error("the file is empty")]
    Empty,
    #[error("line {line}: {message}")]
    Line { line: u64, message: String },
    #[error("unrecognised header `{0}`; expected one of: `layer,unit,description,similarity` (CLIP-Dissect), `layer,unit,description` (MILAN/FALCON), `unit,category,label,score,…` (NetDissect-Lite tally), `Neuron ID,Label 1,Label 2,Label 3` or `Neuron ID,label` (DnD)")]
    UnknownHeader(String),
    #[error("this {format} file has no layer column: choose the model layer it describes (one of: {valid})")]
    LayerRequired { format: &'static str, valid: String },
    #[error("layer `{0}` is not a layer of this model (valid: {1})")]
    UnknownTargetLayer(String, String),
    #[error("the file has a header but no label rows")]
    NoRows,
    #[error("no row is of a layer of this model (left out: {0})")]
    OnlyUnknownLayers(String),
}

/// The longest label any method may store, in characters: MILAN's sentences and CLIP-Dissect's
/// words are far shorter; a longer one is a broken file, and would bloat every page showing it.
pub const MAX_LABEL_CHARS: usize = 500;

/// How much of a quoted input (a header) an error shows.
const EXCERPT_CHARS: usize = 120;

/// A bounded, escaped excerpt of input for an error message (control characters and quotes
/// escaped, long input cut with "…").
pub fn excerpt(input: &str) -> String {
    dissect::error::excerpt(input, EXCERPT_CHARS)
}

/// "`conv1` (64 rows), `fc` (1000 rows)": what [`ImportTarget::skip_unknown_layers`] left out.
pub fn describe_skipped(skipped: &BTreeMap<String, usize>) -> String {
    skipped.iter().map(|(l, n)| format!("`{}` ({n} rows)", excerpt(l))).collect::<Vec<_>>().join(", ")
}

/// Refuses a label longer than [`MAX_LABEL_CHARS`], saying which and how long.
pub fn check_label_length(text: &str) -> Result<(), String> {
    let chars = text.chars().count();
    if chars > MAX_LABEL_CHARS {
        return Err(format!("a label is {chars} characters long; at most {MAX_LABEL_CHARS} are stored"));
    }
    Ok(())
}

fn line_error(line: u64, message: impl Into<String>) -> ImportError {
    ImportError::Line { line, message: message.into() }
}

fn valid_layers(layers: &HashMap<String, usize>) -> String {
    let mut names: Vec<&str> = layers.keys().map(String::as_str).collect();
    names.sort_unstable();
    names.join(", ")
}

/// Parses and validates a whole file (UTF-8, optional BOM, LF or CRLF, RFC 4180 quoting).
pub fn parse(bytes: &[u8], target: &ImportTarget) -> Result<ParsedFile, ImportError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        // Report the line of the first invalid byte.
        let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        line_error(line, "not valid UTF-8 text")
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(ImportError::Empty);
    }
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut records = reader.records();
    let header = match records.next() {
        Some(Ok(h)) => h.iter().map(str::to_string).collect::<Vec<_>>(),
        Some(Err(e)) => return Err(line_error(1, format!("malformed CSV: {e}"))),
        None => return Err(ImportError::Empty),
    };
    let format = Format::detect(&header).ok_or_else(|| ImportError::UnknownHeader(excerpt(&header.join(","))))?;
    let fixed_layer = if format.has_layer_column() {
        None
    } else {
        let layer = target.layer.ok_or_else(|| ImportError::LayerRequired {
            format: format.as_str(),
            valid: valid_layers(target.layers),
        })?;
        if !target.layers.contains_key(layer) {
            return Err(ImportError::UnknownTargetLayer(layer.into(), valid_layers(target.layers)));
        }
        Some(layer.to_string())
    };

    let mut rows = Vec::new();
    let mut skipped_layers = BTreeMap::new();
    let mut seen = HashSet::new();
    for record in records {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            line_error(line, format!("malformed CSV: {e}"))
        })?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue; // blank line
        }
        if record.len() < header.len() {
            return Err(line_error(line, format!("expected {} columns, found {}", header.len(), record.len())));
        }
        let field = |i: usize| record.get(i).unwrap_or("").trim();
        let (file_layer, unit_field, labels, score_field, extra): (Option<&str>, &str, Vec<&str>, Option<&str>, _) =
            match format {
                Format::ClipDissect => (Some(field(0)), field(1), vec![field(2)], Some(field(3)), None),
                Format::Milan => (Some(field(0)), field(1), vec![field(2)], None, None),
                Format::NetDissectTally => {
                    (None, field(0), vec![field(2)], Some(field(3)), Some(serde_json::json!({ "category": field(1) })))
                }
                Format::DndTop3 => (None, field(0), vec![field(1), field(2), field(3)], None, None),
                Format::Dnd => (None, field(0), vec![field(1)], None, None),
            };
        let layer = match (file_layer, &fixed_layer) {
            (Some(name), _) => {
                if name.is_empty() {
                    return Err(line_error(line, "empty layer name"));
                }
                match target.layer_mapping.get(name) {
                    Some(mapped) if target.layers.contains_key(mapped.as_str()) => mapped.clone(),
                    Some(mapped) => {
                        return Err(line_error(
                            line,
                            format!(
                                "layer `{}` is mapped to `{}`, which is not a layer of this model (valid: {})",
                                excerpt(name),
                                excerpt(mapped),
                                valid_layers(target.layers)
                            ),
                        ))
                    }
                    None if target.layers.contains_key(name) => name.to_string(),
                    None if target.skip_unknown_layers => {
                        *skipped_layers.entry(name.to_string()).or_default() += 1;
                        continue;
                    }
                    None => {
                        return Err(line_error(
                            line,
                            format!(
                                "layer `{}` is not a layer of this model (valid: {}); map it to one of them, or \
                                 skip the rows of layers the model lacks",
                                excerpt(name),
                                valid_layers(target.layers)
                            ),
                        ))
                    }
                }
            }
            (None, Some(l)) => l.clone(),
            (None, None) => unreachable!("formats without a layer column have a fixed layer"),
        };
        let raw_unit: i64 = unit_field
            .parse()
            .map_err(|_| line_error(line, format!("unit `{}` is not a whole number", excerpt(unit_field))))?;
        // NetDissect-Lite numbers units from 1.
        let unit = if format == Format::NetDissectTally { raw_unit - 1 } else { raw_unit };
        let channels = target.layers[&layer];
        if unit < 0 || unit as u64 >= channels as u64 {
            let shown = if format == Format::NetDissectTally {
                format!("unit {raw_unit} (1-based) is outside layer `{layer}`, which has units 1..={channels}")
            } else {
                format!(
                    "unit {raw_unit} is outside layer `{layer}`, which has units 0..={}",
                    channels.saturating_sub(1)
                )
            };
            return Err(line_error(line, shown));
        }
        let score = match score_field {
            None | Some("") => None,
            Some(s) => {
                let v: f64 =
                    s.parse().map_err(|_| line_error(line, format!("score `{}` is not a number", excerpt(s))))?;
                if !v.is_finite() {
                    return Err(line_error(line, format!("score `{}` is not a finite number", excerpt(s))));
                }
                Some(v)
            }
        };
        if !seen.insert((layer.clone(), unit)) {
            return Err(line_error(line, format!("unit {raw_unit} of layer `{layer}` appears twice")));
        }
        for (i, text) in labels.iter().enumerate() {
            // DnD's top-3 may hold fewer than three labels (near-duplicates are dropped).
            if text.is_empty() && i > 0 {
                continue;
            }
            if text.is_empty() {
                return Err(line_error(line, format!("label {} is empty", i + 1)));
            }
            check_label_length(text).map_err(|e| line_error(line, format!("label {}: {e}", i + 1)))?;
            rows.push(LabelRow {
                layer: layer.clone(),
                unit: unit as u32,
                rank: (i + 1) as u8,
                text: text.to_string(),
                score,
                extra: extra.clone(),
            });
        }
    }
    if rows.is_empty() && !skipped_layers.is_empty() {
        return Err(ImportError::OnlyUnknownLayers(describe_skipped(&skipped_layers)));
    }
    if rows.is_empty() {
        return Err(ImportError::NoRows);
    }
    Ok(ParsedFile { format, rows, skipped_layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/labels");

    fn resnet50_layers() -> HashMap<String, usize> {
        [("conv1", 64), ("layer1", 256), ("layer2", 512), ("layer3", 1024), ("layer4", 2048), ("fc", 1000)]
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect()
    }

    fn parse_with(bytes: &[u8], layer: Option<&str>, mapping: &[(&str, &str)]) -> Result<ParsedFile, ImportError> {
        let layers = resnet50_layers();
        let mapping: BTreeMap<String, String> = mapping.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        parse(bytes, &ImportTarget { layers: &layers, layer_mapping: &mapping, layer, skip_unknown_layers: false })
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }

    #[test]
    fn long_labels_and_long_headers_are_refused_with_a_bounded_message() {
        let long = "x".repeat(MAX_LABEL_CHARS + 1);
        let file = format!("layer,unit,description\nconv1,0,red\nconv1,1,{long}\n");
        let e = parse_with(file.as_bytes(), None, &[]).unwrap_err().to_string();
        assert!(e.contains("line 3: label 1: a label is 501 characters long; at most 500"), "{e}");
        assert!(e.len() < 200, "the message does not quote the label: {} bytes", e.len());
        let fits = format!("layer,unit,description\nconv1,0,{}\n", "y".repeat(MAX_LABEL_CHARS));
        assert!(parse_with(fits.as_bytes(), None, &[]).is_ok());
        let header = format!("{}\n1\n", "h".repeat(100_000));
        let e = parse_with(header.as_bytes(), None, &[]).unwrap_err().to_string();
        assert!(e.contains("unrecognised header `hhh") && e.contains("…`") && e.len() < 1_000, "{} bytes", e.len());
    }

    #[test]
    fn real_clip_dissect_sample() {
        let p = parse_with(&fixture("sample_resnet50_imagenet_broden.csv"), None, &[]).unwrap();
        assert_eq!(p.format, Format::ClipDissect);
        assert_eq!(p.rows.len(), 40);
        assert_eq!(
            p.rows[0],
            LabelRow {
                layer: "conv1".into(),
                unit: 0,
                rank: 1,
                text: "red".into(),
                score: Some(0.25616455),
                extra: None
            }
        );
    }

    #[test]
    fn real_milan_sample() {
        let p = parse_with(&fixture("sample_m_base_resnet50_imagenet.csv"), None, &[]).unwrap();
        assert_eq!(p.format, Format::Milan);
        assert_eq!(p.rows.len(), 40);
        assert_eq!((p.rows[1].unit, p.rows[1].text.as_str(), p.rows[1].score), (1, "Neon green", None));
    }

    #[test]
    fn real_netdissect_tally_is_one_based() {
        let p = parse_with(&fixture("sample_resnet50_imagenet_layer4.csv"), Some("layer4"), &[]).unwrap();
        assert_eq!(p.format, Format::NetDissectTally);
        let first = &p.rows[0];
        assert_eq!((first.unit, first.text.as_str(), first.score), (0, "body", Some(0.042096571)));
        assert_eq!(first.extra, Some(serde_json::json!({ "category": "part" })));
        // Without a layer it asks for one, naming the choices.
        let e = parse_with(&fixture("sample_resnet50_imagenet_layer4.csv"), None, &[]).unwrap_err();
        assert!(e.to_string().contains("layer4"), "{e}");
    }

    /// The public ResNet-50 file has `conv1` rows; a model exported without `conv1` takes the
    /// rest when asked to skip, with the left-out rows counted, and a mapping onto a layer the
    /// model lacks names that layer.
    #[test]
    fn rows_of_layers_the_model_lacks_are_skipped_only_when_asked_and_counted() {
        let mut layers = resnet50_layers();
        layers.remove("conv1");
        // The public sample (conv1 rows only), with two rows of a layer the model has.
        let mut bytes = fixture("sample_resnet50_imagenet_broden.csv");
        bytes.extend_from_slice(b"layer4,0,dog,0.3\nlayer4,1,cat,0.2\n");
        let no_mapping = BTreeMap::new();
        let read = |skip: bool, mapping: &BTreeMap<String, String>| {
            let target =
                ImportTarget { layers: &layers, layer_mapping: mapping, layer: None, skip_unknown_layers: skip };
            parse(&bytes, &target)
        };
        let e = read(false, &no_mapping).unwrap_err().to_string();
        assert!(e.contains("layer `conv1` is not a layer") && e.contains("skip the rows"), "{e}");
        let all = parse_with(&bytes, None, &[]).unwrap();
        let kept = read(true, &no_mapping).unwrap();
        let conv1 = all.rows.iter().filter(|r| r.layer == "conv1").count();
        assert!(conv1 > 0 && kept.rows.len() == 2 && all.rows.len() == conv1 + 2, "{conv1} of {}", all.rows.len());
        assert_eq!(kept.skipped_layers, BTreeMap::from([("conv1".to_string(), conv1)]));
        assert!(kept.rows.iter().all(|r| r.layer != "conv1"));
        assert_eq!(describe_skipped(&kept.skipped_layers), format!("`conv1` ({conv1} rows)"));

        let bad_map = BTreeMap::from([("conv1".to_string(), "stem".to_string())]);
        let e = read(true, &bad_map).unwrap_err().to_string();
        assert!(e.contains("mapped to `stem`, which is not a layer of this model"), "{e}");

        // The public sample alone has nothing this model takes.
        let target =
            ImportTarget { layers: &layers, layer_mapping: &no_mapping, layer: None, skip_unknown_layers: true };
        let e = parse(&fixture("sample_resnet50_imagenet_broden.csv"), &target).unwrap_err().to_string();
        assert!(e.contains(&format!("no row is of a layer of this model (left out: `conv1` ({conv1} rows))")), "{e}");
    }

    #[test]
    fn real_dnd_samples() {
        let p = parse_with(&fixture("sample_resnet50_imagenet_broden_layer4.csv"), Some("layer4"), &[]).unwrap();
        assert_eq!(p.format, Format::DndTop3);
        // Line 10 has only two labels: rank 3 is absent, not an empty label.
        let unit_of_line_10 = p.rows.iter().filter(|r| r.rank == 1).nth(8).unwrap().unit;
        let ranks: Vec<u8> = p.rows.iter().filter(|r| r.unit == unit_of_line_10).map(|r| r.rank).collect();
        assert_eq!(ranks, [1, 2]);
        assert_eq!(
            p.rows[..3].iter().map(|r| (r.unit, r.rank, r.text.as_str())).collect::<Vec<_>>(),
            [
                (29, 1, "spiral and circular objects"),
                (29, 2, "circular objects/structures"),
                (29, 3, "objects and environments")
            ]
        );
        let p = parse_with(&fixture("sample_resnet50_imagenet_broden_fc.csv"), Some("fc"), &[]).unwrap();
        assert_eq!(p.format, Format::Dnd);
        assert_eq!((p.rows[2].unit, p.rows[2].text.as_str()), (2, "white shark in water"));
    }

    #[test]
    fn bom_crlf_and_quoted_commas() {
        let text = "\u{feff}layer,unit,description\r\nconv1,0,\"red, orange and yellow\"\r\nconv1,1,\"a \"\"quoted\"\" word\"\r\n";
        let p = parse_with(text.as_bytes(), None, &[]).unwrap();
        assert_eq!(p.rows[0].text, "red, orange and yellow");
        assert_eq!(p.rows[1].text, "a \"quoted\" word");
    }

    #[test]
    fn layer_mapping_renames_file_layers() {
        let text = b"layer,unit,description\nblock4,3,stripes\n";
        let e = parse_with(text, None, &[]).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("block4") && e.contains("map it"), "{e}");
        let p = parse_with(text, None, &[("block4", "layer4")]).unwrap();
        assert_eq!(p.rows[0].layer, "layer4");
    }

    #[test]
    fn broken_files_name_the_line_and_the_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"   \n\n", "empty"),
            (b"foo,bar\n1,2\n", "unrecognised header"),
            (b"layer,unit,description\n", "no label rows"),
            (b"layer,unit,description\nconv1,zero,red\n", "line 2: unit `zero` is not a whole number"),
            (b"layer,unit,description\nconv1,1.5,red\n", "line 2: unit `1.5`"),
            (b"layer,unit,description\nconv1,0,red\nconv1,64,blue\n", "line 3: unit 64 is outside layer `conv1`"),
            (b"layer,unit,description\nconv1,-1,red\n", "line 2: unit -1 is outside"),
            (b"layer,unit,description,similarity\nconv1,0,red,high\n", "line 2: score `high` is not a number"),
            (b"layer,unit,description,similarity\nconv1,0,red,NaN\n", "line 2: score `NaN` is not a finite number"),
            (b"layer,unit,description\nconv1,0\n", "line 2: expected 3 columns, found 2"),
            (b"layer,unit,description\nconv1,0,\n", "line 2: label 1 is empty"),
            (b"Neuron ID,Label 1,Label 2,Label 3\n5,,a,b\n", "line 2: label 1 is empty"),
            (b"layer,unit,description\nconv1,0,red\nconv1,0,blue\n", "line 3: unit 0 of layer `conv1` appears twice"),
            (b"layer,unit,description\nconv1,0,r\xffd\n", "line 2: not valid UTF-8"),
            (b"unit,category,label,score\n0,object,dog,0.1\n", "unit 0 (1-based) is outside layer `layer4`"),
            (b"header\x07with,a bell\n", "unrecognised header `header\\u{7}with,a bell`"),
        ];
        for (bytes, expected) in cases {
            let err = parse_with(bytes, Some("layer4"), &[]).map(|p| format!("{p:?}")).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "input {:?}: got `{err}`, expected `{expected}`",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn formats_without_layer_column_reject_an_unknown_target_layer() {
        let e = parse_with(b"Neuron ID,label\n0,dogs\n", Some("layer9"), &[]).unwrap_err().to_string();
        assert!(e.contains("layer9") && e.contains("valid: conv1, fc, layer1"), "{e}");
    }

    /// Fuzz: mutated label files of every format (the five public samples, cut to ten rows)
    /// never panic the importer; what it accepts fits the model (known layer, unit in range,
    /// rank 1-3, bounded text); what it refuses is said in a bounded message.
    #[test]
    fn fuzz_label_files() {
        let layers = resnet50_layers();
        let mapping: BTreeMap<String, String> = [("res4".to_string(), "layer4".to_string())].into();
        let seeds: Vec<Vec<u8>> = [
            "sample_m_base_resnet50_imagenet.csv",
            "sample_resnet50_imagenet_broden.csv",
            "sample_resnet50_imagenet_broden_fc.csv",
            "sample_resnet50_imagenet_broden_layer4.csv",
            "sample_resnet50_imagenet_layer4.csv",
        ]
        .iter()
        .map(|name| {
            let text = String::from_utf8(fixture(name)).unwrap();
            text.lines().take(11).map(|l| format!("{l}\n")).collect::<String>().into_bytes()
        })
        .collect();
        let dictionary: [&[u8]; 10] = [
            b"layer,unit,description",
            b"Neuron ID",
            b"Label 1",
            b"similarity",
            b"unit,category,label,score",
            b"conv1",
            b"layer4",
            b"res4",
            b"\xef\xbb\xbf",
            b"\"\"",
        ];
        dissect::fuzz::run("label files", &seeds, &dictionary, dissect::fuzz::DEFAULT_ITERATIONS, |bytes| {
            for layer in [None, Some("layer4")] {
                let target =
                    ImportTarget { layers: &layers, layer_mapping: &mapping, layer, skip_unknown_layers: false };
                match parse(bytes, &target) {
                    Ok(parsed) => {
                        for r in &parsed.rows {
                            let Some(&units) = layers.get(&r.layer) else {
                                return Err(format!("row for unknown layer `{}` accepted", r.layer));
                            };
                            if r.unit as usize >= units || !(1..=3).contains(&r.rank) {
                                return Err(format!("unit {} rank {} accepted for {}", r.unit, r.rank, r.layer));
                            }
                            if r.text.chars().count() > MAX_LABEL_CHARS {
                                return Err("an over-long label accepted".into());
                            }
                        }
                    }
                    Err(e) => dissect::fuzz::bounded_message(&e.to_string(), 400)?,
                }
            }
            Ok(())
        });
    }
}
