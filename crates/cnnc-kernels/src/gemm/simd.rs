//! A small vector abstraction over which the GEMM microkernels are written once.
//!
//! Every method is an `#[inline(always)]` wrapper over one intrinsic (or a
//! few). The wrappers carry no `#[target_feature]` themselves: they are only
//! ever inlined into an entry point that does, and LLVM then emits the
//! instructions of that entry point's feature set.
//!
//! **The target-feature contract (stated once for the whole crate):** calling
//! any method of [`Simd`] for `__m256` requires that the CPU supports AVX2 and
//! FMA, and for `__m512` that it supports AVX-512F; the callers are
//! `#[target_feature]` entry points which are only reachable through a
//! [`Kernels`](crate::tier::Kernels) table that [`crate::tier`] hands out after
//! `is_x86_feature_detected!` confirmed those features. Pointer arguments
//! must be valid for the number of lanes read or written (`LANES`, or `n` for
//! the partial variants), with no alignment requirement.

/// One SIMD register of `f32` lanes and the operations the microkernels use.
pub(crate) trait Simd: Copy {
    /// Number of `f32` lanes.
    const LANES: usize;

    /// All lanes `0.0`.
    ///
    /// # Safety
    /// The target-feature contract of this module.
    unsafe fn zero() -> Self;
    /// All lanes `x`.
    ///
    /// # Safety
    /// The target-feature contract of this module.
    unsafe fn splat(x: f32) -> Self;
    /// Loads `LANES` values from `p`.
    ///
    /// # Safety
    /// `p` valid for `LANES` reads; the target-feature contract.
    unsafe fn load(p: *const f32) -> Self;
    /// Stores `LANES` values to `p`.
    ///
    /// # Safety
    /// `p` valid for `LANES` writes; the target-feature contract.
    unsafe fn store(self, p: *mut f32);
    /// Loads the first `n` lanes (`0 < n < LANES`) from `p`, the others `0.0`.
    ///
    /// # Safety
    /// `p` valid for `n` reads; the target-feature contract.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self;
    /// Stores the first `n` lanes (`0 < n < LANES`) to `p`.
    ///
    /// # Safety
    /// `p` valid for `n` writes; the target-feature contract.
    unsafe fn store_partial(self, p: *mut f32, n: usize);
    /// `self * b + c`, fused where the tier has FMA.
    ///
    /// # Safety
    /// The target-feature contract of this module.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// `self + b`.
    ///
    /// # Safety
    /// The target-feature contract of this module.
    unsafe fn add(self, b: Self) -> Self;
    /// `self - b`.
    ///
    /// # Safety
    /// The target-feature contract of this module.
    unsafe fn sub(self, b: Self) -> Self;
    /// `self * b`.
    ///
    /// # Safety
    /// The target-feature contract of this module.
    unsafe fn mul(self, b: Self) -> Self;
    /// `self / b`.
    ///
    /// # Safety
    /// The target-feature contract of this module.
    unsafe fn div(self, b: Self) -> Self;
    /// Lane-wise maximum (`b` where either is NaN, as `maxps`).
    ///
    /// # Safety
    /// The target-feature contract of this module.
    unsafe fn max(self, b: Self) -> Self;
    /// Lane-wise minimum (`b` where either is NaN, as `minps`).
    ///
    /// # Safety
    /// The target-feature contract of this module.
    unsafe fn min(self, b: Self) -> Self;
}

/// Loads the first `n` lanes of `p` into a zeroed array (the portable and
/// scalar way to do a partial load).
///
/// # Safety
/// `p` valid for `n` reads and `n <= N`.
#[inline(always)]
unsafe fn load_into_array<const N: usize>(p: *const f32, n: usize) -> [f32; N] {
    let mut lanes = [0.0f32; N];
    // SAFETY: the caller guarantees `p` is valid for `n <= N` reads, and
    // `lanes` has room for `N` values.
    unsafe { core::ptr::copy_nonoverlapping(p, lanes.as_mut_ptr(), n) };
    lanes
}

/// The scalar "vector": the reference tier instantiates the same kernel
/// bodies with one lane, so it exercises the same driver with plain `f32`
/// arithmetic (`a * b + c`, unfused, as the naive loop writes it).
impl Simd for f32 {
    const LANES: usize = 1;

    #[inline(always)]
    unsafe fn zero() -> Self {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees `p` is valid for one read.
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees `p` is valid for one write.
        unsafe { p.write_unaligned(self) }
    }
    #[inline(always)]
    unsafe fn load_partial(_p: *const f32, _n: usize) -> Self {
        // With one lane, `0 < n < LANES` is empty: never called.
        0.0
    }
    #[inline(always)]
    unsafe fn store_partial(self, _p: *mut f32, _n: usize) {}
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        self * b + c
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        self + b
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        self - b
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        self * b
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        self / b
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        if self > b {
            self
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn min(self, b: Self) -> Self {
        if self < b {
            self
        } else {
            b
        }
    }
}

/// The portable tier's vector: `wide::f32x8`, whose representation is fixed
/// when this crate is compiled (two SSE registers on a baseline x86-64
/// build, one AVX register with `-C target-cpu=native`, NEON on aarch64).
impl Simd for wide::f32x8 {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> Self {
        wide::f32x8::ZERO
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        wide::f32x8::splat(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees `p` is valid for 8 reads; the read is
        // unaligned.
        wide::f32x8::from(unsafe { p.cast::<[f32; 8]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees `p` is valid for 8 writes.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(self.to_array()) }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> Self {
        // SAFETY: the caller guarantees `p` is valid for `n < 8` reads.
        wide::f32x8::from(unsafe { load_into_array::<8>(p, n) })
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize) {
        let lanes = self.to_array();
        // SAFETY: the caller guarantees `p` is valid for `n < 8` writes.
        unsafe { core::ptr::copy_nonoverlapping(lanes.as_ptr(), p, n) }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // Not `wide`'s `mul_add`: without compile-time FMA both are a multiply
        // and an add, and this spelling keeps the rounding explicit.
        self * b + c
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        self + b
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        self - b
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        self * b
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        self / b
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        self.fast_max(b)
    }
    #[inline(always)]
    unsafe fn min(self, b: Self) -> Self {
        self.fast_min(b)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use core::arch::x86_64::*;

    /// `-1` in the first 8 entries, `0` in the last 8: loading 8 entries from
    /// `8 - n` gives the AVX2 mask of the first `n` lanes.
    static AVX2_MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

    /// The AVX2 mask selecting the first `n` lanes (`n <= 8`).
    ///
    /// # Safety
    /// AVX must be available (the module's target-feature contract).
    #[inline(always)]
    unsafe fn avx2_mask(n: usize) -> __m256i {
        // SAFETY: `n <= 8`, so the 8 entries starting at `8 - n` lie inside
        // the 16-entry table.
        unsafe { _mm256_loadu_si256(AVX2_MASKS.as_ptr().add(8 - n).cast()) }
    }

    // SAFETY (all blocks in this impl): AVX2 and FMA are available by the
    // module's target-feature contract, and pointers are valid for the lanes
    // accessed by the caller's contract.
    impl Simd for __m256 {
        const LANES: usize = 8;

        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: see the impl comment.
            unsafe { _mm256_storeu_ps(p, self) }
        }
        #[inline(always)]
        unsafe fn load_partial(p: *const f32, n: usize) -> Self {
            // SAFETY: see the impl comment; masked-off lanes are not read.
            unsafe { _mm256_maskload_ps(p, avx2_mask(n)) }
        }
        #[inline(always)]
        unsafe fn store_partial(self, p: *mut f32, n: usize) {
            // SAFETY: see the impl comment; masked-off lanes are not written.
            unsafe { _mm256_maskstore_ps(p, avx2_mask(n), self) }
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_fmadd_ps(self, b, c) }
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_add_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_sub_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_mul_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_div_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_max_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_min_ps(self, b) }
        }
    }

    /// The AVX-512 mask selecting the first `n` lanes (`n < 16`).
    #[inline(always)]
    fn avx512_mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    // SAFETY (all blocks in this impl): AVX-512F is available by the module's
    // target-feature contract, and pointers are valid for the lanes accessed
    // by the caller's contract (masked-off lanes are neither read nor
    // written, and do not fault).
    impl Simd for __m512 {
        const LANES: usize = 16;

        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: see the impl comment.
            unsafe { _mm512_storeu_ps(p, self) }
        }
        #[inline(always)]
        unsafe fn load_partial(p: *const f32, n: usize) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm512_maskz_loadu_ps(avx512_mask(n), p) }
        }
        #[inline(always)]
        unsafe fn store_partial(self, p: *mut f32, n: usize) {
            // SAFETY: see the impl comment.
            unsafe { _mm512_mask_storeu_ps(p, avx512_mask(n), self) }
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm512_fmadd_ps(self, b, c) }
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm512_add_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm512_sub_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm512_mul_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm512_div_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm512_max_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm512_min_ps(self, b) }
        }
    }
}
