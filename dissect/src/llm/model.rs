//! A decoder-only transformer (Qwen2 and Llama layouts) on candle's quantized CPU matmuls, with an
//! explicit KV cache that can be cloned to branch a sequence.
//!
//! **Weight formats.** K-quant matrices (Q4_K, Q6_K, …) are used as the GGUF stores them. The
//! 32-block formats (Q5_0, Q8_0, …: what llama.cpp picks for Qwen2.5-0.5B's 896-wide rows, which
//! 256-value K-quant blocks do not divide) are re-quantized to Q6_K at load time, with the input
//! width zero-padded to a multiple of 256 (896 → 1024) and the activations padded to match.
//! candle 0.11 has only a scalar Q5_0 dot product and an untiled AVX2 Q8_0 one, while Q4_K/Q6_K
//! get its tiled AVX2 kernels: one core multiplies a 100×896 by 896×4864 matrix at ~3 GFLOP/s in
//! Q5_0, ~18 in Q8_0 and ~150 in padded Q6_K (single rows: ~3, ~19 and ~47). Q6_K (6.6 bits per
//! weight) is finer than the Q5_0 it replaces and adds an error well below the model's own
//! 4-bit quantization (see `requant.rs`). Without re-quantization
//! (`requantize = false`), Q5_0 is re-encoded exactly as Q8_0 ([`q5_0_to_q8_0`]) and everything
//! else is used as stored.

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor, D};
use std::borrow::Cow;
use std::io::{Read, Seek};
use std::sync::Arc;

type CResult<T> = candle_core::Result<T>;

/// How rotary position embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimension `i` pairs with `i + head_dim/2` (GPT-NeoX; llama.cpp's choice for qwen2).
    Halves,
    /// Dimension `2i` pairs with `2i + 1` (llama.cpp's llama layout, whose converter permutes
    /// the q/k rows to match).
    Interleaved,
}

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub architecture: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub vocab: usize,
    pub rope_base: f32,
    pub rope_style: RopeStyle,
    pub rms_eps: f64,
    /// The context length the model was trained for.
    pub context_length: usize,
}

/// Architectures this module runs, with their rotary layout.
pub const SUPPORTED_ARCHITECTURES: [(&str, RopeStyle); 2] =
    [("qwen2", RopeStyle::Halves), ("llama", RopeStyle::Interleaved)];

fn md<'a>(ct: &'a gguf_file::Content, key: &str) -> Result<&'a gguf_file::Value, String> {
    ct.metadata.get(key).ok_or_else(|| format!("metadata key `{key}` is missing"))
}

/// A non-negative integer metadata value, whatever integer type the writer chose.
pub(crate) fn md_usize(ct: &gguf_file::Content, key: &str) -> Result<usize, String> {
    use gguf_file::Value as V;
    let v = md(ct, key)?;
    let n: i128 = match v {
        V::U8(x) => *x as i128,
        V::I8(x) => *x as i128,
        V::U16(x) => *x as i128,
        V::I16(x) => *x as i128,
        V::U32(x) => *x as i128,
        V::I32(x) => *x as i128,
        V::U64(x) => *x as i128,
        V::I64(x) => *x as i128,
        other => return Err(format!("metadata key `{key}` is not an integer: {other:?}")),
    };
    usize::try_from(n).map_err(|_| format!("metadata key `{key}` is out of range: {n}"))
}

fn md_f64(ct: &gguf_file::Content, key: &str) -> Result<f64, String> {
    use gguf_file::Value as V;
    match md(ct, key)? {
        V::F32(x) => Ok(*x as f64),
        V::F64(x) => Ok(*x),
        _ => md_usize(ct, key).map(|n| n as f64),
    }
}

pub(crate) fn md_string<'a>(ct: &'a gguf_file::Content, key: &str) -> Result<&'a str, String> {
    match md(ct, key)? {
        gguf_file::Value::String(s) => Ok(s),
        other => Err(format!("metadata key `{key}` is not a string: {other:?}")),
    }
}

impl Config {
    /// Reads the hyper-parameters; `Err` says what is missing or unsupported.
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self, String> {
        let arch = md_string(ct, "general.architecture")?.to_string();
        let Some(&(_, rope_style)) = SUPPORTED_ARCHITECTURES.iter().find(|(a, _)| *a == arch) else {
            let names: Vec<&str> = SUPPORTED_ARCHITECTURES.iter().map(|(a, _)| *a).collect();
            return Err(format!("architecture `{arch}` is not supported (supported: {})", names.join(", ")));
        };
        let key = |k: &str| format!("{arch}.{k}");
        let n_embd = md_usize(ct, &key("embedding_length"))?;
        let n_head = md_usize(ct, &key("attention.head_count"))?;
        let n_kv_head = md_usize(ct, &key("attention.head_count_kv")).unwrap_or(n_head);
        if n_head == 0 || n_kv_head == 0 || n_embd % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(format!("inconsistent attention shape: {n_embd} wide, {n_head} heads, {n_kv_head} KV heads"));
        }
        let head_dim = n_embd / n_head;
        if head_dim % 2 != 0 {
            return Err(format!("head dimension {head_dim} is odd"));
        }
        if let Ok(rope_dims) = md_usize(ct, &key("rope.dimension_count")) {
            if rope_dims != head_dim {
                return Err(format!("partial rotary embeddings ({rope_dims} of {head_dim} dims) are not supported"));
            }
        }
        let vocab = match ct.metadata.get("tokenizer.ggml.tokens") {
            Some(gguf_file::Value::Array(a)) => a.len(),
            _ => ct
                .tensor_infos
                .get("token_embd.weight")
                .map(|t| t.shape.dims()[0])
                .ok_or("tensor `token_embd.weight` is missing")?,
        };
        Ok(Config {
            n_layer: md_usize(ct, &key("block_count"))?,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            n_ff: md_usize(ct, &key("feed_forward_length"))?,
            vocab,
            rope_base: md_f64(ct, &key("rope.freq_base")).unwrap_or(10_000.0) as f32,
            rope_style,
            rms_eps: md_f64(ct, &key("attention.layer_norm_rms_epsilon"))?,
            context_length: md_usize(ct, &key("context_length")).unwrap_or(4096),
            architecture: arch,
        })
    }
}

/// Per-layer key/value tensors of one sequence, `(n_kv_head, len, head_dim)` each.
///
/// Cloning is cheap (the tensors are reference-counted) and gives an independent branch: a
/// forward pass never writes into existing tensors, it concatenates into new ones, so a clone taken
/// after a shared prompt prefix stays valid however the original continues.
#[derive(Clone, Debug)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for a model with `n_layer` layers.
    pub fn new(n_layer: usize) -> Self {
        KvCache { layers: vec![None; n_layer], len: 0 }
    }

    /// Number of positions already evaluated.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the first `len` positions (no-op if the cache is shorter).
    pub fn truncate(&mut self, len: usize) -> CResult<()> {
        if len >= self.len {
            return Ok(());
        }
        for slot in &mut self.layers {
            *slot = match slot.take() {
                Some(_) if len == 0 => None,
                Some((k, v)) => Some((k.narrow(1, 0, len)?, v.narrow(1, 0, len)?)),
                None => None,
            };
        }
        self.len = len;
        Ok(())
    }

    /// Bytes held by the key/value tensors.
    pub fn size_in_bytes(&self) -> usize {
        self.layers.iter().flatten().map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes()).sum()
    }

    fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> CResult<(Tensor, Tensor)> {
        let kv = match &self.layers[layer] {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(&[pk, &k], 1)?, Tensor::cat(&[pv, &v], 1)?),
        };
        self.layers[layer] = Some(kv.clone());
        Ok(kv)
    }
}

struct Linear {
    w: QMatMul,
    b: Option<Tensor>,
    /// Input width the weights were padded to (`None`: not padded).
    padded: Option<usize>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let y = match self.padded {
            Some(k) => self.w.forward(&x.pad_with_zeros(D::Minus1, 0, k - x.dim(D::Minus1)?)?)?,
            None => self.w.forward(x)?,
        };
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The weights and the forward pass. Immutable once loaded; all sequence state is in [`KvCache`].
pub struct Transformer {
    cfg: Config,
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    /// cos/sin of position × frequency, `max_positions × head_dim/2` each.
    cos: Vec<f32>,
    sin: Vec<f32>,
    max_positions: usize,
}

/// Re-encodes Q5_0 blocks as Q8_0 blocks holding the very same values (see the module docs).
pub fn q5_0_to_q8_0(src: &[u8]) -> Vec<u8> {
    const SRC: usize = 22; // f16 d, 4 bytes of high bits, 16 bytes of low nibbles
    const DST: usize = 34; // f16 d, 32 signed bytes
    let mut out = Vec::with_capacity(src.len() / SRC * DST);
    for b in src.chunks_exact(SRC) {
        out.extend_from_slice(&b[..2]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        for (j, &q) in qs.iter().enumerate() {
            let hi = ((qh >> j) & 1) as u8;
            out.push((((q & 0x0f) | (hi << 4)) as i8 - 16) as u8);
        }
        for (j, &q) in qs.iter().enumerate() {
            let hi = ((qh >> (j + 16)) & 1) as u8;
            out.push((((q >> 4) | (hi << 4)) as i8 - 16) as u8);
        }
    }
    out
}

/// Exact Q5_0 → Q8_0 re-encoding of a whole tensor.
pub fn q5_0_tensor_to_q8_0(t: &QTensor) -> CResult<QTensor> {
    if t.dtype() != GgmlDType::Q5_0 {
        candle_core::bail!("expected a Q5_0 tensor, got {:?}", t.dtype());
    }
    let bytes = q5_0_to_q8_0(&t.data()?);
    let storage = QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, GgmlDType::Q8_0)?;
    QTensor::new(storage, t.shape().clone())
}

/// The matrix in the format candle multiplies fastest (see the module docs), and the input width
/// it was padded to, if it was.
fn for_matmul(t: QTensor, requantize: bool) -> CResult<(QTensor, Option<usize>)> {
    use GgmlDType as G;
    match t.dtype() {
        G::Q5_0 if !requantize => Ok((q5_0_tensor_to_q8_0(&t)?, None)),
        G::Q4_0 | G::Q4_1 | G::Q5_0 | G::Q5_1 | G::Q8_0 | G::Q8_1 if requantize => {
            let (_, k) = t.shape().dims2()?;
            let (q, k_pad) = super::requant::to_q6k_padded(&t)?;
            Ok((q, (k_pad > k).then_some(k_pad)))
        }
        _ => Ok((t, None)),
    }
}

struct Loader<'a, R> {
    ct: &'a gguf_file::Content,
    reader: &'a mut R,
    requantize: bool,
}

impl<R: Read + Seek> Loader<'_, R> {
    fn raw(&mut self, name: &str, shape: &[usize]) -> Result<QTensor, String> {
        let t = self.ct.tensor(self.reader, name, &Device::Cpu).map_err(|e| format!("tensor `{name}`: {e}"))?;
        if t.shape().dims() != shape {
            return Err(format!("tensor `{name}` has shape {:?}, expected {shape:?}", t.shape().dims()));
        }
        Ok(t)
    }

    fn has(&self, name: &str) -> bool {
        self.ct.tensor_infos.contains_key(name)
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Tensor, String> {
        self.raw(name, &[len])?.dequantize(&Device::Cpu).map_err(|e| format!("tensor `{name}`: {e}"))
    }

    fn linear(&mut self, prefix: &str, n_out: usize, n_in: usize) -> Result<Linear, String> {
        let name = format!("{prefix}.weight");
        let w = self.raw(&name, &[n_out, n_in])?;
        let (w, padded) = for_matmul(w, self.requantize).map_err(|e| format!("tensor `{name}`: {e}"))?;
        let w = QMatMul::from_qtensor(w).map_err(|e| format!("tensor `{name}`: {e}"))?;
        let bias = format!("{prefix}.bias");
        let b = if self.has(&bias) { Some(self.vector(&bias, n_out)?) } else { None };
        Ok(Linear { w, b, padded })
    }
}

impl Transformer {
    /// Loads the weights described by `ct` from `reader` (the same GGUF file). `max_positions`
    /// bounds the sequence length (it sizes the rotary tables); it is capped at the model's own
    /// context length. `requantize`: see the module docs.
    pub fn load<R: Read + Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        max_positions: usize,
        requantize: bool,
    ) -> Result<Self, String> {
        let cfg = Config::from_gguf(ct)?;
        let (d, kv_d) = (cfg.n_embd, cfg.n_kv_head * cfg.head_dim);
        let mut l = Loader { ct, reader, requantize };
        let embed = Arc::new(l.raw("token_embd.weight", &[cfg.vocab, d])?);
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: l.vector(&p("attn_norm.weight"), d)?,
                q: l.linear(&p("attn_q"), d, d)?,
                k: l.linear(&p("attn_k"), kv_d, d)?,
                v: l.linear(&p("attn_v"), kv_d, d)?,
                o: l.linear(&p("attn_output"), d, d)?,
                ffn_norm: l.vector(&p("ffn_norm.weight"), d)?,
                gate: l.linear(&p("ffn_gate"), cfg.n_ff, d)?,
                up: l.linear(&p("ffn_up"), cfg.n_ff, d)?,
                down: l.linear(&p("ffn_down"), d, cfg.n_ff)?,
            });
        }
        let norm = l.vector("output_norm.weight", d)?;
        let output = if l.has("output.weight") {
            l.linear("output", cfg.vocab, d)?
        } else {
            // Tied embeddings: the output projection is the embedding matrix.
            let copy = QStorage::from_data(embed.data().map_err(|e| e.to_string())?, &Device::Cpu, embed.dtype())
                .and_then(|s| QTensor::new(s, embed.shape().clone()))
                .and_then(|t| for_matmul(t, l.requantize))
                .map_err(|e| format!("tied output weights: {e}"))?;
            Linear { w: QMatMul::from_qtensor(copy.0).map_err(|e| e.to_string())?, b: None, padded: copy.1 }
        };

        let max_positions = max_positions.clamp(1, cfg.context_length.max(1));
        let half = cfg.head_dim / 2;
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for pos in 0..max_positions {
            for i in 0..half {
                let freq = (cfg.rope_base as f64).powf(-2.0 * i as f64 / cfg.head_dim as f64);
                let angle = pos as f64 * freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(Transformer { cfg, embed, layers, norm, output, cos, sin, max_positions })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Longest sequence (prompt + answer) this instance accepts.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// An empty cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.n_layer)
    }

    /// Evaluates `tokens` after the positions already in `cache`, appends their keys and values
    /// to it, and returns the next-token logits of the last position. On error the cache may hold
    /// a partial update: callers work on a clone.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> CResult<Vec<f32>> {
        let c = &self.cfg;
        let (s, pos0) = (tokens.len(), cache.len());
        if s == 0 {
            candle_core::bail!("no tokens to evaluate");
        }
        if pos0 + s > self.max_positions {
            candle_core::bail!("sequence of {} tokens exceeds the context limit of {}", pos0 + s, self.max_positions);
        }
        if cache.layers.len() != c.n_layer {
            candle_core::bail!("KV cache has {} layers, the model {}", cache.layers.len(), c.n_layer);
        }
        let dev = Device::Cpu;
        let (hd, nh, nkv) = (c.head_dim, c.n_head, c.n_kv_head);
        let group = nh / nkv;
        let total = pos0 + s;
        let mut x = self.embed.embedding(&Tensor::new(tokens, &dev)?)?;
        let mask = if s > 1 {
            let mut m = vec![0f32; s * total];
            for i in 0..s {
                for v in &mut m[i * total + pos0 + i + 1..(i + 1) * total] {
                    *v = f32::NEG_INFINITY;
                }
            }
            Some(Tensor::from_vec(m, (s, total), &dev)?)
        } else {
            None
        };
        let scale = 1.0 / (hd as f32).sqrt();
        for (li, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, c.rms_eps)?;
            let q = self.heads_first(&layer.q.forward(&h)?, s, nh, pos0, Some(scale))?;
            let k = self.heads_first(&layer.k.forward(&h)?, s, nkv, pos0, Some(1.0))?;
            let v = self.heads_first(&layer.v.forward(&h)?, s, nkv, pos0, None)?;
            let (k, v) = cache.append(li, k, v)?;
            // Query heads sharing a KV head are consecutive: fold them into the row dimension.
            let q = q.reshape((nkv, group * s, hd))?;
            let att = q.matmul(&k.t()?)?;
            let att = match &mask {
                Some(m) => att.reshape((nh, s, total))?.broadcast_add(m)?.reshape((nkv, group * s, total))?,
                None => att,
            };
            let att = softmax_last_dim(&att)?;
            let o = att.matmul(&v)?.reshape((nh, s, hd))?.transpose(0, 1)?.contiguous()?.reshape((s, nh * hd))?;
            x = (x + layer.o.forward(&o)?)?;
            let h = rms_norm(&x, &layer.ffn_norm, c.rms_eps)?;
            let ff = (layer.gate.forward(&h)?.silu()? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&ff)?)?;
        }
        cache.len = total;
        let last = rms_norm(&x.narrow(0, s - 1, 1)?, &self.norm, c.rms_eps)?;
        self.output.forward(&last)?.flatten_all()?.to_vec1::<f32>()
    }

    /// One decoding step of several independent sequences: `tokens[i]` is evaluated after the
    /// positions already in `caches[i]`, and the next-token logits of each come back in order.
    ///
    /// The projections and the output layer multiply all sequences' rows at once, which is what
    /// makes this faster than separate [`Transformer::forward`] calls: candle's tiled quantized
    /// kernels run several times faster per row on a many-row matrix than on a single row. Only
    /// attention, which reads each sequence's own cache, runs per sequence. Results equal
    /// separate `forward` calls up to the rounding of 8-bit activations.
    pub fn forward_batch(&self, tokens: &[u32], caches: &mut [KvCache]) -> CResult<Vec<Vec<f32>>> {
        let c = &self.cfg;
        let b = tokens.len();
        if b == 0 {
            candle_core::bail!("no sequences to evaluate");
        }
        if caches.len() != b {
            candle_core::bail!("{} tokens for {} KV caches", b, caches.len());
        }
        for cache in caches.iter() {
            if cache.layers.len() != c.n_layer {
                candle_core::bail!("KV cache has {} layers, the model {}", cache.layers.len(), c.n_layer);
            }
            if cache.len() + 1 > self.max_positions {
                candle_core::bail!(
                    "sequence of {} tokens exceeds the context limit of {}",
                    cache.len() + 1,
                    self.max_positions
                );
            }
        }
        let (hd, nh, nkv) = (c.head_dim, c.n_head, c.n_kv_head);
        let group = nh / nkv;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut x = self.embed.embedding(&Tensor::new(tokens, &Device::Cpu)?)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, c.rms_eps)?;
            let (q, k, v) = (layer.q.forward(&h)?, layer.k.forward(&h)?, layer.v.forward(&h)?);
            let mut outs = Vec::with_capacity(b);
            for (i, cache) in caches.iter_mut().enumerate() {
                let pos = cache.len();
                let qi = self.heads_first(&q.narrow(0, i, 1)?, 1, nh, pos, Some(scale))?;
                let ki = self.heads_first(&k.narrow(0, i, 1)?, 1, nkv, pos, Some(1.0))?;
                let vi = self.heads_first(&v.narrow(0, i, 1)?, 1, nkv, pos, None)?;
                let (ki, vi) = cache.append(li, ki, vi)?;
                let att = softmax_last_dim(&qi.reshape((nkv, group, hd))?.matmul(&ki.t()?)?)?;
                outs.push(att.matmul(&vi)?.reshape((1, nh * hd))?);
            }
            x = (x + layer.o.forward(&Tensor::cat(&outs, 0)?)?)?;
            let h = rms_norm(&x, &layer.ffn_norm, c.rms_eps)?;
            let ff = (layer.gate.forward(&h)?.silu()? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&ff)?)?;
        }
        for cache in caches.iter_mut() {
            cache.len += 1;
        }
        self.output.forward(&rms_norm(&x, &self.norm, c.rms_eps)?)?.to_vec2::<f32>()
    }

    /// `(s, heads·head_dim)` → `(heads, s, head_dim)`, rotated for positions `pos0..pos0+s` and
    /// multiplied by `scale` when `rope` is `Some(scale)`.
    fn heads_first(&self, t: &Tensor, s: usize, heads: usize, pos0: usize, rope: Option<f32>) -> CResult<Tensor> {
        let hd = self.cfg.head_dim;
        let half = hd / 2;
        let src = t.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; src.len()];
        for ti in 0..s {
            let (cos, sin) = (&self.cos[(pos0 + ti) * half..][..half], &self.sin[(pos0 + ti) * half..][..half]);
            for h in 0..heads {
                let x = &src[(ti * heads + h) * hd..][..hd];
                let y = &mut out[(h * s + ti) * hd..][..hd];
                match (rope, self.cfg.rope_style) {
                    (None, _) => y.copy_from_slice(x),
                    (Some(sc), RopeStyle::Halves) => {
                        for i in 0..half {
                            let (a, b) = (x[i], x[i + half]);
                            y[i] = (a * cos[i] - b * sin[i]) * sc;
                            y[i + half] = (b * cos[i] + a * sin[i]) * sc;
                        }
                    }
                    (Some(sc), RopeStyle::Interleaved) => {
                        for i in 0..half {
                            let (a, b) = (x[2 * i], x[2 * i + 1]);
                            y[2 * i] = (a * cos[i] - b * sin[i]) * sc;
                            y[2 * i + 1] = (b * cos[i] + a * sin[i]) * sc;
                        }
                    }
                }
            }
        }
        Tensor::from_vec(out, (heads, s, hd), &Device::Cpu)
    }
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> CResult<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

fn softmax_last_dim(x: &Tensor) -> CResult<Tensor> {
    let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use gguf_file::Value;
    use std::io::Cursor;

    /// A 2-layer model with random weights (GQA, biases on q/k/v) as a GGUF in memory; matrices
    /// in `dtype`, vectors in F32.
    fn tiny_gguf(arch: &str, dtype: GgmlDType) -> Vec<u8> {
        let (d, heads, kv_heads, ff, vocab, layers) = (32usize, 4usize, 2usize, 64usize, 11usize, 2usize);
        let hd = d / heads;
        let dev = Device::Cpu;
        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        // Deterministic weights: uniform in ±scale (±scale/√k for matrices), norms near 1.
        let mut rng = crate::llm::Rng::new(7);
        let mut add = |name: String, shape: &[usize], scale: f32| {
            let n: usize = shape.iter().product();
            let (scale, offset) = match shape {
                [_, k] => (scale / (*k as f32).sqrt(), 0.0),
                _ if name.contains("norm") => (scale, 1.0),
                _ => (scale, 0.0),
            };
            let v: Vec<f32> = (0..n).map(|_| offset + scale * (2.0 * rng.next_f64() as f32 - 1.0)).collect();
            let t = Tensor::from_vec(v, shape, &dev).unwrap();
            let dt = if shape.len() == 2 { dtype } else { GgmlDType::F32 };
            tensors.push((name, QTensor::quantize(&t, dt).unwrap()));
        };
        add("token_embd.weight".into(), &[vocab, d], 1.0);
        add("output_norm.weight".into(), &[d], 0.1);
        for i in 0..layers {
            add(format!("blk.{i}.attn_norm.weight"), &[d], 0.1);
            add(format!("blk.{i}.ffn_norm.weight"), &[d], 0.1);
            add(format!("blk.{i}.attn_q.weight"), &[d, d], 3.0);
            add(format!("blk.{i}.attn_q.bias"), &[d], 0.1);
            add(format!("blk.{i}.attn_k.weight"), &[kv_heads * hd, d], 3.0);
            add(format!("blk.{i}.attn_k.bias"), &[kv_heads * hd], 0.1);
            add(format!("blk.{i}.attn_v.weight"), &[kv_heads * hd, d], 1.5);
            add(format!("blk.{i}.attn_v.bias"), &[kv_heads * hd], 0.1);
            add(format!("blk.{i}.attn_output.weight"), &[d, d], 1.5);
            add(format!("blk.{i}.ffn_gate.weight"), &[ff, d], 1.5);
            add(format!("blk.{i}.ffn_up.weight"), &[ff, d], 1.5);
            add(format!("blk.{i}.ffn_down.weight"), &[d, ff], 1.5);
        }
        let u = |n: usize| Value::U32(n as u32);
        let meta: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(arch.into())),
            (format!("{arch}.block_count"), u(layers)),
            (format!("{arch}.embedding_length"), u(d)),
            (format!("{arch}.feed_forward_length"), u(ff)),
            (format!("{arch}.attention.head_count"), u(heads)),
            (format!("{arch}.attention.head_count_kv"), u(kv_heads)),
            (format!("{arch}.rope.freq_base"), Value::F32(10_000.0)),
            (format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
            (format!("{arch}.context_length"), u(64)),
        ];
        let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let mut buf = Cursor::new(Vec::new());
        gguf_file::write(&mut buf, &meta_refs, &tensor_refs).unwrap();
        buf.into_inner()
    }

    fn load(bytes: &[u8], requantize: bool) -> Transformer {
        let mut r = Cursor::new(bytes);
        let ct = gguf_file::Content::read(&mut r).unwrap();
        Transformer::load(&ct, &mut r, 1000, requantize).unwrap()
    }

    fn tiny(arch: &str) -> Transformer {
        load(&tiny_gguf(arch, GgmlDType::F32), true)
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "{what}: max |difference| {diff}\n{a:?}\n{b:?}");
    }

    #[test]
    fn requantized_weights_are_padded_and_close() {
        // Q8_0 matrices 32 and 64 wide become Q6_K padded to 256; activations are padded to match.
        let bytes = tiny_gguf("qwen2", GgmlDType::Q8_0);
        let (exact, fast) = (load(&bytes, false), load(&bytes, true));
        assert_eq!(fast.layers[0].q.padded, Some(256));
        assert_eq!(fast.layers[0].down.padded, Some(256));
        assert_eq!(exact.layers[0].q.padded, None);
        let seq = [3u32, 1, 4, 1, 5, 9, 2, 6];
        let a = exact.forward(&seq, &mut exact.new_cache()).unwrap();
        let b = fast.forward(&seq, &mut fast.new_cache()).unwrap();
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        // Logits are small differences of large activations, so they show the 6-bit weight
        // rounding most; each projection on its own is within ~1.5% of the exact product.
        assert!(diff < 0.15 * scale, "max |Δlogit| {diff} for logits up to {scale}");
        let max_abs = |t: &Tensor| t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        for (x, y, k) in
            [(&exact.layers[0].q, &fast.layers[0].q, 32), (&exact.layers[0].down, &fast.layers[0].down, 64)]
        {
            let h = Tensor::from_vec(
                (0..3 * k).map(|i| ((i * 37 % 17) as f32 - 8.0) / 4.0).collect(),
                (3, k),
                &Device::Cpu,
            )
            .unwrap();
            let QMatMul::QTensor(w) = &x.w else { panic!("quantized weights expected") };
            let reference = h.matmul(&w.dequantize(&Device::Cpu).unwrap().t().unwrap()).unwrap();
            let got = y.w.forward(&h.pad_with_zeros(1, 0, 256 - k).unwrap()).unwrap();
            let err = max_abs(&(got - &reference).unwrap());
            assert!(err < 0.03 * max_abs(&reference), "projection error {err} of {}", max_abs(&reference));
        }
        // Incremental evaluation on the padded path agrees with one pass, up to the rounding of
        // the 8-bit activations (which can land differently for different matrix shapes).
        let mut kv = fast.new_cache();
        fast.forward(&seq[..5], &mut kv).unwrap();
        let inc = fast.forward(&seq[5..], &mut kv).unwrap();
        let diff = inc.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff < 0.01 * scale, "incremental vs one pass: {diff} for logits up to {scale}");
    }

    #[test]
    fn incremental_evaluation_matches_one_pass() {
        for arch in ["qwen2", "llama"] {
            let m = tiny(arch);
            assert_eq!(m.max_positions(), 64, "capped at the context length");
            let seq = [1u32, 5, 7, 2, 9, 3, 3, 10];
            let mut full = m.new_cache();
            let one_pass = m.forward(&seq, &mut full).unwrap();
            assert_eq!(full.len(), seq.len());

            let mut inc = m.new_cache();
            m.forward(&seq[..3], &mut inc).unwrap();
            m.forward(&seq[3..6], &mut inc).unwrap();
            m.forward(&seq[6..7], &mut inc).unwrap();
            let stepwise = m.forward(&seq[7..], &mut inc).unwrap();
            assert_close(&one_pass, &stepwise, arch);
            assert!(one_pass.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn batched_step_matches_separate_sequences() {
        for arch in ["qwen2", "llama"] {
            let m = tiny(arch);
            // Three sequences at different lengths, one of them empty so far.
            let prompts: [&[u32]; 3] = [&[1, 5, 7, 2], &[9], &[]];
            let next = [3u32, 10, 4];
            let mut batch: Vec<KvCache> = Vec::new();
            for p in prompts {
                let mut kv = m.new_cache();
                if !p.is_empty() {
                    m.forward(p, &mut kv).unwrap();
                }
                batch.push(kv);
            }
            let got = m.forward_batch(&next, &mut batch).unwrap();
            assert_eq!(got.len(), 3);
            for (i, (p, t)) in prompts.iter().zip(next).enumerate() {
                let mut kv = m.new_cache();
                let mut seq = p.to_vec();
                seq.push(t);
                let want = m.forward(&seq, &mut kv).unwrap();
                assert_close(&want, &got[i], arch);
                assert_eq!(batch[i].len(), seq.len());
            }
            // A second step continues each sequence from its own cache.
            let step2 = m.forward_batch(&[2, 2, 2], &mut batch).unwrap();
            for (i, (p, t)) in prompts.iter().zip(next).enumerate() {
                let mut seq = p.to_vec();
                seq.extend([t, 2]);
                let want = m.forward(&seq, &mut m.new_cache()).unwrap();
                assert_close(&want, &step2[i], arch);
            }
            assert!(m.forward_batch(&[1, 2], &mut batch[..1]).is_err(), "tokens and caches must pair up");
        }
    }

    #[test]
    fn cloned_cache_is_an_independent_branch() {
        let m = tiny("qwen2");
        let prefix = [4u32, 8, 1, 6];
        let mut trunk = m.new_cache();
        m.forward(&prefix, &mut trunk).unwrap();
        let snapshot = trunk.clone();
        let bytes = snapshot.size_in_bytes();
        assert_eq!(bytes, 2 * 2 * (2 * 4 * 8) * 4, "2 layers × (K,V) × (2 heads × 4 pos × 8 dims) × f32");

        // Continue the trunk with one suffix, then the clone with another.
        let a = m.forward(&[2, 2, 7], &mut trunk).unwrap();
        let mut branch = snapshot.clone();
        let b = m.forward(&[9, 0], &mut branch).unwrap();
        assert_eq!(snapshot.len(), 4, "the snapshot did not move");
        assert_eq!(branch.len(), 6);

        // Each equals a fresh evaluation of its whole sequence.
        let fresh = |seq: &[u32]| m.forward(seq, &mut m.new_cache()).unwrap();
        assert_close(&a, &fresh(&[4, 8, 1, 6, 2, 2, 7]), "trunk");
        assert_close(&b, &fresh(&[4, 8, 1, 6, 9, 0]), "branch");

        // Truncating the longer trunk back to the prefix gives the snapshot's state.
        trunk.truncate(4).unwrap();
        let mut again = trunk.clone();
        assert_close(&m.forward(&[9, 0], &mut again).unwrap(), &b, "truncated trunk");
    }

    #[test]
    fn context_limit_and_empty_input_are_errors() {
        let m = tiny("qwen2");
        let mut c = m.new_cache();
        assert!(m.forward(&[], &mut c).is_err());
        let long = vec![1u32; 65];
        let err = m.forward(&long, &mut c).unwrap_err().to_string();
        assert!(err.contains("context limit of 64"), "{err}");
    }

    #[test]
    fn unsupported_architecture_is_named() {
        let bytes = tiny_gguf("bert", GgmlDType::F32);
        let ct = gguf_file::Content::read(&mut Cursor::new(bytes)).unwrap();
        let err = Config::from_gguf(&ct).unwrap_err();
        assert!(err.contains("`bert`") && err.contains("qwen2"), "{err}");
    }

    #[test]
    fn q5_0_reencoding_is_exact() {
        let t = Tensor::randn(0f32, 1f32, (8, 64), &Device::Cpu).unwrap();
        let q5 = QTensor::quantize(&t, GgmlDType::Q5_0).unwrap();
        let q8 = q5_0_tensor_to_q8_0(&q5).unwrap();
        assert_eq!(q8.dtype(), GgmlDType::Q8_0);
        let a = q5.dequantize(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap();
        let b = q8.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
        assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
    }
}
