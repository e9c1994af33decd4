//! Re-quantization of 32-block weight formats (Q5_0, Q8_0, …) to Q6_K, with the rows zero-padded
//! to a multiple of 256, so candle's tiled K-quant kernels apply (see `model.rs`).
//!
//! candle's own Q6_K quantizer searches every 16-value sub-block for the best scale; for the
//! ~400 M weights of a 0.5B model that takes ~15 s. The weights here already lie on a grid, so no
//! search is needed: a Q5_0 block holds `d·k` with `k ∈ −16..16`, which Q6_K holds exactly as
//! `(d/2)·(2k)` up to the 8-bit rounding of each sub-block scale against the super-block's f16
//! scale (a relative error of a fraction of a percent). Other formats use the usual
//! `scale = extreme / −32` rule. Either way this is one pass, well under a second in total.

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Result};
use half::f16;
use std::borrow::Cow;

const QK_K: usize = 256;
/// Bytes of one Q6_K block: 128 low-nibble bytes, 64 high-bit bytes, 16 scales, f16 d.
const Q6K_BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;
/// Bytes of one Q5_0 block (f16 d, 4 bytes of high bits, 16 bytes of low nibbles) and of one
/// Q8_0 block (f16 d, 32 signed bytes); both hold 32 values.
const Q5_0_BYTES: usize = 22;
const Q8_0_BYTES: usize = 34;

/// Decodes Q5_0 blocks into `values` and, per 16-value sub-block, the scale Q6_K should use
/// (`d/2`) into `scales`.
fn decode_q5_0(raw: &[u8], values: &mut [f32], scales: &mut [f32]) {
    for ((b, v), s) in raw.chunks_exact(Q5_0_BYTES).zip(values.chunks_exact_mut(32)).zip(scales.chunks_exact_mut(2)) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for (j, q) in b[6..].iter().enumerate() {
            v[j] = d * (((q & 0x0f) as i32 | (((qh >> j) & 1) << 4) as i32) - 16) as f32;
            v[j + 16] = d * (((q >> 4) as i32 | (((qh >> (j + 16)) & 1) << 4) as i32) - 16) as f32;
        }
        s.fill(d / 2.0);
    }
}

/// Decodes Q8_0 blocks into `values`.
fn decode_q8_0(raw: &[u8], values: &mut [f32]) {
    for (b, v) in raw.chunks_exact(Q8_0_BYTES).zip(values.chunks_exact_mut(32)) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        for (x, &q) in v.iter_mut().zip(&b[2..]) {
            *x = d * q as i8 as f32;
        }
    }
}

/// Nearest integer, halves away from zero (`f32::round` is a libm call without SSE4.1).
#[inline]
fn nearest(x: f32) -> i32 {
    (x + if x >= 0.0 { 0.5 } else { -0.5 }) as i32
}

/// Quantizes one row of `QK_K`-multiple length; `scales` optionally fixes each sub-block's scale.
fn quantize_row_q6k(x: &[f32], scales: Option<&[f32]>, out: &mut Vec<u8>) {
    for (bi, xb) in x.chunks_exact(QK_K).enumerate() {
        let mut sub = [0f32; QK_K / 16];
        for (j, s) in sub.iter_mut().enumerate() {
            *s = match scales {
                Some(given) => given[bi * 16 + j],
                None => {
                    // The value of largest magnitude maps to −32, the end of the range −32..=31.
                    let v = &xb[16 * j..16 * j + 16];
                    let extreme = v.iter().fold(0f32, |m, &a| if a.abs() > m.abs() { a } else { m });
                    extreme / -32.0
                }
            };
        }
        let max_abs = sub.iter().fold(0f32, |m, s| m.max(s.abs()));
        let d = f16::from_f32(max_abs / 127.0);
        let df = d.to_f32();
        let mut sc = [0i8; QK_K / 16];
        let mut q = [32u8; QK_K];
        if df > 0.0 {
            for j in 0..QK_K / 16 {
                sc[j] = nearest(sub[j] / df).clamp(-127, 127) as i8;
                let step = df * sc[j] as f32;
                if step != 0.0 {
                    let inv = 1.0 / step;
                    for i in 16 * j..16 * j + 16 {
                        q[i] = (nearest(xb[i] * inv).clamp(-32, 31) + 32) as u8;
                    }
                }
            }
        }
        // Layout: per 128-value half, ql[l] holds values l and l+64 (low nibbles), ql[l+32] values
        // l+32 and l+96; qh[l] holds the top two bits of values l, l+32, l+64, l+96.
        let mut ql = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 4];
        for half in 0..2 {
            let (q, ql, qh) = (&q[half * 128..], &mut ql[half * 64..], &mut qh[half * 32..]);
            for l in 0..32 {
                ql[l] = (q[l] & 0x0f) | ((q[l + 64] & 0x0f) << 4);
                ql[l + 32] = (q[l + 32] & 0x0f) | ((q[l + 96] & 0x0f) << 4);
                qh[l] = (q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) | ((q[l + 96] >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend_from_slice(&d.to_le_bytes());
    }
}

/// `t` (an `n × k` matrix) as Q6_K, `n × k_pad` with `k_pad` the next multiple of 256 and the
/// extra columns zero. Returns the tensor and `k_pad`. Q5_0 and Q8_0 are decoded row by row
/// (no f32 copy of the whole matrix: the 152k-row output matrix would take 0.5 GB).
pub fn to_q6k_padded(t: &QTensor) -> Result<(QTensor, usize)> {
    let (n, k) = t.shape().dims2()?;
    let k_pad = k.next_multiple_of(QK_K);
    let dtype = t.dtype();
    let raw = t.data()?;
    let floats = match dtype {
        GgmlDType::Q5_0 | GgmlDType::Q8_0 => Vec::new(),
        _ => t.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?,
    };
    let row_bytes = match dtype {
        GgmlDType::Q5_0 => k / 32 * Q5_0_BYTES,
        GgmlDType::Q8_0 => k / 32 * Q8_0_BYTES,
        _ => 0,
    };
    if k % 32 != 0 || raw.len() < n * row_bytes || floats.len() != if row_bytes == 0 { n * k } else { 0 } {
        candle_core::bail!("cannot decode a {n}×{k} {dtype:?} tensor of {} bytes", raw.len());
    }
    let mut out = Vec::with_capacity(n * k_pad / QK_K * Q6K_BYTES);
    let mut row = vec![0f32; k_pad];
    let mut row_scales = vec![0f32; k_pad / 16];
    for r in 0..n {
        let bytes = &raw[r * row_bytes..(r + 1) * row_bytes];
        let scales = match dtype {
            GgmlDType::Q5_0 => {
                decode_q5_0(bytes, &mut row[..k], &mut row_scales[..k / 16]);
                Some(&row_scales[..])
            }
            GgmlDType::Q8_0 => {
                decode_q8_0(bytes, &mut row[..k]);
                None
            }
            _ => {
                row[..k].copy_from_slice(&floats[r * k..(r + 1) * k]);
                None
            }
        };
        quantize_row_q6k(&row, scales, &mut out);
    }
    let storage = QStorage::from_data(Cow::Owned(out), &Device::Cpu, GgmlDType::Q6K)?;
    Ok((QTensor::new(storage, (n, k_pad))?, k_pad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    fn values(t: &QTensor) -> Vec<f32> {
        t.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn q5_0_grid_survives_and_padding_is_zero() {
        let (n, k) = (6, 96);
        let w = Tensor::randn(0f32, 1f32, (n, k), &Device::Cpu).unwrap();
        let q5 = QTensor::quantize(&w, GgmlDType::Q5_0).unwrap();
        let (q6, k_pad) = to_q6k_padded(&q5).unwrap();
        assert_eq!((q6.dtype(), q6.shape().dims2().unwrap()), (GgmlDType::Q6K, (n, 256)));
        assert_eq!(k_pad, 256);
        let (a, b) = (values(&q5), values(&q6));
        for r in 0..n {
            let row_a = &a[r * k..(r + 1) * k];
            let row_b = &b[r * 256..(r + 1) * 256];
            let amax = row_a.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (x, y) in row_a.iter().zip(row_b) {
                // Only the 8-bit sub-block scale rounding: ≲ 1/127 of the row's range.
                assert!((x - y).abs() <= amax / 100.0, "row {r}: {x} vs {y} (max {amax})");
            }
            assert!(row_b[k..].iter().all(|&v| v == 0.0), "padding of row {r}");
        }
        // The decoders agree with candle's own dequantization.
        let mut v = vec![0f32; n * k];
        decode_q5_0(&q5.data().unwrap(), &mut v, &mut vec![0f32; n * k / 16]);
        assert_eq!(v, a);
        let q8 = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        decode_q8_0(&q8.data().unwrap(), &mut v);
        assert_eq!(v, values(&q8));
    }

    #[test]
    fn other_formats_go_through_candle() {
        let w = Tensor::randn(0f32, 1f32, (3, 64), &Device::Cpu).unwrap();
        let q41 = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let (q6, k_pad) = to_q6k_padded(&q41).unwrap();
        assert_eq!(k_pad, 256);
        let (a, b) = (values(&q41), values(&q6));
        for r in 0..3 {
            let amax = a[r * 64..(r + 1) * 64].iter().fold(0f32, |m, v| m.max(v.abs()));
            for i in 0..64 {
                assert!((a[r * 64 + i] - b[r * 256 + i]).abs() < amax / 40.0);
            }
        }
    }

    #[test]
    fn generic_values_are_close() {
        let (n, k) = (4, 512);
        let w = Tensor::randn(0f32, 1f32, (n, k), &Device::Cpu).unwrap();
        let q8 = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let (q6, k_pad) = to_q6k_padded(&q8).unwrap();
        assert_eq!(k_pad, 512);
        let (a, b) = (values(&q8), values(&q6));
        let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        let amax = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        // Half a Q6_K step of the largest sub-block, plus scale rounding.
        assert!(err < amax / 40.0, "max error {err} for values up to {amax}");
        // And about as close as candle's own (searching) Q6_K quantizer.
        let theirs = values(&QTensor::quantize(&w, GgmlDType::Q6K).unwrap());
        let rms = |u: &[f32], v: &[f32]| {
            (u.iter().zip(v).map(|(x, y)| (x - y) * (x - y)).sum::<f32>() / u.len() as f32).sqrt()
        };
        let w = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(rms(&b, &w) < 1.5 * rms(&theirs, &w) + rms(&a, &w), "{} vs {}", rms(&b, &w), rms(&theirs, &w));
    }
}
