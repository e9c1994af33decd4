//! User-supplied target networks: a TorchScript file plus a small JSON manifest.
//!
//! # The contract
//!
//! The model file is a TorchScript archive (what `torch.jit.trace(...)` / `torch.jit.script(...)`
//! followed by `.save(path)` writes; `tools/export_torchscript.py` makes one from a torchvision
//! model). Its `forward(x)` takes one float batch `x` of shape N×3×H×W, already resized, cropped
//! and normalised as the manifest says, and returns the activations of the dissectable layers:
//!
//! - a **tuple or list of tensors, one per manifest layer, in the manifest's order** (the usual
//!   case), or
//! - a dict `{layer name: tensor}` whose keys include every manifest layer name (what
//!   `torchvision.models.feature_extraction.create_feature_extractor` returns), or
//! - a single tensor when the manifest declares exactly one layer.
//!
//! Layers of kind `conv` must come back 4-D (N×C×H×W); `linear` and `classifier` layers 2-D (N×C).
//! At load time one forward pass on a 1×3×H×W batch of zeros checks all of this and discovers each
//! layer's channel count and spatial size, so a manifest that does not match its module is refused
//! with a message listing what the module returned next to what the manifest declares.
//!
//! # The manifest
//!
//! JSON, found beside the model (`resnet50.pt` → `resnet50.json`, `resnet50.manifest.json` or
//! `resnet50.pt.json`) or given explicitly:
//!
//! ```json
//! {
//!   "name": "resnet50-imagenet",
//!   "layers": [
//!     {"name": "layer1", "kind": "conv"}, {"name": "layer2", "kind": "conv"},
//!     {"name": "layer3", "kind": "conv"}, {"name": "layer4", "kind": "conv"},
//!     {"name": "fc", "kind": "classifier"}
//!   ],
//!   "input_size": [224, 224],
//!   "resize_shorter": 256,
//!   "mean": [123.675, 116.28, 103.53],
//!   "std": [58.395, 57.12, 57.375],
//!   "class_names_file": "imagenet_classes.txt"
//! }
//! ```
//!
//! | field | required | meaning |
//! |---|---|---|
//! | `name` | yes | short model identifier |
//! | `layers` | yes | `{name, kind}` in the order `forward` returns them; kind is `conv`, `linear` or `classifier` (at most one) |
//! | `input_size` | yes | `[height, width]` of the network input, or one number for a square |
//! | `resize_shorter` | no | shorter image side before the centre crop; default `round(max(h, w) / 0.875)` (256 for 224) |
//! | `mean`, `std` | yes | per-channel R, G, B normalisation **on the 0–255 scale** (ImageNet: 0.485 × 255 = 123.675, …) |
//! | `class_names` | no | names of the classifier's outputs, one per unit |
//! | `class_names_file` | no | instead of `class_names`: a text file, one name per line (blank lines ignored), relative to the manifest |
//! | `description`, `source` | no | free text / free-form provenance object, kept but not interpreted |
//!
//! Keys starting with `_` are ignored (comments); any other unknown key is an error, so a typo such
//! as `resize_shortest` cannot silently fall back to a default.

use super::{check_image_batch, DeviceChoice, LayerInfo, LayerKind, Preprocess, TargetModel};
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Device, IValue, Kind, Tensor};

/// Crop fraction used for the default `resize_shorter` (torchvision's 224/256).
const DEFAULT_CROP_FRACTION: f64 = 0.875;

/// Manifest keys this version understands (besides `_`-prefixed comments).
const KNOWN_FIELDS: [&str; 10] = [
    "name",
    "layers",
    "input_size",
    "resize_shorter",
    "mean",
    "std",
    "class_names",
    "class_names_file",
    "description",
    "source",
];

/// One layer as the manifest declares it (channels and spatial size are discovered at load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestLayer {
    pub name: String,
    pub kind: LayerKind,
}

/// A parsed and validated model manifest (see the module documentation for the schema).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    /// In the order the module's `forward` returns them.
    pub layers: Vec<ManifestLayer>,
    pub preprocess: Preprocess,
    /// Class names, read from `class_names` or `class_names_file`.
    pub class_names: Option<Vec<String>>,
    pub description: Option<String>,
    /// Free-form provenance (e.g. what the export script was given), kept verbatim.
    pub source: Option<Value>,
}

impl Manifest {
    /// Reads and validates a JSON manifest file; `class_names_file` is resolved against its folder.
    pub fn from_file(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_json(&text, path)
    }

    /// Parses a JSON manifest. `path` is used in error messages and to resolve a relative
    /// `class_names_file` (against its parent folder); the file itself is not read.
    pub fn from_json(text: &str, path: &Path) -> Result<Manifest> {
        let err = |reason: String| Error::Manifest { path: path.to_path_buf(), reason };
        let value: Value = serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(err(format!("expected a JSON object at the top level, got {}", json_type(&value))));
        };
        for key in obj.keys() {
            if !key.starts_with('_') && !KNOWN_FIELDS.contains(&key.as_str()) {
                return Err(err(format!("unknown field {}; known fields: {}", quote(key), KNOWN_FIELDS.join(", "))));
            }
        }

        let name = match required(&obj, "name").map_err(err)? {
            Value::String(s) if s.trim().chars().count() > MAX_NAME_CHARS => {
                let chars = s.trim().chars().count();
                return Err(err(format!(
                    "field `name` {} is {chars} characters long; at most {MAX_NAME_CHARS}",
                    quote(s.trim())
                )));
            }
            Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
            other => return Err(err(format!("field `name` must be a non-empty string, got {}", show(other)))),
        };
        let layers = parse_layers(required(&obj, "layers").map_err(err)?).map_err(err)?;
        let (h, w) = parse_input_size(required(&obj, "input_size").map_err(err)?).map_err(err)?;
        let resize_shorter = match obj.get("resize_shorter") {
            None | Some(Value::Null) => (h.max(w) as f64 / DEFAULT_CROP_FRACTION).round() as u32,
            Some(v) => positive_u32(v).ok_or_else(|| {
                err(format!("field `resize_shorter` must be a positive integer (pixels), got {}", show(v)))
            })?,
        };
        let mean = parse_triple(required(&obj, "mean").map_err(err)?, "mean").map_err(err)?;
        let std = parse_triple(required(&obj, "std").map_err(err)?, "std").map_err(err)?;
        if std.iter().any(|&s| s <= 0.0) {
            return Err(err(format!("field `std` must be positive, got {std:?}")));
        }
        if std.iter().any(|&s| s < 1.0) {
            return Err(err(format!(
                "field `std` is {std:?}, but mean and std are on the 0–255 pixel scale; multiply values \
                 given for 0–1 inputs by 255 (ImageNet: mean [123.675, 116.28, 103.53], std [58.395, 57.12, 57.375])"
            )));
        }

        let class_names = match (obj.get("class_names"), obj.get("class_names_file")) {
            (Some(v), Some(f)) if !v.is_null() && !f.is_null() => {
                return Err(err("give either `class_names` or `class_names_file`, not both".into()))
            }
            (Some(v), _) if !v.is_null() => Some(parse_class_names(v).map_err(err)?),
            (_, Some(f)) if !f.is_null() => {
                let Value::String(file) = f else {
                    return Err(err(format!("field `class_names_file` must be a path string, got {}", show(f))));
                };
                let file_path = resolve_relative(path, Path::new(file));
                let text = read_class_names(&file_path).map_err(|e| {
                    err(format!("cannot read `class_names_file` {}: {e}", quote(&file_path.to_string_lossy())))
                })?;
                let names: Vec<String> =
                    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
                if names.is_empty() {
                    return Err(err(format!("`class_names_file` {} holds no names", file_path.display())));
                }
                Some(names)
            }
            _ => None,
        };
        let classifiers = layers.iter().filter(|l| l.kind == LayerKind::Classifier).count();
        if classifiers > 1 {
            return Err(err("at most one layer may have kind `classifier`".into()));
        }
        if class_names.is_some() && classifiers == 0 {
            return Err(err("class names are given but no layer has kind `classifier`".into()));
        }

        let description = match obj.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => return Err(err(format!("field `description` must be a string, got {}", show(v)))),
        };
        Ok(Manifest {
            name,
            layers,
            preprocess: Preprocess { input_size: (h, w), resize_shorter, mean, std },
            class_names,
            description,
            source: obj.get("source").filter(|v| !v.is_null()).cloned(),
        })
    }

    /// The manifest as JSON in the documented schema (class names inlined), e.g. to store it
    /// next to a registered model.
    pub fn to_json(&self) -> Value {
        let p = &self.preprocess;
        let mut obj = Map::new();
        obj.insert("name".into(), self.name.clone().into());
        let layers: Vec<Value> =
            self.layers.iter().map(|l| serde_json::json!({ "name": l.name, "kind": l.kind.as_str() })).collect();
        obj.insert("layers".into(), layers.into());
        obj.insert("input_size".into(), serde_json::json!([p.input_size.0, p.input_size.1]));
        obj.insert("resize_shorter".into(), p.resize_shorter.into());
        obj.insert("mean".into(), serde_json::json!(p.mean));
        obj.insert("std".into(), serde_json::json!(p.std));
        if let Some(names) = &self.class_names {
            obj.insert("class_names".into(), serde_json::json!(names));
        }
        if let Some(d) = &self.description {
            obj.insert("description".into(), d.clone().into());
        }
        if let Some(s) = &self.source {
            obj.insert("source".into(), s.clone());
        }
        Value::Object(obj)
    }

    /// The manifest files looked for beside `model`, in order: `X.json`, `X.manifest.json`,
    /// `X.pt.json` for a model file `X.pt`.
    pub fn candidates_beside(model: &Path) -> Vec<PathBuf> {
        let mut out = vec![model.with_extension("json"), model.with_extension("manifest.json")];
        let mut full = model.as_os_str().to_owned();
        full.push(".json");
        out.push(PathBuf::from(full));
        out.dedup();
        out
    }

    /// The first existing manifest beside `model` (see [`Self::candidates_beside`]).
    pub fn find_beside(model: &Path) -> Result<PathBuf> {
        let tried = Self::candidates_beside(model);
        tried
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or_else(|| Error::ManifestNotFound { model: model.to_path_buf(), tried })
    }
}

/// How to load a TorchScript model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TorchScriptOptions {
    pub device: DeviceChoice,
}

/// How the module's `forward` hands back its outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputStyle {
    /// Tuple, list or single tensor, in manifest order.
    Ordered,
    /// Dict keyed by layer name.
    Named,
}

/// A user-supplied TorchScript network described by a [`Manifest`].
#[derive(Debug)]
pub struct TorchScriptModel {
    module: tch::CModule,
    manifest: Manifest,
    layers: Vec<LayerInfo>,
    device: Device,
    style: OutputStyle,
    model_path: PathBuf,
    manifest_path: PathBuf,
    sha256: String,
}

impl TorchScriptModel {
    /// Loads `model` with the manifest found beside it (see [`Manifest::find_beside`]).
    pub fn load(model: &Path, opts: TorchScriptOptions) -> Result<Self> {
        let manifest_path = Manifest::find_beside(model)?;
        Self::load_with_manifest(model, &manifest_path, opts)
    }

    /// Loads `model` described by the manifest file `manifest_path`.
    pub fn load_with_manifest(model: &Path, manifest_path: &Path, opts: TorchScriptOptions) -> Result<Self> {
        let manifest = Manifest::from_file(manifest_path)?;
        Self::load_with(model, manifest, manifest_path, opts)
    }

    /// Loads `model` with an already parsed manifest; `manifest_path` only names it in errors.
    pub fn load_with(model: &Path, manifest: Manifest, manifest_path: &Path, opts: TorchScriptOptions) -> Result<Self> {
        let device = opts.device.resolve()?;
        let scan = scan_file(model)?;
        if !scan.magic.starts_with(b"PK\x03\x04") {
            return Err(Error::NotTorchScript { path: model.to_path_buf(), reason: describe_non_zip(&scan.magic) });
        }
        let mut module = tch::CModule::load_on_device(model, device).map_err(|e| {
            if scan.has_code {
                Error::TorchScriptLoad { path: model.to_path_buf(), reason: torch_message(&e) }
            } else {
                Error::NotTorchScript {
                    path: model.to_path_buf(),
                    reason: "it is a zip archive without TorchScript code (no `code/` folder), probably a \
                             torch.save() checkpoint or state dict"
                        .into(),
                }
            }
        })?;
        // A module without a `training` attribute (e.g. one built by tracing in C++/Rust) has no
        // train/eval distinction, and libtorch refuses `eval()` on it; nothing to switch then.
        let _ = module.f_set_eval();

        let mismatch = |reason: String| Error::ManifestMismatch {
            model: model.to_path_buf(),
            manifest: manifest_path.to_path_buf(),
            reason,
        };
        let (h, w) = manifest.preprocess.input_size;
        let probe = Tensor::zeros([1, 3, h as i64, w as i64], (Kind::Float, device));
        let output =
            tch::no_grad(|| module.forward_is(&[IValue::Tensor(probe)])).map_err(|e| Error::TorchScriptLoad {
                path: model.to_path_buf(),
                reason: format!(
                    "its forward failed on a 1×3×{h}×{w} batch of zeros (the input_size of manifest {}): {}",
                    manifest_path.display(),
                    torch_message(&e)
                ),
            })?;
        let (style, outputs) = match_outputs(output, &manifest.layers, 1).map_err(mismatch)?;
        let layers: Vec<LayerInfo> = manifest
            .layers
            .iter()
            .zip(&outputs)
            .map(|(l, t)| {
                let s = t.size();
                LayerInfo {
                    name: l.name.clone(),
                    kind: l.kind,
                    channels: s[1] as usize,
                    spatial: (s.len() == 4).then(|| (s[2] as usize, s[3] as usize)),
                }
            })
            .collect();
        if let (Some(names), Some(classifier)) =
            (&manifest.class_names, layers.iter().find(|l| l.kind == LayerKind::Classifier))
        {
            if names.len() != classifier.channels {
                return Err(Error::Manifest {
                    path: manifest_path.to_path_buf(),
                    reason: format!(
                        "{} class names are given but classifier layer `{}` has {} outputs",
                        names.len(),
                        classifier.name,
                        classifier.channels
                    ),
                });
            }
        }
        Ok(TorchScriptModel {
            module,
            manifest,
            layers,
            device,
            style,
            model_path: model.to_path_buf(),
            manifest_path: manifest_path.to_path_buf(),
            sha256: scan.sha256,
        })
    }

    /// Hex sha256 of the model file's bytes as read at load time (for fingerprints and caches).
    pub fn file_sha256(&self) -> &str {
        &self.sha256
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    pub fn manifest_path(&self) -> &Path {
        &self.manifest_path
    }
}

impl TargetModel for TorchScriptModel {
    fn name(&self) -> &str {
        &self.manifest.name
    }

    fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    fn preprocessing(&self) -> Preprocess {
        self.manifest.preprocess
    }

    fn class_names(&self) -> Option<&[String]> {
        self.manifest.class_names.as_deref()
    }

    fn device(&self) -> Device {
        self.device
    }

    fn forward_layers(&self, batch: &Tensor, layers: &[usize]) -> Result<Vec<Tensor>> {
        if let Some(&index) = layers.iter().find(|&&l| l >= self.layers.len()) {
            return Err(Error::LayerIndex { model: self.name().to_string(), index, count: self.layers.len() });
        }
        check_image_batch(self.name(), batch)?;
        if layers.is_empty() {
            return Ok(Vec::new());
        }
        let n = batch.size()[0];
        let x = batch.to_device(self.device).to_kind(Kind::Float);
        // libtorch failures stay `Error::Torch` (without the C++ backtrace) so that callers can
        // still recognise e.g. out-of-memory and retry with a smaller batch.
        let output = tch::no_grad(|| self.module.forward_is(&[IValue::Tensor(x)])).map_err(|e| {
            Error::Torch(tch::TchError::Torch(format!(
                "TorchScript model `{}`: forward failed: {}",
                self.name(),
                torch_message(&e)
            )))
        })?;
        let (style, outputs) = match_outputs(output, &self.manifest.layers, n)
            .map_err(|reason| Error::TorchScriptRun { model: self.name().to_string(), reason })?;
        debug_assert_eq!(style, self.style);
        Ok(layers.iter().map(|&l| outputs[l].shallow_clone()).collect())
    }
}

/// What reading the model file once yields.
struct FileScan {
    sha256: String,
    /// The first bytes (up to 16).
    magic: Vec<u8>,
    /// Whether the bytes `code/` (TorchScript source folder in the archive) occur anywhere.
    has_code: bool,
}

/// Hashes the file and notes its magic bytes and whether it holds TorchScript code, in one pass.
fn scan_file(path: &Path) -> Result<FileScan> {
    const NEEDLE: &[u8] = b"/code/";
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut magic = Vec::new();
    let mut has_code = false;
    // The last NEEDLE.len() - 1 bytes of the previous chunk, so a match across chunks is found.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        hasher.update(chunk);
        if magic.len() < 16 {
            magic.extend(chunk.iter().take(16 - magic.len()));
        }
        if !has_code {
            tail.extend_from_slice(&chunk[..chunk.len().min(NEEDLE.len())]);
            has_code = contains(&tail, NEEDLE) || contains(chunk, NEEDLE);
            let keep = chunk.len().min(NEEDLE.len() - 1);
            tail = chunk[chunk.len() - keep..].to_vec();
        }
    }
    Ok(FileScan { sha256: hex::encode(hasher.finalize()), magic, has_code })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Why a file that is not a zip archive is not TorchScript, in words.
fn describe_non_zip(magic: &[u8]) -> String {
    if magic.is_empty() {
        "the file is empty".into()
    } else if magic.starts_with(&[0x80]) && magic.len() > 1 && magic[1] <= 5 {
        "it is a legacy torch.save() pickle (a checkpoint or state dict), not a zip archive".into()
    } else if magic.iter().all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace()) {
        "it looks like a text file, not a zip archive".into()
    } else {
        "it is not a zip archive (TorchScript files are zip archives starting with `PK`)".into()
    }
}

/// libtorch's message without the C++ backtrace it appends.
fn torch_message(e: &tch::TchError) -> String {
    let text = match e {
        tch::TchError::Torch(s) => s.clone(),
        other => other.to_string(),
    };
    let cut = text.find("\nException raised from").or_else(|| text.find("Exception raised from")).unwrap_or(text.len());
    text[..cut].trim().to_string()
}

/// Lines up `forward`'s output with the manifest layers and checks counts, ranks and batch size.
fn match_outputs(output: IValue, layers: &[ManifestLayer], batch: i64) -> Result<(OutputStyle, Vec<Tensor>), String> {
    let (style, tensors) = match output {
        IValue::Tensor(t) => (OutputStyle::Ordered, vec![t]),
        IValue::TensorList(v) => (OutputStyle::Ordered, v),
        IValue::Tuple(v) | IValue::GenericList(v) => {
            let mut out = Vec::with_capacity(v.len());
            for (i, item) in v.into_iter().enumerate() {
                match item {
                    IValue::Tensor(t) => out.push(t),
                    other => {
                        return Err(format!(
                            "forward must return tensors, but output {i} has type {}; the manifest declares {}",
                            ivalue_type(&other),
                            describe_layers(layers)
                        ))
                    }
                }
            }
            (OutputStyle::Ordered, out)
        }
        IValue::GenericDict(entries) => {
            let mut named = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                match (k, v) {
                    (IValue::String(k), IValue::Tensor(t)) => named.push((k, t)),
                    (k, v) => {
                        return Err(format!(
                            "forward returned a dict, but not of string → tensor (found a {} → {} entry)",
                            ivalue_type(&k),
                            ivalue_type(&v)
                        ))
                    }
                }
            }
            let keys: Vec<String> = named.iter().map(|(k, _)| k.clone()).collect();
            let mut out = Vec::with_capacity(layers.len());
            for l in layers {
                match named.iter().position(|(k, _)| *k == l.name) {
                    Some(i) => out.push(named[i].1.shallow_clone()),
                    None => {
                        return Err(format!(
                            "forward returned a dict with keys [{}] but no `{}`; the manifest declares {}",
                            keys.join(", "),
                            l.name,
                            describe_layers(layers)
                        ))
                    }
                }
            }
            (OutputStyle::Named, out)
        }
        other => {
            return Err(format!(
                "forward returned a value of type {}, expected a tuple of tensors; the manifest declares {}",
                ivalue_type(&other),
                describe_layers(layers)
            ))
        }
    };

    let returned = || format!("forward returned {}", describe_tensors(&tensors));
    if tensors.len() != layers.len() {
        return Err(format!(
            "{}, but the manifest declares {}; list the layers in the order forward returns them",
            returned(),
            describe_layers(layers)
        ));
    }
    let mut problems = Vec::new();
    for (i, (l, t)) in layers.iter().zip(&tensors).enumerate() {
        let s = t.size();
        let want = if l.kind.is_spatial() { 4 } else { 2 };
        if s.len() != want {
            problems.push(format!(
                "layer `{}` is declared {} (expects a {want}-D {} output) but output {i} is {}-D {}",
                l.name,
                l.kind.as_str(),
                if want == 4 { "N×C×H×W" } else { "N×C" },
                s.len(),
                shape(&s)
            ));
        } else if s[0] != batch {
            problems.push(format!("output {i} (`{}`) has batch size {} for an input batch of {batch}", l.name, s[0]));
        } else if s.iter().any(|&d| d == 0) {
            problems.push(format!("output {i} (`{}`) is empty ({})", l.name, shape(&s)));
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "{}; {}; the manifest declares {}",
            problems.join("; "),
            returned(),
            describe_layers(layers)
        ));
    }
    Ok((style, tensors))
}

fn shape(s: &[i64]) -> String {
    if s.is_empty() {
        "a scalar".into()
    } else {
        s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×")
    }
}

fn describe_tensors(ts: &[Tensor]) -> String {
    let shapes: Vec<String> = ts.iter().map(|t| shape(&t.size())).collect();
    format!("{} tensor{} [{}]", ts.len(), if ts.len() == 1 { "" } else { "s" }, shapes.join(", "))
}

fn describe_layers(layers: &[ManifestLayer]) -> String {
    let items: Vec<String> = layers.iter().map(|l| format!("{} ({})", l.name, l.kind.as_str())).collect();
    format!("{} layer{} [{}]", layers.len(), if layers.len() == 1 { "" } else { "s" }, items.join(", "))
}

fn ivalue_type(v: &IValue) -> &'static str {
    match v {
        IValue::None => "None",
        IValue::Tensor(_) => "tensor",
        IValue::Double(_) => "float",
        IValue::Int(_) => "int",
        IValue::Bool(_) => "bool",
        IValue::Tuple(_) => "tuple",
        IValue::IntList(_) => "list of ints",
        IValue::DoubleList(_) => "list of floats",
        IValue::BoolList(_) => "list of bools",
        IValue::String(_) => "string",
        IValue::StringList(_) => "list of strings",
        IValue::TensorList(_) => "list of tensors",
        IValue::GenericList(_) => "list",
        IValue::GenericDict(_) => "dict",
        IValue::Object(_) => "object",
        IValue::Device(_) => "device",
        _ => "value of an unsupported type",
    }
}

fn required<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a Value, String> {
    match obj.get(field) {
        Some(Value::Null) | None => Err(format!("missing required field `{field}`")),
        Some(v) => Ok(v),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A class-names file: a regular file of at most 4 MiB (a manifest may name any path; a device
/// or a huge file must not hang or fill the server).
fn read_class_names(path: &Path) -> std::result::Result<String, String> {
    const MAX_BYTES: u64 = 4 << 20;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_BYTES {
        return Err(format!("{} bytes; a class-names file holds at most {} MiB", meta.len(), MAX_BYTES >> 20));
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

/// Longest model or layer name accepted, in characters (every page and message shows them).
const MAX_NAME_CHARS: usize = 200;

/// A name or key from the manifest as an error quotes it: in backticks, escaped, at most 60
/// characters.
fn quote(text: &str) -> String {
    format!("`{}`", crate::error::excerpt(text, 60))
}

/// A short rendering of a JSON value for error messages.
fn show(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{} {}…", json_type(v), text.chars().take(50).collect::<String>())
    } else {
        text
    }
}

fn positive_u32(v: &Value) -> Option<u32> {
    v.as_u64().filter(|&n| n > 0 && n <= 1 << 16).map(|n| n as u32)
}

fn parse_input_size(v: &Value) -> Result<(u32, u32), String> {
    let bad = || format!("field `input_size` must be [height, width] in pixels (or one number), got {}", show(v));
    match v {
        Value::Number(_) => positive_u32(v).map(|s| (s, s)).ok_or_else(bad),
        Value::Array(a) if a.len() == 2 => match (positive_u32(&a[0]), positive_u32(&a[1])) {
            (Some(h), Some(w)) => Ok((h, w)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn parse_triple(v: &Value, field: &str) -> Result<[f32; 3], String> {
    let bad = || format!("field `{field}` must be an array of 3 numbers (R, G, B on the 0–255 scale), got {}", show(v));
    let Value::Array(a) = v else { return Err(bad()) };
    if a.len() != 3 {
        return Err(bad());
    }
    let mut out = [0f32; 3];
    for (o, x) in out.iter_mut().zip(a) {
        *o = x.as_f64().filter(|f| f.is_finite()).ok_or_else(bad)? as f32;
    }
    Ok(out)
}

fn parse_layers(v: &Value) -> Result<Vec<ManifestLayer>, String> {
    let Value::Array(items) = v else {
        return Err(format!(
            "field `layers` must be an array of {{\"name\": …, \"kind\": \"conv\"|\"linear\"|\"classifier\"}}, got {}",
            show(v)
        ));
    };
    if items.is_empty() {
        return Err("field `layers` is empty; list at least one layer the model returns".into());
    }
    let mut layers: Vec<ManifestLayer> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(o) = item else {
            return Err(format!("layers[{i}] must be an object {{\"name\": …, \"kind\": …}}, got {}", show(item)));
        };
        if let Some(k) = o.keys().find(|k| !k.starts_with('_') && *k != "name" && *k != "kind") {
            return Err(format!("layers[{i}]: unknown field {}; known fields: name, kind", quote(k)));
        }
        let name = match o.get("name") {
            Some(Value::String(s)) if s.trim().chars().count() > MAX_NAME_CHARS => {
                return Err(format!(
                    "layers[{i}]: `name` {} is {} characters long; at most {MAX_NAME_CHARS}",
                    quote(s.trim()),
                    s.trim().chars().count()
                ))
            }
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            None | Some(Value::Null) => return Err(format!("layers[{i}]: missing required field `name`")),
            Some(other) => return Err(format!("layers[{i}]: `name` must be a non-empty string, got {}", show(other))),
        };
        let kind = match o.get("kind") {
            Some(Value::String(s)) => match LayerKind::parse(s) {
                Some(kind) => kind,
                None => {
                    return Err(format!(
                        "layers[{i}] (`{name}`): kind {} is not one of conv, linear, classifier",
                        quote(s)
                    ))
                }
            },
            None | Some(Value::Null) => {
                return Err(format!(
                    "layers[{i}] (`{name}`): missing required field `kind` (conv, linear or classifier)"
                ))
            }
            Some(other) => {
                return Err(format!(
                    "layers[{i}] (`{name}`): `kind` must be one of \"conv\", \"linear\", \"classifier\", got {}",
                    show(other)
                ))
            }
        };
        if let Some(j) = layers.iter().position(|l| l.name == name) {
            return Err(format!("duplicate layer name `{name}` (layers[{j}] and layers[{i}])"));
        }
        layers.push(ManifestLayer { name, kind });
    }
    Ok(layers)
}

fn parse_class_names(v: &Value) -> Result<Vec<String>, String> {
    let bad = || format!("field `class_names` must be an array of strings, got {}", show(v));
    let Value::Array(a) = v else { return Err(bad()) };
    a.iter()
        .enumerate()
        .map(|(i, x)| match x {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!("class_names[{i}] must be a string, got {}", show(other))),
        })
        .collect()
}

/// `relative` against the folder of `base_file` (unchanged when absolute).
fn resolve_relative(base_file: &Path, relative: &Path) -> PathBuf {
    if relative.is_absolute() {
        return relative.to_path_buf();
    }
    base_file.parent().map(|d| d.join(relative)).unwrap_or_else(|| relative.to_path_buf())
}
