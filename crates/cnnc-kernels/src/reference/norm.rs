//! Batch normalization in inference form (PyTorch `BatchNorm2d` in `eval()`).

/// The four per-channel tensors of a `BatchNorm2d` and its `eps`, named as in
/// a PyTorch `state_dict` (`weight` is gamma, `bias` is beta).
#[derive(Clone, Copy, Debug)]
pub struct BatchNorm2dParams<'a> {
    /// `running_mean`, `[channels]`.
    pub running_mean: &'a [f32],
    /// `running_var`, `[channels]`.
    pub running_var: &'a [f32],
    /// `weight` (gamma), `[channels]`.
    pub weight: &'a [f32],
    /// `bias` (beta), `[channels]`.
    pub bias: &'a [f32],
    /// Added to the variance before the square root (PyTorch default `1e-5`).
    /// An `f64` because the language's literal is one; pass `f64::from(eps)` for
    /// an `f32`.
    pub eps: f64,
}

/// Batch normalization with running statistics over NCHW data:
/// `y = (x - running_mean) / sqrt(running_var + eps) * weight + bias` per channel.
///
/// `input` and `output` are `[batch, channels, hw]`, where `hw` is the number of
/// elements per channel (`H * W`; 1 for `[N, C]` data).
///
/// **Arithmetic:** the formula above, in that order, evaluated in `f64` and
/// rounded to `f32` once. PyTorch's `float32` CPU kernel refactors it into
/// `x * alpha + beta` with `alpha = weight / sqrt(var + eps)` and
/// `beta = bias - mean * alpha` rounded to `float32`; its results differ from
/// these by a few ulps, more when `x` is close to a large mean. This function
/// gives the textbook value (what PyTorch computes in `float64`), so it also
/// checks batch-norm folding, which is of PyTorch's form.
///
/// # Panics
///
/// If a parameter slice is not `channels` long, or if `input`/`output` are not
/// `batch * channels * hw` long.
pub fn batch_norm2d(
    batch: usize,
    channels: usize,
    hw: usize,
    params: &BatchNorm2dParams<'_>,
    input: &[f32],
    output: &mut [f32],
) {
    for (name, tensor) in [
        ("running_mean", params.running_mean),
        ("running_var", params.running_var),
        ("weight", params.weight),
        ("bias", params.bias),
    ] {
        assert_eq!(tensor.len(), channels, "batch_norm2d: {name} length");
    }
    assert_eq!(
        input.len(),
        batch * channels * hw,
        "batch_norm2d: input length"
    );
    assert_eq!(
        output.len(),
        batch * channels * hw,
        "batch_norm2d: output length"
    );

    for n in 0..batch {
        for c in 0..channels {
            let mean = f64::from(params.running_mean[c]);
            let std = (f64::from(params.running_var[c]) + params.eps).sqrt();
            let gamma = f64::from(params.weight[c]);
            let beta = f64::from(params.bias[c]);
            let start = (n * channels + c) * hw;
            for (y, &x) in output[start..start + hw]
                .iter_mut()
                .zip(&input[start..start + hw])
            {
                *y = ((f64::from(x) - mean) / std * gamma + beta) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{batch_norm2d, BatchNorm2dParams};
    use crate::reference::testutil::assert_same;

    #[test]
    fn per_channel_affine_with_running_statistics() {
        // eps 0.25. Channel 0: mean 1, var 3.75, gamma 2, beta 0.5 -> (x - 1) / 2 * 2 + 0.5.
        // Channel 1: mean -2, var 0, gamma -1, beta 0 -> (x + 2) / 0.5 * -1.
        let params = BatchNorm2dParams {
            running_mean: &[1.0, -2.0],
            running_var: &[3.75, 0.0],
            weight: &[2.0, -1.0],
            bias: &[0.5, 0.0],
            eps: 0.25,
        };
        // Batch 2, 2 channels, 2 elements per channel.
        let input = [3.0, -1.0, 0.0, -2.0, 1.0, 5.0, -3.0, 1.0];
        let mut output = [f32::NAN; 8];
        batch_norm2d(2, 2, 2, &params, &input, &mut output);
        assert_same(&output, &[2.5, -1.5, -4.0, 0.0, 0.5, 4.5, 2.0, -6.0]);
    }

    #[test]
    fn eps_matters_for_tiny_variances() {
        // var 0 with eps 0.01 -> divide by 0.1.
        let params = BatchNorm2dParams {
            running_mean: &[0.0],
            running_var: &[0.0],
            weight: &[1.0],
            bias: &[0.0],
            eps: 0.01,
        };
        let mut output = [f32::NAN; 2];
        batch_norm2d(1, 1, 2, &params, &[1.0, -0.25], &mut output);
        assert_same(&output, &[10.0, -2.5]);
    }
}
