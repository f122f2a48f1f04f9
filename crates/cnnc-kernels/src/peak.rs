//! The fp32 FMA peak of one core, for benchmarks to report a kernel's rate
//! as a fraction of it: independent register-resident accumulator chains
//! (enough to hide the FMA latency on every FMA port), no memory traffic,
//! at the vector width of a kernel tier. Used by this crate's criterion
//! benches and by `cnnc-benches`.

use crate::Tier;

/// Iterations of one call (each iterates every chain once).
pub const ITERATIONS: usize = 1 << 16;

/// A peak loop for one vector width.
#[derive(Clone, Copy, Debug)]
pub struct PeakLoop {
    /// `zmm` (AVX-512) or `ymm` (AVX2 + FMA).
    pub name: &'static str,
    /// Floating-point operations per [`call`](Self::call) (an FMA
    /// counts two per lane).
    pub flops_per_call: u64,
    run: fn(usize, f32, f32) -> f32,
}

impl PeakLoop {
    /// The loop matching `tier` (the widest FMA the tier's kernels
    /// use), if the CPU has it; `None` for the portable and reference
    /// tiers, which have no FMA.
    pub fn for_tier(tier: Tier) -> Option<PeakLoop> {
        #[cfg(target_arch = "x86_64")]
        {
            if tier == Tier::Avx512 && Tier::Avx512.is_available() {
                return Some(PeakLoop {
                    name: "zmm",
                    flops_per_call: (ITERATIONS * x86::ZMM_CHAINS * 16 * 2) as u64,
                    run: x86::zmm_checked,
                });
            }
            if tier == Tier::Avx2 && Tier::Avx2.is_available() {
                return Some(PeakLoop {
                    name: "ymm",
                    flops_per_call: (ITERATIONS * x86::YMM_CHAINS * 8 * 2) as u64,
                    run: x86::ymm_checked,
                });
            }
        }
        let _ = tier;
        None
    }

    /// Runs the loop once ([`ITERATIONS`] iterations); the result only
    /// keeps the work from being optimized away.
    pub fn call(&self) -> f32 {
        (self.run)(
            std::hint::black_box(ITERATIONS),
            std::hint::black_box(0.999),
            std::hint::black_box(0.001),
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use crate::Tier;

    /// `zmm` chains: 24 accumulators + 2 constants of 32 registers.
    pub const ZMM_CHAINS: usize = 24;
    /// `ymm` chains: 12 accumulators + 2 constants of 16 registers.
    pub const YMM_CHAINS: usize = 12;

    /// [`zmm`] behind a run-time check (0 without AVX-512F).
    pub fn zmm_checked(iterations: usize, a: f32, b: f32) -> f32 {
        if Tier::Avx512.is_available() {
            // SAFETY: the AVX-512 tier's detection includes AVX-512F.
            unsafe { zmm(iterations, a, b) }
        } else {
            0.0
        }
    }

    /// [`ymm`] behind a run-time check (0 without AVX2 and FMA).
    pub fn ymm_checked(iterations: usize, a: f32, b: f32) -> f32 {
        if Tier::Avx2.is_available() {
            // SAFETY: the AVX2 tier's detection includes AVX2 and FMA.
            unsafe { ymm(iterations, a, b) }
        } else {
            0.0
        }
    }

    /// `acc = acc · a + b` on [`ZMM_CHAINS`] `zmm` registers.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    unsafe fn zmm(iterations: usize, a: f32, b: f32) -> f32 {
        let (a, b) = (_mm512_set1_ps(a), _mm512_set1_ps(b));
        let mut acc = [_mm512_setzero_ps(); ZMM_CHAINS];
        for _ in 0..iterations {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, x| _mm512_add_ps(s, *x));
        _mm512_reduce_add_ps(sum)
    }

    /// `acc = acc · a + b` on [`YMM_CHAINS`] `ymm` registers.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn ymm(iterations: usize, a: f32, b: f32) -> f32 {
        let (a, b) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
        let mut acc = [_mm256_setzero_ps(); YMM_CHAINS];
        for _ in 0..iterations {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, x| _mm256_add_ps(s, *x));
        // Sum the eight lanes (not just the first).
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds the eight floats the store writes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        lanes.iter().sum()
    }
}
