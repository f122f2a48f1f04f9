//! The AVX2+FMA tier: `avx2_mmm_f32_6x16` (12 `ymm` accumulators, two panel
//! loads and one broadcast per k-step: 15 of the 16 registers).

use core::arch::x86_64::__m256;

use super::microkernel::{direct, indirect, MicroArgs, MicroFn};
use super::GemmKernels;

/// The direct microkernel for an `MR × 8·NV` tile.
///
/// # Safety
/// The CPU supports AVX2 and FMA (guaranteed by [`crate::tier`], the only
/// place that hands out this table) and `args` satisfies [`direct`]'s
/// contract (guaranteed by the driver).
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_mmm_f32<const MR: usize, const NV: usize>(args: &MicroArgs) {
    // SAFETY: AVX2 and FMA are enabled here; `args` is the caller's contract.
    unsafe { direct::<__m256, MR, NV>(args) }
}

/// The indirect microkernel for an `MR × 8·NV` tile.
///
/// # Safety
/// As [`avx2_mmm_f32`], with [`indirect`]'s contract.
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_immm_f32<const MR: usize, const NV: usize>(args: &MicroArgs) {
    // SAFETY: AVX2 and FMA are enabled here; `args` is the caller's contract.
    unsafe { indirect::<__m256, MR, NV>(args) }
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
        ]
    };
}

/// The AVX2 GEMM table.
pub(crate) static GEMM: GemmKernels = GemmKernels {
    name: "avx2_mmm_f32_6x16",
    mr: 6,
    lanes: 8,
    kc: 512,
    mc: 6 * 48,
    nc: 256,
    direct: &[table!(avx2_mmm_f32, 1), table!(avx2_mmm_f32, 2)],
    gemv: &[
        avx2_mmm_f32::<1, 1> as MicroFn,
        avx2_mmm_f32::<1, 2>,
        avx2_mmm_f32::<1, 3>,
        avx2_mmm_f32::<1, 4>,
        avx2_mmm_f32::<1, 5>,
        avx2_mmm_f32::<1, 6>,
        avx2_mmm_f32::<1, 7>,
        avx2_mmm_f32::<1, 8>,
    ],
    indirect: &[table!(avx2_immm_f32, 1), table!(avx2_immm_f32, 2)],
};
