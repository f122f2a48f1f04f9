//! Softmax along one dimension, numerically stable.
//!
//! A sample is seen as `[outer, dim, inner]` (the reference's formulation,
//! per sample): over NHWC `[H, W, C]` along channels that is `(H·W, C, 1)`
//! — contiguous slices, the common case; along `H` it is `(1, H, W·C)` and
//! along `W` `(H, W, C)`; over features `[F]` it is `(1, F, 1)`.
//!
//! Per slice: `m = max(x)`, `e_i = e^(x_i - m)` (stored in the output),
//! `s = Σ e_i`, `y_i = e_i / s` (a true division). Subtracting the maximum
//! keeps every `e_i ≤ 1`, so large inputs neither overflow nor give NaN.
//! With `inner = 1` the slice is contiguous and reduced with vectors (lane
//! partial sums, then a fixed-order horizontal sum); with `inner > 1` the
//! vectors run across `inner` and each lane reduces its own slice. A slice
//! with a NaN, a `+inf` maximum, or only `-inf` gives NaN throughout (the
//! NaN reaches the sum), as PyTorch's does.

use super::elementwise::{exp, load_n, store_n, tier_table, total, SimdMath};
use crate::ops::{check_len, Context, OpError};
use crate::threads::{part, task_count, Disjoint};

/// Softmax of samples `[outer, dim, inner]` along the middle dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SoftmaxSpec {
    /// Product of the per-sample dimensions before the softmax dimension.
    pub outer: usize,
    /// Length of the softmax dimension.
    pub dim: usize,
    /// Product of the dimensions after it.
    pub inner: usize,
}

/// Softmax: see [`SoftmaxSpec`].
#[derive(Clone, Debug)]
pub struct SoftmaxOp {
    spec: SoftmaxSpec,
    /// Elements per sample.
    len: usize,
}

impl SoftmaxOp {
    /// The operator for `spec`; refused if a sample's size overflows.
    pub fn new(spec: SoftmaxSpec) -> Result<SoftmaxOp, OpError> {
        let len = spec
            .outer
            .checked_mul(spec.dim)
            .and_then(|len| len.checked_mul(spec.inner))
            .ok_or_else(|| OpError::Spec(format!("softmax {spec:?} overflows")))?;
        Ok(SoftmaxOp { spec, len })
    }

    /// The spec.
    pub fn spec(&self) -> &SoftmaxSpec {
        &self.spec
    }

    /// Floats of scratch `run` needs: none.
    pub fn scratch_len(&self, _batch: usize) -> usize {
        0
    }

    /// Softmax of `batch` samples.
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), OpError> {
        let len = total(batch, self.len)?;
        check_len("softmax input", input.len(), len)?;
        check_len("softmax output", output.len(), len)?;
        let SoftmaxSpec { dim, inner, .. } = self.spec;
        let outer = batch * self.spec.outer;
        let slab = dim * inner;
        if len == 0 {
            return Ok(());
        }
        let kernel = softmax_tiers::table(ctx.kernels()).slab;
        let tasks = task_count(ctx.threads(), len, 1 << 14).min(outer);
        let output = Disjoint::new(output);
        ctx.parallel_for(tasks, |task| {
            let range = part(outer, tasks, 1, task);
            // SAFETY: the slabs `range` belong to this task only.
            let out = unsafe { output.part(range.start * slab..range.end * slab) };
            let args = SlabArgs {
                input: input[range.start * slab..range.end * slab].as_ptr(),
                output: out.as_mut_ptr(),
                slabs: range.len(),
                dim,
                inner,
            };
            // SAFETY: `slabs` slabs of `dim · inner` elements in both
            // buffers; the table is of a tier this CPU has.
            unsafe { kernel(&args) };
        });
        Ok(())
    }
}

/// Raw arguments: `slabs` consecutive `[dim, inner]` slabs.
struct SlabArgs {
    input: *const f32,
    output: *mut f32,
    slabs: usize,
    dim: usize,
    inner: usize,
}

struct SoftmaxKernels {
    slab: unsafe fn(&SlabArgs),
}

tier_table! {
    mod softmax_tiers for SoftmaxKernels {
        slab: softmax_body::<V>(args: &SlabArgs);
    }
}

/// # Safety
/// Both buffers valid for `slabs · dim · inner` elements, not overlapping;
/// the target-feature contract.
#[inline(always)]
unsafe fn softmax_body<V: SimdMath>(args: &SlabArgs) {
    let (dim, inner) = (args.dim, args.inner);
    for slab in 0..args.slabs {
        let offset = slab * dim * inner;
        let (input, output) = (
            args.input.wrapping_add(offset),
            args.output.wrapping_add(offset),
        );
        // SAFETY: inside the slab; the rest is the caller's contract.
        unsafe {
            if inner == 1 {
                contiguous::<V>(input, output, dim);
            } else {
                let mut i = 0;
                while i < inner {
                    let n = inner - i;
                    strided::<V>(input.add(i), output.add(i), dim, inner, n);
                    i += n.min(V::LANES);
                }
            }
        }
    }
}

/// Softmax of one contiguous slice of `len` values.
///
/// # Safety
/// Both pointers valid for `len` elements; the target-feature contract.
#[inline(always)]
unsafe fn contiguous<V: SimdMath>(input: *const f32, output: *mut f32, len: usize) {
    let lanes = V::LANES;
    // SAFETY: every access is below `len`; the rest is the caller's
    // contract. Lanes past `len` in the last vector are masked out of the
    // reductions.
    unsafe {
        let mut max = V::splat(f32::NEG_INFINITY);
        let mut i = 0;
        while i < len {
            let n = len - i;
            let x = load_n::<V>(input.add(i), n);
            max = max.max(V::select(V::first_lanes(n), x, V::splat(f32::NEG_INFINITY)));
            i += n.min(lanes);
        }
        let max = V::splat(max.reduce_max());
        let mut sum = V::zero();
        let mut i = 0;
        while i < len {
            let n = len - i;
            let e = exp(load_n::<V>(input.add(i), n).sub(max));
            store_n(e, output.add(i), n);
            sum = sum.add(V::select(V::first_lanes(n), e, V::zero()));
            i += n.min(lanes);
        }
        let sum = V::splat(sum.reduce_add());
        let mut i = 0;
        while i < len {
            let n = len - i;
            store_n(load_n::<V>(output.add(i), n).div(sum), output.add(i), n);
            i += n.min(lanes);
        }
    }
}

/// Softmax of `lanes` (≤ LANES) independent slices interleaved with stride
/// `stride`: slice `l` is `input[l + d·stride]` for `d` in `0..dim`.
///
/// # Safety
/// Both pointers valid for `(dim - 1)·stride + lanes` elements; the
/// target-feature contract.
#[inline(always)]
unsafe fn strided<V: SimdMath>(
    input: *const f32,
    output: *mut f32,
    dim: usize,
    stride: usize,
    lanes: usize,
) {
    // SAFETY: every access is at `d·stride + (0..lanes)` with `d < dim`.
    unsafe {
        let mut max = V::splat(f32::NEG_INFINITY);
        for d in 0..dim {
            max = max.max(load_n::<V>(input.add(d * stride), lanes));
        }
        let mut sum = V::zero();
        for d in 0..dim {
            let e = exp(load_n::<V>(input.add(d * stride), lanes).sub(max));
            store_n(e, output.add(d * stride), lanes);
            sum = sum.add(e);
        }
        for d in 0..dim {
            let y = load_n::<V>(output.add(d * stride), lanes).div(sum);
            store_n(y, output.add(d * stride), lanes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::layout::testing::*;
    use crate::reference;

    fn run(ctx: &Context, batch: usize, spec: SoftmaxSpec, x: &[f32]) -> Vec<f32> {
        let mut y = vec![f32::NAN; x.len()];
        SoftmaxOp::new(spec)
            .unwrap()
            .run(ctx, batch, x, &mut y)
            .unwrap();
        y
    }

    #[test]
    fn every_axis_of_nhwc_and_flat_features_match_the_reference() {
        for kernels in tiers() {
            let ctx = Context::with(kernels, 1);
            for (h, w, c) in [(1, 1, 10), (3, 5, 17), (2, 7, 33), (4, 4, 1), (1, 3, 1000)] {
                for batch in [1, 3] {
                    let x: Vec<f32> = values(batch * h * w * c, (h * w * c) as u64)
                        .iter()
                        .map(|v| v * 20.0)
                        .collect();
                    // NHWC sample [h, w, c]: along C, H and W.
                    for (spec, what) in [
                        (
                            SoftmaxSpec {
                                outer: h * w,
                                dim: c,
                                inner: 1,
                            },
                            "channels",
                        ),
                        (
                            SoftmaxSpec {
                                outer: 1,
                                dim: h,
                                inner: w * c,
                            },
                            "height",
                        ),
                        (
                            SoftmaxSpec {
                                outer: h,
                                dim: w,
                                inner: c,
                            },
                            "width",
                        ),
                        (
                            SoftmaxSpec {
                                outer: 1,
                                dim: h * w * c,
                                inner: 1,
                            },
                            "features",
                        ),
                    ] {
                        let mut expected = vec![0.0; x.len()];
                        reference::softmax(
                            batch * spec.outer,
                            spec.dim,
                            spec.inner,
                            &x,
                            &mut expected,
                        );
                        let actual = run(&ctx, batch, spec, &x);
                        // A few ulps of each probability (relative to 1).
                        assert_close(
                            &actual,
                            &expected,
                            3e-7,
                            &format!("{} {what} {h}x{w}x{c} batch {batch}", kernels.tier()),
                        );
                        for (a, e) in actual.iter().zip(&expected) {
                            assert!(
                                (a - e).abs() <= 4e-6 * e.abs() + 1e-37,
                                "{} {what}: {a:e} vs {e:e}",
                                kernels.tier()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn large_values_and_special_slices() {
        for kernels in tiers() {
            let ctx = Context::with(kernels, 1);
            let spec = |dim| SoftmaxSpec {
                outer: 1,
                dim,
                inner: 1,
            };
            let y = run(&ctx, 1, spec(3), &[10_000.0, 10_001.0, 10_002.0]);
            assert_close(&y, &[0.09003057, 0.24472848, 0.66524094], 2e-7, "large");
            assert_eq!(run(&ctx, 1, spec(2), &[-1e30, 1e30]), [0.0, 1.0]);
            assert_eq!(run(&ctx, 1, spec(2), &[f32::NEG_INFINITY, 3.0]), [0.0, 1.0]);
            for input in [
                [f32::NEG_INFINITY; 2],
                [f32::INFINITY, 0.0],
                [1.0, f32::NAN],
                [f32::NAN, 1.0],
            ] {
                assert!(
                    run(&ctx, 1, spec(2), &input).iter().all(|y| y.is_nan()),
                    "{} {input:?}",
                    kernels.tier()
                );
                // The same slices strided: lanes are independent.
                let strided = [input[0], 0.0, input[1], 0.0];
                let y = run(
                    &ctx,
                    1,
                    SoftmaxSpec {
                        outer: 1,
                        dim: 2,
                        inner: 2,
                    },
                    &strided,
                );
                assert!(
                    y[0].is_nan() && y[2].is_nan() && y[1] == 0.5 && y[3] == 0.5,
                    "{} {y:?}",
                    kernels.tier()
                );
            }
        }
    }

    #[test]
    fn thread_counts_are_bit_identical() {
        let x = values(3 * 14 * 14 * 100, 3);
        for kernels in tiers() {
            for spec in [
                SoftmaxSpec {
                    outer: 196,
                    dim: 100,
                    inner: 1,
                },
                SoftmaxSpec {
                    outer: 14,
                    dim: 14,
                    inner: 100,
                },
            ] {
                let runs: Vec<Vec<f32>> = contexts(kernels)
                    .iter()
                    .map(|ctx| run(ctx, 3, spec, &x))
                    .collect();
                assert!(
                    runs.windows(2).all(|w| w[0] == w[1]),
                    "{} {spec:?}",
                    kernels.tier()
                );
            }
        }
    }

    #[test]
    fn wrong_lengths_and_overflow_are_errors() {
        let ctx = Context::with(crate::kernels(), 1);
        assert!(SoftmaxOp::new(SoftmaxSpec {
            outer: usize::MAX,
            dim: 2,
            inner: 1
        })
        .is_err());
        let op = SoftmaxOp::new(SoftmaxSpec {
            outer: 2,
            dim: 3,
            inner: 1,
        })
        .unwrap();
        assert_eq!(
            op.run(&ctx, 2, &[0.0; 11], &mut [0.0; 12]),
            Err(OpError::Length {
                what: "softmax input",
                len: 11,
                expected: 12
            })
        );
        assert!(op.run(&ctx, 1, &[0.0; 6], &mut [0.0; 5]).is_err());
        let empty = SoftmaxOp::new(SoftmaxSpec {
            outer: 2,
            dim: 0,
            inner: 3,
        })
        .unwrap();
        assert_eq!(empty.run(&ctx, 2, &[], &mut []), Ok(()));
    }
}
