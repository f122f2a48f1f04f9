//! Winograd benchmarks: 3x3 stride-1 ResNet layers at batch 1 on one
//! thread, `F(4x4)` and `F(6x6)`, against the indirect-GEMM convolution
//! (`ops::conv`, `Algorithm::Indirect`) and the same convolution as one GEMM
//! over a prebuilt im2col matrix (`M = OH·OW`, `K = 9·C`, `N = O`; the
//! im2col copy itself is not timed, so this is a bound for any GEMM-based
//! direct convolution).
//!
//! Throughput is in **direct-equivalent** floating-point operations
//! (`2·MACs` of the direct convolution), so criterion's `Gelem/s` reads as
//! direct-equivalent GFLOP/s for every algorithm and the figures compare
//! directly. Run with `cargo bench -p cnnc-kernels --bench winograd`
//! (filter with e.g. `-- 256_14`); `cargo bench -p cnnc-kernels --bench
//! winograd -- accuracy` prints the accuracy table of `docs/KERNELS.md`
//! instead (errors against the `f64` reference convolution), and `--
//! ratios` the speed table: the best of five interleaved rounds per
//! algorithm and the ratio of the indirect conv's time to F(4x4)'s, which is
//! robust on a shared machine where medians are not (`CNNC_THREADS=2` for
//! two threads).

use std::hint::black_box;
use std::time::{Duration, Instant};

use cnnc_kernels::gemm::{gemm, Epilogue, MatMut, MatRef, PackedB};
use cnnc_kernels::ops::conv::{Algorithm, Conv2dOp, Conv2dSpec};
use cnnc_kernels::ops::winograd::{WinogradConv, WinogradSpec, WinogradTile};
use cnnc_kernels::ops::{Buffer, Context, OpError};
use cnnc_kernels::{kernels_for, reference, Activation, Conv2dGeometry, Kernels, Tier};
use criterion::{BenchmarkId, Criterion, Throughput};

/// The layers: `(name, channels, size)`, all 3x3, stride 1, padding 1,
/// `channels → channels`.
const LAYERS: [(&str, usize, usize); 4] = [
    ("conv3x3_64_56", 64, 56),
    ("conv3x3_128_28", 128, 28),
    ("conv3x3_256_14", 256, 14),
    ("conv3x3_512_7", 512, 7),
];

/// Shapes around the edges of the choice rule: `(name, channels, size)`,
/// `F(4x4)` against the indirect convolution only.
const RULE_LAYERS: [(&str, usize, usize); 8] = [
    ("conv3x3_8_56", 8, 56),
    ("conv3x3_16_56", 16, 56),
    ("conv3x3_32_56", 32, 56),
    ("conv3x3_64_14", 64, 14),
    ("conv3x3_64_7", 64, 7),
    ("conv3x3_128_7", 128, 7),
    ("conv3x3_256_7", 256, 7),
    ("conv3x3_512_14", 512, 14),
];

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn geometry(c: usize, o: usize, size: usize) -> Conv2dGeometry {
    Conv2dGeometry {
        batch: 1,
        in_channels: c,
        in_h: size,
        in_w: size,
        out_channels: o,
        out_h: size,
        out_w: size,
        kernel: [3, 3],
        stride: [1, 1],
        dilation: [1, 1],
        padding: [1, 1, 1, 1],
        groups: 1,
    }
}

/// A Winograd layer with its buffers, ready to run repeatedly.
struct Layer {
    op: WinogradConv,
    input: Buffer,
    output: Buffer,
    scratch: Buffer,
}

impl Layer {
    fn new(g: Conv2dGeometry, tile: WinogradTile, input: &[f32], weight: &[f32]) -> Layer {
        let spec = WinogradSpec {
            geometry: g,
            activation: Activation::Relu,
            has_bias: true,
            has_residual: false,
            tile,
        };
        let bias = values(g.out_channels, 3);
        let op = WinogradConv::pack(spec, weight, Some(&bias)).expect("valid layer");
        let scratch = Buffer::zeroed(op.scratch_len(1));
        Layer {
            op,
            input: Buffer::from_slice(input),
            output: Buffer::zeroed(g.out_h * g.out_w * g.out_channels),
            scratch,
        }
    }

    fn run(&mut self, ctx: &Context) -> Result<(), OpError> {
        self.op.run(
            ctx,
            1,
            &self.input,
            None,
            self.output.make_mut(),
            self.scratch.make_mut(),
        )
    }
}

/// The same convolution as one GEMM over an im2col matrix built once.
struct Im2colGemm {
    m: usize,
    k: usize,
    n: usize,
    a: Buffer,
    b: PackedB,
    c: Buffer,
}

impl Im2colGemm {
    /// `input` NHWC, `weight` PyTorch `[O, C, 3, 3]`.
    fn new(g: &Conv2dGeometry, input: &[f32], weight: &[f32]) -> Im2colGemm {
        let (c, o, h, w) = (g.in_channels, g.out_channels, g.in_h, g.in_w);
        let (m, k) = (g.out_h * g.out_w, 9 * c);
        let mut a = Buffer::zeroed(m * k);
        let rows = a.make_mut();
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                for tap in 0..9 {
                    let iy = (oy + tap / 3).checked_sub(g.padding[0]);
                    let ix = (ox + tap % 3).checked_sub(g.padding[1]);
                    if let (Some(iy), Some(ix)) = (iy, ix) {
                        if iy < h && ix < w {
                            let row = (oy * g.out_w + ox) * k + tap * c;
                            rows[row..row + c].copy_from_slice(&input[(iy * w + ix) * c..][..c]);
                        }
                    }
                }
            }
        }
        let bias = values(o, 3);
        let b = PackedB::from_fn(k, o, Some(&bias), |kk, oc| {
            weight[(oc * c + kk % c) * 9 + kk / c]
        })
        .expect("valid sizes");
        Im2colGemm {
            m,
            k,
            n: o,
            a,
            b,
            c: Buffer::zeroed(m * o),
        }
    }

    fn run(&mut self, kernels: &Kernels) {
        let a = MatRef::new(&self.a, self.m, self.k, self.k).expect("valid A");
        let c = MatMut::new(self.c.make_mut(), self.m, self.n, self.n).expect("valid C");
        gemm(
            kernels,
            a,
            &self.b,
            c,
            &Epilogue::activation(Activation::Relu),
        )
        .expect("valid GEMM");
    }
}

/// The indirect-GEMM convolution of `ops::conv` with its buffers.
struct Indirect {
    op: Conv2dOp,
    output: Buffer,
    scratch: Buffer,
}

impl Indirect {
    fn new(g: Conv2dGeometry, weight: &[f32]) -> Indirect {
        let spec = Conv2dSpec {
            geometry: g,
            activation: Activation::Relu,
            has_bias: true,
            has_residual: false,
            algorithm: Algorithm::Indirect,
        };
        let bias = values(g.out_channels, 3);
        let op = Conv2dOp::pack(spec, weight, Some(&bias)).expect("valid layer");
        let scratch = Buffer::zeroed(op.scratch_len(1));
        Indirect {
            op,
            output: Buffer::zeroed(g.out_h * g.out_w * g.out_channels),
            scratch,
        }
    }

    fn run(&mut self, ctx: &Context, input: &[f32]) -> Result<(), OpError> {
        self.op.run(
            ctx,
            1,
            input,
            None,
            self.output.make_mut(),
            self.scratch.make_mut(),
        )
    }
}

/// The tiers to run: the best one, or those listed in `CNNC_BENCH_TIERS`.
fn tiers() -> Vec<&'static Kernels> {
    match std::env::var("CNNC_BENCH_TIERS") {
        Ok(list) => list
            .split(',')
            .filter_map(|name| kernels_for(name.parse().ok()?))
            .collect(),
        Err(_) => kernels_for(Tier::best_available()).into_iter().collect(),
    }
}

/// Benchmarks `layers` in group `group_name`: the indirect convolution, the
/// `tiles` Winograd variants, and with `im2col` the im2col GEMM.
fn bench_group(
    c: &mut Criterion,
    group_name: &str,
    layers: &[(&str, usize, usize)],
    tiles: &[WinogradTile],
    im2col: bool,
) {
    let mut group = c.benchmark_group(group_name);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    for kernels in tiers() {
        let ctx = Context::with(kernels, 1);
        let tier = kernels.tier().name();
        for &(name, channels, size) in layers {
            let g = geometry(channels, channels, size);
            // Buffers are 64-byte aligned, as in an arena.
            let input = Buffer::from_slice(&values(size * size * channels, 1));
            let weight = values(channels * channels * 9, 2);
            group.throughput(Throughput::Elements(2 * g.macs()));
            if im2col {
                let mut baseline = Im2colGemm::new(&g, &input, &weight);
                let id = BenchmarkId::new(format!("{tier}/im2col_gemm"), name);
                group.bench_function(id, |b| b.iter(|| baseline.run(black_box(kernels))));
            }
            let mut indirect = Indirect::new(g, &weight);
            let id = BenchmarkId::new(format!("{tier}/indirect"), name);
            group.bench_function(id, |b| {
                b.iter(|| indirect.run(black_box(&ctx), &input).expect("valid run"))
            });
            for &tile in tiles {
                let mut layer = Layer::new(g, tile, &input, &weight);
                let id = BenchmarkId::new(format!("{tier}/{}", tile.name()), name);
                group.bench_function(id, |b| {
                    b.iter(|| layer.run(black_box(&ctx)).expect("valid run"))
                });
            }
        }
    }
    group.finish();
}

fn bench_layers(c: &mut Criterion) {
    bench_group(c, "winograd", &LAYERS, &WinogradTile::ALL, true);
    bench_group(c, "rule", &RULE_LAYERS, &[WinogradTile::F4x4], false);
}

/// Values like a ResNet layer's: post-ReLU inputs (half zeros) and
/// He-initialized weights (normal, variance `2 / (9·C)`), from Box–Muller.
fn realistic(len: usize, seed: u64, std: f32, relu: bool) -> Vec<f32> {
    let uniform = values(2 * len, seed);
    (0..len)
        .map(|i| {
            let u1 = (uniform[2 * i] * 0.5 + 0.5).max(1e-7);
            let u2 = uniform[2 * i + 1] * 0.5 + 0.5;
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos() * std;
            if relu {
                z.max(0.0)
            } else {
                z
            }
        })
        .collect()
}

/// The largest error relative to `max(1, max|y|)` and to `max|y|`.
fn errors(actual: &[f32], expected: &[f32]) -> (f64, f64) {
    let peak = expected
        .iter()
        .fold(0.0f64, |m, &y| m.max(f64::from(y).abs()));
    let worst = actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| (f64::from(a) - f64::from(e)).abs())
        .fold(0.0f64, f64::max);
    (worst / peak.max(1.0), worst / peak)
}

/// Prints the accuracy table: F(4x4), F(6x6) and the direct GEMM against
/// the `f64` reference, for several channel counts and two data regimes.
fn accuracy() {
    let kernels = kernels_for(Tier::best_available()).expect("the best tier exists");
    let ctx = Context::with(kernels, 1);
    println!(
        "tier {}; error / max|y| (error / max(1, max|y|) in brackets)",
        kernels.tier()
    );
    println!("| data | C | max abs y | direct GEMM | F(4x4) | F(6x6) |");
    println!("|---|---|---|---|---|---|");
    for (data, uniform) in [("uniform [-1,1)", true), ("ReLU in, He weights", false)] {
        for channels in [32, 64, 128, 256, 512] {
            let (size, o) = (12, 64);
            let mut g = geometry(channels, o, size);
            let (input, weight) = if uniform {
                (
                    values(size * size * channels, 5),
                    values(o * channels * 9, 6),
                )
            } else {
                let std = (2.0 / (9.0 * channels as f32)).sqrt();
                (
                    realistic(size * size * channels, 5, 1.0, true),
                    realistic(o * channels * 9, 6, std, false),
                )
            };
            // The reference works on NCHW.
            let mut nchw = vec![0.0f32; input.len()];
            for (pixel, chunk) in input.chunks(channels).enumerate() {
                for (ch, &x) in chunk.iter().enumerate() {
                    nchw[ch * size * size + pixel] = x;
                }
            }
            g.batch = 1;
            let mut expected_nchw = vec![0.0f32; size * size * o];
            reference::conv2d(&g, &nchw, &weight, None, false, &mut expected_nchw);
            let mut expected = vec![0.0f32; expected_nchw.len()];
            for ch in 0..o {
                for pixel in 0..size * size {
                    expected[pixel * o + ch] = expected_nchw[ch * size * size + pixel];
                }
            }
            let peak = expected.iter().fold(0.0f32, |m, &y| m.max(y.abs()));
            let mut direct = Im2colGemm::new(&g, &input, &weight);
            direct.b = PackedB::from_fn(9 * channels, o, None, |kk, oc| {
                weight[(oc * channels + kk % channels) * 9 + kk / channels]
            })
            .expect("valid sizes");
            let a = MatRef::new(&direct.a, direct.m, direct.k, direct.k).expect("valid A");
            let c = MatMut::new(direct.c.make_mut(), direct.m, o, o).expect("valid C");
            gemm(kernels, a, &direct.b, c, &Epilogue::default()).expect("valid GEMM");
            let mut row = format!("| {data} | {channels} | {peak:.1} |");
            let (rel, of_peak) = errors(&direct.c, &expected);
            row += &format!(" {of_peak:.1e} ({rel:.1e}) |");
            for tile in WinogradTile::ALL {
                let spec = WinogradSpec {
                    geometry: g,
                    activation: Activation::Identity,
                    has_bias: false,
                    has_residual: false,
                    tile,
                };
                let op = WinogradConv::pack(spec, &weight, None).expect("valid layer");
                let mut output = vec![0.0f32; expected.len()];
                let mut scratch = vec![0.0f32; op.scratch_len(1)];
                op.run(&ctx, 1, &input, None, &mut output, &mut scratch)
                    .expect("valid run");
                let (rel, of_peak) = errors(&output, &expected);
                row += &format!(" {of_peak:.1e} ({rel:.1e}) |");
            }
            println!("{row}");
        }
    }
}

/// The best time of `run` over repetitions lasting about `seconds`.
fn best_of(seconds: f64, mut run: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed().as_secs_f64() < seconds {
        let once = Instant::now();
        run();
        best = best.min(once.elapsed().as_secs_f64());
    }
    best
}

/// Prints the speed table: best of five interleaved rounds per algorithm.
fn ratios() {
    let kernels = kernels_for(Tier::best_available()).expect("the best tier exists");
    let threads = std::env::var("CNNC_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let ctx = Context::with(kernels, threads);
    println!(
        "tier {}, {threads} thread(s); best time, direct-equivalent GFLOP/s",
        kernels.tier()
    );
    println!("| layer | im2col GEMM | indirect | F(4x4) | F(6x6) | F(4x4) vs indirect |");
    println!("|---|---|---|---|---|---|");
    for (name, channels, size) in LAYERS.into_iter().chain(RULE_LAYERS) {
        let g = geometry(channels, channels, size);
        let input = Buffer::from_slice(&values(size * size * channels, 1));
        let weight = values(channels * channels * 9, 2);
        let mut im2col = Im2colGemm::new(&g, &input, &weight);
        let mut indirect = Indirect::new(g, &weight);
        let mut layers: Vec<Layer> = WinogradTile::ALL
            .iter()
            .map(|&tile| Layer::new(g, tile, &input, &weight))
            .collect();
        let mut best = [f64::INFINITY; 4];
        for _ in 0..5 {
            best[0] = best[0].min(best_of(0.25, || im2col.run(kernels)));
            best[1] = best[1].min(best_of(0.25, || {
                indirect.run(&ctx, &input).expect("valid run")
            }));
            for (slot, layer) in best[2..].iter_mut().zip(&mut layers) {
                *slot = slot.min(best_of(0.25, || layer.run(&ctx).expect("valid run")));
            }
        }
        let flops = 2.0 * g.macs() as f64;
        let cells: Vec<String> = best
            .iter()
            .map(|t| format!("{:.0} µs, {:.0}", t * 1e6, flops / t / 1e9))
            .collect();
        println!(
            "| {name} | {} | {:.2}x |",
            cells.join(" | "),
            best[1] / best[2]
        );
    }
}

fn main() {
    if std::env::args().any(|arg| arg == "accuracy") {
        accuracy();
        return;
    }
    if std::env::args().any(|arg| arg == "ratios") {
        ratios();
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    bench_layers(&mut criterion);
    criterion.final_summary();
}
