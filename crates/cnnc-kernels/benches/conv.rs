//! Convolution benchmarks: `Conv2dOp` on layers of ResNet-18 and
//! MobileNetV2, batch 1, one thread, with the machine's FMA peak measured
//! in the same run and the naive reference as the scalar baseline.
//!
//! Throughput is in elements per second where one element is one flop
//! (`2·MACs`, so criterion's `Gelem/s` reads as GFLOP/s), except for the
//! depthwise layers, which are memory-bound and report bytes moved (input
//! read once + output written once + weights) as GB/s; their GFLOP/s are
//! derived in `docs/KERNELS.md`. Run with `cargo bench -p cnnc-kernels
//! --bench conv`; filter with e.g. `-- conv/avx512`; `CNNC_BENCH_TIERS=avx2,avx512`
//! limits the tiers. Results and conditions are recorded in
//! `docs/KERNELS.md` ("Convolution").

use std::time::Duration;

use cnnc_kernels::geometry::Conv2dGeometry;
use cnnc_kernels::ops::conv::{Algorithm, BottleneckOp, Conv2dOp, Conv2dSpec};
use cnnc_kernels::ops::Context;
use cnnc_kernels::peak::PeakLoop;
use cnnc_kernels::{kernels_for, reference, Activation, Kernels, Tier};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The register-resident FMA loops (`cnnc_kernels::peak`): the peak the
/// layers are a percentage of.
fn bench_peak(c: &mut Criterion) {
    let mut group = c.benchmark_group("peak");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (tier, id) in [(Tier::Avx512, "avx512_zmm"), (Tier::Avx2, "avx2_ymm")] {
        if let Some(peak) = PeakLoop::for_tier(tier) {
            group.throughput(Throughput::Elements(peak.flops_per_call));
            group.bench_function(id, |bench| bench.iter(|| peak.call()));
        }
    }
    group.finish();
}

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

/// A one-sample geometry with PyTorch's output size.
#[allow(clippy::too_many_arguments)]
fn geometry(
    in_channels: usize,
    size: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    groups: usize,
) -> Conv2dGeometry {
    let out = (size + 2 * pad - kernel) / stride + 1;
    Conv2dGeometry {
        batch: 1,
        in_channels,
        in_h: size,
        in_w: size,
        out_channels,
        out_h: out,
        out_w: out,
        kernel: [kernel, kernel],
        stride: [stride, stride],
        dilation: [1, 1],
        padding: [pad; 4],
        groups,
    }
}

/// The benchmarked layers: name, geometry, and the algorithms to run
/// besides the one [`Algorithm::choose`] picks (which runs first).
fn layers() -> Vec<(&'static str, Conv2dGeometry, Vec<Algorithm>)> {
    let layers = vec![
        (
            "conv3x3_64_64_56",
            geometry(64, 56, 64, 3, 1, 1, 1),
            vec![Algorithm::Indirect],
        ),
        (
            "conv3x3_256_256_14",
            geometry(256, 14, 256, 3, 1, 1, 1),
            vec![Algorithm::Indirect],
        ),
        (
            "conv1x1_256_1024_14",
            geometry(256, 14, 1024, 1, 1, 0, 1),
            vec![Algorithm::Indirect],
        ),
        (
            "conv3x3s2_64_128_56",
            geometry(64, 56, 128, 3, 2, 1, 1),
            vec![],
        ),
        (
            "stem7x7s2_3_64_224",
            geometry(3, 224, 64, 7, 2, 3, 1),
            vec![Algorithm::Indirect],
        ),
        ("dw3x3_144_56", geometry(144, 56, 144, 3, 1, 1, 144), vec![]),
        (
            "dw3x3s2_144_56",
            geometry(144, 56, 144, 3, 2, 1, 144),
            vec![],
        ),
        ("dw3x3_960_7", geometry(960, 7, 960, 3, 1, 1, 960), vec![]),
        (
            "grouped3x3_128_28_g32",
            geometry(128, 28, 128, 3, 1, 1, 32),
            vec![],
        ),
    ];
    layers
        .into_iter()
        .map(|(name, g, extra)| {
            let chosen = Algorithm::choose(&g);
            let mut algorithms = vec![chosen];
            algorithms.extend(extra.into_iter().filter(|a| *a != chosen));
            (name, g, algorithms)
        })
        .collect()
}

/// One layer with its operands, ready to run repeatedly.
struct Layer {
    op: Conv2dOp,
    input: Vec<f32>,
    output: Vec<f32>,
    scratch: Vec<f32>,
}

impl Layer {
    fn new(g: Conv2dGeometry, algorithm: Algorithm) -> Layer {
        let spec = Conv2dSpec {
            algorithm,
            ..Conv2dSpec::new(g, Activation::Relu, true, false)
        };
        let bias = values(g.out_channels, 3);
        let op =
            Conv2dOp::pack(spec, &values(g.weight_len(), 2), Some(&bias)).expect("valid layer");
        let scratch = vec![0.0; op.scratch_len(1)];
        Layer {
            op,
            input: values(g.input_len(), 1),
            output: vec![0.0; g.output_len()],
            scratch,
        }
    }

    fn run(&mut self, ctx: &Context) {
        self.op
            .run(
                ctx,
                1,
                &self.input,
                None,
                &mut self.output,
                &mut self.scratch,
            )
            .expect("valid run");
    }
}

/// Bytes a depthwise layer must move at least: input, output, weights.
fn depthwise_bytes(g: &Conv2dGeometry) -> u64 {
    4 * (g.input_len() + g.output_len() + g.weight_len()) as u64
}

fn tiers() -> Vec<&'static Kernels> {
    let filter = std::env::var("CNNC_BENCH_TIERS").ok();
    Tier::ALL
        .into_iter()
        .filter(|tier| *tier >= Tier::Avx2)
        .filter(|tier| {
            filter
                .as_deref()
                .is_none_or(|f| f.split(',').any(|name| name == tier.name()))
        })
        .filter_map(kernels_for)
        .collect()
}

fn bench_layers(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    for kernels in tiers() {
        let ctx = Context::with(kernels, 1);
        for (name, g, algorithms) in layers() {
            for algorithm in algorithms {
                let mut layer = Layer::new(g, algorithm);
                if algorithm == Algorithm::Depthwise {
                    group.throughput(Throughput::Bytes(depthwise_bytes(&g)));
                } else {
                    group.throughput(Throughput::Elements(2 * g.macs()));
                }
                let id = BenchmarkId::new(
                    kernels.tier().name(),
                    format!("{name}/{}", algorithm.name()),
                );
                group.bench_function(id, |bench| bench.iter(|| layer.run(&ctx)));
            }
        }
    }
    group.finish();
}

/// The naive NCHW reference (`f64` accumulation) on one small layer: the
/// scalar baseline.
fn bench_reference(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv_reference");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    let g = geometry(32, 28, 32, 3, 1, 1, 1);
    let (input, weight, bias) = (
        values(g.input_len(), 1),
        values(g.weight_len(), 2),
        values(g.out_channels, 3),
    );
    let mut output = vec![0.0; g.output_len()];
    group.throughput(Throughput::Elements(2 * g.macs()));
    group.bench_function("conv3x3_32_32_28", |bench| {
        bench.iter(|| reference::conv2d(&g, &input, &weight, Some(&bias), false, &mut output))
    });
    group.finish();
}

/// MobileNetV2's inverted residual blocks (expansion 1x1 + ReLU6,
/// depthwise 3x3 + ReLU6, projection 1x1 [+ residual]) as [`BottleneckOp`]
/// and as three [`Conv2dOp`]s run one after the other: `bottleneck/<tier>/
/// <block>/fused` vs `…/layers`. `Gelem/s` is GFLOP/s of the three layers.
fn bench_bottlenecks(c: &mut Criterion) {
    // (name, input channels, expanded channels, output channels, input
    // size, depthwise stride, residual); no expansion when expanded == 0.
    let blocks: [(&str, usize, usize, usize, usize, usize, bool); 5] = [
        ("features1_32_16_112", 32, 0, 16, 112, 1, false),
        ("features2_16_96_24_112s2", 16, 96, 24, 112, 2, false),
        ("features3_24_144_24_56", 24, 144, 24, 56, 1, true),
        ("features4_24_144_32_56s2", 24, 144, 32, 56, 2, false),
        ("features5_32_192_32_28", 32, 192, 32, 28, 1, true),
    ];
    let mut group = c.benchmark_group("bottleneck");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    for kernels in tiers() {
        let ctx = Context::with(kernels, 1);
        for (name, cin, expanded, cout, size, stride, residual) in blocks {
            let channels = if expanded == 0 { cin } else { expanded };
            let dw = geometry(channels, size, channels, 3, stride, 1, channels);
            let out = dw.out_h;
            let pack = |g: Conv2dGeometry, activation, residual, seed| {
                let spec = Conv2dSpec::new(g, activation, true, residual);
                let bias = values(g.out_channels, seed + 1);
                Conv2dOp::pack(spec, &values(g.weight_len(), seed), Some(&bias))
                    .expect("valid layer")
            };
            let expand = (expanded > 0).then(|| {
                pack(
                    geometry(cin, size, channels, 1, 1, 0, 1),
                    Activation::Relu6,
                    false,
                    10,
                )
            });
            let depthwise = pack(dw, Activation::Relu6, false, 20);
            let project = pack(
                geometry(channels, out, cout, 1, 1, 0, 1),
                Activation::Identity,
                residual,
                30,
            );
            let fused =
                BottleneckOp::from_layers(expand.as_ref(), &depthwise, &project).expect("chains");
            let input = values(cin * size * size, 1);
            let skip = residual.then(|| values(cout * out * out, 2));
            let mut output = vec![0.0; cout * out * out];
            let mut expanded_values = vec![0.0; channels * size * size];
            let mut middle = vec![0.0; channels * out * out];
            let mut scratch = vec![0.0; fused.scratch_len(1)];
            let macs = expand.as_ref().map_or(0, |op| op.spec().geometry.macs())
                + dw.macs()
                + project.spec().geometry.macs();
            group.throughput(Throughput::Elements(2 * macs));
            let tier = kernels.tier().name();
            group.bench_function(BenchmarkId::new(tier, format!("{name}/fused")), |bench| {
                bench.iter(|| {
                    fused
                        .run(&ctx, 1, &input, skip.as_deref(), &mut output, &mut scratch)
                        .expect("valid run")
                })
            });
            group.bench_function(BenchmarkId::new(tier, format!("{name}/layers")), |bench| {
                bench.iter(|| {
                    let x = match &expand {
                        Some(op) => {
                            op.run(&ctx, 1, &input, None, &mut expanded_values, &mut [])
                                .expect("valid run");
                            &expanded_values
                        }
                        None => &input,
                    };
                    depthwise
                        .run(&ctx, 1, x, None, &mut middle, &mut [])
                        .expect("valid run");
                    project
                        .run(&ctx, 1, &middle, skip.as_deref(), &mut output, &mut [])
                        .expect("valid run");
                })
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_peak,
    bench_layers,
    bench_bottlenecks,
    bench_reference
);
criterion_main!(benches);
