//! The reference tier: the same driver and kernel body over plain `f32`
//! (one lane, `a * b + c` unfused), a 4x16 tile of scalar accumulators. It is
//! slow and simple; the tests' oracle is a separate naive loop in `f64`.

use super::microkernel::{direct, indirect, MicroArgs, MicroFn};
use super::GemmKernels;

/// The direct kernel for an `MR × NV` tile.
///
/// # Safety
/// `args` satisfies [`direct`]'s contract (guaranteed by the driver).
unsafe fn reference_mmm_f32<const MR: usize, const NV: usize>(args: &MicroArgs) {
    // SAFETY: `args` is the caller's contract; scalar code needs no feature.
    unsafe { direct::<f32, MR, NV>(args) }
}

/// The indirect kernel for an `MR × NV` tile.
///
/// # Safety
/// `args` satisfies [`indirect`]'s contract (guaranteed by the driver).
unsafe fn reference_immm_f32<const MR: usize, const NV: usize>(args: &MicroArgs) {
    // SAFETY: as in `reference_mmm_f32`.
    unsafe { indirect::<f32, MR, NV>(args) }
}

macro_rules! table {
    ($entry:ident, $nv:literal) => {
        &[
            $entry::<1, $nv> as MicroFn,
            $entry::<2, $nv>,
            $entry::<3, $nv>,
            $entry::<4, $nv>,
        ]
    };
}

macro_rules! tables {
    ($entry:ident) => {
        &[
            table!($entry, 1),
            table!($entry, 2),
            table!($entry, 3),
            table!($entry, 4),
            table!($entry, 5),
            table!($entry, 6),
            table!($entry, 7),
            table!($entry, 8),
            table!($entry, 9),
            table!($entry, 10),
            table!($entry, 11),
            table!($entry, 12),
            table!($entry, 13),
            table!($entry, 14),
            table!($entry, 15),
            table!($entry, 16),
        ]
    };
}

/// The reference GEMM table.
pub(crate) static GEMM: GemmKernels = GemmKernels {
    name: "reference_mmm_f32_4x16",
    mr: 4,
    lanes: 1,
    kc: 512,
    mc: 4 * 64,
    nc: 256,
    direct: tables!(reference_mmm_f32),
    gemv: &[],
    indirect: tables!(reference_immm_f32),
};
