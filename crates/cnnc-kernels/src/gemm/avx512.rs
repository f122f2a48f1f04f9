//! The AVX-512 tier: `avx512_mmm_f32_14x32` (28 `zmm` accumulators, two
//! panel loads and one broadcast per k-step: 31 of the 32 registers).
//!
//! 14 rows because ResNet-style maps (56², 28², 14²) are multiples of 14, so
//! the 1-13 row variants are rarely needed; see `docs/KERNELS.md` for the
//! measurements behind the tile and the blocking sizes.

use core::arch::x86_64::__m512;

use super::microkernel::{direct, indirect, MicroArgs, MicroFn};
use super::GemmKernels;

/// The direct microkernel for an `MR × 16·NV` tile.
///
/// # Safety
/// The CPU supports AVX-512F (guaranteed by [`crate::tier`], the only place
/// that hands out this table) and `args` satisfies [`direct`]'s contract
/// (guaranteed by the driver).
#[target_feature(enable = "avx512f")]
unsafe fn avx512_mmm_f32<const MR: usize, const NV: usize>(args: &MicroArgs) {
    // SAFETY: AVX-512F is enabled here; `args` is the caller's contract.
    unsafe { direct::<__m512, MR, NV>(args) }
}

/// The indirect microkernel for an `MR × 16·NV` tile.
///
/// # Safety
/// As [`avx512_mmm_f32`], with [`indirect`]'s contract.
#[target_feature(enable = "avx512f")]
unsafe fn avx512_immm_f32<const MR: usize, const NV: usize>(args: &MicroArgs) {
    // SAFETY: AVX-512F is enabled here; `args` is the caller's contract.
    unsafe { indirect::<__m512, MR, NV>(args) }
}

macro_rules! table {
    ($entry:ident, $nv:literal) => {
        &[
            $entry::<1, $nv> as MicroFn,
            $entry::<2, $nv>,
            $entry::<3, $nv>,
            $entry::<4, $nv>,
            $entry::<5, $nv>,
            $entry::<6, $nv>,
            $entry::<7, $nv>,
            $entry::<8, $nv>,
            $entry::<9, $nv>,
            $entry::<10, $nv>,
            $entry::<11, $nv>,
            $entry::<12, $nv>,
            $entry::<13, $nv>,
            $entry::<14, $nv>,
        ]
    };
}

/// The AVX-512 GEMM table.
pub(crate) static GEMM: GemmKernels = GemmKernels {
    name: "avx512_mmm_f32_14x32",
    mr: 14,
    lanes: 16,
    kc: 768,
    mc: 14 * 4,
    nc: 256,
    direct: &[table!(avx512_mmm_f32, 1), table!(avx512_mmm_f32, 2)],
    gemv: &[
        avx512_mmm_f32::<1, 1> as MicroFn,
        avx512_mmm_f32::<1, 2>,
        avx512_mmm_f32::<1, 3>,
        avx512_mmm_f32::<1, 4>,
        avx512_mmm_f32::<1, 5>,
        avx512_mmm_f32::<1, 6>,
        avx512_mmm_f32::<1, 7>,
        avx512_mmm_f32::<1, 8>,
    ],
    indirect: &[table!(avx512_immm_f32, 1), table!(avx512_immm_f32, 2)],
};
