//! Folding an inference-mode batch-norm into the layer before it.
//!
//! A convolution (or linear layer) `y = w * x + b` followed by
//! `z = (y - mean) / sqrt(var + eps) * gamma + beta` is one layer with
//!
//! ```text
//! scale[o] = gamma[o] / sqrt(var[o] + eps)
//! w'[o, ..] = w[o, ..] * scale[o]
//! b'[o]     = (b[o] - mean[o]) * scale[o] + beta[o]      (b = 0 without a bias)
//! ```
//!
//! Every value is computed in `f64` from the `f32` tensors and rounded to
//! `f32` once, so the folded layer is as close to the two layers as `f32`
//! storage allows. The compiler decides *which* layers fold (a pass records
//! the batch-norm in the layer's weight source); the interpreter and
//! generated code's `from_safetensors` both call [`fold_batchnorm`] when
//! they load the tensors, so the weights file keeps PyTorch's names.

use std::fmt;

/// The four tensors of a `BatchNorm2d` and its `eps`, one value per channel.
#[derive(Clone, Copy, Debug)]
pub struct BatchNorm<'a> {
    /// `gamma` (`.weight`).
    pub weight: &'a [f32],
    /// `beta` (`.bias`).
    pub bias: &'a [f32],
    /// `.running_mean`.
    pub running_mean: &'a [f32],
    /// `.running_var`.
    pub running_var: &'a [f32],
    /// `eps` (PyTorch's default `1e-5`).
    pub eps: f64,
}

/// Tensor lengths that do not fit together. Never caused by a weights file
/// (tensor shapes are checked when they are loaded): a bug in the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldError {
    /// Which tensor.
    pub what: &'static str,
    /// Its length.
    pub len: usize,
    /// What it should be, given the batch-norm's channel count.
    pub expected: String,
}

impl fmt::Display for FoldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot fold a batch-norm: {} has {} values, expected {}",
            self.what, self.len, self.expected
        )
    }
}

impl std::error::Error for FoldError {}

/// Folds `bn` into a layer: scales `weight` (`[O, ...]`, output channel
/// first, as PyTorch stores convolution and linear weights) in place and
/// returns the folded bias `[O]`, from the layer's own `bias` if it has one.
///
/// `O` is the batch-norm's channel count; every tensor must agree with it.
///
/// ```
/// use cnnc_runtime::fold::{fold_batchnorm, BatchNorm};
///
/// // Two output channels of two weights each.
/// let mut weight = [1.0f32, 2.0, 3.0, 4.0];
/// let bn = BatchNorm {
///     weight: &[2.0, 1.0],
///     bias: &[0.5, 0.0],
///     running_mean: &[1.0, -1.0],
///     running_var: &[3.0, 0.0],
///     eps: 1.0,
/// };
/// let bias = fold_batchnorm(&mut weight, Some(&[1.0, 1.0]), &bn)?;
/// // scale = [2 / sqrt(4), 1 / sqrt(1)] = [1, 1]
/// assert_eq!(weight, [1.0, 2.0, 3.0, 4.0]);
/// // b' = (b - mean) * scale + beta = [(1 - 1) + 0.5, (1 + 1) + 0]
/// assert_eq!(bias, [0.5, 2.0]);
/// # Ok::<(), cnnc_runtime::fold::FoldError>(())
/// ```
pub fn fold_batchnorm(
    weight: &mut [f32],
    bias: Option<&[f32]>,
    bn: &BatchNorm<'_>,
) -> Result<Vec<f32>, FoldError> {
    let channels = bn.weight.len();
    let check = |what: &'static str, len: usize| {
        if len == channels {
            Ok(())
        } else {
            Err(FoldError {
                what,
                len,
                expected: channels.to_string(),
            })
        }
    };
    check("the batch-norm's bias", bn.bias.len())?;
    check("the batch-norm's running_mean", bn.running_mean.len())?;
    check("the batch-norm's running_var", bn.running_var.len())?;
    if let Some(bias) = bias {
        check("the layer's bias", bias.len())?;
    }
    if channels == 0 || !weight.len().is_multiple_of(channels) {
        return Err(FoldError {
            what: "the layer's weight",
            len: weight.len(),
            expected: format!("a non-zero multiple of {channels}"),
        });
    }
    let per_channel = weight.len() / channels;
    let mut folded_bias = Vec::with_capacity(channels);
    for (channel, row) in weight.chunks_exact_mut(per_channel).enumerate() {
        let scale =
            f64::from(bn.weight[channel]) / (f64::from(bn.running_var[channel]) + bn.eps).sqrt();
        for w in row {
            *w = (f64::from(*w) * scale) as f32;
        }
        let b = bias.map_or(0.0, |b| f64::from(b[channel]));
        let shifted = (b - f64::from(bn.running_mean[channel])) * scale;
        folded_bias.push((shifted + f64::from(bn.bias[channel])) as f32);
    }
    Ok(folded_bias)
}

#[cfg(test)]
mod tests {
    use super::{fold_batchnorm, BatchNorm, FoldError};

    /// conv (1x1, 2 in, 2 out) then batch-norm, computed naively in f64,
    /// against the folded layer.
    #[test]
    fn folded_layer_equals_layer_then_batchnorm() {
        let weight = [0.3f32, -1.2, 2.5, 0.7];
        let bias = [0.1f32, -0.4];
        let bn = BatchNorm {
            weight: &[1.5, -0.5],
            bias: &[0.25, 2.0],
            running_mean: &[0.2, -3.0],
            running_var: &[0.8, 4.0],
            eps: 1e-5,
        };
        let mut folded = weight;
        let folded_bias = fold_batchnorm(&mut folded, Some(&bias), &bn).expect("fits");
        for x in [[1.0f64, 2.0], [-0.5, 0.25], [3.0, -7.0]] {
            for o in 0..2 {
                let y = f64::from(weight[2 * o]) * x[0]
                    + f64::from(weight[2 * o + 1]) * x[1]
                    + f64::from(bias[o]);
                let z = (y - f64::from(bn.running_mean[o]))
                    / (f64::from(bn.running_var[o]) + bn.eps).sqrt()
                    * f64::from(bn.weight[o])
                    + f64::from(bn.bias[o]);
                let folded_z = f64::from(folded[2 * o]) * x[0]
                    + f64::from(folded[2 * o + 1]) * x[1]
                    + f64::from(folded_bias[o]);
                assert!(
                    (z - folded_z).abs() <= 1e-6 * z.abs().max(1.0),
                    "{z} vs {folded_z}"
                );
            }
        }
    }

    #[test]
    fn without_a_bias_the_mean_is_subtracted_from_zero() {
        let mut weight = [2.0f32];
        let bn = BatchNorm {
            weight: &[1.0],
            bias: &[1.0],
            running_mean: &[3.0],
            running_var: &[0.0],
            eps: 0.25,
        };
        // scale = 1 / sqrt(0.25) = 2.
        assert_eq!(fold_batchnorm(&mut weight, None, &bn), Ok(vec![-5.0]));
        assert_eq!(weight, [4.0]);
    }

    #[test]
    fn mismatched_lengths_are_refused() {
        let bn = BatchNorm {
            weight: &[1.0, 1.0],
            bias: &[0.0, 0.0],
            running_mean: &[0.0, 0.0],
            running_var: &[1.0],
            eps: 1e-5,
        };
        let error = fold_batchnorm(&mut [1.0; 4], None, &bn).unwrap_err();
        assert_eq!(error.what, "the batch-norm's running_var");
        let bn = BatchNorm {
            running_var: &[1.0, 1.0],
            ..bn
        };
        let error = fold_batchnorm(&mut [1.0; 3], None, &bn).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot fold a batch-norm: the layer's weight has 3 values, expected a non-zero multiple of 2"
        );
        assert!(matches!(
            fold_batchnorm(&mut [1.0; 4], Some(&[0.0]), &bn),
            Err(FoldError {
                what: "the layer's bias",
                ..
            })
        ));
        let empty = BatchNorm {
            weight: &[],
            bias: &[],
            running_mean: &[],
            running_var: &[],
            eps: 1e-5,
        };
        assert!(fold_batchnorm(&mut [], None, &empty).is_err());
    }
}
