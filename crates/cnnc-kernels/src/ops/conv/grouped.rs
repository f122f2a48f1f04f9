//! [`Algorithm::Grouped`](super::Algorithm::Grouped): a convolution with
//! `groups > 1` (and not depthwise) as one GEMM per (sample, group) on
//! channel slices of the NHWC tensors. Group `g` reads input channels
//! `g·Cin/G..` of every pixel (a slice starting at that channel, row stride
//! `Cin`) and writes output channels `g·Cout/G..` (row stride `Cout`), so
//! nothing is copied: a 1x1 stride-1 unpadded layer is a plain strided GEMM,
//! anything else an indirect GEMM through the same table as
//! [`Algorithm::Indirect`](super::Algorithm::Indirect), whose offsets are
//! relative to the group's first channel.

use super::{indirect, FirstError, GemmSegment, OpError, RunArgs, Sizes, Split};
use crate::gemm::{
    gemm_tiles_shared, indirect_gemm_tiles_shared, Epilogue, IndirectA, IndirectTable, MatMut,
    MatRef, Tiles,
};
use crate::geometry::Conv2dGeometry;

/// The per-group constants' layout, and the table unless the layer is 1x1.
#[derive(Debug)]
pub(super) struct Plan {
    segment: GemmSegment,
    /// `None` for 1x1, stride 1, no padding (the input is `A` in place).
    table: Option<IndirectTable>,
    zero: Vec<f32>,
}

impl Plan {
    pub fn new(g: &Conv2dGeometry, sizes: &Sizes, has_bias: bool) -> Result<Plan, OpError> {
        let table = if super::is_pointwise(g) {
            None
        } else {
            Some(indirect::table(g, sizes)?)
        };
        Ok(Plan {
            segment: GemmSegment::new(g, sizes, has_bias)?,
            table,
            zero: vec![0.0; g.in_channels_per_group()],
        })
    }

    pub fn run(&self, args: &RunArgs<'_>, output: &mut [f32]) -> Result<(), OpError> {
        let g = &args.spec.geometry;
        let sizes = args.sizes;
        let groups = g.groups;
        let pixels = sizes.pixels;
        let (cin, cout) = (g.in_channels, g.out_channels);
        let (in_per_group, out_per_group) = (g.in_channels_per_group(), g.out_channels_per_group());
        let c = MatMut::new(output, args.batch * pixels, cout, cout)?.share();
        let macs = sizes.macs.saturating_mul(args.batch as u64);
        let split = Split::new(
            args.ctx,
            args.batch * groups,
            pixels,
            out_per_group,
            macs,
            usize::MAX,
            true,
        );
        let kernels = args.ctx.kernels();
        let errors = FirstError::default();
        args.ctx.parallel_for(split.tasks(), |task| {
            split.for_each(task, |matrix, rows, cols| {
                errors.record((|| -> Result<(), OpError> {
                    let (sample, group) = (matrix / groups, matrix % groups);
                    let b = self.segment.view(args.constants, group)?;
                    let sample_input = &args.input[sample * sizes.input..][..sizes.input];
                    let input = &sample_input[group * in_per_group..];
                    let residual = match args.residual {
                        Some(residual) => {
                            let sample_residual =
                                &residual[sample * sizes.output..][..sizes.output];
                            Some(MatRef::new(
                                &sample_residual[group * out_per_group..],
                                pixels,
                                out_per_group,
                                cout,
                            )?)
                        }
                        None => None,
                    };
                    let epilogue = Epilogue {
                        activation: args.spec.activation,
                        residual,
                        accumulate: false,
                    };
                    let c = c.submatrix(
                        sample * pixels..(sample + 1) * pixels,
                        group * out_per_group..(group + 1) * out_per_group,
                    )?;
                    let tiles = Tiles { rows, cols };
                    match &self.table {
                        None => {
                            let a = MatRef::new(input, pixels, in_per_group, cin)?;
                            // SAFETY: the pieces of a `Split` are disjoint
                            // tiles of the output.
                            unsafe { gemm_tiles_shared(kernels, a, b, c, &epilogue, tiles)? }
                        }
                        Some(table) => {
                            let a = IndirectA::with_table(input, table, &self.zero)?;
                            // SAFETY: as above.
                            unsafe {
                                indirect_gemm_tiles_shared(kernels, &a, b, c, &epilogue, tiles)?
                            }
                        }
                    }
                    Ok(())
                })());
            });
        });
        errors.into_result()
    }
}
