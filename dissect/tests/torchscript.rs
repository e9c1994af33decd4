//! User TorchScript models (`dissect::model::TorchScriptModel`), tested without Python.
//!
//! How the test modules are made:
//! - A module whose `forward` returns **several** tensors cannot come from tch's tracer:
//!   `CModule::create_by_tracing` registers each returned tensor as a separate graph output, and
//!   libtorch refuses to run or save a method with more than one return value ("Method (but not
//!   graphs in general) require a single output. Use None/Tuple for 0 or 2+ outputs"); tch has no
//!   way to pack them into a tuple. So these modules are written directly as a TorchScript archive
//!   — a zip holding `version`, `data.pkl` (the pickled module object), `constants.pkl` and
//!   `code/__torch__.py` (the TorchScript source, compiled by libtorch at load time) — whose
//!   weights are copied, as float literals, from a small `tch::nn` network built here. The test
//!   then checks the loaded module against that Rust network.
//! - A **single-output** module comes from `CModule::create_by_tracing` + `CModule::save`.

use dissect::model::{DeviceChoice, LayerKind, Manifest, TargetModel, TorchScriptModel, TorchScriptOptions};
use dissect::Error;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tch::{nn, CModule, Device, IValue, Kind, Tensor};

const H: i64 = 32;
const W: i64 = 40;

fn cpu() -> TorchScriptOptions {
    TorchScriptOptions { device: DeviceChoice::Cpu }
}

/// conv(3→4, 3×3, pad 1) → relu → conv(4→6, 3×3, stride 2, pad 1) → relu → global mean → linear(6→5).
struct TinyNet {
    vs: nn::VarStore,
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc: nn::Linear,
}

impl TinyNet {
    fn new(seed: i64) -> Self {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let conv1 = nn::conv2d(&root / "conv1", 3, 4, 3, nn::ConvConfig { padding: 1, ..Default::default() });
        let conv2 =
            nn::conv2d(&root / "conv2", 4, 6, 3, nn::ConvConfig { stride: 2, padding: 1, ..Default::default() });
        let fc = nn::linear(&root / "fc", 6, 5, Default::default());
        TinyNet { vs, conv1, conv2, fc }
    }

    /// (conv1 map, conv2 map, logits).
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor, Tensor) {
        tch::no_grad(|| {
            let a = x.apply(&self.conv1).relu();
            let b = a.apply(&self.conv2).relu();
            let c = b.mean_dim([2i64, 3].as_slice(), false, Kind::Float).apply(&self.fc);
            (a, b, c)
        })
    }

    /// TorchScript statements binding `w1, b1, w2, b2, w3, b3` to this network's weights.
    fn weight_source(&self) -> String {
        let bias = |b: &Option<Tensor>| b.as_ref().expect("bias").shallow_clone();
        [
            ("w1", self.conv1.ws.shallow_clone()),
            ("b1", bias(&self.conv1.bs)),
            ("w2", self.conv2.ws.shallow_clone()),
            ("b2", bias(&self.conv2.bs)),
            ("w3", self.fc.ws.shallow_clone()),
            ("b3", bias(&self.fc.bs)),
        ]
        .iter()
        .map(|(name, t)| format!("    {name} = {}\n", tensor_literal(t)))
        .collect()
    }
}

/// `torch.reshape(torch.tensor([...], dtype=6), [shape])` (6 = float32) with exact f32 values.
fn tensor_literal(t: &Tensor) -> String {
    let values: Vec<f32> = Vec::try_from(t.detach().flatten(0, -1)).expect("f32 values");
    let items: Vec<String> = values
        .iter()
        .map(|v| {
            let s = format!("{v:?}");
            if s.contains(['.', 'e']) {
                s
            } else {
                format!("{s}.0")
            }
        })
        .collect();
    let shape: Vec<String> = t.size().iter().map(|d| d.to_string()).collect();
    format!("torch.reshape(torch.tensor([{}], dtype=6), [{}])", items.join(", "), shape.join(", "))
}

/// Writes a TorchScript archive for a module class `TinyNet` with a `training` attribute (saved
/// as `True`, as a module exported from Python in training mode would be) and the given
/// `forward` (signature line and body, indented by 2 and 4 spaces).
fn write_torchscript(path: &Path, forward: &str) {
    let code =
        format!("class TinyNet(Module):\n  __parameters__ = []\n  __buffers__ = []\n  training : bool\n{forward}");
    // The archive layout (data.pkl, code, constants.pkl, version in a stored zip) is the one the
    // CLIP-Dissect test stand-in uses.
    dissect::clip_dissect::testing::write_torchscript_archive(path, "TinyNet", true, &code).unwrap();
}

/// The TinyNet as TorchScript returning (conv1, conv2, logits). In training mode the logits are
/// shifted by 1000, so matching the Rust network proves the loader switched to eval mode.
fn tuple_forward(net: &TinyNet) -> String {
    format!(
        "  def forward(self: __torch__.TinyNet,\n    x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:\n{}{}",
        net.weight_source(),
        "    a = torch.relu(torch.conv2d(x, w1, b1, [1, 1], [1, 1]))\n\
         \x20   b = torch.relu(torch.conv2d(a, w2, b2, [2, 2], [1, 1]))\n\
         \x20   c = torch.linear(torch.mean(b, [2, 3]), w3, b3)\n\
         \x20   if self.training:\n\
         \x20     c = torch.add(c, 1000.0)\n\
         \x20   return (a, b, c)\n"
    )
}

/// The TinyNet returning a dict {"conv1": …, "logits": …} (create_feature_extractor style).
fn dict_forward(net: &TinyNet) -> String {
    format!(
        "  def forward(self: __torch__.TinyNet,\n    x: Tensor) -> Dict[str, Tensor]:\n{}{}",
        net.weight_source(),
        "    a = torch.relu(torch.conv2d(x, w1, b1, [1, 1], [1, 1]))\n\
         \x20   b = torch.relu(torch.conv2d(a, w2, b2, [2, 2], [1, 1]))\n\
         \x20   c = torch.linear(torch.mean(b, [2, 3]), w3, b3)\n\
         \x20   return {\"conv1\": a, \"logits\": c}\n"
    )
}

fn tiny_layers() -> Value {
    json!([
        {"name": "conv1", "kind": "conv"},
        {"name": "conv2", "kind": "conv"},
        {"name": "logits", "kind": "classifier"},
    ])
}

fn manifest_json(layers: Value) -> Value {
    json!({
        "name": "tinynet",
        "layers": layers,
        "input_size": [H, W],
        "resize_shorter": 48,
        "mean": [123.675, 116.28, 103.53],
        "std": [58.395, 57.12, 57.375],
        "class_names": ["ant", "bee", "cat", "dog", "eel"],
    })
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// A temp dir with `tinynet.pt` (tuple module) and, if given, `tinynet.json`.
fn tiny_dir(net: &TinyNet, manifest: Option<Value>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let pt = dir.path().join("tinynet.pt");
    write_torchscript(&pt, &tuple_forward(net));
    if let Some(m) = manifest {
        write_json(&dir.path().join("tinynet.json"), &m);
    }
    (dir, pt)
}

fn load_err(pt: &Path) -> String {
    match TorchScriptModel::load(pt, cpu()) {
        Ok(_) => panic!("{} loaded but should not have", pt.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.size(), b.size(), "{what}: shapes");
    let diff = (a - b).abs().max().double_value(&[]);
    assert!(a.allclose(b, 1e-5, 1e-5, false), "{what}: max abs difference {diff}");
}

// ---------------------------------------------------------------------------------------------

#[test]
fn loads_discovers_layers_and_matches_the_rust_network() {
    let net = TinyNet::new(1);
    let (_dir, pt) = tiny_dir(&net, Some(manifest_json(tiny_layers())));
    let model = TorchScriptModel::load(&pt, cpu()).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(model.name(), "tinynet");
    assert_eq!(model.device(), Device::Cpu);
    let layers = model.layers();
    let summary: Vec<_> = layers.iter().map(|l| (l.name.as_str(), l.kind, l.channels, l.spatial)).collect();
    assert_eq!(
        summary,
        vec![
            ("conv1", LayerKind::Conv, 4, Some((H as usize, W as usize))),
            ("conv2", LayerKind::Conv, 6, Some((H as usize / 2, W as usize / 2))),
            ("logits", LayerKind::Classifier, 5, None),
        ]
    );
    let p = model.preprocessing();
    assert_eq!(p.input_size, (H as u32, W as u32));
    assert_eq!(p.resize_shorter, 48);
    assert_eq!(p.mean, [123.675, 116.28, 103.53]);
    assert_eq!(p.std, [58.395, 57.12, 57.375]);
    assert_eq!(model.class_names().unwrap()[2], "cat");
    assert_eq!(model.manifest_path(), pt.with_extension("json"));

    // sha256 of the file's bytes.
    use sha2::Digest;
    let expected = hex::encode(sha2::Sha256::digest(std::fs::read(&pt).unwrap()));
    assert_eq!(model.file_sha256(), expected);

    // Same outputs as the Rust network, in eval mode (training mode would shift the logits).
    tch::manual_seed(7);
    let x = Tensor::randn([3, 3, H, W], (Kind::Float, Device::Cpu));
    let (a, b, c) = net.forward(&x);
    let all = model.forward_layers(&x, &[0, 1, 2]).unwrap();
    assert_close(&all[0], &a, "conv1");
    assert_close(&all[1], &b, "conv2");
    assert_close(&all[2], &c, "logits");
    assert!(!all[2].requires_grad());
    // The archive really is saved in training mode: loaded raw (no eval), the logits are shifted.
    let raw = CModule::load(&pt).unwrap();
    let (_, _, raw_logits): (Tensor, Tensor, Tensor) =
        raw.forward_is(&[IValue::Tensor(x.shallow_clone())]).unwrap().try_into().unwrap();
    assert_close(&raw_logits, &(&c + 1000.0), "logits in training mode");

    // Subsets, any order, repeats, by name.
    let some = model.forward_named(&x, &["logits", "conv1", "logits"]).unwrap();
    assert_eq!(some.len(), 3);
    assert_close(&some[0], &c, "logits (named)");
    assert_close(&some[1], &a, "conv1 (named)");
    assert_close(&some[2], &c, "logits (repeated)");
    assert!(model.forward_layers(&x, &[]).unwrap().is_empty());

    // Another input size runs too (layers report the manifest size).
    let y = Tensor::randn([2, 3, 20, 24], (Kind::Float, Device::Cpu));
    let out = model.forward_named(&y, &["conv2"]).unwrap();
    assert_eq!(out[0].size(), vec![2, 6, 10, 12]);
    assert_close(&out[0], &net.forward(&y).1, "conv2 at 20×24");
}

#[test]
fn unknown_layer_and_bad_inputs_are_clear_errors() {
    let net = TinyNet::new(2);
    let (_dir, pt) = tiny_dir(&net, Some(manifest_json(tiny_layers())));
    let model = TorchScriptModel::load(&pt, cpu()).unwrap();

    let err = model.layer_index("conv3").unwrap_err();
    assert!(matches!(err, Error::UnknownLayer { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("conv3") && msg.contains("conv1, conv2, logits"), "{msg}");

    let x = Tensor::zeros([1, 3, H, W], (Kind::Float, Device::Cpu));
    let err = model.forward_layers(&x, &[3]).unwrap_err();
    assert!(matches!(err, Error::LayerIndex { index: 3, count: 3, .. }), "{err:?}");
    let err = model.forward_layers(&Tensor::zeros([1, 4, H, W], (Kind::Float, Device::Cpu)), &[0]).unwrap_err();
    assert!(matches!(err, Error::InputShape { .. }), "{err:?}");
}

#[test]
fn dict_outputs_are_matched_by_layer_name() {
    let net = TinyNet::new(3);
    let dir = tempfile::tempdir().unwrap();
    let pt = dir.path().join("dict.pt");
    write_torchscript(&pt, &dict_forward(&net));
    let mut manifest =
        manifest_json(json!([{"name": "logits", "kind": "classifier"}, {"name": "conv1", "kind": "conv"}]));
    manifest["class_names"] = Value::Null;
    let mpath = dir.path().join("described-elsewhere.json");
    write_json(&mpath, &manifest);
    let model = TorchScriptModel::load_with_manifest(&pt, &mpath, cpu()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model.layers()[0].channels, 5);
    assert_eq!(model.layers()[1].spatial, Some((H as usize, W as usize)));
    assert!(model.class_names().is_none());

    let x = Tensor::randn([2, 3, H, W], (Kind::Float, Device::Cpu));
    let (a, _, c) = net.forward(&x);
    let out = model.forward_layers(&x, &[0, 1]).unwrap();
    assert_close(&out[0], &c, "logits from dict");
    assert_close(&out[1], &a, "conv1 from dict");

    // A manifest layer the dict lacks.
    let mut manifest = manifest_json(json!([{"name": "conv2", "kind": "conv"}]));
    manifest["class_names"] = Value::Null;
    write_json(&mpath, &manifest);
    let msg = TorchScriptModel::load_with_manifest(&pt, &mpath, cpu()).unwrap_err().to_string();
    assert!(msg.contains("keys [") && msg.contains("conv1") && msg.contains("no `conv2`"), "{msg}");
}

#[test]
fn traced_single_output_module_loads() {
    let mut net = TinyNet::new(4);
    // The tracer refuses to capture tensors that require grad as constants.
    net.vs.freeze();
    let net = net;
    let mut closure = |inputs: &[Tensor]| vec![net.forward(&inputs[0]).1];
    let example = Tensor::zeros([1, 3, H, W], (Kind::Float, Device::Cpu));
    let traced = CModule::create_by_tracing("TracedTiny", "forward", &[example], &mut closure).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pt = dir.path().join("traced.pt");
    traced.save(&pt).unwrap();
    let mut manifest = manifest_json(json!([{"name": "features", "kind": "conv"}]));
    manifest.as_object_mut().unwrap().remove("class_names");
    manifest.as_object_mut().unwrap().remove("resize_shorter");
    write_json(&dir.path().join("traced.manifest.json"), &manifest);

    let model = TorchScriptModel::load(&pt, cpu()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model.layers()[0].channels, 6);
    assert_eq!(model.layers()[0].spatial, Some((16, 20)));
    // Default resize: round(max(32, 40) / 0.875) = 46.
    assert_eq!(model.preprocessing().resize_shorter, 46);
    let x = Tensor::randn([2, 3, H, W], (Kind::Float, Device::Cpu));
    assert_close(&model.forward_layers(&x, &[0]).unwrap()[0], &net.forward(&x).1, "traced conv2");

    // The same single-output module with a two-layer manifest.
    write_json(
        &dir.path().join("traced.manifest.json"),
        &manifest_json(json!([{"name": "features", "kind": "conv"}, {"name": "logits", "kind": "classifier"}])),
    );
    let err = TorchScriptModel::load(&pt, cpu()).unwrap_err();
    assert!(matches!(err, Error::ManifestMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("1 tensor [1×6×16×20]") && msg.contains("2 layers [features (conv), logits (classifier)]"),
        "{msg}"
    );
}

#[test]
fn manifest_that_does_not_match_the_module_is_refused() {
    let net = TinyNet::new(5);

    // Two layers for a module returning three outputs.
    let mut m = manifest_json(json!([{"name": "conv1", "kind": "conv"}, {"name": "conv2", "kind": "conv"}]));
    m.as_object_mut().unwrap().remove("class_names");
    let (_dir, pt) = tiny_dir(&net, Some(m));
    let msg = load_err(&pt);
    eprintln!("{msg}");
    assert!(msg.contains("tinynet.pt") && msg.contains("tinynet.json"), "{msg}");
    assert!(msg.contains("3 tensors [1×4×32×40, 1×6×16×20, 1×5]"), "{msg}");
    assert!(msg.contains("2 layers [conv1 (conv), conv2 (conv)]"), "{msg}");

    // A layer declared conv that returns N×C.
    let mut m = manifest_json(json!([
        {"name": "conv1", "kind": "conv"}, {"name": "conv2", "kind": "conv"}, {"name": "logits", "kind": "conv"}
    ]));
    m.as_object_mut().unwrap().remove("class_names");
    let (_dir, pt) = tiny_dir(&net, Some(m));
    let msg = load_err(&pt);
    eprintln!("{msg}");
    assert!(
        msg.contains("layer `logits` is declared conv (expects a 4-D N×C×H×W output) but output 2 is 2-D 1×5"),
        "{msg}"
    );

    // A layer declared linear that returns a map.
    let (_dir, pt) = tiny_dir(
        &net,
        Some(manifest_json(json!([
            {"name": "conv1", "kind": "linear"}, {"name": "conv2", "kind": "conv"}, {"name": "logits", "kind": "classifier"}
        ]))),
    );
    let msg = load_err(&pt);
    assert!(msg.contains("layer `conv1` is declared linear (expects a 2-D N×C output) but output 0 is 4-D"), "{msg}");

    // Class names that do not match the classifier's width.
    let mut m = manifest_json(tiny_layers());
    m["class_names"] = json!(["ant", "bee", "cat", "dog"]);
    let (_dir, pt) = tiny_dir(&net, Some(m));
    let msg = load_err(&pt);
    eprintln!("{msg}");
    assert!(
        msg.contains("tinynet.json") && msg.contains("4 class names") && msg.contains("`logits` has 5 outputs"),
        "{msg}"
    );
}

#[test]
fn files_that_are_not_torchscript_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = manifest_json(tiny_layers());
    manifest.as_object_mut().unwrap().remove("class_names");
    let case = |file: &str, bytes: &[u8], expect: &str| {
        let pt = dir.path().join(file);
        std::fs::write(&pt, bytes).unwrap();
        write_json(&pt.with_extension("json"), &manifest);
        let err = TorchScriptModel::load(&pt, cpu()).unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(matches!(err, Error::NotTorchScript { .. }), "{file}: {err:?}");
        assert!(msg.contains(&pt.display().to_string()), "{msg}");
        assert!(msg.contains("is not a TorchScript archive") && msg.contains("tools/export_torchscript.py"), "{msg}");
        assert!(msg.contains(expect), "{file}: {msg}");
    };
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    case("noise.pt", &noise, "not a zip archive");
    case("notes.pt", b"This is a text file, not a model.\n", "looks like a text file");
    case("empty.pt", b"", "the file is empty");
    case("legacy.pth", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.", "legacy torch.save() pickle");

    // A zip that is not TorchScript (an .npz, like a zipped state dict).
    let npz = dir.path().join("weights.npz");
    Tensor::write_npz(&[("w", Tensor::ones([2, 2], (Kind::Float, Device::Cpu)))], &npz).unwrap();
    let bytes = std::fs::read(&npz).unwrap();
    case("state_dict.pt", &bytes, "without TorchScript code");

    // A missing model file.
    let missing = dir.path().join("missing.pt");
    write_json(&missing.with_extension("json"), &manifest);
    let err = TorchScriptModel::load(&missing, cpu()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("missing.pt"), "{err}");
}

#[test]
fn manifest_errors_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    let check = |v: Value, expect: &[&str]| {
        let err = Manifest::from_json(&v.to_string(), &path).unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(matches!(err, Error::Manifest { .. }), "{err:?}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        for e in expect {
            assert!(msg.contains(e), "expected `{e}` in: {msg}");
        }
    };
    let base = manifest_json(tiny_layers());
    let with = |key: &str, val: Value| {
        let mut m = base.clone();
        m[key] = val;
        m
    };
    let without = |key: &str| {
        let mut m = base.clone();
        m.as_object_mut().unwrap().remove(key);
        m
    };

    Manifest::from_json(&base.to_string(), &path).unwrap();
    check(without("mean"), &["missing required field `mean`"]);
    check(without("layers"), &["missing required field `layers`"]);
    check(without("name"), &["missing required field `name`"]);
    check(without("input_size"), &["missing required field `input_size`"]);
    check(with("input_size", json!("224")), &["field `input_size`", "\"224\""]);
    check(with("input_size", json!([224, 0])), &["field `input_size`"]);
    check(with("mean", json!([1, 2])), &["field `mean`", "3 numbers"]);
    check(with("std", json!([0.229, 0.224, 0.225])), &["field `std`", "0–255", "58.395"]);
    check(with("resize_shorter", json!(-3)), &["field `resize_shorter`"]);
    check(with("layers", json!([])), &["field `layers` is empty"]);
    check(with("layers", json!("layer1")), &["field `layers` must be an array"]);
    check(with("layers", json!([{"name": "a", "kind": "pool"}])), &["kind `pool`", "conv, linear, classifier"]);
    check(with("layers", json!([{"name": "a"}])), &["layers[0]", "missing required field `kind`"]);
    check(with("layers", json!([{"kind": "conv"}])), &["layers[0]", "missing required field `name`"]);
    check(
        with(
            "layers",
            json!([{"name": "a", "kind": "conv"}, {"name": "b", "kind": "conv"}, {"name": "a", "kind": "linear"}]),
        ),
        &["duplicate layer name `a`", "layers[0]", "layers[2]"],
    );
    check(
        with("layers", json!([{"name": "a", "kind": "classifier"}, {"name": "b", "kind": "classifier"}])),
        &["at most one layer", "classifier"],
    );
    check(with("layers", json!([{"name": "a", "kind": "conv"}])), &["class names", "no layer has kind `classifier`"]);
    check(with("class_names", json!(["a", 3])), &["class_names[1] must be a string"]);
    check(with("class_names_file", json!("classes.txt")), &["either `class_names` or `class_names_file`"]);
    check(with("resize_shortest", json!(256)), &["unknown field `resize_shortest`", "resize_shorter"]);
    check(json!([1, 2]), &["JSON object"]);
    let err = Manifest::from_json("{\"name\": ", &path).unwrap_err().to_string();
    assert!(err.contains("not valid JSON"), "{err}");

    // `_comments`, description and source are accepted; class names from a file next to the manifest.
    std::fs::write(dir.path().join("classes.txt"), "ant\nbee\n\ncat\ndog\neel\n").unwrap();
    let mut m = without("class_names");
    m["class_names_file"] = json!("classes.txt");
    m["_comment"] = json!("exported by hand");
    m["description"] = json!("a tiny test network");
    m["source"] = json!({"arch": "tiny"});
    m["input_size"] = json!(28);
    let parsed = Manifest::from_json(&m.to_string(), &path).unwrap();
    assert_eq!(parsed.class_names.as_deref().unwrap(), ["ant", "bee", "cat", "dog", "eel"]);
    assert_eq!(parsed.preprocess.input_size, (28, 28));
    assert_eq!(parsed.description.as_deref(), Some("a tiny test network"));
    // to_json round-trips.
    let again = Manifest::from_json(&parsed.to_json().to_string(), &path).unwrap();
    assert_eq!(again, parsed);

    m["class_names_file"] = json!("nope.txt");
    check(m, &["cannot read `class_names_file`", "nope.txt"]);
}

#[test]
fn missing_manifest_lists_where_it_looked() {
    let net = TinyNet::new(6);
    let (dir, pt) = tiny_dir(&net, None);
    let err = TorchScriptModel::load(&pt, cpu()).unwrap_err();
    assert!(matches!(err, Error::ManifestNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("tinynet.json") && msg.contains("tinynet.manifest.json") && msg.contains("tinynet.pt.json"),
        "{msg}"
    );

    // A manifest with a missing field, found beside the model: the error names that file.
    let mut m = manifest_json(tiny_layers());
    m.as_object_mut().unwrap().remove("std");
    write_json(&dir.path().join("tinynet.pt.json"), &m);
    let msg = load_err(&pt);
    assert!(msg.contains("tinynet.pt.json") && msg.contains("missing required field `std`"), "{msg}");
}

#[test]
fn modules_that_fail_to_compile_or_run_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = manifest_json(tiny_layers());
    manifest.as_object_mut().unwrap().remove("class_names");
    let case = |file: &str, forward: &str| {
        let pt = dir.path().join(file);
        write_torchscript(&pt, forward);
        write_json(&pt.with_extension("json"), &manifest);
        let err = TorchScriptModel::load(&pt, cpu()).unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(!msg.contains("Exception raised from"), "C++ backtrace left in: {msg}");
        (err, msg)
    };

    // TorchScript source libtorch cannot compile: a load error naming the file, not "not TorchScript".
    let (err, msg) = case(
        "broken.pt",
        "  def forward(self: __torch__.TinyNet,\n    x: Tensor) -> Tensor:\n    return torch.no_such_op(x)\n",
    );
    assert!(matches!(err, Error::TorchScriptLoad { .. }), "{err:?}");
    assert!(msg.contains("broken.pt") && msg.contains("no_such_op"), "{msg}");

    // A forward that fails on the manifest's input (expects 1 input channel).
    let (err, msg) = case(
        "gray.pt",
        "  def forward(self: __torch__.TinyNet,\n    x: Tensor) -> Tensor:\n    \
         return torch.conv2d(x, torch.ones([2, 1, 3, 3]))\n",
    );
    assert!(matches!(err, Error::TorchScriptLoad { .. }), "{err:?}");
    assert!(msg.contains("gray.pt") && msg.contains("1×3×32×40 batch of zeros") && msg.contains("gray.json"), "{msg}");

    // A forward that only works for batches of one: fine at load, a libtorch error (kept as
    // `Error::Torch`, so out-of-memory can still be recognised by callers) on a batch of two.
    let pt = dir.path().join("single.pt");
    write_torchscript(
        &pt,
        "  def forward(self: __torch__.TinyNet,\n    x: Tensor) -> Tensor:\n    return torch.view(x, [1, 3, 32, 40])\n",
    );
    let mut m = manifest_json(json!([{"name": "input", "kind": "conv"}]));
    m.as_object_mut().unwrap().remove("class_names");
    write_json(&pt.with_extension("json"), &m);
    let model = TorchScriptModel::load(&pt, cpu()).unwrap_or_else(|e| panic!("{e}"));
    let err = model.forward_layers(&Tensor::zeros([2, 3, H, W], (Kind::Float, Device::Cpu)), &[0]).unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, Error::Torch(_)), "{err:?}");
    assert!(msg.contains("TorchScript model `tinynet`") && !msg.contains("Exception raised from"), "{msg}");

    // A forward returning something other than tensors.
    let (err, msg) = case(
        "ints.pt",
        "  def forward(self: __torch__.TinyNet,\n    x: Tensor) -> Tuple[Tensor, int, Tensor]:\n    \
         return (x, 3, x)\n",
    );
    assert!(matches!(err, Error::ManifestMismatch { .. }), "{err:?}");
    assert!(msg.contains("output 1 has type int"), "{msg}");
}

/// Cross-check with models exported by `tools/export_torchscript.py` where PyTorch is installed:
/// `DND_EXPORTED_TORCHSCRIPT=a.pt:b.pt cargo test --release -p dissect --test torchscript exported`.
/// Each model loads with the manifest the script wrote beside it; if `<stem>.reference.npz` lies
/// beside it too (an input `x` and one array per layer, computed by the eager PyTorch model), the
/// outputs are compared with it. Skipped when the variable is unset.
#[test]
fn exported_models_from_env() {
    let Some(paths) = std::env::var_os("DND_EXPORTED_TORCHSCRIPT") else {
        eprintln!("skipped: set DND_EXPORTED_TORCHSCRIPT to exported .pt files to run this check");
        return;
    };
    for pt in std::env::split_paths(&paths) {
        let model = TorchScriptModel::load(&pt, cpu()).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{} ({}), sha256 {}", model.name(), pt.display(), model.file_sha256());
        for l in model.layers() {
            eprintln!("  {:<16} {:?} {} {:?}", l.name, l.kind, l.channels, l.spatial);
        }
        let reference = pt.with_extension("reference.npz");
        if !reference.is_file() {
            continue;
        }
        let arrays: std::collections::HashMap<String, Tensor> =
            Tensor::read_npz(&reference).unwrap().into_iter().collect();
        let x = &arrays["x"];
        let all: Vec<usize> = (0..model.layers().len()).collect();
        let out = model.forward_layers(x, &all).unwrap();
        for (l, t) in model.layers().iter().zip(&out) {
            let want = &arrays[&l.name];
            let diff = (t - want).abs().max().double_value(&[]);
            eprintln!("  {:<16} max |Δ| = {diff:.2e}", l.name);
            assert!(t.allclose(want, 1e-4, 1e-4, false), "{}: max abs difference {diff}", l.name);
        }
    }
}

/// Fuzz: mutated manifests never panic the parser, and its errors quote them within bounds
/// (the message is shown on the jobs page and in the CLI).
#[test]
fn fuzz_manifests() {
    let path = Path::new("/models/m.json");
    let mut with_file = manifest_json(tiny_layers());
    with_file.as_object_mut().unwrap().remove("class_names");
    with_file["class_names_file"] = json!("classes.txt");
    let seeds = vec![
        serde_json::to_vec_pretty(&manifest_json(tiny_layers())).unwrap(),
        serde_json::to_vec(&with_file).unwrap(),
    ];
    let dictionary: [&[u8]; 12] = [
        b"\"name\"",
        b"\"layers\"",
        b"\"kind\"",
        b"\"conv\"",
        b"\"linear\"",
        b"\"classifier\"",
        b"\"input_size\"",
        b"\"mean\"",
        b"\"std\"",
        b"\"resize_shorter\"",
        b"[",
        b"{",
    ];
    dissect::fuzz::run("manifests", &seeds, &dictionary, dissect::fuzz::DEFAULT_ITERATIONS, |bytes| {
        match Manifest::from_json(&String::from_utf8_lossy(bytes), path) {
            Ok(_) => Ok(()),
            Err(e) => dissect::fuzz::bounded_message(&e.to_string(), 600),
        }
    });
}

/// Found by `fuzz_manifests`: errors quoted an unknown field, a class-names path and layer names
/// whole (a 6,000-character message for a repeated key). They are quoted within bounds now, and
/// names over 200 characters are refused.
#[test]
fn manifest_errors_quote_within_bounds() {
    let path = Path::new("/models/m.json");
    let long = "st".repeat(3000);
    let mut m = manifest_json(tiny_layers());
    m[long.as_str()] = json!(1);
    let e = Manifest::from_json(&m.to_string(), path).unwrap_err().to_string();
    assert!(e.len() < 400 && e.contains("unknown field `stst"), "{} bytes: {e:.300}", e.len());
    let mut m = manifest_json(tiny_layers());
    m.as_object_mut().unwrap().remove("class_names");
    m["class_names_file"] = json!(long);
    let e = Manifest::from_json(&m.to_string(), path).unwrap_err().to_string();
    assert!(e.len() < 400 && e.contains("cannot read `class_names_file`"), "{} bytes: {e:.300}", e.len());
    let e = Manifest::from_json(&manifest_json(json!([{"name": long, "kind": "conv"}])).to_string(), path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("6000 characters long; at most 200") && e.len() < 400, "{e:.300}");
    // A device is no class-names file.
    let mut m = manifest_json(tiny_layers());
    m.as_object_mut().unwrap().remove("class_names");
    m["class_names_file"] = json!("/dev/zero");
    let e = Manifest::from_json(&m.to_string(), path).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
}
