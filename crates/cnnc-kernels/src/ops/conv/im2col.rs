//! [`Algorithm::Im2col`](super::Algorithm::Im2col): for layers with few
//! input channels (stems: 3→64 7x7/2, LeNet's 1→6 5x5), where `K =
//! kh·kw·Cin` is small (147, 25) and an indirect GEMM would re-read its row
//! table every `Cin` k-steps. Each task copies the patches of a block of at
//! most [`IM2COL_ROWS`] output pixels into its own slot of scratch — a
//! `rows × K` matrix ordered `(ky, kx, c)`, zeros for the padding — then
//! runs the packed GEMM on it with the fused epilogue. For a stride-1
//! `(kx, c)` is contiguous in the NHWC input, so a kernel row is one copy.
//!
//! The block stays in L1/L2 while the GEMM reads it, and its rows are
//! contiguous (unlike the input's 14 row streams at the stride of the
//! image), which is what this path gains over a GEMM on a full im2col
//! matrix. Scratch is `IM2COL_MAX_TASKS` slots, whatever the batch.

use super::{
    input_coordinate, DisjointSlice, FirstError, GemmSegment, OpError, RunArgs, Sizes, Split,
};
use crate::gemm::{gemm, Epilogue, MatMut, MatRef};
use crate::geometry::Conv2dGeometry;

/// Output pixels per im2col block (at most): a multiple of every tier's
/// `MR` (14, 6, 4).
pub const IM2COL_ROWS: usize = 168;

/// Tasks a call is split into at most (each needs its own scratch slot).
pub const IM2COL_MAX_TASKS: usize = 8;

/// The block layout.
#[derive(Debug)]
pub(super) struct Plan {
    segment: GemmSegment,
    /// Row stride of a block (`K`).
    lda: usize,
    /// Floats of one task's slot (`IM2COL_ROWS · lda`).
    slot: usize,
    /// Floats of all slots.
    scratch: usize,
}

impl Plan {
    pub fn new(g: &Conv2dGeometry, sizes: &Sizes, has_bias: bool) -> Result<Plan, OpError> {
        let lda = sizes.k;
        let slot = IM2COL_ROWS.checked_mul(lda).ok_or_else(super::too_large)?;
        let scratch = IM2COL_MAX_TASKS
            .checked_mul(slot)
            .ok_or_else(super::too_large)?;
        Ok(Plan {
            segment: GemmSegment::new(g, sizes, has_bias)?,
            lda,
            slot,
            scratch,
        })
    }

    pub fn scratch_len(&self, batch: usize) -> usize {
        if batch == 0 {
            0
        } else {
            self.scratch
        }
    }

    pub fn run(
        &self,
        args: &RunArgs<'_>,
        output: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), OpError> {
        let g = &args.spec.geometry;
        let sizes = args.sizes;
        let (pixels, k, n) = (sizes.pixels, sizes.k, g.out_channels);
        let b = self.segment.view(args.constants, 0)?;
        let macs = sizes.macs.saturating_mul(args.batch as u64);
        let split = Split::new(
            args.ctx,
            args.batch,
            pixels,
            n,
            macs,
            IM2COL_MAX_TASKS,
            false,
        );
        let kernels = args.ctx.kernels();
        let mr = kernels.gemm_tile().0.max(1);
        let block_rows = ((IM2COL_ROWS / mr).max(1) * mr).min(IM2COL_ROWS);
        let output = DisjointSlice::new(output);
        let scratch = DisjointSlice::new(scratch);
        let errors = FirstError::default();
        args.ctx.parallel_for(split.tasks(), |task| {
            // SAFETY: every task index runs once, and the slots of distinct
            // tasks are disjoint.
            let Some(slot) =
                (unsafe { scratch.range_mut(task * self.slot..(task + 1) * self.slot) })
            else {
                errors.record(Err(OpError::Length {
                    what: "scratch",
                    len: 0,
                    expected: (task + 1) * self.slot,
                }));
                return;
            };
            split.for_each(task, |sample, rows, _| {
                let input = &args.input[sample * sizes.input..][..sizes.input];
                let mut start = rows.start;
                while start < rows.end {
                    let end = (start + block_rows).min(rows.end);
                    let count = end - start;
                    let block = &mut slot[..count * self.lda];
                    fill(g, input, start..end, block, self.lda);
                    let first = (sample * pixels + start) * n;
                    errors.record((|| -> Result<(), OpError> {
                        let a = MatRef::new(block, count, k, self.lda)?;
                        // SAFETY: the row pieces of a `Split` are disjoint,
                        // and so are the blocks within a piece.
                        let c = unsafe { output.range_mut(first..first + count * n) }.ok_or(
                            OpError::Length {
                                what: "output",
                                len: 0,
                                expected: first + count * n,
                            },
                        )?;
                        let c = MatMut::new(c, count, n, n)?;
                        let residual = match args.residual {
                            Some(residual) => Some(MatRef::new(
                                &residual[first..first + count * n],
                                count,
                                n,
                                n,
                            )?),
                            None => None,
                        };
                        let epilogue = Epilogue {
                            activation: args.spec.activation,
                            residual,
                            accumulate: false,
                        };
                        Ok(gemm(kernels, a, b, c, &epilogue)?)
                    })());
                    start = end;
                }
            });
        });
        errors.into_result()
    }
}

/// Writes the patches of output pixels `pixels` of one sample into `block`
/// (one row of `K = kh·kw·Cin` per pixel, at stride `lda`), zeros for the
/// padding.
fn fill(
    g: &Conv2dGeometry,
    input: &[f32],
    pixels: core::ops::Range<usize>,
    block: &mut [f32],
    lda: usize,
) {
    let cin = g.in_channels;
    let [kernel_h, kernel_w] = g.kernel;
    let [stride_h, stride_w] = g.stride;
    let [dilation_h, dilation_w] = g.dilation;
    let kernel_row = kernel_w * cin;
    for (pixel, row) in pixels.zip(block.chunks_exact_mut(lda)) {
        let (oy, ox) = (pixel / g.out_w, pixel % g.out_w);
        for (ky, dst) in row.chunks_exact_mut(kernel_row).enumerate().take(kernel_h) {
            let Some(iy) = input_coordinate(oy, stride_h, ky, dilation_h, g.padding[0], g.in_h)
            else {
                dst.fill(0.0);
                continue;
            };
            let input_row = &input[iy * g.in_w * cin..][..g.in_w * cin];
            if dilation_w == 1 {
                // Taps `kx0..kx1` are inside the row: one contiguous copy.
                let origin = ox * stride_w;
                let kx0 = g.padding[1].saturating_sub(origin).min(kernel_w);
                let kx1 = (g.in_w + g.padding[1])
                    .saturating_sub(origin)
                    .clamp(kx0, kernel_w);
                dst[..kx0 * cin].fill(0.0);
                if kx1 > kx0 {
                    let ix0 = origin + kx0 - g.padding[1];
                    dst[kx0 * cin..kx1 * cin]
                        .copy_from_slice(&input_row[ix0 * cin..(ix0 + kx1 - kx0) * cin]);
                }
                dst[kx1 * cin..].fill(0.0);
            } else {
                for (kx, tap) in dst.chunks_exact_mut(cin).enumerate() {
                    match input_coordinate(ox, stride_w, kx, dilation_w, g.padding[1], g.in_w) {
                        Some(ix) => tap.copy_from_slice(&input_row[ix * cin..][..cin]),
                        None => tap.fill(0.0),
                    }
                }
            }
        }
    }
}
