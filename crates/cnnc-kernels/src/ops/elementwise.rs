//! Element-wise operators over any layout: standalone activations (in place
//! or not), the residual `add` with an optional activation, and the vector
//! math under them — a polynomial `exp` and the `sigmoid` and `tanh` built
//! on it, accurate to about 1-2 ulp over the whole `f32` range.
//!
//! The vector math is generic over the crate-internal `SimdMath` trait (an
//! extension of the GEMM's `Simd`), so every tier — and later the GEMM
//! epilogue — runs the same code: `exp`, `sigmoid`, `tanh` and `activate`
//! (crate-internal; [`exp_in_place`] exposes `exp` on a slice). Kernels
//! are instantiated once per tier by the crate-internal `tier_table!`
//! macro, which the other operator modules use too.
//!
//! **Edges (as PyTorch):** NaN propagates through every activation and
//! `add`; `relu(-0.0)` is `-0.0`; `sigmoid` saturates to exactly 0 and 1
//! (with correctly scaled subnormals in between) and `tanh` to ±1; `exp`
//! overflows to `+inf` above `ln(f32::MAX) ≈ 88.72` and gives subnormals down
//! to `-103.97`, then 0.

use crate::activation::Activation;
use crate::gemm::simd::Simd;
use crate::ops::{check_len, Context, OpError};
use crate::threads::{part, task_count};
use crate::tier::Kernels;

/// The operations of [`Simd`] that vector math needs beyond the GEMM's.
///
/// The target-feature contract of [`crate::gemm::simd`] applies to every
/// method: they are only called from `#[target_feature]` entry points that
/// a [`Kernels`] table of a supported tier leads to.
pub(crate) trait SimdMath: Simd {
    /// A lane mask, as the comparisons produce it.
    type Mask: Copy;

    /// `|self|` (clears the sign bit; NaN stays NaN).
    ///
    /// # Safety
    /// The target-feature contract.
    unsafe fn abs(self) -> Self;
    /// `self < b`, false where either is NaN.
    ///
    /// # Safety
    /// The target-feature contract.
    unsafe fn lt(self, b: Self) -> Self::Mask;
    /// Lanes that are NaN.
    ///
    /// # Safety
    /// The target-feature contract.
    unsafe fn is_nan(self) -> Self::Mask;
    /// `if mask { t } else { f }`, lane by lane.
    ///
    /// # Safety
    /// The target-feature contract.
    unsafe fn select(mask: Self::Mask, t: Self, f: Self) -> Self;
    /// The mask of the first `min(n, LANES)` lanes.
    ///
    /// # Safety
    /// The target-feature contract.
    unsafe fn first_lanes(n: usize) -> Self::Mask;
    /// `2^self` for lanes holding integers in `-126..=127` (exact).
    ///
    /// # Safety
    /// The target-feature contract.
    unsafe fn pow2i(self) -> Self;
    /// The sum of the lanes, in a fixed order.
    ///
    /// # Safety
    /// The target-feature contract.
    unsafe fn reduce_add(self) -> f32;
    /// The maximum of the lanes (NaN lanes may be ignored).
    ///
    /// # Safety
    /// The target-feature contract.
    unsafe fn reduce_max(self) -> f32;
    /// The even lanes of `a`, then those of `b`: every second element of
    /// the `2 · LANES` elements `a, b` (a stride-2 pick).
    ///
    /// # Safety
    /// The target-feature contract.
    unsafe fn even_lanes(a: Self, b: Self) -> Self;
}

/// The scalar reference tier: one lane, plain `f32` arithmetic.
impl SimdMath for f32 {
    type Mask = bool;

    #[inline(always)]
    unsafe fn abs(self) -> Self {
        f32::abs(self)
    }
    #[inline(always)]
    unsafe fn lt(self, b: Self) -> bool {
        self < b
    }
    #[inline(always)]
    unsafe fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    #[inline(always)]
    unsafe fn select(mask: bool, t: Self, f: Self) -> Self {
        if mask {
            t
        } else {
            f
        }
    }
    #[inline(always)]
    unsafe fn first_lanes(n: usize) -> bool {
        n > 0
    }
    #[inline(always)]
    unsafe fn pow2i(self) -> Self {
        f32::from_bits(((self as i32 + 127) as u32) << 23)
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        self
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        self
    }
    #[inline(always)]
    unsafe fn even_lanes(a: Self, _b: Self) -> Self {
        a
    }
}

/// The portable tier: `wide::f32x8` (two SSE registers in a plain build).
impl SimdMath for wide::f32x8 {
    type Mask = wide::f32x8;

    #[inline(always)]
    unsafe fn abs(self) -> Self {
        wide::f32x8::abs(self)
    }
    #[inline(always)]
    unsafe fn lt(self, b: Self) -> Self {
        wide::CmpLt::cmp_lt(self, b)
    }
    #[inline(always)]
    unsafe fn is_nan(self) -> Self {
        wide::f32x8::is_nan(self)
    }
    #[inline(always)]
    unsafe fn select(mask: Self, t: Self, f: Self) -> Self {
        mask.blend(t, f)
    }
    #[inline(always)]
    unsafe fn first_lanes(n: usize) -> Self {
        let lanes: [f32; 8] =
            core::array::from_fn(|i| if i < n { f32::from_bits(u32::MAX) } else { 0.0 });
        wide::f32x8::from(lanes)
    }
    #[inline(always)]
    unsafe fn pow2i(self) -> Self {
        let exponents = self.round_int().to_array();
        wide::f32x8::from(exponents.map(|n| f32::from_bits(((n + 127) as u32) << 23)))
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        let lanes = self.to_array();
        let quads: [f32; 4] = core::array::from_fn(|i| lanes[i] + lanes[i + 4]);
        (quads[0] + quads[2]) + (quads[1] + quads[3])
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        self.to_array()
            .into_iter()
            .fold(f32::NEG_INFINITY, f32::max)
    }
    #[inline(always)]
    unsafe fn even_lanes(a: Self, b: Self) -> Self {
        let (a, b) = (a.to_array(), b.to_array());
        wide::f32x8::from(core::array::from_fn::<f32, 8, _>(|i| {
            if i < 4 {
                a[2 * i]
            } else {
                b[2 * i - 8]
            }
        }))
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::SimdMath;
    use core::arch::x86_64::*;

    // SAFETY (all blocks in this impl): AVX2 and FMA are available by the
    // target-feature contract of `crate::gemm::simd`.
    impl SimdMath for __m256 {
        type Mask = __m256;

        #[inline(always)]
        unsafe fn abs(self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), self) }
        }
        #[inline(always)]
        unsafe fn lt(self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(self, b) }
        }
        #[inline(always)]
        unsafe fn is_nan(self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_cmp_ps::<_CMP_UNORD_Q>(self, self) }
        }
        #[inline(always)]
        unsafe fn select(mask: Self, t: Self, f: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm256_blendv_ps(f, t, mask) }
        }
        #[inline(always)]
        unsafe fn first_lanes(n: usize) -> Self {
            // SAFETY: see the impl comment.
            unsafe {
                let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let below = _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), index);
                _mm256_castsi256_ps(below)
            }
        }
        #[inline(always)]
        unsafe fn pow2i(self) -> Self {
            // SAFETY: see the impl comment.
            unsafe {
                let n = _mm256_add_epi32(_mm256_cvtps_epi32(self), _mm256_set1_epi32(127));
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(n))
            }
        }
        #[inline(always)]
        unsafe fn reduce_add(self) -> f32 {
            // SAFETY: see the impl comment.
            unsafe {
                let quads = _mm_add_ps(
                    _mm256_castps256_ps128(self),
                    _mm256_extractf128_ps::<1>(self),
                );
                let pairs = _mm_add_ps(quads, _mm_movehl_ps(quads, quads));
                _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)))
            }
        }
        #[inline(always)]
        unsafe fn reduce_max(self) -> f32 {
            // SAFETY: see the impl comment.
            unsafe {
                let quads = _mm_max_ps(
                    _mm256_castps256_ps128(self),
                    _mm256_extractf128_ps::<1>(self),
                );
                let pairs = _mm_max_ps(quads, _mm_movehl_ps(quads, quads));
                _mm_cvtss_f32(_mm_max_ss(pairs, _mm_movehdup_ps(pairs)))
            }
        }
        #[inline(always)]
        unsafe fn even_lanes(a: Self, b: Self) -> Self {
            // SAFETY: see the impl comment. Per 128-bit half: a0 a2 b0 b2;
            // then the 64-bit quarters reordered 0 2 1 3.
            unsafe {
                let pairs = _mm256_shuffle_ps::<0x88>(a, b);
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(pairs)))
            }
        }
    }

    // SAFETY (all blocks in this impl): AVX-512F is available by the
    // target-feature contract of `crate::gemm::simd` (every intrinsic used
    // here is AVX-512F or older).
    impl SimdMath for __m512 {
        type Mask = __mmask16;

        #[inline(always)]
        unsafe fn abs(self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm512_abs_ps(self) }
        }
        #[inline(always)]
        unsafe fn lt(self, b: Self) -> __mmask16 {
            // SAFETY: see the impl comment.
            unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self, b) }
        }
        #[inline(always)]
        unsafe fn is_nan(self) -> __mmask16 {
            // SAFETY: see the impl comment.
            unsafe { _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(self, self) }
        }
        #[inline(always)]
        unsafe fn select(mask: __mmask16, t: Self, f: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe { _mm512_mask_blend_ps(mask, f, t) }
        }
        #[inline(always)]
        unsafe fn first_lanes(n: usize) -> __mmask16 {
            ((1u32 << n.min(16)) - 1) as __mmask16
        }
        #[inline(always)]
        unsafe fn pow2i(self) -> Self {
            // SAFETY: see the impl comment.
            unsafe {
                let n = _mm512_add_epi32(_mm512_cvtps_epi32(self), _mm512_set1_epi32(127));
                _mm512_castsi512_ps(_mm512_slli_epi32::<23>(n))
            }
        }
        #[inline(always)]
        unsafe fn reduce_add(self) -> f32 {
            // SAFETY: see the impl comment.
            unsafe {
                let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self)));
                _mm256_add_ps(_mm512_castps512_ps256(self), high).reduce_add()
            }
        }
        #[inline(always)]
        unsafe fn reduce_max(self) -> f32 {
            // SAFETY: see the impl comment.
            unsafe {
                let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self)));
                _mm256_max_ps(_mm512_castps512_ps256(self), high).reduce_max()
            }
        }
        #[inline(always)]
        unsafe fn even_lanes(a: Self, b: Self) -> Self {
            // SAFETY: see the impl comment.
            unsafe {
                let even =
                    _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                _mm512_permutex2var_ps(a, even, b)
            }
        }
    }
}

/// Loads `n` values (all lanes when `n >= LANES`, else the first `n` and
/// zeros).
///
/// # Safety
/// `p` valid for `min(n, LANES)` reads, `n > 0`; the target-feature contract.
#[inline(always)]
pub(crate) unsafe fn load_n<V: Simd>(p: *const f32, n: usize) -> V {
    // SAFETY: forwarded from the caller.
    unsafe {
        if n >= V::LANES {
            V::load(p)
        } else {
            V::load_partial(p, n)
        }
    }
}

/// Stores the first `min(n, LANES)` lanes of `x`.
///
/// # Safety
/// `p` valid for `min(n, LANES)` writes, `n > 0`; the target-feature contract.
#[inline(always)]
pub(crate) unsafe fn store_n<V: Simd>(x: V, p: *mut f32, n: usize) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if n >= V::LANES {
            x.store(p)
        } else {
            x.store_partial(p, n)
        }
    }
}

/// `1.5 · 2²³`: adding and subtracting it rounds an `f32` below `2²²` in
/// magnitude to the nearest integer (ties to even).
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `e^x` lane by lane, within about 1 ulp (measured in the tests over the
/// whole `f32` range; the FMA tiers and the others differ slightly).
///
/// Cephes-style: clamp `x` to `[-104, 89]` (NaN passes through), split
/// `x = n·ln2 + r` with `|r| ≤ ln2/2` (Cody-Waite: `ln2` in a 9-bit high part
/// whose product with `n` is exact, plus a low part), approximate `e^r` by
/// `1 + r + r²·P(r)` with Cephes' degree-5 minimax `P` (its `expf`
/// coefficients, rounded to `f32`), and scale by `2^n` in
/// two exact halves so that results near `f32::MAX` and in the subnormal
/// range are rounded once.
///
/// # Safety
/// The target-feature contract of [`SimdMath`].
#[inline(always)]
pub(crate) unsafe fn exp<V: SimdMath>(x: V) -> V {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_6e-1,
        0.5,
    ];
    // SAFETY: register arithmetic under the caller's contract.
    unsafe {
        // `max`/`min` return their second operand when either is NaN.
        let x = V::splat(89.0).min(V::splat(-104.0).max(x));
        let magic = V::splat(ROUND_MAGIC);
        let n = x.mul(V::splat(LOG2E)).add(magic).sub(magic);
        let r = n.mul_add(V::splat(-LN2_HIGH), x);
        let r = n.mul_add(V::splat(-LN2_LOW), r);
        let mut p = V::splat(P[0]);
        for &c in &P[1..] {
            p = p.mul_add(r, V::splat(c));
        }
        let y = p.mul_add(r.mul(r), r).add(V::splat(1.0));
        // n in -150..=129: two factors in -75..=65, each a normal number.
        let half = n.mul(V::splat(0.5)).add(magic).sub(magic);
        y.mul(half.pow2i()).mul(n.sub(half).pow2i())
    }
}

/// `1 / (1 + e^-x)` lane by lane, within about 2 ulp. Evaluated from
/// `e = e^-|x|` as `1/(1+e)` for `x ≥ 0` and `e/(1+e)` for `x < 0`, so that
/// it never overflows and keeps full relative accuracy down to the subnormal
/// results of very negative `x`.
///
/// # Safety
/// The target-feature contract of [`SimdMath`].
#[inline(always)]
pub(crate) unsafe fn sigmoid<V: SimdMath>(x: V) -> V {
    // SAFETY: register arithmetic under the caller's contract.
    unsafe {
        let one = V::splat(1.0);
        let e = exp(V::zero().sub(x.abs()));
        let numerator = V::select(x.lt(V::zero()), e, one);
        numerator.div(one.add(e))
    }
}

/// `tanh(x)` lane by lane, within about 2 ulp: Cephes' odd polynomial
/// `x + x³·P(x²)` below `|x| = 0.625`, `±(1 - 2/(e^{2|x|} + 1))` above (which
/// saturates to ±1 without overflow trouble).
///
/// # Safety
/// The target-feature contract of [`SimdMath`].
#[inline(always)]
pub(crate) unsafe fn tanh<V: SimdMath>(x: V) -> V {
    const P: [f32; 5] = [
        -5.704_988_7e-3,
        2.063_908_8e-2,
        -5.373_971_5e-2,
        1.333_144_2e-1,
        -3.333_328e-1,
    ];
    // SAFETY: register arithmetic under the caller's contract.
    unsafe {
        let z = x.mul(x);
        let mut p = V::splat(P[0]);
        for &c in &P[1..] {
            p = p.mul_add(z, V::splat(c));
        }
        let small = p.mul(z).mul_add(x, x);

        let magnitude = x.abs();
        let one = V::splat(1.0);
        let e = exp(magnitude.add(magnitude));
        let large = one.sub(V::splat(2.0).div(e.add(one)));
        let large = V::select(x.lt(V::zero()), V::zero().sub(large), large);
        V::select(magnitude.lt(V::splat(0.625)), small, large)
    }
}

/// Applies `activation` to every lane, with PyTorch's edge behaviour (NaN
/// propagates, `relu(-0.0) = -0.0`). For use inside other kernels (fused
/// epilogues); a loop should match on the activation outside (see
/// [`map_activation`]).
///
/// # Safety
/// The target-feature contract of [`SimdMath`].
#[inline(always)]
pub(crate) unsafe fn activate<V: SimdMath>(x: V, activation: Activation) -> V {
    // SAFETY: register arithmetic under the caller's contract.
    unsafe {
        match activation {
            Activation::Identity => x,
            // `max`/`min` return their second operand where either is NaN,
            // and `max(0, -0.0)` is `-0.0`.
            Activation::Relu => V::zero().max(x),
            Activation::Relu6 => V::splat(6.0).min(V::zero().max(x)),
            Activation::LeakyRelu { negative_slope } => {
                V::select(x.lt(V::zero()), x.mul(V::splat(negative_slope)), x)
            }
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => tanh(x),
            Activation::Hardswish => {
                // x * relu6(x + 3) / 6 with a true division, as PyTorch.
                let gate = V::splat(6.0).min(V::zero().max(x.add(V::splat(3.0))));
                x.mul(gate).div(V::splat(6.0))
            }
        }
    }
}

/// A function applied lane by lane inside a kernel loop.
///
/// A trait with an `#[inline(always)]` generic method rather than a
/// closure: a closure is a function of its own, compiled without the entry
/// point's target features, and when LLVM declines to inline it (as it does
/// for one holding [`exp`]) every intrinsic inside becomes a call.
pub(crate) trait Lanewise: Copy {
    /// The function of one vector.
    ///
    /// # Safety
    /// The target-feature contract of [`SimdMath`].
    unsafe fn apply<V: SimdMath>(self, x: V) -> V;
}

/// [`exp`] as a [`Lanewise`] function.
#[derive(Clone, Copy)]
pub(crate) struct Exp;

impl Lanewise for Exp {
    #[inline(always)]
    unsafe fn apply<V: SimdMath>(self, x: V) -> V {
        // SAFETY: the caller's contract.
        unsafe { exp(x) }
    }
}

/// [`activate`] as a [`Lanewise`] function; with the activation known where
/// it is built, the match folds away.
#[derive(Clone, Copy)]
pub(crate) struct Activate(pub Activation);

impl Lanewise for Activate {
    #[inline(always)]
    unsafe fn apply<V: SimdMath>(self, x: V) -> V {
        // SAFETY: the caller's contract.
        unsafe { activate(x, self.0) }
    }
}

/// `output[i] = f(input[i])` for `len` values, four vectors at a time, the
/// ragged end with a partial vector. `input` may equal `output`.
///
/// # Safety
/// `input` valid for `len` reads and `output` for `len` writes (they may be
/// the same pointer but must not otherwise overlap); the target-feature
/// contract.
#[inline(always)]
pub(crate) unsafe fn map<V: SimdMath>(
    input: *const f32,
    output: *mut f32,
    len: usize,
    f: impl Lanewise,
) {
    let lanes = V::LANES;
    let mut i = 0;
    // SAFETY: every access is below `len` (loop bounds); the rest is the
    // caller's contract.
    unsafe {
        while i + 4 * lanes <= len {
            let mut x = [V::zero(); 4];
            for (j, x) in x.iter_mut().enumerate() {
                *x = V::load(input.add(i + j * lanes));
            }
            for (j, x) in x.into_iter().enumerate() {
                f.apply(x).store(output.add(i + j * lanes));
            }
            i += 4 * lanes;
        }
        while i < len {
            let n = len - i;
            store_n(f.apply(load_n::<V>(input.add(i), n)), output.add(i), n);
            i += lanes.min(n);
        }
    }
}

/// [`map`] with `activation`, matched once outside the loop.
///
/// # Safety
/// As [`map`].
#[inline(always)]
pub(crate) unsafe fn map_activation<V: SimdMath>(
    input: *const f32,
    output: *mut f32,
    len: usize,
    activation: Activation,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match activation {
            Activation::Identity => {
                if !core::ptr::eq(input, output) {
                    core::ptr::copy_nonoverlapping(input, output, len);
                }
            }
            Activation::Relu => map::<V>(input, output, len, Activate(Activation::Relu)),
            Activation::Relu6 => map::<V>(input, output, len, Activate(Activation::Relu6)),
            Activation::LeakyRelu { negative_slope } => map::<V>(
                input,
                output,
                len,
                Activate(Activation::LeakyRelu { negative_slope }),
            ),
            Activation::Sigmoid => map::<V>(input, output, len, Activate(Activation::Sigmoid)),
            Activation::Tanh => map::<V>(input, output, len, Activate(Activation::Tanh)),
            Activation::Hardswish => map::<V>(input, output, len, Activate(Activation::Hardswish)),
        }
    }
}

/// Instantiates kernel bodies that are generic over `V: SimdMath` once per
/// tier, and a `table(&Kernels)` function returning the tier's table:
///
/// ```ignore
/// tier_table! {
///     mod pool_tiers for PoolKernels {
///         max: max_pool::<V>(args: &MaxArgs<'_>);
///     }
/// }
/// ```
///
/// makes `pool_tiers::table(kernels).max`, an `unsafe fn(&MaxArgs<'_>)`
/// that runs `max_pool::<f32>` (reference), `::<wide::f32x8>` (portable),
/// `::<__m256>` in an `avx2,fma` function, or `::<__m512>` in an `avx512f`
/// function.
///
/// **Safety of the entry points:** besides the body's own contract, an
/// entry point of an x86 tier requires that the CPU has the tier's features.
/// `table` only returns such a table for the tier of a [`Kernels`], and a
/// `Kernels` of a tier exists only where the CPU has it ([`crate::tier`]).
macro_rules! tier_table {
    (
        mod $module:ident for $table:ident {
            $($field:ident: $body:ident::<V>($($arg:ident: $ty:ty),* $(,)?);)*
        }
    ) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            /// The table of `kernels`' tier.
            pub(super) fn table(kernels: &$crate::tier::Kernels) -> &'static $table {
                match kernels.tier() {
                    $crate::tier::Tier::Reference => &reference::TABLE,
                    $crate::tier::Tier::Portable => &portable::TABLE,
                    #[cfg(target_arch = "x86_64")]
                    $crate::tier::Tier::Avx2 => &avx2::TABLE,
                    #[cfg(target_arch = "x86_64")]
                    $crate::tier::Tier::Avx512 => &avx512::TABLE,
                    #[cfg(not(target_arch = "x86_64"))]
                    _ => &portable::TABLE,
                }
            }

            mod reference {
                #[allow(unused_imports)]
                use super::*;
                pub(in super::super) static TABLE: $table = $table { $($field),* };
                $(
                    /// Scalar instantiation.
                    ///
                    /// # Safety
                    /// The body's contract.
                    unsafe fn $field($($arg: $ty),*) {
                        // SAFETY: forwarded to the body.
                        unsafe { $body::<f32>($($arg),*) }
                    }
                )*
            }

            mod portable {
                #[allow(unused_imports)]
                use super::*;
                pub(in super::super) static TABLE: $table = $table { $($field),* };
                $(
                    /// `wide::f32x8` instantiation.
                    ///
                    /// # Safety
                    /// The body's contract.
                    unsafe fn $field($($arg: $ty),*) {
                        // SAFETY: forwarded to the body.
                        unsafe { $body::<wide::f32x8>($($arg),*) }
                    }
                )*
            }

            #[cfg(target_arch = "x86_64")]
            mod avx2 {
                #[allow(unused_imports)]
                use super::*;
                pub(in super::super) static TABLE: $table = $table { $($field),* };
                $(
                    /// AVX2 + FMA instantiation.
                    ///
                    /// # Safety
                    /// The CPU has AVX2 and FMA; the body's contract.
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn $field($($arg: $ty),*) {
                        // SAFETY: the features are enabled here; the rest
                        // is forwarded to the body.
                        unsafe { $body::<core::arch::x86_64::__m256>($($arg),*) }
                    }
                )*
            }

            #[cfg(target_arch = "x86_64")]
            mod avx512 {
                #[allow(unused_imports)]
                use super::*;
                pub(in super::super) static TABLE: $table = $table { $($field),* };
                $(
                    /// AVX-512F instantiation.
                    ///
                    /// # Safety
                    /// The CPU has AVX-512F; the body's contract.
                    #[target_feature(enable = "avx512f")]
                    unsafe fn $field($($arg: $ty),*) {
                        // SAFETY: the feature is enabled here; the rest is
                        // forwarded to the body.
                        unsafe { $body::<core::arch::x86_64::__m512>($($arg),*) }
                    }
                )*
            }
        }
    };
}
pub(crate) use tier_table;

/// Raw arguments of the slice kernels; every pointer valid for `len`
/// elements (checked by the safe callers). `output` may equal `a`.
struct SliceArgs {
    a: *const f32,
    b: *const f32,
    output: *mut f32,
    len: usize,
    activation: Activation,
}

/// The element-wise kernels of one tier.
struct ElementwiseKernels {
    activation: unsafe fn(&SliceArgs),
    add: unsafe fn(&SliceArgs),
    exp: unsafe fn(&SliceArgs),
}

/// # Safety
/// The pointers of `args` valid for `len` elements; the target-feature
/// contract.
#[inline(always)]
unsafe fn activation_body<V: SimdMath>(args: &SliceArgs) {
    // SAFETY: forwarded from the caller.
    unsafe { map_activation::<V>(args.a, args.output, args.len, args.activation) }
}

/// # Safety
/// As [`activation_body`], `b` included.
#[inline(always)]
unsafe fn add_body<V: SimdMath>(args: &SliceArgs) {
    let lanes = V::LANES;
    let activation = args.activation;
    let mut i = 0;
    // SAFETY: every access is below `len`; the rest is the caller's
    // contract. `output` may equal `a`: each vector is read before it is
    // written.
    unsafe {
        while i < args.len {
            let n = args.len - i;
            let sum = load_n::<V>(args.a.add(i), n).add(load_n::<V>(args.b.add(i), n));
            store_n(activate(sum, activation), args.output.add(i), n);
            i += lanes.min(n);
        }
    }
}

/// # Safety
/// As [`activation_body`].
#[inline(always)]
unsafe fn exp_body<V: SimdMath>(args: &SliceArgs) {
    // SAFETY: forwarded from the caller.
    unsafe { map::<V>(args.a, args.output, args.len, Exp) }
}

tier_table! {
    mod elementwise_tiers for ElementwiseKernels {
        activation: activation_body::<V>(args: &SliceArgs);
        add: add_body::<V>(args: &SliceArgs);
        exp: exp_body::<V>(args: &SliceArgs);
    }
}

/// Elements per task below which element-wise work stays on one thread
/// (about 10 µs of memory traffic: more than a wake-up costs).
const GRAIN: usize = 1 << 15;

/// Runs `kernel` over `len` elements split between the context's threads.
/// `a`, `b`: input pointers (`b` may be null if the kernel ignores it);
/// `output` the output, which may be `a`.
///
/// # Safety
/// `a` (and `b` when used) valid for `len` reads, `output` for `len`
/// writes, all alive until this returns; `output` equal to or disjoint from
/// the inputs.
unsafe fn run_split(
    ctx: &Context,
    kernel: unsafe fn(&SliceArgs),
    a: *const f32,
    b: *const f32,
    output: *mut f32,
    len: usize,
    activation: Activation,
) {
    #[derive(Clone, Copy)]
    struct Raw(*const f32, *const f32, *mut f32);
    // SAFETY: the pointers are only used for the disjoint ranges of the
    // tasks below, while the caller keeps the buffers alive.
    unsafe impl Sync for Raw {}
    impl Raw {
        fn get(&self) -> Raw {
            *self
        }
    }
    let raw = Raw(a, b, output);
    let tasks = task_count(ctx.threads(), len, GRAIN);
    ctx.parallel_for(tasks, |task| {
        let range = part(len, tasks, 64, task);
        let Raw(a, b, output) = raw.get();
        let args = SliceArgs {
            a: a.wrapping_add(range.start),
            b: b.wrapping_add(range.start),
            output: output.wrapping_add(range.start),
            len: range.len(),
            activation,
        };
        // SAFETY: `range` is inside `0..len`, tasks get disjoint ranges of
        // the output, and the table is of a tier this CPU has.
        unsafe { kernel(&args) };
    });
}

/// `e^x` of every element, in place, with `kernels`' tier (the vector
/// `exp` that sigmoid, tanh and softmax use). Single-threaded.
pub fn exp_in_place(kernels: &Kernels, data: &mut [f32]) {
    let args = SliceArgs {
        a: data.as_ptr(),
        b: core::ptr::null(),
        output: data.as_mut_ptr(),
        len: data.len(),
        activation: Activation::Identity,
    };
    // SAFETY: `data` is valid for `len` elements, read and written in place;
    // the table is of `kernels`' tier, which this CPU has.
    unsafe { (elementwise_tiers::table(kernels).exp)(&args) }
}

/// A standalone activation layer (one not fused into a convolution or
/// linear layer).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationSpec {
    /// Elements per sample (the layout does not matter).
    pub len: usize,
    /// The function.
    pub activation: Activation,
}

/// A standalone activation layer: see [`ActivationSpec`].
#[derive(Clone, Debug)]
pub struct ActivationOp {
    spec: ActivationSpec,
}

impl ActivationOp {
    /// The operator for `spec` (every spec is valid).
    pub fn new(spec: ActivationSpec) -> Result<ActivationOp, OpError> {
        Ok(ActivationOp { spec })
    }

    /// The spec.
    pub fn spec(&self) -> &ActivationSpec {
        &self.spec
    }

    /// Floats of scratch `run` needs: none.
    pub fn scratch_len(&self, _batch: usize) -> usize {
        0
    }

    /// `output = activation(input)` for `batch` samples.
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), OpError> {
        let len = total(batch, self.spec.len)?;
        check_len("activation input", input.len(), len)?;
        check_len("activation output", output.len(), len)?;
        let kernel = elementwise_tiers::table(ctx.kernels()).activation;
        // SAFETY: both slices have `len` elements and cannot overlap (one is
        // borrowed mutably).
        unsafe {
            run_split(
                ctx,
                kernel,
                input.as_ptr(),
                core::ptr::null(),
                output.as_mut_ptr(),
                len,
                self.spec.activation,
            );
        }
        Ok(())
    }

    /// `data = activation(data)` for `batch` samples.
    pub fn run_in_place(
        &self,
        ctx: &Context,
        batch: usize,
        data: &mut [f32],
    ) -> Result<(), OpError> {
        let len = total(batch, self.spec.len)?;
        check_len("activation data", data.len(), len)?;
        let kernel = elementwise_tiers::table(ctx.kernels()).activation;
        // SAFETY: `data` has `len` elements, read and written in place.
        unsafe {
            run_split(
                ctx,
                kernel,
                data.as_ptr(),
                core::ptr::null(),
                data.as_mut_ptr(),
                len,
                self.spec.activation,
            );
        }
        Ok(())
    }
}

/// The residual `add` of two values of one shape, with an optional fused
/// activation: `output = activation(a + b)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddSpec {
    /// Elements per sample (the layout does not matter, as long as both
    /// operands have the same).
    pub len: usize,
    /// Applied to the sum ([`Activation::Identity`] for none).
    pub activation: Activation,
}

/// The residual `add`: see [`AddSpec`].
#[derive(Clone, Debug)]
pub struct AddOp {
    spec: AddSpec,
}

impl AddOp {
    /// The operator for `spec` (every spec is valid).
    pub fn new(spec: AddSpec) -> Result<AddOp, OpError> {
        Ok(AddOp { spec })
    }

    /// The spec.
    pub fn spec(&self) -> &AddSpec {
        &self.spec
    }

    /// Floats of scratch `run` needs: none.
    pub fn scratch_len(&self, _batch: usize) -> usize {
        0
    }

    /// `output = activation(a + b)` for `batch` samples.
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        a: &[f32],
        b: &[f32],
        output: &mut [f32],
    ) -> Result<(), OpError> {
        let len = total(batch, self.spec.len)?;
        check_len("add operand a", a.len(), len)?;
        check_len("add operand b", b.len(), len)?;
        check_len("add output", output.len(), len)?;
        let kernel = elementwise_tiers::table(ctx.kernels()).add;
        // SAFETY: all three have `len` elements; the output is borrowed
        // mutably, so it overlaps neither input.
        unsafe {
            run_split(
                ctx,
                kernel,
                a.as_ptr(),
                b.as_ptr(),
                output.as_mut_ptr(),
                len,
                self.spec.activation,
            );
        }
        Ok(())
    }

    /// `a = activation(a + b)` for `batch` samples (the output overwrites
    /// the first operand).
    pub fn run_in_place(
        &self,
        ctx: &Context,
        batch: usize,
        a: &mut [f32],
        b: &[f32],
    ) -> Result<(), OpError> {
        let len = total(batch, self.spec.len)?;
        check_len("add operand a", a.len(), len)?;
        check_len("add operand b", b.len(), len)?;
        let kernel = elementwise_tiers::table(ctx.kernels()).add;
        // SAFETY: both have `len` elements; `a` is read and written in
        // place, `b` (borrowed shared while `a` is mutable) is disjoint.
        unsafe {
            run_split(
                ctx,
                kernel,
                a.as_ptr(),
                b.as_ptr(),
                a.as_mut_ptr(),
                len,
                self.spec.activation,
            );
        }
        Ok(())
    }
}

/// `batch · per_sample`, refused if it overflows.
pub(crate) fn total(batch: usize, per_sample: usize) -> Result<usize, OpError> {
    batch
        .checked_mul(per_sample)
        .ok_or_else(|| OpError::Spec(format!("{batch} samples of {per_sample} elements overflow")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::layout::testing::{contexts, tiers, values, ACTIVATIONS};
    use crate::reference;

    /// Distance in units in the last place between two finite `f32` of the
    /// same sign (or zero); infinite if they differ in sign or NaN-ness.
    fn ulps(a: f32, b: f32) -> u64 {
        if a == b || (a.is_nan() && b.is_nan()) {
            return 0;
        }
        if a.is_nan()
            || b.is_nan()
            || (a.is_sign_negative() != b.is_sign_negative() && a != 0.0 && b != 0.0)
        {
            return u64::MAX;
        }
        let key = |x: f32| {
            let bits = i64::from(x.to_bits() & 0x7fff_ffff);
            if x.is_sign_negative() {
                -bits
            } else {
                bits
            }
        };
        key(a).abs_diff(key(b))
    }

    /// The stride of the sweeps over the `f32` bit patterns: every 1021st
    /// pattern by default, every pattern with `CNNC_EXHAUSTIVE=1` (minutes
    /// in a release build).
    fn stride() -> usize {
        if std::env::var_os("CNNC_EXHAUSTIVE").is_some() {
            1
        } else {
            1021
        }
    }

    /// Runs `run` (an activation, or exp) of `kernels` over every
    /// [`stride`]-th bit pattern of `f32` (both signs, subnormals, NaNs,
    /// infinities) plus some edges, in chunks, and returns the largest ulp
    /// distance to `oracle` and the input where it occurs.
    fn sweep_max_ulps(
        kernels: &'static Kernels,
        run: impl Fn(&'static Kernels, &mut [f32]),
        oracle: impl Fn(f32) -> f32,
    ) -> (u64, f32) {
        let edges = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            88.72283,
            88.72284,
            -103.972,
            -87.33655,
            0.625,
            -0.625,
            1e-30,
            -1e-30,
        ];
        let mut patterns = (0..=u32::MAX)
            .step_by(stride())
            .map(f32::from_bits)
            .chain(edges);
        let mut worst = (0, 0.0);
        let mut inputs = Vec::with_capacity(1 << 20);
        loop {
            inputs.clear();
            inputs.extend(patterns.by_ref().take(1 << 20));
            if inputs.is_empty() {
                return worst;
            }
            let mut data = inputs.clone();
            run(kernels, &mut data);
            for (&x, &y) in inputs.iter().zip(&data) {
                let error = ulps(y, oracle(x));
                if error > worst.0 {
                    worst = (error, x);
                }
            }
        }
    }

    fn apply(kernels: &'static Kernels, activation: Activation, data: &mut [f32]) {
        let op = ActivationOp::new(ActivationSpec {
            len: data.len(),
            activation,
        })
        .unwrap();
        op.run_in_place(&Context::with(kernels, 1), 1, data)
            .unwrap();
    }

    #[test]
    fn exp_is_within_one_ulp_over_the_whole_range() {
        for kernels in tiers() {
            let (error, at) = sweep_max_ulps(kernels, exp_in_place, |x| f64::from(x).exp() as f32);
            eprintln!("{}: exp: at most {error} ulp (at {at:e})", kernels.tier());
            assert!(
                error <= 1,
                "{}: exp off by {error} ulp at {at:e}",
                kernels.tier()
            );
        }
    }

    #[test]
    fn exp_edges() {
        for kernels in tiers() {
            let mut data = vec![
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                0.0,
                -0.0,
                88.8,
                88.7,
                -104.0,
                -103.0,
                -200.0,
                1.0,
            ];
            exp_in_place(kernels, &mut data);
            assert!(data[0].is_nan());
            assert_eq!(&data[1..5], &[f32::INFINITY, 0.0, 1.0, 1.0]);
            assert_eq!(data[5], f32::INFINITY);
            assert!(data[6].is_finite() && data[6] > 3.0e38);
            assert_eq!(data[7], 0.0);
            assert!(
                data[8] > 0.0 && data[8] < f32::MIN_POSITIVE,
                "subnormal e^-103: {}",
                data[8]
            );
            assert_eq!(data[9], 0.0);
            assert_eq!(data[10], core::f32::consts::E);
        }
    }

    #[test]
    fn sigmoid_and_tanh_are_within_two_ulp_over_the_whole_range() {
        for kernels in tiers() {
            for activation in [Activation::Sigmoid, Activation::Tanh] {
                let (error, at) = sweep_max_ulps(
                    kernels,
                    |kernels, data| apply(kernels, activation, data),
                    |x| reference::activation_value(activation, x),
                );
                eprintln!(
                    "{}: {}: at most {error} ulp (at {at:e})",
                    kernels.tier(),
                    activation.name()
                );
                assert!(
                    error <= 2,
                    "{}: {} off by {error} ulp at {at:e}",
                    kernels.tier(),
                    activation.name()
                );
            }
        }
    }

    #[test]
    fn every_activation_matches_the_reference_with_pytorch_edges() {
        let mut inputs = values(1000, 3);
        for x in inputs.iter_mut().step_by(3) {
            *x *= 8.0;
        }
        inputs.extend([
            f32::NAN,
            -0.0,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -3.0,
            3.0,
            6.0,
            -1e-40,
        ]);
        for kernels in tiers() {
            for activation in ACTIVATIONS {
                let mut data = inputs.clone();
                apply(kernels, activation, &mut data);
                for (&x, &y) in inputs.iter().zip(&data) {
                    let expected = reference::activation_value(activation, x);
                    assert!(
                        ulps(y, expected) <= 2,
                        "{} {}({x:e}) = {y:e}, expected {expected:e}",
                        kernels.tier(),
                        activation.name()
                    );
                    if matches!(
                        activation,
                        Activation::Identity
                            | Activation::Relu
                            | Activation::Relu6
                            | Activation::LeakyRelu { .. }
                    ) {
                        // Piecewise linear: exact, signed zeros included.
                        assert_eq!(
                            y.to_bits(),
                            expected.to_bits(),
                            "{} {}({x:e})",
                            kernels.tier(),
                            activation.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn add_with_activation_and_in_place() {
        for len in [0, 1, 7, 16, 33, 100] {
            let (a, b) = (values(3 * len, 1), values(3 * len, 2));
            for kernels in tiers() {
                for activation in ACTIVATIONS {
                    let op = AddOp::new(AddSpec { len, activation }).unwrap();
                    let ctx = Context::with(kernels, 1);
                    let mut output = vec![f32::NAN; 3 * len];
                    op.run(&ctx, 3, &a, &b, &mut output).unwrap();
                    let mut expected = vec![0.0; 3 * len];
                    reference::add(&a, &b, &mut expected);
                    reference::activation(activation, &mut expected);
                    for (&y, &e) in output.iter().zip(&expected) {
                        assert!(
                            ulps(y, e) <= 2,
                            "{} {}: {y} vs {e}",
                            kernels.tier(),
                            activation.name()
                        );
                    }
                    let mut in_place = a.clone();
                    op.run_in_place(&ctx, 3, &mut in_place, &b).unwrap();
                    assert_eq!(in_place, output);
                }
            }
        }
        // NaN in either operand propagates through relu.
        let op = AddOp::new(AddSpec {
            len: 2,
            activation: Activation::Relu,
        })
        .unwrap();
        for kernels in tiers() {
            let mut output = [0.0; 2];
            op.run(
                &Context::with(kernels, 1),
                1,
                &[f32::NAN, -1.0],
                &[-5.0, f32::NAN],
                &mut output,
            )
            .unwrap();
            assert!(output.iter().all(|y| y.is_nan()), "{}", kernels.tier());
        }
    }

    #[test]
    fn results_are_identical_for_every_thread_count() {
        let len = 5 * GRAIN + 13;
        let (a, b) = (values(len, 5), values(len, 6));
        for kernels in tiers() {
            let op = AddOp::new(AddSpec {
                len,
                activation: Activation::Tanh,
            })
            .unwrap();
            let runs: Vec<Vec<f32>> = contexts(kernels)
                .iter()
                .map(|ctx| {
                    let mut output = vec![0.0; len];
                    op.run(ctx, 1, &a, &b, &mut output).unwrap();
                    output
                })
                .collect();
            assert!(runs.windows(2).all(|w| w[0] == w[1]), "{}", kernels.tier());
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let ctx = Context::with(crate::kernels(), 1);
        let op = ActivationOp::new(ActivationSpec {
            len: 4,
            activation: Activation::Relu,
        })
        .unwrap();
        assert_eq!(
            op.run(&ctx, 2, &[0.0; 8], &mut [0.0; 7]),
            Err(OpError::Length {
                what: "activation output",
                len: 7,
                expected: 8
            })
        );
        assert!(op.run_in_place(&ctx, usize::MAX, &mut [0.0; 8]).is_err());
        let add = AddOp::new(AddSpec {
            len: 2,
            activation: Activation::Identity,
        })
        .unwrap();
        assert!(add
            .run(&ctx, 1, &[0.0; 2], &[0.0; 3], &mut [0.0; 2])
            .is_err());
        assert!(add.run_in_place(&ctx, 1, &mut [0.0; 1], &[0.0; 2]).is_err());
    }
}
