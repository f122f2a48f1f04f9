//! The portable tier: `portable_mmm_f32_6x8` over `wide::f32x8`, whose width
//! is fixed when the crate is compiled (two SSE registers per vector on a
//! baseline x86-64 build: 12 accumulators in 24 halves would spill, so the
//! tile is one vector wide).

use wide::f32x8;

use super::microkernel::{direct, indirect, MicroArgs, MicroFn};
use super::GemmKernels;

/// The direct microkernel for an `MR × 8` tile.
///
/// # Safety
/// `args` satisfies [`direct`]'s contract (guaranteed by the driver).
unsafe fn portable_mmm_f32<const MR: usize, const NV: usize>(args: &MicroArgs) {
    // SAFETY: `args` is the caller's contract; `f32x8` needs no CPU feature
    // beyond those the crate was compiled for.
    unsafe { direct::<f32x8, MR, NV>(args) }
}

/// The indirect microkernel for an `MR × 8` tile.
///
/// # Safety
/// `args` satisfies [`indirect`]'s contract (guaranteed by the driver).
unsafe fn portable_immm_f32<const MR: usize, const NV: usize>(args: &MicroArgs) {
    // SAFETY: as in `portable_mmm_f32`.
    unsafe { indirect::<f32x8, MR, NV>(args) }
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

/// The portable GEMM table.
pub(crate) static GEMM: GemmKernels = GemmKernels {
    name: "portable_mmm_f32_6x8",
    mr: 6,
    lanes: 8,
    kc: 512,
    mc: 6 * 48,
    nc: 256,
    direct: &[table!(portable_mmm_f32, 1)],
    gemv: &[
        portable_mmm_f32::<1, 1> as MicroFn,
        portable_mmm_f32::<1, 2>,
        portable_mmm_f32::<1, 3>,
        portable_mmm_f32::<1, 4>,
    ],
    indirect: &[table!(portable_immm_f32, 1)],
};
