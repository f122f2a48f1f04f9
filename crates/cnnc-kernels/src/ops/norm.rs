//! Standalone batch normalization (one the optimizer could not fold into a
//! preceding convolution) over NHWC: a per-channel affine map
//! `y = act(x · scale + shift)`, vectorized over the contiguous channels.
//!
//! `scale = gamma / sqrt(var + eps)` and `shift = beta - mean · scale` are
//! computed in `f64` when the operator is packed and rounded once; they are
//! its constants (`[scale; C]` then `[shift; C]` in one [`Buffer`]). The
//! per-element arithmetic is one multiply-add (fused on the FMA tiers), so
//! results differ from the reference's textbook `f64` formula by a few ulps
//! (more when `x` is close to a large mean), as PyTorch's own `float32`
//! kernel, which has the same form, does.

use super::elementwise::{activate, load_n, store_n, tier_table, total, SimdMath};
use crate::activation::Activation;
use crate::ops::{check_len, Buffer, Context, OpError};
use crate::reference::BatchNorm2dParams;
use crate::threads::{part, task_count};

/// Batch normalization with running statistics, plus an optional fused
/// activation, over NHWC samples `[pixels, channels]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormSpec {
    /// Channels (the innermost dimension).
    pub channels: usize,
    /// Pixels per sample (`H · W`).
    pub pixels: usize,
    /// Applied after the affine map ([`Activation::Identity`] for none).
    pub activation: Activation,
}

/// Standalone batch normalization: see [`BatchNormSpec`].
#[derive(Clone, Debug)]
pub struct BatchNormOp {
    spec: BatchNormSpec,
    /// `[scale; C]` then `[shift; C]`.
    constants: Buffer,
    /// Elements per sample.
    len: usize,
}

impl BatchNormOp {
    /// Precomputes `scale` and `shift` (in `f64`) from PyTorch's four
    /// per-channel tensors and `eps`.
    pub fn pack(
        spec: BatchNormSpec,
        params: &BatchNorm2dParams<'_>,
    ) -> Result<BatchNormOp, OpError> {
        let channels = spec.channels;
        for (what, tensor) in [
            ("batch-norm running_mean", params.running_mean),
            ("batch-norm running_var", params.running_var),
            ("batch-norm weight", params.weight),
            ("batch-norm bias", params.bias),
        ] {
            check_len(what, tensor.len(), channels)?;
        }
        let mut constants = Buffer::zeroed(2 * channels);
        let values = constants.make_mut();
        for c in 0..channels {
            let std = (f64::from(params.running_var[c]) + params.eps).sqrt();
            let scale = f64::from(params.weight[c]) / std;
            values[c] = scale as f32;
            values[channels + c] =
                (f64::from(params.bias[c]) - f64::from(params.running_mean[c]) * scale) as f32;
        }
        BatchNormOp::from_constants(spec, constants)
    }

    /// Rebuilds the operator from [`BatchNormOp::constants`].
    pub fn from_constants(spec: BatchNormSpec, constants: Buffer) -> Result<BatchNormOp, OpError> {
        let len = spec
            .channels
            .checked_mul(spec.pixels)
            .filter(|_| spec.channels.checked_mul(2).is_some())
            .ok_or_else(|| OpError::Spec(format!("batch norm {spec:?} overflows")))?;
        check_len("batch-norm constants", constants.len(), 2 * spec.channels)?;
        Ok(BatchNormOp {
            spec,
            constants,
            len,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &BatchNormSpec {
        &self.spec
    }

    /// The packed constants: `[scale; C]` then `[shift; C]`.
    pub fn constants(&self) -> &[f32] {
        &self.constants
    }

    /// Floats of scratch `run` needs: none.
    pub fn scratch_len(&self, _batch: usize) -> usize {
        0
    }

    /// `output = act(input · scale + shift)` for `batch` NHWC samples.
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), OpError> {
        let len = total(batch, self.len)?;
        check_len("batch-norm input", input.len(), len)?;
        check_len("batch-norm output", output.len(), len)?;
        // SAFETY: both have `len` elements and do not overlap.
        unsafe { self.run_raw(ctx, batch, input.as_ptr(), output.as_mut_ptr()) };
        Ok(())
    }

    /// [`BatchNormOp::run`] in place.
    pub fn run_in_place(
        &self,
        ctx: &Context,
        batch: usize,
        data: &mut [f32],
    ) -> Result<(), OpError> {
        let len = total(batch, self.len)?;
        check_len("batch-norm data", data.len(), len)?;
        // SAFETY: `data` has `len` elements, read and written in place.
        unsafe { self.run_raw(ctx, batch, data.as_ptr(), data.as_mut_ptr()) };
        Ok(())
    }

    /// # Safety
    /// `input` and `output` valid for `batch · len` elements, equal or
    /// disjoint.
    unsafe fn run_raw(&self, ctx: &Context, batch: usize, input: *const f32, output: *mut f32) {
        #[derive(Clone, Copy)]
        struct Raw(*const f32, *mut f32);
        // SAFETY: tasks use disjoint pixel ranges of the buffers, which the
        // caller keeps alive.
        unsafe impl Sync for Raw {}
        impl Raw {
            fn get(&self) -> Raw {
                *self
            }
        }
        let raw = Raw(input, output);
        let channels = self.spec.channels;
        let pixels = batch * self.spec.pixels;
        if channels == 0 || pixels == 0 {
            return;
        }
        let kernel = norm_tiers::table(ctx.kernels()).affine;
        let tasks = task_count(ctx.threads(), pixels * channels, 1 << 15).min(pixels);
        ctx.parallel_for(tasks, |task| {
            let range = part(pixels, tasks, 1, task);
            let Raw(input, output) = raw.get();
            let args = AffineArgs {
                input: input.wrapping_add(range.start * channels),
                output: output.wrapping_add(range.start * channels),
                pixels: range.len(),
                channels,
                scale: self.constants.as_ptr(),
                shift: self.constants.as_ptr().wrapping_add(channels),
                activation: self.spec.activation,
            };
            // SAFETY: the pixel range is inside the buffers and this task's
            // own; the constants have `2 · channels` values; the table is of
            // a tier this CPU has.
            unsafe { kernel(&args) };
        });
    }
}

/// Raw arguments of the affine kernel.
struct AffineArgs {
    input: *const f32,
    output: *mut f32,
    pixels: usize,
    channels: usize,
    scale: *const f32,
    shift: *const f32,
    activation: Activation,
}

struct NormKernels {
    affine: unsafe fn(&AffineArgs),
}

tier_table! {
    mod norm_tiers for NormKernels {
        affine: affine_body::<V>(args: &AffineArgs);
    }
}

/// # Safety
/// `input`/`output` valid for `pixels · channels` elements (equal or
/// disjoint), `scale`/`shift` for `channels`; the target-feature contract.
#[inline(always)]
unsafe fn affine_body<V: SimdMath>(args: &AffineArgs) {
    let (channels, activation) = (args.channels, args.activation);
    // SAFETY: every access is inside `pixels · channels` elements or
    // `channels` constants; the rest is the caller's contract.
    unsafe {
        for pixel in 0..args.pixels {
            let base = pixel * channels;
            let mut c = 0;
            while c < channels {
                let n = channels - c;
                let x = load_n::<V>(args.input.add(base + c), n);
                let scale = load_n::<V>(args.scale.add(c), n);
                let shift = load_n::<V>(args.shift.add(c), n);
                store_n(
                    activate(x.mul_add(scale, shift), activation),
                    args.output.add(base + c),
                    n,
                );
                c += n.min(V::LANES);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::layout::testing::*;
    use crate::reference;

    fn params(channels: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let mean = values(channels, seed);
        let var: Vec<f32> = values(channels, seed + 1)
            .iter()
            .map(|v| v.abs() * 2.0)
            .collect();
        let gamma = values(channels, seed + 2);
        let beta = values(channels, seed + 3);
        (mean, var, gamma, beta)
    }

    #[test]
    fn matches_the_reference_for_ragged_channels_and_batches() {
        for channels in [1, 3, 17, 33, 64] {
            for (h, w) in [(1, 1), (3, 5), (7, 2)] {
                for batch in [1, 3] {
                    let (mean, var, gamma, beta) = params(channels, channels as u64);
                    let bn = BatchNorm2dParams {
                        running_mean: &mean,
                        running_var: &var,
                        weight: &gamma,
                        bias: &beta,
                        eps: 1e-5,
                    };
                    let x = values(batch * channels * h * w, 42);
                    for kernels in tiers() {
                        for activation in ACTIVATIONS {
                            let spec = BatchNormSpec {
                                channels,
                                pixels: h * w,
                                activation,
                            };
                            let op = BatchNormOp::pack(spec, &bn).unwrap();
                            let mut expected = vec![0.0; x.len()];
                            reference::batch_norm2d(batch, channels, h * w, &bn, &x, &mut expected);
                            reference::activation(activation, &mut expected);
                            let input = to_nhwc(batch, [channels, h, w], &x);
                            let mut output = vec![f32::NAN; x.len()];
                            let ctx = Context::with(kernels, 1);
                            op.run(&ctx, batch, &input, &mut output).unwrap();
                            let actual = to_nchw(batch, [channels, h, w], &output);
                            // Relative to the output's scale: a few roundings of
                            // x · scale, shift and the sum.
                            assert_close(
                                &actual,
                                &expected,
                                5e-7,
                                &format!("{} {}", kernels.tier(), activation.name()),
                            );
                            let mut in_place = input.clone();
                            op.run_in_place(&ctx, batch, &mut in_place).unwrap();
                            assert_eq!(in_place, output);
                            // Rebuilt from its constants, the operator gives the same bits.
                            let copy = BatchNormOp::from_constants(
                                spec,
                                Buffer::from_slice(op.constants()),
                            )
                            .unwrap();
                            let mut again = vec![0.0; x.len()];
                            copy.run(&ctx, batch, &input, &mut again).unwrap();
                            assert_eq!(again, output);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn constants_are_rounded_once_from_f64() {
        let bn = BatchNorm2dParams {
            running_mean: &[1.0, -2.0],
            running_var: &[3.75, 0.0],
            weight: &[2.0, -1.0],
            bias: &[0.5, 0.0],
            eps: 0.25,
        };
        let op = BatchNormOp::pack(
            BatchNormSpec {
                channels: 2,
                pixels: 1,
                activation: Activation::Identity,
            },
            &bn,
        )
        .unwrap();
        // scale = 2 / 2 = 1 and -1 / 0.5 = -2; shift = 0.5 - 1 and 0 - 2 · 2 = -4.
        assert_eq!(op.constants(), &[1.0, -2.0, -0.5, -4.0]);
        let mut y = [0.0; 4];
        op.run(
            &Context::with(crate::kernels(), 1),
            2,
            &[3.0, 0.0, f32::NAN, -2.0],
            &mut y,
        )
        .unwrap();
        assert_eq!(y[..2], [2.5, -4.0]);
        assert!(y[2].is_nan());
        assert_eq!(y[3], 0.0);
    }

    #[test]
    fn thread_counts_are_bit_identical() {
        let (channels, pixels, batch) = (96, 40 * 40, 2);
        let (mean, var, gamma, beta) = params(channels, 5);
        let bn = BatchNorm2dParams {
            running_mean: &mean,
            running_var: &var,
            weight: &gamma,
            bias: &beta,
            eps: 1e-3,
        };
        let x = values(batch * channels * pixels, 8);
        for kernels in tiers() {
            let op = BatchNormOp::pack(
                BatchNormSpec {
                    channels,
                    pixels,
                    activation: Activation::Hardswish,
                },
                &bn,
            )
            .unwrap();
            let runs: Vec<Vec<f32>> = contexts(kernels)
                .iter()
                .map(|ctx| {
                    let mut y = vec![0.0; x.len()];
                    op.run(ctx, batch, &x, &mut y).unwrap();
                    y
                })
                .collect();
            assert!(runs.windows(2).all(|w| w[0] == w[1]), "{}", kernels.tier());
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let bn = BatchNorm2dParams {
            running_mean: &[0.0; 2],
            running_var: &[1.0; 2],
            weight: &[1.0; 3],
            bias: &[0.0; 2],
            eps: 1e-5,
        };
        let spec = BatchNormSpec {
            channels: 2,
            pixels: 4,
            activation: Activation::Identity,
        };
        assert_eq!(
            BatchNormOp::pack(spec, &bn).unwrap_err(),
            OpError::Length {
                what: "batch-norm weight",
                len: 3,
                expected: 2
            }
        );
        assert!(BatchNormOp::from_constants(spec, Buffer::zeroed(3)).is_err());
        assert!(BatchNormOp::from_constants(
            BatchNormSpec {
                pixels: usize::MAX,
                ..spec
            },
            Buffer::zeroed(4)
        )
        .is_err());
        let op = BatchNormOp::from_constants(spec, Buffer::zeroed(4)).unwrap();
        let ctx = Context::with(crate::kernels(), 1);
        assert!(op.run(&ctx, 2, &[0.0; 16], &mut [0.0; 15]).is_err());
        assert!(op.run_in_place(&ctx, 1, &mut [0.0; 9]).is_err());
    }
}
