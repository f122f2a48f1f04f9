//! A quick probe for tuning on a shared machine: best-of-N and median
//! GFLOP/s of the FMA peak loops and of the layer-shaped GEMMs, per tier.
//!
//! Preemption by neighbours only ever makes a repetition slower, so the best
//! repetition estimates what the code can do and the median what it did.
//! `cargo bench -p cnnc-kernels --bench gemm_probe [-- FILTER]`.

use std::hint::black_box;
use std::time::Instant;

use cnnc_kernels::gemm::{gemm, Epilogue, MatMut, MatRef, PackedB};
use cnnc_kernels::{kernels_for, Activation, Tier};

/// Runs `f` (which does `flops` operations) repeatedly for about `seconds`;
/// returns (best, median) GFLOP/s.
fn measure(flops: f64, seconds: f64, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds || times.len() < 5 {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (flops / times[0] / 1e9, flops / times[times.len() / 2] / 1e9)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn zmm_peak(iterations: usize) -> f32 {
    use core::arch::x86_64::*;
    let (a, b) = (
        _mm512_set1_ps(black_box(0.999)),
        _mm512_set1_ps(black_box(0.001)),
    );
    let mut acc = [_mm512_setzero_ps(); 24];
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    _mm512_reduce_add_ps(
        acc.iter()
            .fold(_mm512_setzero_ps(), |s, x| _mm512_add_ps(s, *x)),
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn ymm_peak(iterations: usize) -> f32 {
    use core::arch::x86_64::*;
    let (a, b) = (
        _mm256_set1_ps(black_box(0.999)),
        _mm256_set1_ps(black_box(0.001)),
    );
    let mut acc = [_mm256_setzero_ps(); 12];
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    _mm256_cvtss_f32(
        acc.iter()
            .fold(_mm256_setzero_ps(), |s, x| _mm256_add_ps(s, *x)),
    )
}

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

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let seconds: f64 = std::env::var("PROBE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let iterations = 1 << 14;
    #[cfg(target_arch = "x86_64")]
    {
        if Tier::Avx512.is_available() && "peak/zmm".contains(&filter) {
            let flops = (iterations * 24 * 16 * 2) as f64;
            // SAFETY: AVX-512F detected.
            let (best, median) = measure(flops, seconds, || unsafe {
                black_box(zmm_peak(black_box(iterations)));
            });
            println!("peak/zmm {best:.1} best {median:.1} median GFLOP/s");
        }
        if Tier::Avx2.is_available() && "peak/ymm".contains(&filter) {
            let flops = (iterations * 12 * 8 * 2) as f64;
            // SAFETY: AVX2 and FMA detected.
            let (best, median) = measure(flops, seconds, || unsafe {
                black_box(ymm_peak(black_box(iterations)));
            });
            println!("peak/ymm {best:.1} best {median:.1} median GFLOP/s");
        }
    }
    let layers = [
        ("conv3x3_64_56_im2col", 3136, 576, 64),
        ("conv1x1_256_1024_14", 196, 256, 1024),
        ("conv3x3_256_14_im2col", 196, 2304, 256),
        ("stem7x7_3_64_112", 12544, 147, 64),
        ("gemv_512_1000", 1, 512, 1000),
        ("tile_l1", 14, 256, 32),
    ];
    for tier in [Tier::Avx512, Tier::Avx2, Tier::Portable] {
        let Some(kernels) = kernels_for(tier) else {
            continue;
        };
        for (name, m, k, n) in layers {
            let id = format!("{}/{name}", tier.name());
            if !id.contains(&filter) {
                continue;
            }
            let a = values(m * k, 1);
            let packed =
                PackedB::from_kn(k, n, &values(k * n, 2), Some(&values(n, 3))).expect("sizes");
            let mut c = vec![0.0f32; m * n];
            let epilogue = Epilogue::activation(Activation::Relu);
            let flops = (2 * m * n * k) as f64;
            let (best, median) = measure(flops, seconds, || {
                let a = MatRef::new(&a, m, k, k).expect("A");
                let c = MatMut::new(&mut c, m, n, n).expect("C");
                gemm(kernels, a, &packed, c, &epilogue).expect("GEMM");
            });
            println!("{id} {best:.1} best {median:.1} median GFLOP/s");
        }
    }
}
