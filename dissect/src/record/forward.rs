//! The forward side of recording: stacks decoded images into batches, runs the model and reduces
//! each requested layer to per-unit means and maxima right away, so full maps never outlive a
//! batch. The batch halves when the device runs out of memory and stays at the size that worked.

use super::error::RecordResult;
use super::summaries::reduce;
use crate::model::TargetModel;
use tch::Tensor;

/// Per requested layer: (means, maxima), `images × channels` each, row-major.
pub(crate) type LayerRows = Vec<(Vec<f32>, Vec<f32>)>;

/// Runs forward passes of at most `cap` images, shrinking `cap` on allocation failures.
pub(crate) struct AdaptiveForward {
    cap: usize,
}

impl AdaptiveForward {
    pub fn new(batch_size: usize) -> Self {
        AdaptiveForward { cap: batch_size.max(1) }
    }

    /// The largest batch that has worked so far (the requested size unless memory ran out).
    pub fn batch_size(&self) -> usize {
        self.cap
    }

    /// Summaries of `layers` (model indices) for `input` (N×3×H×W), in input order.
    pub fn run<M: TargetModel + ?Sized>(
        &mut self,
        model: &M,
        input: &Tensor,
        layers: &[usize],
    ) -> RecordResult<LayerRows> {
        let mut out: LayerRows = layers.iter().map(|_| (Vec::new(), Vec::new())).collect();
        let total = input.size()[0] as usize;
        let mut at = 0;
        while at < total {
            let n = self.cap.min(total - at);
            let attempt = || -> crate::Result<LayerRows> {
                // A view, not a copy: the full batch is already one tensor.
                let chunk = if n == total { input.shallow_clone() } else { input.narrow(0, at as i64, n as i64) };
                let outputs = model.forward_layers(&chunk, layers)?;
                let r = outputs.iter().map(reduce).collect();
                r
            };
            match attempt() {
                Ok(rows) => {
                    for ((mean, max), (m, x)) in out.iter_mut().zip(rows) {
                        mean.extend(m);
                        max.extend(x);
                    }
                    at += n;
                }
                Err(e) if n > 1 && is_out_of_memory(&e) => self.cap = n / 2,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}

/// Whether libtorch failed to allocate (CPU allocator or a GPU backend), as opposed to a real
/// error that a smaller batch would not fix.
pub(crate) fn is_out_of_memory(e: &crate::Error) -> bool {
    let crate::Error::Torch(tch::TchError::Torch(msg)) = e else { return false };
    let msg = msg.to_ascii_lowercase();
    ["out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate"]
        .iter()
        .any(|m| msg.contains(m))
}
