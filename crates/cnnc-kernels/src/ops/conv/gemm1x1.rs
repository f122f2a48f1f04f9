//! [`Algorithm::Gemm1x1`](super::Algorithm::Gemm1x1): a 1x1, stride-1,
//! unpadded convolution is a plain GEMM over the NHWC tensors, with no copy
//! and no table: `A` is the input read in place (`M = N·H·W` rows of `K =
//! Cin`), `C` the output (`N = Cout`). All samples form one matrix.

use super::{FirstError, GemmSegment, OpError, RunArgs, Sizes, Split};
use crate::gemm::{gemm_tiles_shared, Epilogue, MatMut, MatRef, Tiles};
use crate::geometry::Conv2dGeometry;

/// Nothing is derived but the constants' layout.
#[derive(Debug)]
pub(super) struct Plan {
    segment: GemmSegment,
}

impl Plan {
    pub fn new(g: &Conv2dGeometry, sizes: &Sizes, has_bias: bool) -> Result<Plan, OpError> {
        Ok(Plan {
            segment: GemmSegment::new(g, sizes, has_bias)?,
        })
    }

    pub fn run(&self, args: &RunArgs<'_>, output: &mut [f32]) -> Result<(), OpError> {
        let g = &args.spec.geometry;
        // `batch · pixels · Cout` was checked not to overflow.
        let m = args.batch * args.sizes.pixels;
        let (k, n) = (g.in_channels, g.out_channels);
        let a = MatRef::new(args.input, m, k, k)?;
        let b = self.segment.view(args.constants, 0)?;
        let residual = match args.residual {
            Some(residual) => Some(MatRef::new(residual, m, n, n)?),
            None => None,
        };
        let epilogue = Epilogue {
            activation: args.spec.activation,
            residual,
            accumulate: false,
        };
        let c = MatMut::new(output, m, n, n)?.share();
        let macs = args.sizes.macs.saturating_mul(args.batch as u64);
        let split = Split::new(args.ctx, 1, m, n, macs, usize::MAX, true);
        let kernels = args.ctx.kernels();
        let errors = FirstError::default();
        args.ctx.parallel_for(split.tasks(), |task| {
            split.for_each(task, |_, rows, cols| {
                // SAFETY: the pieces of a `Split` are disjoint tiles of `c`.
                errors.record(unsafe {
                    gemm_tiles_shared(kernels, a, b, c, &epilogue, Tiles { rows, cols })
                });
            });
        });
        errors.into_result()
    }
}
