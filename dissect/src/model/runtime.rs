//! Process-wide execution settings for the models: device choice, CPU threads, allocator.

use crate::error::{Error, Result};

/// Which device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when available, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    /// Resolves to a concrete device; asking for CUDA where there is none is an error rather than
    /// a silent fallback, so a user who asked for the GPU knows they did not get it.
    pub fn resolve(self) -> Result<tch::Device> {
        match self {
            DeviceChoice::Auto => Ok(tch::Device::cuda_if_available()),
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Cuda(i) if tch::Cuda::is_available() && (i as i64) < tch::Cuda::device_count() => {
                Ok(tch::Device::Cuda(i))
            }
            DeviceChoice::Cuda(i) => Err(Error::CudaUnavailable(i)),
        }
    }
}

/// Sets the number of CPU threads libtorch uses for intra-op parallelism (process-wide).
pub fn set_num_threads(n: usize) {
    tch::set_num_threads(n.max(1) as i32);
}

/// The number of CPU threads libtorch currently uses for intra-op parallelism.
pub fn num_threads() -> usize {
    tch::get_num_threads().max(1) as usize
}

/// Keeps large CPU tensors in reusable heap memory (glibc only; a no-op elsewhere; idempotent).
///
/// glibc serves every allocation above 32 MiB with a fresh `mmap` and unmaps it on free, so each
/// batch's big activation tensors (e.g. 154 MB for Lite0's 112×112×96 maps at batch 32) are
/// page-faulted and zeroed by the kernel again on every forward pass; measured here that roughly
/// tripled the cost of memory-bound ops (copies, ReLU6, depthwise convs). Raising the mmap and
/// trim thresholds makes freed blocks reusable. The price: the process keeps its peak heap
/// instead of returning it to the OS.
pub fn tune_cpu_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_THRESHOLD: i32 = -3;
            extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            // SAFETY: mallopt only changes allocator tuning parameters; it is thread-safe.
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 1 << 30);
                mallopt(M_TRIM_THRESHOLD, i32::MAX);
            }
        });
    }
}
