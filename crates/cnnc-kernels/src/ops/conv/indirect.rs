//! [`Algorithm::Indirect`](super::Algorithm::Indirect): the indirect GEMM
//! of XNNPACK (`igemm`). At construction a table gives, for every output
//! pixel of one sample and every kernel tap, the offset of the input pixel
//! it reads (`(iy·W + ix)·Cin`, relative to the sample), or
//! [`PAD_OFFSET`] for a tap in the padding, which then reads a zero row.
//! `run` calls the indirect GEMM once per sample with that sample's input,
//! so the table serves any batch and nothing is built or allocated at run
//! time. Only the weights are packed; the input is never copied.
//!
//! The same table (with `channels = Cin/groups`) serves every group of
//! [`Algorithm::Grouped`](super::Algorithm::Grouped), whose input slices
//! start at the group's first channel.

use super::{input_coordinate, FirstError, GemmSegment, OpError, RunArgs, Sizes, Split};
use crate::gemm::{
    indirect_gemm_tiles_shared, Epilogue, IndirectA, IndirectTable, MatMut, MatRef, Tiles,
    PAD_OFFSET,
};
use crate::geometry::Conv2dGeometry;

/// The indirection table of one sample and the zero row of its padding.
#[derive(Debug)]
pub(super) struct Plan {
    segment: GemmSegment,
    table: IndirectTable,
    zero: Vec<f32>,
}

/// The table of a checked geometry: row `oy·OW + ox`, tap `ky·kw + kx`
/// holds `(iy·W + ix)·Cin` or [`PAD_OFFSET`]; `Cin/groups` channels per tap.
pub(super) fn table(g: &Conv2dGeometry, sizes: &Sizes) -> Result<IndirectTable, OpError> {
    let mut offsets = Vec::with_capacity(sizes.pixels * sizes.taps);
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for ky in 0..g.kernel[0] {
                let iy = input_coordinate(oy, g.stride[0], ky, g.dilation[0], g.padding[0], g.in_h);
                for kx in 0..g.kernel[1] {
                    let ix =
                        input_coordinate(ox, g.stride[1], kx, g.dilation[1], g.padding[1], g.in_w);
                    offsets.push(match (iy, ix) {
                        // Below `H·W·Cin`, which was checked not to overflow.
                        (Some(iy), Some(ix)) => (iy * g.in_w + ix) * g.in_channels,
                        _ => PAD_OFFSET,
                    });
                }
            }
        }
    }
    Ok(IndirectTable::new(
        offsets,
        sizes.taps,
        g.in_channels_per_group(),
    )?)
}

impl Plan {
    pub fn new(g: &Conv2dGeometry, sizes: &Sizes, has_bias: bool) -> Result<Plan, OpError> {
        Ok(Plan {
            segment: GemmSegment::new(g, sizes, has_bias)?,
            table: table(g, sizes)?,
            zero: vec![0.0; g.in_channels_per_group()],
        })
    }

    pub fn run(&self, args: &RunArgs<'_>, output: &mut [f32]) -> Result<(), OpError> {
        let g = &args.spec.geometry;
        let sizes = args.sizes;
        let (pixels, n) = (sizes.pixels, g.out_channels);
        let b = self.segment.view(args.constants, 0)?;
        let c = MatMut::new(output, args.batch * pixels, n, n)?.share();
        let macs = sizes.macs.saturating_mul(args.batch as u64);
        let split = Split::new(args.ctx, args.batch, pixels, n, macs, usize::MAX, true);
        let kernels = args.ctx.kernels();
        let errors = FirstError::default();
        args.ctx.parallel_for(split.tasks(), |task| {
            split.for_each(task, |sample, rows, cols| {
                errors.record((|| -> Result<(), OpError> {
                    let input = &args.input[sample * sizes.input..][..sizes.input];
                    let a = IndirectA::with_table(input, &self.table, &self.zero)?;
                    let residual = match args.residual {
                        Some(residual) => Some(MatRef::new(
                            &residual[sample * sizes.output..][..sizes.output],
                            pixels,
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
                    let c = c.submatrix(sample * pixels..(sample + 1) * pixels, 0..n)?;
                    // SAFETY: the pieces of a `Split` are disjoint tiles of
                    // the output.
                    unsafe {
                        indirect_gemm_tiles_shared(
                            kernels,
                            &a,
                            b,
                            c,
                            &epilogue,
                            Tiles { rows, cols },
                        )?
                    };
                    Ok(())
                })());
            });
        });
        errors.into_result()
    }
}
