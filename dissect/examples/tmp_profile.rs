// TEMPORARY profiling scratch (to be deleted).
use dissect::model::*;
use std::time::Instant;
use tch::Tensor;
#[repr(C)] struct Ts { s: i64, ns: i64 }
extern "C" { fn clock_gettime(c: i32, t: *mut Ts) -> i32; }
fn cpu() -> f64 { let mut t = Ts { s: 0, ns: 0 }; unsafe { clock_gettime(2, &mut t) }; t.s as f64 + t.ns as f64 * 1e-9 }
fn main() {
    let tune = std::env::var("TUNE").map(|v| v == "1").unwrap_or(false);
    let spawn = std::env::var("SPAWN").is_ok();
    let run = move || {
        set_num_threads(2);
        let mk = |fold, cl, pk| {
            let o = LoadOptions { device: DeviceChoice::Cpu, fold_bn: fold, channels_last: cl, pad_in_kernel: pk, tune_allocator: tune };
            EfficientNetLite::load_default(Variant::Lite0, o).unwrap()
        };
        let models = [("fast", mk(true, true, true)), ("fold+cl", mk(true, true, false)), ("cl", mk(false, true, false)), ("ref", mk(false, false, false))];
        let batch = Tensor::randn([32, 3, 224, 224], (tch::Kind::Float, tch::Device::Cpu));
        let all: Vec<usize> = (0..10).collect();
        let mut tot = vec![0f64; models.len()];
        let mut ctot = vec![0f64; models.len()];
        for round in 0..3 {
            for (i, (_, m)) in models.iter().enumerate() {
                let _ = m.forward_layers(&batch, &all).unwrap();
                let t = Instant::now(); let c0 = cpu();
                let _ = m.forward_layers(&batch, &all).unwrap();
                let _ = m.forward_layers(&batch, &all).unwrap();
                if round > 0 { tot[i] += t.elapsed().as_secs_f64(); ctot[i] += cpu() - c0; }
            }
        }
        for (i, (n, _)) in models.iter().enumerate() { eprintln!("tune={tune} spawn={spawn} {n:8} {:6.1} img/s wall, {:6.1} img/cpu-s x2", 4.0 * 32.0 / tot[i], 2.0 * 4.0 * 32.0 / ctot[i]); }
    };
    if spawn { std::thread::spawn(run).join().unwrap() } else { run() }
}
