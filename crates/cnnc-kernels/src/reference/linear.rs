//! Fully connected layer (PyTorch `Linear`).

/// `output = input · weightᵀ + bias` for a batch of feature vectors.
///
/// - `input`: `[batch, in_features]`.
/// - `weight`: `[out_features, in_features]` (PyTorch's layout).
/// - `bias`: `[out_features]`, or `None`.
/// - `output`: `[batch, out_features]`, every element overwritten.
///
/// **Accumulation:** for each output element, in `f64`: start from the bias
/// (or 0), add `input[f] * weight[o][f]` for `f` in increasing order; round to
/// `f32` once. (The same order as [`conv2d`](super::conv2d) over input
/// channels, so a 1x1 convolution equals this function applied per pixel bit
/// for bit.)
///
/// # Panics
///
/// If a slice length disagrees with the sizes.
pub fn linear(
    batch: usize,
    in_features: usize,
    out_features: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
    assert_eq!(input.len(), batch * in_features, "linear: input length");
    assert_eq!(
        weight.len(),
        out_features * in_features,
        "linear: weight length"
    );
    if let Some(bias) = bias {
        assert_eq!(bias.len(), out_features, "linear: bias length");
    }
    assert_eq!(output.len(), batch * out_features, "linear: output length");

    for n in 0..batch {
        let row = &input[n * in_features..(n + 1) * in_features];
        for o in 0..out_features {
            let weight_row = &weight[o * in_features..(o + 1) * in_features];
            let mut acc = bias.map_or(0.0, |bias| f64::from(bias[o]));
            for (&x, &w) in row.iter().zip(weight_row) {
                acc += f64::from(x) * f64::from(w);
            }
            output[n * out_features + o] = acc as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::linear;
    use crate::reference::testutil::assert_same;

    #[test]
    fn matrix_vector_with_bias_per_sample() {
        // Two samples of 3 features, 2 outputs.
        let input = [1.0, 2.0, 3.0, -1.0, 0.0, 0.5];
        let weight = [1.0, 0.0, -1.0, 2.0, 2.0, 2.0];
        let mut output = [f32::NAN; 4];
        linear(2, 3, 2, &input, &weight, Some(&[0.25, -1.0]), &mut output);
        assert_same(&output, &[-1.75, 11.0, -1.25, -2.0]);
    }

    #[test]
    fn without_bias() {
        let mut output = [f32::NAN; 1];
        linear(1, 2, 1, &[3.0, 4.0], &[10.0, 100.0], None, &mut output);
        assert_same(&output, &[430.0]);
    }

    #[test]
    fn zero_features_gives_the_bias() {
        let mut output = [f32::NAN; 2];
        linear(1, 0, 2, &[], &[], Some(&[1.5, -2.0]), &mut output);
        assert_same(&output, &[1.5, -2.0]);
    }

    #[test]
    fn accumulates_in_f64() {
        // 2^24 + 1 - 2^24 is 1; in f32, 2^24 + 1 rounds back to 2^24 and gives 0.
        let big = 16_777_216.0;
        let mut output = [f32::NAN; 1];
        linear(
            1,
            3,
            1,
            &[big, 1.0, -big],
            &[1.0, 1.0, 1.0],
            None,
            &mut output,
        );
        assert_same(&output, &[1.0]);
    }
}
