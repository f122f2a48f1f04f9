//! Single-batch latency of generated ResNet-18 and MobileNetV2 against the
//! interpreter's fast mode on the same weights, threads 1 and 2, in one run:
//!
//! ```text
//! cargo bench -p cnnc-generated-benches
//! ```
//!
//! Both run the same execution plan on the same kernels, so the difference
//! is the interpreter's dispatch between steps. Medians of `ITERS` runs
//! after `WARMUP`, the two engines alternating; the machine is shared, so
//! compare the two columns of one run rather than runs.

use std::time::Instant;

const WARMUP: usize = 5;
const ITERS: usize = 50;

/// Median and minimum times of two closures, in milliseconds, run
/// alternately (so that a change of load on the shared machine hits both).
fn time_pair(mut a: impl FnMut(), mut b: impl FnMut()) -> ((f64, f64), (f64, f64)) {
    for _ in 0..WARMUP {
        a();
        b();
    }
    let (mut times_a, mut times_b) = (Vec::new(), Vec::new());
    for _ in 0..ITERS {
        let start = Instant::now();
        a();
        times_a.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        b();
        times_b.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let stats = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        (times[times.len() / 2], times[0])
    };
    (stats(&mut times_a), stats(&mut times_b))
}

fn context(threads: usize) -> cnnc_runtime::kernels::ops::Context {
    cnnc_runtime::kernels::ops::Context::with(cnnc_runtime::kernels::kernels(), threads)
}

/// The interpreter's fast mode for `examples/<name>.cnn` with the weights
/// the build script generated.
fn interpreter(name: &str, threads: usize) -> cnnc_interp::Interpreter {
    let path = format!("{}/../../examples/{name}.cnn", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("the example");
    let file = cnnc_syntax::SourceFile::new(path, text);
    let checked = cnnc_ir::check(&file).expect("checks");
    let weights =
        cnnc_runtime::WeightFile::from_path(format!("{}/{name}.safetensors", env!("OUT_DIR")))
            .expect("weights");
    let options = cnnc_interp::Options::new()
        .mode(cnnc_interp::Mode::Fast)
        .threads(threads);
    cnnc_interp::Interpreter::with_options(&checked.graph, &checked.info, Some(&weights), &options)
        .expect("binds")
}

macro_rules! bench {
    ($name:literal, $ty:ty) => {{
        let input: Vec<f32> = (0..<$ty>::INPUT_LEN)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let mut output = vec![0.0f32; <$ty>::OUTPUT_LEN];
        let mut net = <$ty>::new();
        for threads in [1, 2] {
            net.set_context(context(threads));
            let mut interp = interpreter($name, threads);
            let mut again = vec![0.0f32; output.len()];
            let ((generated, generated_min), (interpreted, interpreted_min)) = time_pair(
                || net.forward(&input, &mut output).expect("forward"),
                || interp.forward(&input, &mut again).expect("forward"),
            );
            assert_eq!(
                output.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                again.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "generated and interpreted outputs differ"
            );
            println!(
                "{:<13} batch 1, {threads} thread(s): generated {generated:8.3} ms (min {generated_min:.3}), \
                 interpreter fast {interpreted:8.3} ms (min {interpreted_min:.3}), ratio {:.3}",
                $name,
                generated / interpreted
            );
        }
    }};
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`:
    // only build then.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    println!("tier: {:?}", cnnc_runtime::kernels::active_tier());
    #[cfg(cnnc_full_bench)]
    {
        bench!("resnet18", cnnc_generated_benches::resnet18::Resnet18);
        bench!(
            "mobilenet_v2",
            cnnc_generated_benches::mobilenet_v2::MobilenetV2
        );
    }
    #[cfg(not(cnnc_full_bench))]
    bench!("lenet5", cnnc_generated_benches::lenet5::Lenet5);
}
