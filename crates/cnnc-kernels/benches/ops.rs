//! Benchmarks of the memory-bound operators (batch 1, one thread) against
//! the reference kernels (`oracle`: `cnnc_kernels::reference`), for every
//! tier the CPU has (the `reference` tier is the scalar fast path), and of
//! the thread
//! pool's fork-join latency.
//!
//! Run with `cargo bench -p cnnc-kernels --bench ops`; filter with e.g.
//! `-- linear/`. Throughput is in bytes of the operator's main stream (the
//! weights for `linear`, the input for the others), so criterion's `GiB/s`
//! reads as memory bandwidth. Results are recorded in `docs/KERNELS.md`
//! ("Other operators", "Threads").

use std::hint::black_box;
use std::time::{Duration, Instant};

use cnnc_kernels::gemm::{gemm, Epilogue, MatMut, MatRef, PackedB};
use cnnc_kernels::geometry::Pool2dGeometry;
use cnnc_kernels::ops::elementwise::{exp_in_place, ActivationOp, ActivationSpec};
use cnnc_kernels::ops::layout::{Layout, Reorder, ReorderOp, ReorderSpec};
use cnnc_kernels::ops::linear::{LinearOp, LinearSpec};
use cnnc_kernels::ops::pool::{AdaptiveAvgPoolOp, AdaptiveAvgPoolSpec, MaxPoolOp, MaxPoolSpec};
use cnnc_kernels::ops::Context;
use cnnc_kernels::{kernels_for, reference, Activation, Kernels, Tier};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn tiers() -> Vec<&'static Kernels> {
    Tier::ALL.into_iter().filter_map(kernels_for).collect()
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

/// Batch-1 linear layers: 512→1000 (ResNet-18's classifier, 2 MB of
/// weights) and 4096→1000 (VGG's last layer, 16 MB). Throughput is the
/// weights streamed per call.
fn bench_linear(c: &mut Criterion) {
    for (f, o) in [(512, 1000), (4096, 1000)] {
        let mut group = c.benchmark_group(format!("linear/{f}x{o}"));
        configure(&mut group);
        group.throughput(Throughput::Bytes((4 * f * o) as u64));
        let weight = values(f * o, 1);
        let bias = values(o, 2);
        let x = values(f, 3);
        let mut y = vec![0.0; o];
        group.bench_function("oracle", |bench| {
            bench.iter(|| {
                reference::linear(1, f, o, black_box(&x), &weight, Some(&bias), &mut y);
            })
        });
        let spec = LinearSpec {
            in_features: f,
            out_features: o,
            activation: Activation::Identity,
            has_bias: true,
            has_residual: false,
        };
        let op = LinearOp::pack(spec, &weight, Some(&bias)).expect("valid linear layer");
        for kernels in tiers() {
            let ctx = Context::with(kernels, 1);
            group.bench_function(kernels.tier().name(), |bench| {
                bench.iter(|| op.run(&ctx, 1, black_box(&x), None, &mut y))
            });
        }
        // The packed GEMM's one-row path on the same panels, for comparison.
        let packed = PackedB::from_nk(f, o, &weight, Some(&bias)).expect("valid sizes");
        let kernels = cnnc_kernels::kernels();
        group.bench_function(format!("{}_gemm_1_row", kernels.tier()), |bench| {
            bench.iter(|| {
                let a = MatRef::new(black_box(&x), 1, f, f).expect("valid A");
                let c = MatMut::new(&mut y, 1, o, o).expect("valid C");
                gemm(kernels, a, &packed, c, &Epilogue::default()).expect("valid GEMM")
            })
        });
        group.finish();
    }
}

/// ResNet's max pool after the stem: 3x3, stride 2, padding 1, 64 channels,
/// 112x112 → 56x56. Throughput is the input read.
fn bench_maxpool(c: &mut Criterion) {
    let g = Pool2dGeometry {
        batch: 1,
        channels: 64,
        in_h: 112,
        in_w: 112,
        out_h: 56,
        out_w: 56,
        kernel: [3, 3],
        stride: [2, 2],
        dilation: [1, 1],
        padding: [1, 1],
    };
    let mut group = c.benchmark_group("maxpool/3x3s2p1_64x112");
    configure(&mut group);
    group.throughput(Throughput::Bytes((4 * g.input_len()) as u64));
    let x = values(g.input_len(), 4);
    let mut y = vec![0.0; g.output_len()];
    group.bench_function("oracle", |bench| {
        bench.iter(|| reference::max_pool2d(&g, black_box(&x), &mut y))
    });
    // NHWC (inside a network) and planar NCHW (a pooling of the input).
    for layout in [Layout::Nhwc, Layout::Nchw] {
        let op = MaxPoolOp::new(MaxPoolSpec {
            geometry: g,
            activation: Activation::Identity,
            layout,
        })
        .expect("valid pooling");
        for kernels in tiers() {
            let ctx = Context::with(kernels, 1);
            let name = match layout {
                Layout::Nhwc => kernels.tier().name().to_string(),
                Layout::Nchw => format!("planar_{}", kernels.tier().name()),
            };
            group.bench_function(name, |bench| {
                bench.iter(|| op.run(&ctx, 1, black_box(&x), &mut y))
            });
        }
    }
    group.finish();
}

/// ResNet's global average pool: 512 channels, 7x7 → 1x1.
fn bench_global_avgpool(c: &mut Criterion) {
    let (channels, h, w) = (512, 7, 7);
    let mut group = c.benchmark_group("global_avgpool/512x7x7");
    configure(&mut group);
    group.throughput(Throughput::Bytes((4 * channels * h * w) as u64));
    let x = values(channels * h * w, 5);
    let mut y = vec![0.0; channels];
    group.bench_function("oracle", |bench| {
        bench.iter(|| {
            reference::adaptive_avg_pool2d([1, channels, h, w], [1, 1], black_box(&x), &mut y)
        })
    });
    let op = AdaptiveAvgPoolOp::new(AdaptiveAvgPoolSpec {
        channels,
        input: [h, w],
        output: [1, 1],
    })
    .expect("valid pooling");
    for kernels in tiers() {
        let ctx = Context::with(kernels, 1);
        group.bench_function(kernels.tier().name(), |bench| {
            bench.iter(|| op.run(&ctx, 1, black_box(&x), &mut y))
        });
    }
    group.finish();
}

/// The network's input edge: NCHW → NHWC of a 3x224x224 image, against a
/// naive loop (the reference has no reorder: it is NCHW throughout).
fn bench_reorder(c: &mut Criterion) {
    for (channels, h, w) in [(3, 224, 224), (64, 56, 56)] {
        let mut group = c.benchmark_group(format!("nchw_to_nhwc/{channels}x{h}x{w}"));
        configure(&mut group);
        let len = channels * h * w;
        group.throughput(Throughput::Bytes((4 * len) as u64));
        let x = values(len, 6);
        let mut y = vec![0.0; len];
        group.bench_function("naive", |bench| {
            bench.iter(|| {
                let x = black_box(&x);
                for c in 0..channels {
                    for p in 0..h * w {
                        y[p * channels + c] = x[c * h * w + p];
                    }
                }
            })
        });
        let op = ReorderOp::new(ReorderSpec {
            reorder: Reorder::NchwToNhwc,
            channels,
            height: h,
            width: w,
        })
        .expect("valid reorder");
        let ctx = Context::with(cnnc_kernels::kernels(), 1);
        group.bench_function("blocked", |bench| {
            bench.iter(|| op.run(&ctx, 1, black_box(&x), &mut y))
        });
        group.finish();
    }
}

/// The vector math: `exp` and the sigmoid activation over 64 Ki values
/// (L2-resident), against the reference's `f64` evaluation.
fn bench_math(c: &mut Criterion) {
    let len = 1 << 16;
    let x: Vec<f32> = values(len, 7).iter().map(|v| v * 20.0).collect();
    let mut group = c.benchmark_group("math/64Ki");
    configure(&mut group);
    group.throughput(Throughput::Elements(len as u64));
    let mut data = x.clone();
    group.bench_function("oracle_sigmoid", |bench| {
        bench.iter(|| {
            data.copy_from_slice(&x);
            reference::activation(Activation::Sigmoid, black_box(&mut data));
        })
    });
    let sigmoid = ActivationOp::new(ActivationSpec {
        len,
        activation: Activation::Sigmoid,
    })
    .expect("valid activation");
    for kernels in tiers() {
        let ctx = Context::with(kernels, 1);
        group.bench_function(format!("{}_exp", kernels.tier()), |bench| {
            bench.iter(|| {
                data.copy_from_slice(&x);
                exp_in_place(kernels, black_box(&mut data));
            })
        });
        group.bench_function(format!("{}_sigmoid", kernels.tier()), |bench| {
            bench.iter(|| sigmoid.run(&ctx, 1, black_box(&x), &mut data))
        });
    }
    group.finish();
}

/// The thread pool on 2 threads:
///
/// - `noop_*`: `parallel_for` of 2 empty tasks (1 thread: a plain loop; 2
///   threads: publishing and closing a job, the caller usually running both
///   tasks before the worker arrives);
/// - `rendezvous_*`: 2 tasks that each wait until both have started, so
///   the worker must take part: the fork-join latency with the worker
///   spinning (`hot`) or parked (`after_park`: a pause before each call,
///   only the call timed);
/// - `work_*`: 8 tasks of ~150 µs of arithmetic each on 1 and 2 threads
///   (the speed-up a layer of that size gets).
fn bench_threads(c: &mut Criterion) {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let mut group = c.benchmark_group("threads");
    configure(&mut group);
    let one = Context::with(cnnc_kernels::kernels(), 1);
    let two = Context::with(cnnc_kernels::kernels(), 2);
    let noop = |i: usize| {
        black_box(i);
    };
    group.bench_function("noop_1_thread", |bench| {
        bench.iter(|| one.parallel_for(2, noop))
    });
    group.bench_function("noop_2_threads", |bench| {
        bench.iter(|| two.parallel_for(2, noop))
    });
    let arrived = AtomicUsize::new(0);
    let rendezvous = |_: usize| {
        let generation = arrived.fetch_add(1, Ordering::SeqCst) / 2;
        while arrived.load(Ordering::SeqCst) < 2 * (generation + 1) {
            std::hint::spin_loop();
        }
    };
    group.bench_function("rendezvous_hot", |bench| {
        bench.iter(|| two.parallel_for(2, rendezvous))
    });
    group.bench_function("rendezvous_after_park", |bench| {
        bench.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                std::thread::sleep(Duration::from_millis(1));
                let start = Instant::now();
                two.parallel_for(2, rendezvous);
                total += start.elapsed();
            }
            total
        })
    });
    let data = values(1 << 12, 8);
    let work = |i: usize| {
        let mut acc = i as f32;
        for _ in 0..16 {
            for &x in black_box(&data[..]) {
                acc = acc * 0.999 + x;
            }
        }
        black_box(acc);
    };
    group.bench_function("work_1_thread", |bench| {
        bench.iter(|| one.parallel_for(8, work))
    });
    group.bench_function("work_2_threads", |bench| {
        bench.iter(|| two.parallel_for(8, work))
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_linear,
    bench_maxpool,
    bench_global_avgpool,
    bench_reorder,
    bench_math,
    bench_threads
);
criterion_main!(benches);
