//! [`Algorithm::RowIndirect`](super::Algorithm::RowIndirect): an indirect
//! GEMM whose "taps" are whole kernel **rows**, for layers with few input
//! channels (stems: 3→64 7x7/2, LeNet's 1→6 5x5).
//!
//! With `dilation_w = 1` the `kw · Cin` inputs of one kernel row are
//! contiguous in an NHWC row, in the `(kx, c)` order of the packed `K`. So
//! for an output pixel whose window lies horizontally inside the input, one
//! table entry per kernel row suffices: `kh` entries of `kw · Cin` channels
//! (7 of 21 for the stem) instead of `kh · kw` entries of `Cin` (49 of 3),
//! and the microkernel runs 21 k-steps between two reads of its row table
//! instead of 3. Rows above or below the input read a zero row. The few
//! output columns whose window crosses the left or right edge (2 + 1 of 112
//! for the stem) go through the per-tap table of
//! [`Algorithm::Indirect`](super::Algorithm::Indirect), one GEMM per such
//! column over all its pixels (a column of an NHWC output is a matrix with
//! row stride `OW · Cout`). Nothing is copied: the packed weights are those
//! of every GEMM-based algorithm.
//!
//! **Threads.** Output rows (over all samples) are cut into runs; a task
//! computes the interior of its rows (one GEMM per output row: the
//! interior pixels of a row are contiguous, those of two rows are not) and
//! the edge columns' pixels in its rows.

use core::ops::Range;

use super::{
    FirstError, GemmSegment, OpError, RunArgs, Sizes, PARALLEL_MIN_MACS, TASKS_PER_THREAD,
};
use crate::gemm::{
    indirect_gemm_tiles_shared, Epilogue, IndirectA, IndirectTable, MatMut, MatRef, Tiles,
    PAD_OFFSET,
};
use crate::geometry::Conv2dGeometry;

/// The tables of one sample.
#[derive(Debug)]
pub(super) struct Plan {
    segment: GemmSegment,
    /// Output columns whose kernel rows lie inside the input rows.
    interior: Range<usize>,
    /// `OH · interior.len()` rows (`oy`-major) of `kh` kernel-row taps of
    /// `kw · Cin` channels; `None` without interior columns.
    rows: Option<IndirectTable>,
    /// The edge columns: `(ox, table)`, `OH` rows of `kh · kw` taps of
    /// `Cin` channels each.
    edges: Vec<(usize, IndirectTable)>,
    /// `kw · Cin` zeros (the padding of both kinds of taps).
    zero: Vec<f32>,
}

/// The output columns whose whole kernel row lies inside the input row
/// (`dilation_w = 1`).
fn interior_columns(g: &Conv2dGeometry) -> Range<usize> {
    let (stride, pad) = (g.stride[1], g.padding[1]);
    let first = pad.div_ceil(stride).min(g.out_w);
    // Columns with `ox·stride - pad + kw ≤ W`.
    let end = match (g.in_w + pad).checked_sub(g.kernel[1]) {
        Some(last_origin) => (last_origin / stride + 1).clamp(first, g.out_w),
        None => first,
    };
    first..end
}

impl Plan {
    /// For a checked geometry with one group and `dilation_w = 1`.
    pub fn new(g: &Conv2dGeometry, sizes: &Sizes, has_bias: bool) -> Result<Plan, OpError> {
        let cin = g.in_channels;
        let [kernel_h, kernel_w] = g.kernel;
        let interior = interior_columns(g);
        let rows = if interior.is_empty() {
            None
        } else {
            let mut offsets = Vec::with_capacity(g.out_h * interior.len() * kernel_h);
            for oy in 0..g.out_h {
                for ox in interior.clone() {
                    // Inside the row for interior columns (no underflow).
                    let ix = ox * g.stride[1] - g.padding[1];
                    for ky in 0..kernel_h {
                        offsets.push(match g.input_row(oy, ky) {
                            Some(iy) => (iy * g.in_w + ix) * cin,
                            None => PAD_OFFSET,
                        });
                    }
                }
            }
            Some(IndirectTable::new(offsets, kernel_h, kernel_w * cin)?)
        };
        let mut edges = Vec::new();
        for ox in (0..interior.start).chain(interior.end..g.out_w) {
            let mut offsets = Vec::with_capacity(g.out_h * sizes.taps);
            for oy in 0..g.out_h {
                for ky in 0..kernel_h {
                    for kx in 0..kernel_w {
                        offsets.push(match (g.input_row(oy, ky), g.input_column(ox, kx)) {
                            (Some(iy), Some(ix)) => (iy * g.in_w + ix) * cin,
                            _ => PAD_OFFSET,
                        });
                    }
                }
            }
            edges.push((ox, IndirectTable::new(offsets, sizes.taps, cin)?));
        }
        Ok(Plan {
            segment: GemmSegment::new(g, sizes, has_bias)?,
            interior,
            rows,
            edges,
            zero: vec![0.0; kernel_w * cin],
        })
    }

    pub fn run(&self, args: &RunArgs<'_>, output: &mut [f32]) -> Result<(), OpError> {
        let g = &args.spec.geometry;
        let sizes = args.sizes;
        let (out_h, out_w, n) = (g.out_h, g.out_w, g.out_channels);
        let b = self.segment.view(args.constants, 0)?;
        let pixels = MatMut::new(output, args.batch * sizes.pixels, n, n)?.share();
        // The same output as `[N·OH, OW·Cout]`: an edge column is a sub-matrix.
        let columns = pixels.reshape(args.batch * out_h, out_w * n, out_w * n)?;
        let units = args.batch * out_h;
        let macs = sizes.macs.saturating_mul(args.batch as u64);
        let threads = args.ctx.threads();
        let tasks = if threads <= 1 || macs < PARALLEL_MIN_MACS {
            1
        } else {
            threads.saturating_mul(TASKS_PER_THREAD).min(units).max(1)
        };
        let kernels = args.ctx.kernels();
        let activation = args.spec.activation;
        let epilogue = |residual| Epilogue {
            activation,
            residual,
            accumulate: false,
        };
        let interior = self.interior.clone();
        let errors = FirstError::default();
        args.ctx.parallel_for(tasks, |task| {
            errors.record((|| -> Result<(), OpError> {
                let (first, end) = (task * units / tasks, (task + 1) * units / tasks);
                let mut unit = first;
                while unit < end {
                    let (sample, oy0) = (unit / out_h, unit % out_h);
                    let oy1 = out_h.min(oy0 + end - unit);
                    let input = &args.input[sample * sizes.input..][..sizes.input];
                    if let Some(table) = &self.rows {
                        let a = IndirectA::with_table(input, table, &self.zero)?;
                        let width = interior.len();
                        for oy in oy0..oy1 {
                            let first_pixel = (sample * out_h + oy) * out_w + interior.start;
                            let c = pixels.submatrix(first_pixel..first_pixel + width, 0..n)?;
                            let residual = match args.residual {
                                Some(r) => Some(MatRef::new(&r[first_pixel * n..], width, n, n)?),
                                None => None,
                            };
                            let a = a.sub_rows(oy * width..(oy + 1) * width)?;
                            let tiles = Tiles {
                                rows: 0..width,
                                cols: 0..n,
                            };
                            // SAFETY: tasks write disjoint output rows; the
                            // interior and edge pixels of a row are disjoint.
                            unsafe {
                                indirect_gemm_tiles_shared(
                                    kernels,
                                    &a,
                                    b,
                                    c,
                                    &epilogue(residual),
                                    tiles,
                                )?
                            };
                        }
                    }
                    for (ox, table) in &self.edges {
                        let a = IndirectA::with_table(input, table, &self.zero)?;
                        let c = columns.submatrix(
                            sample * out_h..(sample + 1) * out_h,
                            ox * n..(ox + 1) * n,
                        )?;
                        let residual = match args.residual {
                            Some(r) => Some(MatRef::new(
                                &r[(sample * sizes.pixels + ox) * n..],
                                out_h,
                                n,
                                out_w * n,
                            )?),
                            None => None,
                        };
                        let tiles = Tiles {
                            rows: oy0..oy1,
                            cols: 0..n,
                        };
                        // SAFETY: as above.
                        unsafe {
                            indirect_gemm_tiles_shared(
                                kernels,
                                &a,
                                b,
                                c,
                                &epilogue(residual),
                                tiles,
                            )?
                        };
                    }
                    unit += oy1 - oy0;
                }
                Ok(())
            })());
        });
        errors.into_result()
    }
}
