//! Information only (no timing assertion): forward images/s of the built-in EfficientNet-Lite0
//! at batch 32 on 2 CPU threads, all dissectable layers requested. Its own test binary so no
//! other test competes for the cores. See the numbers with `--nocapture`.

mod common;

use dissect::model::{DeviceChoice, LoadOptions, TargetModel, Variant};
use std::time::Instant;
use tch::Tensor;

fn images_per_s(opts: LoadOptions, batch: &Tensor, reps: usize) -> f64 {
    let model = common::load(Variant::Lite0, opts);
    let layers: Vec<usize> = (0..model.layers().len()).collect();
    model.forward_layers(batch, &layers).unwrap(); // warm-up: allocator, oneDNN primitive caches
    let start = Instant::now();
    for _ in 0..reps {
        let outs = model.forward_layers(batch, &layers).unwrap();
        assert_eq!(outs.len(), layers.len());
    }
    (reps as i64 * batch.size()[0]) as f64 / start.elapsed().as_secs_f64()
}

#[test]
fn lite0_forward_throughput() {
    dissect::model::set_num_threads(2);
    let batch = Tensor::randn([32, 3, 224, 224], (tch::Kind::Float, tch::Device::Cpu));
    let reps = 4;
    let cpu = LoadOptions { device: DeviceChoice::Cpu, ..Default::default() };
    let fast = images_per_s(cpu, &batch, reps);
    let reference = images_per_s(LoadOptions::reference(DeviceChoice::Cpu), &batch, reps);
    // Other processes skew wall-clock rates on a shared machine; print the load to judge by.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "EfficientNet-Lite0, batch 32, {} threads, all layers: {fast:.1} images/s (default fast path), \
         {reference:.1} images/s (LoadOptions::reference); load average {}",
        dissect::model::num_threads(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}
