//! GEMM benchmarks: the machine's FMA peak, the microkernel with L1-resident
//! operands, and whole GEMMs of conv-shaped sizes, for every tier the CPU has.
//!
//! Throughput is reported in elements per second where one element is one
//! floating-point operation (a multiply-add counts two), so criterion's
//! `Gelem/s` reads as GFLOP/s. Run with `cargo bench -p cnnc-kernels --bench
//! gemm`; filter with e.g. `-- whole/avx512`. Results and conditions are
//! recorded in `docs/KERNELS.md`.

use std::hint::black_box;
use std::time::Duration;

use cnnc_kernels::gemm::{gemm, Epilogue, MatMut, MatRef, PackedB};
use cnnc_kernels::peak::PeakLoop;
use cnnc_kernels::{kernels_for, Activation, Kernels, Tier};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Iterations of the portable peak loop: those of `cnnc_kernels::peak`.
const PEAK_ITERATIONS: usize = cnnc_kernels::peak::ITERATIONS;

/// The portable tier's "peak": `a * b + c` on 6 `wide::f32x8` chains (12 SSE
/// registers in a plain build, no FMA).
fn portable_peak(iterations: usize, a: f32, b: f32) -> f32 {
    let (a, b) = (wide::f32x8::splat(a), wide::f32x8::splat(b));
    let mut acc = [wide::f32x8::ZERO; 6];
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = *x * a + b;
        }
    }
    acc.iter()
        .fold(wide::f32x8::ZERO, |s, x| s + *x)
        .reduce_add()
}

fn bench_peak(c: &mut Criterion) {
    let mut group = c.benchmark_group("peak");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements((PEAK_ITERATIONS * 6 * 8 * 2) as u64));
    group.bench_function("portable_f32x8", |bench| {
        bench.iter(|| {
            portable_peak(
                black_box(PEAK_ITERATIONS),
                black_box(0.999),
                black_box(0.001),
            )
        })
    });
    // The loops of `cnnc_kernels::peak`.
    for (tier, id) in [(Tier::Avx2, "avx2_ymm"), (Tier::Avx512, "avx512_zmm")] {
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

/// One GEMM with its operands, ready to run repeatedly.
struct Problem {
    m: usize,
    n: usize,
    k: usize,
    a: Vec<f32>,
    packed: PackedB,
    c: Vec<f32>,
}

impl Problem {
    fn new(m: usize, k: usize, n: usize) -> Problem {
        let bias = values(n, 3);
        let packed = PackedB::from_kn(k, n, &values(k * n, 2), Some(&bias)).expect("valid sizes");
        Problem {
            m,
            n,
            k,
            a: values(m * k, 1),
            packed,
            c: vec![0.0; m * n],
        }
    }

    fn flops(&self) -> u64 {
        2 * (self.m * self.n * self.k) as u64
    }

    fn run(&mut self, kernels: &Kernels) {
        let a = MatRef::new(&self.a, self.m, self.k, self.k).expect("valid A");
        let c = MatMut::new(&mut self.c, self.m, self.n, self.n).expect("valid C");
        gemm(
            kernels,
            a,
            &self.packed,
            c,
            &Epilogue::activation(Activation::Relu),
        )
        .expect("valid GEMM");
    }
}

fn tiers() -> Vec<&'static Kernels> {
    Tier::ALL.into_iter().filter_map(kernels_for).collect()
}

/// The microkernel on one register tile (`MR × NR`, or a few) with operands
/// that stay in L1: the GEMM entry point's per-call overhead is included.
fn bench_microkernel(c: &mut Criterion) {
    let mut group = c.benchmark_group("microkernel");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for kernels in tiers() {
        let (mr, nr) = kernels.gemm_tile();
        for k in [128, 256] {
            let mut problem = Problem::new(mr, k, nr);
            group.throughput(Throughput::Elements(problem.flops()));
            let id = BenchmarkId::new(kernels.gemm_kernel_name(), format!("k{k}"));
            group.bench_function(id, |bench| bench.iter(|| problem.run(kernels)));
        }
    }
    group.finish();
}

/// Whole GEMMs shaped like real layers: `(name, M, K, N)`.
const LAYERS: [(&str, usize, usize, usize); 5] = [
    ("conv3x3_64_56_im2col", 3136, 576, 64),
    ("conv1x1_256_1024_14", 196, 256, 1024),
    ("conv3x3_256_14_im2col", 196, 2304, 256),
    ("stem7x7_3_64_112", 12544, 147, 64),
    ("gemv_512_1000", 1, 512, 1000),
];

fn bench_whole(c: &mut Criterion) {
    let mut group = c.benchmark_group("whole");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let filter = std::env::var("CNNC_BENCH_TIERS").ok();
    for kernels in tiers() {
        if filter
            .as_deref()
            .is_some_and(|f| !f.split(',').any(|t| t == kernels.tier().name()))
        {
            continue;
        }
        if kernels.tier() == Tier::Reference {
            group.sample_size(10);
        } else {
            group.sample_size(30);
        }
        for (name, m, k, n) in LAYERS {
            let mut problem = Problem::new(m, k, n);
            group.throughput(Throughput::Elements(problem.flops()));
            let id = BenchmarkId::new(kernels.tier().name(), name);
            group.bench_function(id, |bench| bench.iter(|| problem.run(kernels)));
        }
    }
    group.finish();
}

criterion_group!(benches, bench_peak, bench_microkernel, bench_whole);
criterion_main!(benches);
