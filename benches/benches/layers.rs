//! The seven layers of the performance targets at batch 1 on one thread,
//! each as a one-layer `.cnn` network in the interpreter's fast mode (the
//! plan, bound weights and kernels that whole networks and generated code
//! run), with the machine's fp32 FMA peak measured in the same run:
//!
//! ```text
//! cargo bench -p cnnc-benches --bench layers
//! cargo bench -p cnnc-benches --bench layers -- conv3x3   # a subset
//! cargo bench -p cnnc-benches --bench layers -- --warm-up-time 0.5 --measurement-time 1
//! ```
//!
//! The default times (warm-up 1 s, measurement 3 s per benchmark) are
//! criterion's command-line options, so a quick run can shorten them.
//!
//! Criterion times the layer's own step of the plan (`layers/<name>`, read
//! from `Interpreter::forward_timed`; its `Gelem/s` is GFLOP/s: one element
//! is one flop, `2 × MACs`, or one comparison for the max-pool) and the
//! peak loop (`peak/zmm`, before and after the layers). At the end a table
//! gives per layer the chosen algorithm, the median step time, GFLOP/s, the
//! percentage of the peak (the higher of the two peak medians, so the
//! percentage is never flattered by a slow peak moment), the bandwidth of
//! the minimum traffic (input + output + parameters, once), and the median
//! of the whole one-layer forward pass, which adds the NCHW ↔ NHWC
//! reorders at the network's edges (what `benches/peers.py --layers`
//! compares with the peers, whose inputs and outputs are NCHW too). The
//! max-pool, depthwise and 7x7 stem layers, which read the network's
//! input, run their planar (NCHW) kernels and have no reorders: there the
//! step is the whole pass; the NHWC kernels they run inside a network are
//! timed in `cnnc-kernels`' own benches (`ops`, `conv`).
//!
//! The FLOPs are the direct convolution's: a Winograd layer does fewer
//! multiplications, so its (effective) rate and percentage can exceed the
//! peak; the table marks them with `*`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use cnnc_benches::peak::PeakLoop;
use cnnc_benches::{load_average, median, LayerSpec, OneLayer, LAYERS};
use criterion::{Criterion, Throughput};

/// Per-run samples of one layer, in seconds.
#[derive(Default)]
struct Samples {
    step: Vec<f64>,
    forward: Vec<f64>,
}

/// What one layer's criterion run left behind.
struct LayerResult {
    spec: LayerSpec,
    algorithm: Option<&'static str>,
    samples: Samples,
}

/// Times the peak loop under `id`; returns its median rate in GFLOP/s.
fn bench_peak(c: &mut Criterion, peak: &PeakLoop, id: &str) -> Option<f64> {
    let rates = Rc::new(RefCell::new(Vec::new()));
    let mut group = c.benchmark_group("peak");
    group.throughput(Throughput::Elements(peak.flops_per_call));
    let sink = Rc::clone(&rates);
    group.bench_function(format!("{}_{id}", peak.name), move |bench| {
        bench.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                std::hint::black_box(peak.call());
            }
            let elapsed = start.elapsed();
            if iters > 0 && !elapsed.is_zero() {
                let per_call = elapsed.as_secs_f64() / iters as f64;
                sink.borrow_mut()
                    .push(peak.flops_per_call as f64 / per_call / 1e9);
            }
            elapsed
        })
    });
    group.finish();
    let mut rates = rates.take();
    (!rates.is_empty()).then(|| median(&mut rates))
}

/// Times every layer's step; returns the samples of those that ran.
fn bench_layers(c: &mut Criterion) -> Vec<LayerResult> {
    let mut results = Vec::new();
    let mut group = c.benchmark_group("layers");
    for spec in LAYERS {
        let mut layer = match OneLayer::new(spec, 1) {
            Ok(layer) => layer,
            Err(error) => {
                eprintln!("skipping {}: {error}", spec.name);
                continue;
            }
        };
        // The first run grows the arena and touches the weights: keep it
        // out of the samples (criterion's warm-up runs are in them).
        if let Err(error) = layer.run() {
            eprintln!("skipping {}: {error}", spec.name);
            continue;
        }
        let algorithm = layer.algorithm();
        let samples = Rc::new(RefCell::new(Samples::default()));
        let sink = Rc::clone(&samples);
        group.throughput(Throughput::Elements(spec.ops));
        group.bench_function(spec.name, move |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut sink = sink.borrow_mut();
                for _ in 0..iters {
                    match layer.run() {
                        Ok((step, forward)) => {
                            total += step;
                            sink.step.push(step.as_secs_f64());
                            sink.forward.push(forward.as_secs_f64());
                        }
                        Err(error) => {
                            eprintln!("{}: {error}", layer.spec.name);
                            break;
                        }
                    }
                }
                total
            })
        });
        let samples = samples.take();
        if !samples.step.is_empty() {
            results.push(LayerResult {
                spec,
                algorithm,
                samples,
            });
        }
    }
    group.finish();
    results
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let tier = cnnc_runtime::kernels::active_tier();
    let load_before = load_average();
    let peak = PeakLoop::for_tier(tier);
    let peak_before = peak.as_ref().and_then(|p| bench_peak(&mut c, p, "before"));
    let mut results = bench_layers(&mut c);
    let peak_after = peak.as_ref().and_then(|p| bench_peak(&mut c, p, "after"));
    let load_after = load_average();
    c.final_summary();

    let peak_rate = match (peak_before, peak_after) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let show = |rate: Option<f64>| rate.map_or_else(|| "-".to_string(), |r| format!("{r:.1}"));
    let load = |load: Option<f64>| load.map_or_else(|| "?".to_string(), |l| format!("{l:.2}"));
    println!();
    println!(
        "tier {tier}, 1 thread, batch 1; FMA peak ({}) {} GFLOP/s before, {} after; load average {} before, {} after",
        peak.map_or("none", |p| p.name),
        show(peak_before),
        show(peak_after),
        load(load_before),
        load(load_after),
    );
    println!(
        "| layer | algorithm | step median | GFLOP/s | % of peak | GB/s (min. traffic) | forward median (with edge reorders) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for result in &mut results {
        let spec = &result.spec;
        let step = median(&mut result.samples.step);
        let forward = median(&mut result.samples.forward);
        let gflops = spec.ops as f64 / step / 1e9;
        let percent = match peak_rate {
            Some(peak) if !spec.name.starts_with("maxpool") => {
                format!("{:.0}%", 100.0 * gflops / peak)
            }
            _ => "-".to_string(),
        };
        let unit = if spec.name.starts_with("maxpool") {
            " (Gcmp/s)"
        } else if result.algorithm.is_some_and(|a| a.starts_with("winograd")) {
            "*"
        } else {
            ""
        };
        println!(
            "| {} | {} | {:.1} µs | {gflops:.1}{unit} | {percent} | {:.1} | {:.1} µs |",
            spec.description,
            result.algorithm.unwrap_or("-"),
            step * 1e6,
            spec.bytes() as f64 / step / 1e9,
            forward * 1e6,
        );
    }
    if results
        .iter()
        .any(|r| r.algorithm.is_some_and(|a| a.starts_with("winograd")))
    {
        println!(
            "\n* effective rate: the direct convolution's 2 x MACs over the time of the Winograd algorithm, which multiplies less"
        );
    }
}
